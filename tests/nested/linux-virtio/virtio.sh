# Shared by linux-virtio (L1 Linux on QEMU's ivshmem-doorbell) and linux-virtio-vmm (L2 Linux
# on our VMM's): the stock virtio-rng driver on the virtio_ivshmem transport, a device that a
# vhost-bridge publishes at offset 0 of the shared memory and vhost-device-rng serves.
# Needs: /ivshmem.ko, /virtio_ivshmem.ko, the distribution's modules in /vmods, lib.sh sourced,
# ivshmem-guest-client on PATH. Sets nothing; prints RESULT lines.
# Shared-memory layout (8 MiB): the entropy device's header at 0, a vsock device's at 0x200000
# and a console's at 0x400000, each arena from the header's end (virtio_ivshmem's default: 2 MiB,
# cut at the next header); the guest's step marker at MARK (0x7F0000, outside all of them), for
# a host that restarts the entropy device's bridge.
MARK=8323072
IV=/sys/class/ivshmem/ivshmem0

# until SECONDS CMD...: runs CMD every 0.1 s until it succeeds; fails after SECONDS.
until_ok() {
    local limit=$1 i
    shift
    for i in $(seq $((limit * 10))); do
        out=$("$@" 2>&1) && { printf '%s\n' "$out"; return 0; }
        sleep 0.1
    done
    "$@"
}

# random_bytes N: N bytes from /dev/hwrng; prints how many came and how many distinct values.
random_bytes() {
    head -c "$1" /dev/hwrng >/tmp/rnd || return 1
    echo "bytes=$(wc -c </tmp/rnd) distinct=$(od -An -v -tx1 /tmp/rnd | tr -s ' ' '\n' | grep -v '^$' | sort -u | wc -l)"
}

devices_after_attach() {
    until_ok 60 grep -q virtio $IV/virtio_devices
    cat $IV/virtio_devices
}

rng_current() {
    until_ok 60 grep -q virtio_rng /sys/class/misc/hw_random/rng_current
    cat /sys/class/misc/hw_random/rng_current
}

# attached_times N: waits until the transport registered a device N times (dmesg).
attached_times() {
    until_ok 120 sh -c "[ \$(dmesg | grep -c 'virtio device 4 of peer') -ge $1 ]"
    dmesg | grep -c 'virtio device 4 of peer'
}

# diag WHAT: the header, the marker and blocked tasks, for a failure's diagnosis.
diag() {
    ivshmem-guest-client -d 0 -c "read 0 0x50; read $MARK 16" 2>&1 | sed "s/^/DIAG $1 /"
    for p in /proc/[0-9]*; do
        [ "$(cat $p/comm 2>/dev/null)" = head ] && echo "DIAG $1 head ${p#/proc/} $(cat $p/wchan)"
    done
    dmesg | tail -n 5 | sed "s/^/DIAG $1 /"
}

detached() {
    until_ok 120 sh -c "dmesg | grep -q detaching"
    dmesg | grep detaching
}

# rng_basics: modules in, the device discovered, virtio-rng bound, /dev/hwrng reads.
rng_basics() {
    check insmod_virtio 0 '' sh -c 'insmod /vmods/virtio_ring.ko && insmod /vmods/virtio.ko'
    check insmod_ivshmem 0 '' insmod /ivshmem.ko
    check insmod_transport 0 '' insmod /virtio_ivshmem.ko
    # Discovery finds the bridge's header; the virtio device has no driver yet.
    check header_discovered 0 '^0x0 0x1000 0x1ff000 virtio0' devices_after_attach
    check virtio_device_id 0 '^0x0004$' cat /sys/bus/virtio/devices/virtio0/device
    check insmod_virtio_rng 0 '' insmod /vmods/virtio-rng.ko
    # Negotiated (bit 33 = VIRTIO_F_ACCESS_PLATFORM: buffers go through the bounce arena).
    check virtio_features_access_platform 0 '^.{33}1' cat /sys/bus/virtio/devices/virtio0/features
    check rng_current_is_virtio 0 '^virtio_rng' rng_current
    check hwrng_reads 0 'bytes=4096 distinct=2[0-9][0-9]' random_bytes 4096
    check hwrng_reads_more 0 'bytes=65536 distinct=256' random_bytes 65536
}

# vsock: the stock vsock transport on the second header of the same memory (its three queues
# share one vector: the entropy device took two of our four); the host side echoes port 1234.
vsock() {
    [ -e /vsock.on ] || return 0
    check insmod_vsock 0 '' sh -c 'insmod /vmods/vsock.ko && insmod /vmods/vmw_vsock_virtio_transport_common.ko && insmod /vmods/vmw_vsock_virtio_transport.ko'
    check vsock_header 0 '^0x200000 0x201000 0x1ff000 virtio' sh -c "grep ^0x200000 $IV/virtio_devices"
    check vsock_device_id 0 '^0x0013$' sh -c 'cat /sys/bus/virtio/devices/virtio*/device | grep 0x0013'
    check vsock_echo 0 'reply: hello over vsock through ivshmem' \
        until_ok 60 vsock_echo 2 1234 'hello over vsock through ivshmem'
    check vsock_echo_large 0 "reply: $(printf 'x%.0s' $(seq 3000))" vsock_echo 2 1234 "$(printf 'x%.0s' $(seq 3000))"
    check rng_still_reads 0 'bytes=4096 distinct=2[0-9][0-9]' random_bytes 4096
}

