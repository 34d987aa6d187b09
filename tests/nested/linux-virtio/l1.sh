# Stock Linux virtio drivers over ivshmem in QEMU (L1 is the guest here): QEMU's own
# ivshmem-doorbell on our ivshmem-server outside the bed, where vhost-bridge publishes an entropy
# device served by vhost-device-rng (tests/tests/nested_linux_virtio.rs runs them). L1 loads
# ivshmem.ko and virtio_ivshmem.ko; the stock virtio-rng driver binds and /dev/hwrng reads random
# bytes; the host side restarts the bridge while we read; unbind/rebind and rmmod.
. ../lib.sh
. ./virtio.sh
rng_basics
# Without a working device the rest would only time out, check by check.
if ! grep -q virtio_rng /sys/class/misc/hw_random/rng_current; then
    finish
    exit 0
fi
vsock
console
restart_bridge
unbind_rebind
dead_bridge
finish
exit 0
