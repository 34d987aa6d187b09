# Stock Linux virtio drivers over ivshmem in our VMM: L2 Linux (our VMM inside L1) loads
# ivshmem.ko and virtio_ivshmem.ko for our ivshmem-doorbell device; the server, vhost-bridge and
# vhost-device-rng run here in L1. L2's checks are the QEMU scenario's
# (tests/nested/linux-virtio/virtio.sh, run by l2.sh); when L2 writes RESTART at its marker we
# kill the bridge and start another while L2 reads /dev/hwrng.
. ../lib.sh
MARK=8323072
# The console backend's host side is on TCP loopback, which L1's /init leaves down.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

ivshmem-server -F -S /tmp/sock -l 8M -n 8 2>/tmp/server.log &
server=$!
wait_for /tmp/server.log 'listening' 10
vhost-device-rng --socket-path /tmp/rng.sock >/tmp/rng.log 2>&1 &
rng=$!
for i in $(seq 100); do [ -S /tmp/rng.sock0 ] && break; sleep 0.1; done
start_bridge() {
    RUST_LOG=info vhost-bridge -S /tmp/sock --backend /tmp/rng.sock0 --device entropy \
        >"/tmp/bridge$1.log" 2>&1 &
    bridge=$!
    wait_for "/tmp/bridge$1.log" 'serving virtio device' 30
}
start_bridge 0
# The second device in the same memory: vsock at 0x200000, its host side an echo on port 1234.
vsock_echo serve-uds /tmp/vm.vsock_1234 >/tmp/echo.log 2>&1 &
vhost-device-vsock --vm guest-cid=3,socket=/tmp/vsock.sock,uds-path=/tmp/vm.vsock >/tmp/vsock.log 2>&1 &
for i in $(seq 100); do [ -S /tmp/vsock.sock ] && break; sleep 0.1; done
RUST_LOG=info vhost-bridge -S /tmp/sock --backend /tmp/vsock.sock --device 19 --queues 3 \
    --config-size 8 --header 0x200000 >/tmp/vsock-bridge.log 2>&1 &
wait_for /tmp/vsock-bridge.log 'serving virtio device' 30
# The third: a console at 0x400000 (when the test shipped vhost-device-console); its host side
# a TCP client that answers the guest's line.
if command -v vhost-device-console >/dev/null; then
    vhost-device-console -s /tmp/console.sock -b network -p 12345 >/tmp/console.log 2>&1 &
    for i in $(seq 100); do [ -S /tmp/console.sock0 ] && break; sleep 0.1; done
    RUST_LOG=info vhost-bridge -S /tmp/sock --backend /tmp/console.sock0 --device 3 \
        --config-size 12 --header 0x400000 >/tmp/console-bridge.log 2>&1 &
    wait_for /tmp/console-bridge.log 'serving virtio device' 30
    mkfifo /tmp/con-in
    nc 127.0.0.1 12345 </tmp/con-in >/tmp/con-out 2>&1 &
    exec 5>/tmp/con-in
    (wait_for /tmp/con-out 'hello from hvc0' 900 && echo 'hello to hvc0' >&5) &
fi

marker() { dd if=/dev/shm/ivshmem bs=1 skip=$MARK count=7 2>/dev/null | tr -d '\0'; }

# The restarter: waits for L2's RESTART, then replaces the bridge (and the backend, if it left
# with its frontend).
(
    for i in $(seq 6000); do [ "$(marker)" = RESTART ] && break; sleep 0.1; done
    [ "$(marker)" = RESTART ] || exit 1
    kill $bridge
    sleep 0.2
    if ! kill -0 $rng 2>/dev/null; then
        rm -f /tmp/rng.sock0
        vhost-device-rng --socket-path /tmp/rng.sock >/tmp/rng1.log 2>&1 &
        for i in $(seq 100); do [ -S /tmp/rng.sock0 ] && break; sleep 0.1; done
    fi
    start_bridge 1
    echo restarted >/tmp/restarted
    # Then for good, when L2 asks.
    for i in $(seq 6000); do [ "$(marker)" = KILL ] && break; sleep 0.1; done
    [ "$(marker)" = KILL ] || exit 1
    kill $bridge
    echo killed >/tmp/killed
) &
restarter=$!

timeout 900 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory 512M \
    --cmdline 'console=ttyS0 quiet panic=-1' \
    --ivshmem doorbell,socket=/tmp/sock,vectors=8 </dev/null 2>&1 | tee /tmp/l2.log
wait_bounded $restarter 30
check l2_ran 0 'L2-EXIT 0' cat /tmp/l2.log
[ ! -e /tmp/con-out ] || check host_got_hvc0_line 0 'hello from hvc0' cat /tmp/con-out
check bridge_restarted 0 'restarted' cat /tmp/restarted
check bridge_killed 0 'killed' cat /tmp/killed
sed 's/^/VSOCK-BRIDGE /' /tmp/vsock-bridge.log | tail -n 20
sed 's/^/CONSOLE-BRIDGE /' /tmp/console-bridge.log 2>/dev/null | tail -n 20
sed 's/^/CONSOLE-TCP /' /tmp/con-out 2>/dev/null | tail -n 5
sed 's/^/BRIDGE0 /' /tmp/bridge0.log | tail -n 20
sed 's/^/BRIDGE1 /' /tmp/bridge1.log 2>/dev/null | tail -n 20
kill $server
exit 0