# console: the stock virtio_console on a third header (vhost-device-console's network backend):
# a line out through /dev/hvc0 to the host's TCP client, its answer back in.
console() {
    [ -e /console.on ] || return 0
    check insmod_console 0 '' insmod /vmods/virtio_console.ko
    check console_header 0 '^0x400000 0x401000 0x200000 virtio' sh -c "grep ^0x400000 $IV/virtio_devices"
    check hvc0_appears 0 '' until_ok 60 test -c /dev/hvc0
    rm -f /tmp/hvc.in
    # Held open from here, so the answer cannot come before anyone reads.
    exec 6<>/dev/hvc0
    (head -n 1 <&6 >/tmp/hvc.in 2>&1) &
    check hvc0_writes 0 '' sh -c 'printf "hello from hvc0\n" >&6'
    check hvc0_reads 0 'hello to hvc0' until_ok 60 grep 'hello to hvc0' /tmp/hvc.in
    exec 6>&-
}

# restart_bridge: a reader keeps reading /dev/hwrng while the host side kills the bridge (asked
# by the marker RESTART at MARK) and starts a new one: the transport removes the device (the
# new bridge cleared our claim), registers it again, and the reader carries on or sees an error;
# nothing hangs.
restart_bridge() {
    rm -f /tmp/stop /tmp/reader-ended
    (n=0; while [ ! -e /tmp/stop ]; do
        head -c 64 /dev/hwrng >/dev/null 2>&1 && n=$((n + 1)); echo $n >/tmp/reads; sleep 0.05
    done; touch /tmp/reader-ended) &
    reader=$!
    check reader_started 0 '' until_ok 60 sh -c '[ "$(cat /tmp/reads)" -gt 2 ]'
    check ask_for_restart 0 '' ivshmem-guest-client -d 0 -c "write $MARK RESTART\0"
    check device_removed_on_restart 0 'detaching: (our claim was cleared|the device side reset|the header was withdrawn)' detached
    diag restart
    check device_registered_again 0 '^[2-9]' attached_times 2
    check rng_current_again 0 '^virtio_rng' rng_current
    before=$(cat /tmp/reads)
    check reader_reads_after_restart 0 '' until_ok 120 sh -c "[ \$(cat /tmp/reads) -gt $((before + 5)) ]"
    touch /tmp/stop
    # (kill -0 cannot tell: the reader stays a zombie until we wait for it)
    check reader_stops 0 '' until_ok 60 test -e /tmp/reader-ended
    wait $reader
    check hwrng_reads_after_restart 0 'bytes=4096 distinct=2[0-9][0-9]' random_bytes 4096
    ivshmem-guest-client -d 0 -c "write $MARK DONE\0\0\0\0" >/dev/null
}

# unbind_rebind: the transport follows the ivshmem device away and back.
unbind_rebind() {
    local pci
    pci=$(cat $IV/pci_address)
    check unbind_removes_virtio 0 '' sh -c "echo $pci >/sys/bus/pci/drivers/ivshmem/unbind && ! ls /sys/bus/virtio/devices/ | grep -q virtio"
    check rng_gone_after_unbind 0 '' sh -c '! grep -q virtio_rng /sys/class/misc/hw_random/rng_current'
    check rebind 0 '' sh -c "echo $pci >/sys/bus/pci/drivers/ivshmem/bind"
    check rng_after_rebind 0 '^virtio_rng' rng_current
    check hwrng_reads_after_rebind 0 'bytes=4096 distinct=2[0-9][0-9]' random_bytes 4096
    check rmmod_transport 0 '' rmmod virtio_ivshmem
    check rng_gone_after_rmmod 0 '' sh -c '! grep -q virtio_rng /sys/class/misc/hw_random/rng_current'
    check rmmod_ivshmem 0 '' rmmod ivshmem
}

# dead_bridge: the modules again; the host side kills the entropy device's bridge for good
# (marker KILL) while a reader waits. A VM cannot see a peer leave, so the reader waits
# (killable, not a hung task) until the transport goes: rmmod resets the device, which times out
# (virtio_timeout_ms, 3 s here) and the device is removed all the same; the reader ends.
dead_bridge() {
    check reinsmod 0 '' sh -c 'insmod /ivshmem.ko && insmod /virtio_ivshmem.ko virtio_timeout_ms=3000'
    check rng_after_reinsmod 0 '^virtio_rng' rng_current
    rm -f /tmp/stop /tmp/reader-ended
    (n=0; while [ ! -e /tmp/stop ]; do
        head -c 64 /dev/hwrng >/dev/null 2>&1 && n=$((n + 1)); echo $n >/tmp/reads; sleep 0.05
    done; touch /tmp/reader-ended) &
    reader=$!
    check dead_reader_started 0 '' until_ok 60 sh -c '[ "$(cat /tmp/reads)" -gt 2 ]'
    check ask_for_kill 0 '' ivshmem-guest-client -d 0 -c "write $MARK KILL\0\0\0\0"
    # The reads stop: the bridge is gone and the backend with it.
    check reads_stop 0 '' until_ok 120 sh -c 'a=$(cat /tmp/reads); sleep 2; [ "$(cat /tmp/reads)" = "$a" ]'
    touch /tmp/stop
    check rmmod_with_dead_bridge 0 '' rmmod virtio_ivshmem
    check dead_reader_ends 0 '' until_ok 60 test -e /tmp/reader-ended
    wait $reader
    check rng_gone_after_dead_bridge 0 '' sh -c '! grep -q virtio_rng /sys/class/misc/hw_random/rng_current'
}

finish() {
    check no_oops 1 '' sh -c "dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|general protection|hung_task|blocked for more'"
    check no_arena_exhaustion 1 '' sh -c "dmesg | grep -E 'exhausted'"
    dmesg | grep -iE 'ivshmem|virtio' | sed 's/^/DMESG /'
}
