# Benchmarks of the Linux guest side on ordinary KVM, each against a baseline from the same run:
# - doorbell round trips: guest_bench (linux-guest/examples) in L2 Linux in our VMM against the
#   built-in ivshmem_pingpong guest program in a VM, each pinging its own guest-program pong VM
#   (ivshmem_pingpong role=pong) on one server in L1. The program runs BLOCKS times before Linux
#   and BLOCKS times after it (the baseline brackets Linux in time); Linux runs BLOCKS blocks;
#   each block is ROUNDS timed round trips, so medians of block means can be compared.
# - write bandwidth: guest_bench into BAR2 through the driver's write-back mapping against its
#   own anonymous memory (and, for reference, ivshmem_bandwidth's BAR2 against guest RAM).
# Prints `BENCH key=value` lines (scripts/bench.sh's guest_linux section reads them) and one
# RESULT line per part. Server ids are handed out in order: each pong joins just before its ping.
. ../lib.sh
ROUNDS=${ROUNDS:-1000}
WARMUP=${WARMUP:-100}
BLOCKS=${BLOCKS:-3}
WINDOW_MB=${WINDOW_MB:-8}
TIMEOUT_MS=120000
DEVICE="doorbell,socket=/tmp/sock,vectors=1"
next_id=0

ivshmem-server -F -S /tmp/sock -l 16M -n 1 2>/tmp/server.log &
server=$!
wait_for /tmp/server.log 'listening' 10

# pong RINGS: a guest-program VM (peer $next_id) answering each of peer $next_id+1's rings once,
# RINGS in all; returns when it waits for the first ring. Its pid is in $pong, its id in $pong_id.
pong() {
    pong_id=$next_id
    vmm --name "pong$pong_id" --guest builtin:ivshmem_pingpong --stats --ivshmem "$DEVICE" \
        --guest-args "role=pong peer=$((pong_id + 1)) rounds=$1 warmup=$WARMUP timeout_ms=$TIMEOUT_MS" \
        >"/tmp/pong$pong_id.log" 2>&1 &
    pong=$!
    next_id=$((next_id + 2))
    wait_for /tmp/server.log "peer $pong_id joined" 30 &&
        wait_for "/tmp/pong$pong_id.log" 'answering' 60
}

# value KEY FILE: the number after KEY= in FILE
value() { sed -n "s/.*[ \[]$1=\([0-9.]*\).*/\1/p" "$2" | head -n1; }

# program_pings: the guest program pings a fresh pong ROUNDS times; `BENCH program_rtt_block_ns=`.
program_pings() {
    pong "$ROUNDS"
    local log=/tmp/ping$pong_id.log ping_status pong_status
    vmm --name ping --guest builtin:ivshmem_pingpong --stats --ivshmem "$DEVICE" \
        --guest-args "role=ping peer=$pong_id rounds=$ROUNDS warmup=$WARMUP timeout_ms=$TIMEOUT_MS" \
        >"$log" 2>&1
    ping_status=$?
    wait $pong
    pong_status=$?
    check "program_round_trips_$pong_id" 0 'rtt_ns=[0-9]+' \
        sh -c "cat $log; test $ping_status = 0 && test $pong_status = 0"
    check "program_no_slow_doorbells_$pong_id" 0 '"ivshmem_slow_doorbells":0[,}]' cat "$log"
    echo "BENCH program_rtt_block_ns=$(value rtt_ns "$log")"
}

# 1. The guest program, before Linux.
echo "BENCH program_rtt_rounds=$ROUNDS"
for _ in $(seq "$BLOCKS"); do program_pings; done

# 2. Linux (the peer after its pong) pings; l2.sh reads bench_* from the kernel command line.
pong $((ROUNDS * BLOCKS))
timeout 900 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory 256M --stats \
    --cmdline "console=ttyS0 quiet panic=-1 bench_peer=$pong_id bench_rounds=$ROUNDS bench_blocks=$BLOCKS bench_warmup=$WARMUP bench_window_mb=$WINDOW_MB" \
    --ivshmem "$DEVICE" </dev/null 2>&1 | tr -d '\r' | tee /tmp/l2.log
wait $pong
pong_status=$?
check l2_ran 0 'L2-EXIT 0' cat /tmp/l2.log
check linux_pong_answered_all 0 '' test "$pong_status" = 0
check linux_no_slow_doorbells 0 '"ivshmem_slow_doorbells":0[,}]' cat /tmp/l2.log

# 3. The guest program, after Linux.
for _ in $(seq "$BLOCKS"); do program_pings; done

# 4. For reference: the guest program's own BAR2 and RAM bandwidth, same window.
vmm --guest builtin:ivshmem_bandwidth --ivshmem "$DEVICE" \
    --guest-args "window_mb=$WINDOW_MB total_mb=3072 max_ms=3000" >/tmp/bw.log 2>&1
bw_status=$?
check program_bandwidth 0 'bar2_gbps=' sh -c "cat /tmp/bw.log; exit $bw_status"
echo "BENCH program_bar2_gbps=$(value bar2_gbps /tmp/bw.log)"
echo "BENCH program_ram_gbps=$(value ram_gbps /tmp/bw.log)"
kill $server
exit 0
