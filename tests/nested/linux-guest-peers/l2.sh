# In L2 (Linux in our VMM): our ivshmem-doorbell device is ivshmem0; we are peer 1, the host
# peer is 0; peer 2 joins in L1 once we print WAITING-FOR-PEER-2.
. /lib.sh
C=ivshmem-guest-client
T='--state-table 2M --lifecycle-vector 2'
check insmod 0 '' insmod /ivshmem.ko
check refused_without_table 1 'without --state-table' $C -c peers
check peers_lists_the_host 0 '^peer_id=0 vectors=3$' $C $T -c peers
check wait_peer_present 0 '^peer_id=0 vectors=3$' $C $T -c 'wait-peer any 1000'
check wait_peer_times_out 1 'peer 9 did not connect within 300 ms' $C $T -c 'wait-peer 9 300'
check table_not_there 1 'no state table there' $C --state-table 1M -c peers
check offset_does_not_fit 2 'does not fit' $C --state-table 4M -c peers
echo WAITING-FOR-PEER-2
check wait_peer_wakes_on_join 0 '^peer_id=2 vectors=3$' $C $T -c 'wait-peer 2 200000'
check peers_after_join 0 'peer_id=0 vectors=3 peer_id=2 vectors=3' \
    sh -c "$C $T -c peers | tr '\n' ' '"
check int_all 0 '' $C $T -c 'int all'
check no_oops 1 '' sh -c "dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|general protection'"
