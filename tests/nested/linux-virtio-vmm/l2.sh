# In L2 (Linux in our VMM): the stock virtio-rng driver over our ivshmem-doorbell device
# (ivshmem0), the bridge and backend in L1. The checks: tests/nested/linux-virtio/virtio.sh.
. /lib.sh
. /virtio.sh
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
