# In L2 (Linux in our VMM): our devices are ivshmem0 (doorbell, 00:01.0) and ivshmem1 (plain,
# 00:02.0); we are peer 2, the host peer is 0, the guest-program VM is 1.
. /lib.sh
C=ivshmem-guest-client
ROUNDS=10
check insmod 0 '' insmod /ivshmem.ko
check list_two_devices 0 'ivshmem0 0000:00:01.0 .*ivshmem1 0000:00:02.0 ' sh -c "$C --list | tr '\n' ' '"
check sysfs_attributes 0 '^2 4194304 2 $' \
    sh -c 'cd /sys/class/ivshmem/ivshmem0 && echo $(cat vectors shm_size iv_position) ""'
check dump_our_id 0 'our_id = 2' $C -d 0 -c dump
check reads_host 0 'hello from the h' $C -d 0 -c 'read 256 32'
check writes_for_host 0 '' $C -d 0 -c 'write 512 hello from linux\0'
check plain_reads_host 0 'host to plain' $C -d 1 -c 'read 0 16'
check plain_writes 0 '' $C -d 1 -c 'write 64 linux to plain'
check doorbells_with_host 0 'vector=0.*vector=1' \
    sh -c "$C -d 0 -c 'int 0 0; wait 0 120000; int 0 1; wait 1 120000' | tr '\n' ' '"
rounds=""
for i in $(seq $ROUNDS); do rounds="$rounds int 1 0; wait 0 120000;"; done
check vm_to_vm_round_trips 0 "^$ROUNDS\$" sh -c "$C -d 0 -c '$rounds' | grep -c 'vector=0'"
check driver_edges 0 'CHECKS 0 failed' driver_checks edges /dev/ivshmem0
check no_oops 1 '' sh -c "dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|general protection'"
