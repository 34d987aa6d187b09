# L2 (/scenario.sh on the root filesystem, /dev/vda): run by /sbin/init after switch_root, with
# the virtio drivers loaded by the initramfs. bed_mode=test (kernel command line): the checks;
# bed_mode=bench: `BENCH key=value` lines, which L1 prefixes with the VMM's name.
. /lib.sh
export CHECK_TIMEOUT=60
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
mkdir -p /share
mount -t virtiofs share /share
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0

# Where the time goes (bed_mode=bench): around each phase a `PHASE name begin|end` console line,
# at which L1 reads KVM's exit counters for this VM (the pause lets L1 see the line before the
# work starts), and `BENCH name_irq_LABEL=N` lines: the interrupts each vector took meanwhile
# (/proc/interrupts, summed over CPUs; LABEL is the vector's name, e.g. virtio2_req_0, or LOC).
phase() { echo "PHASE $1 $2"; sleep 0.5; }
irq_snapshot() {
    awk '{ n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i
           label = ($1 ~ /^[0-9]+:$/) ? $NF : $1; gsub(/[^A-Za-z0-9]/, "_", label); sub(/_$/, "", label)
           if (i > 2) print label, n }' /proc/interrupts >"$1"
}
irq_delta() {
    awk -v p="$1" 'NR == FNR { b[$1] = $2; next }
        { d = $2 - b[$1]; if (d > 0) { printf "%s_irq_%s=%d ", p, $1, d; if ($1 ~ /^virtio/) t += d } }
        END { printf "%s_virtio_irqs=%d\n", p, t }' /tmp/irq.before /tmp/irq.after
}
# bench_phase NAME CMD...: CMD between the phase lines, its output and interrupt counts as BENCH.
bench_phase() {
    local name=$1 out
    shift
    phase "$name" begin
    irq_snapshot /tmp/irq.before
    out=$("$@")
    irq_snapshot /tmp/irq.after
    phase "$name" end
    [ -z "$out" ] || echo "BENCH $out"
    echo "BENCH $(irq_delta "$name")"
}
fs_read() {
    local start
    start=$(now_ms)
    cp -a /share/tree /tmp/tree
    echo "fs_tree_read_ms=$(($(now_ms) - start))"
}
fs_write() {
    local start
    start=$(now_ms)
    rm -rf /share/tree-copy && cp -a /tmp/tree /share/tree-copy && sync
    echo "fs_tree_write_ms=$(($(now_ms) - start))"
}

if grep -q 'bed_mode=bench' /proc/cmdline; then
    # What the driver negotiated and the vectors it set up (same for every phase).
    for d in /sys/bus/virtio/devices/virtio*; do
        n=${d##*virtio}
        echo "BENCH feat_virtio${n}_id$(($(cat "$d/device"))) features=0x$(awk '{
            h = ""; for (i = 1; i <= length($0); i += 4) {
                v = substr($0, i, 1) + 2 * substr($0, i + 1, 1) + 4 * substr($0, i + 2, 1) + 8 * substr($0, i + 3, 1)
                h = substr("0123456789abcdef", v + 1, 1) h }
            print h }' "$d/features")"
    done
    echo "BENCH vdb_nr_requests=$(cat /sys/block/vdb/queue/nr_requests) vdb_hw_queues=$(ls /sys/block/vdb/mq | wc -l) vdb_tags=$(cat /sys/block/vdb/mq/0/nr_tags)"
    # What else the guest runs on: clock, timer, idle driver, CPU flags.
    echo "BENCH-DIAG clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) clockevent=$(cat /sys/devices/system/clockevents/clockevent0/current_device 2>/dev/null) cpuidle=$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null)"
    echo "BENCH-DIAG cpuflags $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)"
    grep -E 'virtio' /proc/interrupts | awk '{print "BENCH-DIAG irq-vector", $1, $(NF-1), $NF}'
    bench_phase seqwrite sh -c 'bed-io seqwrite /dev/vdb 64 | cut -d" " -f1'
    bench_phase seqread sh -c 'bed-io seqread /dev/vdb 64 | cut -d" " -f1'
    bench_phase randread bed-io randread /dev/vdb 5
    bench_phase fsread fs_read
    bench_phase fswrite fs_write
    rm -rf /share/tree-copy
    bench_phase vsock bed-io vsock-ping 2 5002 2000
    exit 0
fi

check root_on_vda 0 '^/dev/vda / ext4 rw' cat /proc/mounts
# One request queue per vCPU (QEMU's num-queues default, ours too): blk-mq's hardware queues.
check blk_queue_per_vcpu 0 "^$(grep -c ^processor /proc/cpuinfo)\$" sh -c 'ls /sys/block/vda/mq | wc -l'
check root_writable 0 '^written$' sh -c 'echo written >/written && sync && cat /written'
check virtiofs_mounted 0 '^share /share virtiofs' cat /proc/mounts
check fs_reads_l1 0 'hello from L1' cat /share/from-l1
check fs_writes_for_l1 0 '' sh -c 'echo "hello from L2" >/share/from-l2'
# L1 connects to this listener through vhost-device-vsock's UDS once it reads the line below.
bed-io vsock-listen 5000 "hello from L2 over vsock" &
listener=$!
check vsock_l2_to_l1 0 'hello from L1 over vsock' bed-io vsock-connect 2 5001
# (Debian's busybox-static wget crashes in its static glibc resolver: HTTP by hand with nc.)
check net_http_from_l1 0 'hello over the network' sh -c \
    "printf 'GET /hello HTTP/1.0\r\n\r\n' | nc -w 30 10.0.2.1 8080"
# A driver reset and a second session: unbinding virtio_net resets the device (status 0; our VMM
# then detaches the TAP from vhost-net and reads the ring bases back), binding it again sets up
# fresh rings on the same TAP.
check net_after_driver_reset 0 'hello over the network' sh -c '
    dev=$(basename "$(readlink /sys/class/net/eth0/device)") &&
    echo "$dev" >/sys/bus/virtio/drivers/virtio_net/unbind &&
    echo "$dev" >/sys/bus/virtio/drivers/virtio_net/bind &&
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
    printf "GET /hello HTTP/1.0\r\n\r\n" | nc -w 30 10.0.2.1 8080'
wait_bounded $listener 60
check vsock_l1_connected 0 '' test $? = 0
check blk_scratch_direct_io 0 '^4\+0 records out' sh -c \
    'dd if=/dev/zero of=/dev/vdb bs=1M count=4 oflag=direct 2>&1 && dd if=/dev/vdb of=/dev/null bs=1M count=4 iflag=direct 2>&1'

# The generic device: vhost-device-rng (virtio id 4) behind /dev/hwrng; hwrng_first_read (lib.sh)
# steps around that backend's lost first request, reporting it as a FACT.
check hwrng_is_virtio 0 'virtio_rng' cat /sys/class/misc/hw_random/rng_current
hwrng_first_read
check hwrng_reads 0 '^16$' hwrng_read
check no_oops 1 '' sh -c "dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|general protection'"
echo "FACT dmesg warnings: $(dmesg -r 2>/dev/null | grep -c '^<[0-4]>')"
dmesg -r 2>/dev/null | grep '^<[0-4]>' | head -n 10
exit 0
