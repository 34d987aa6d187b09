# L2 (/scenario.sh on the root filesystem, /dev/vda): run by /sbin/init after switch_root, with
# the virtio drivers loaded by the initramfs. bed_mode=test (kernel command line): the checks;
# bed_mode=bench: `BENCH key=value` lines, which L1 prefixes with the VMM's name.
. /lib.sh
export CHECK_TIMEOUT=60
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
mkdir -p /share
mount -t virtiofs share /share
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0

if grep -q 'bed_mode=bench' /proc/cmdline; then
    echo "BENCH $(bed-io seqwrite /dev/vdb 64 | cut -d' ' -f1)"
    echo "BENCH $(bed-io seqread /dev/vdb 64 | cut -d' ' -f1)"
    echo "BENCH $(bed-io randread /dev/vdb 5 | cut -d' ' -f1)"
    start=$(now_ms)
    cp -a /share/tree /tmp/tree
    echo "BENCH fs_tree_read_ms=$(($(now_ms) - start))"
    start=$(now_ms)
    rm -rf /share/tree-copy && cp -a /tmp/tree /share/tree-copy && sync
    echo "BENCH fs_tree_write_ms=$(($(now_ms) - start))"
    rm -rf /share/tree-copy
    echo "BENCH $(bed-io vsock-ping 2 5002 2000 | cut -d' ' -f1)"
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
