# In L2 (Linux in our VMM): ivshmem0 is our doorbell device; the partner and the sizes come on the
# kernel command line (bench_peer, bench_rounds, bench_blocks, bench_warmup, bench_window_mb).
. /lib.sh
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
check insmod 0 '' insmod /ivshmem.ko
guest_bench -d 0 rtt --peer "$(arg bench_peer)" --rounds "$(arg bench_rounds)" \
    --blocks "$(arg bench_blocks)" --warmup "$(arg bench_warmup)" >/tmp/rtt.out 2>&1
rtt_status=$?
check linux_round_trips 0 'BENCH linux_rtt_p50_ns=[0-9]+' sh -c "cat /tmp/rtt.out; exit $rtt_status"
guest_bench -d 0 bandwidth --window-mb "$(arg bench_window_mb)" >/tmp/bw.out 2>&1
bw_status=$?
check linux_bandwidth 0 'BENCH linux_ram_gbps=[0-9]' sh -c "cat /tmp/bw.out; exit $bw_status"
cat /tmp/rtt.out /tmp/bw.out
