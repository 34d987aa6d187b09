# shellcheck shell=dash
# L2 (the initramfs's /scenario.sh): the stock virtio-rng and vsock drivers on whichever transport
# L1 gave this boot (kernel command line bed_dev=pci: QEMU's vhost-user-rng-pci and
# vhost-user-vsock-pci; bed_dev=ivshmem: QEMU's ivshmem-doorbell with virtio_ivshmem.ko, two
# headers served by vhost-bridge). Prints `BENCH key=value` lines, which L1 prefixes with the
# transport: /dev/hwrng bytes/s (bed_rng_secs of 4 KiB reads), 1-byte vsock round trips to an
# echo in L1 (bed_pings), and the virtio/ivshmem interrupts each of them took.
. /lib.sh
export CHECK_TIMEOUT=120
arg() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
dev=$(arg bed_dev)
secs=$(arg bed_rng_secs)
pings=$(arg bed_pings)

# until_ok SECONDS CMD...: CMD every 0.1 s until it succeeds.
until_ok() {
    local limit="$1"
    shift
    for _ in $(seq $((limit * 10))); do "$@" 2>/dev/null && return 0; sleep 0.1; done
    "$@"
}

# irqs: the interrupts taken so far on the devices' vectors (virtio-pci's MSI-X vectors are
# named virtioN-..., ivshmem.ko's ivshmemN-V).
irqs() {
    awk '/virtio|ivshmem/ {for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i} END {print s + 0}' /proc/interrupts
}

if [ "$dev" = ivshmem ]; then
    insmod /ivshmem.ko && insmod /virtio_ivshmem.ko || echo "FACT insmod failed"
fi
until_ok 60 grep -q virtio_rng /sys/class/misc/hw_random/rng_current
echo "FACT rng_current $(cat /sys/class/misc/hw_random/rng_current)"
until_ok 60 sh -c 'ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport/ | grep -q virtio'

# vhost-device-rng 0.1 may lose the first request under QEMU (lib.sh's hwrng_first_read; over
# ivshmem vhost-bridge waits for the backend, so it should not happen there).
hwrng_first_read

# phase NAME begin|end: a console line at which L1 reads KVM's exit counters for this VM; the
# pause lets L1 see the line before the work starts (an idle vCPU costs next to no exits).
phase() { echo "PHASE $1 $2"; sleep 0.5; }
# timer_irqs: local APIC timer interrupts so far (each costs the VM exits of a tick, which the
# per-request exit counts must not be blamed for).
timer_irqs() { awk '$1 == "LOC:" {print $2}' /proc/interrupts; }

phase rng begin
before=$(irqs) ticks=$(timer_irqs)
out=$(bounded 120 bed-io read /dev/hwrng "${secs:-5}" 4096)
echo "BENCH $(printf '%s\n' "$out" | tr ' ' '\n' | grep read_bytes_per_s=)"
echo "BENCH rng_bytes=$(printf '%s\n' "$out" | tr ' ' '\n' | sed -n 's/^bytes=//p') rng_irqs=$(($(irqs) - before)) rng_ticks=$(($(timer_irqs) - ticks))"
phase rng end

phase vsock begin
before=$(irqs) ticks=$(timer_irqs)
out=$(bounded 120 bed-io vsock-ping 2 5002 "${pings:-2000}")
echo "BENCH $(printf '%s\n' "$out" | tr ' ' '\n' | grep vsock_rtt_us=)"
echo "BENCH vsock_rounds=$(printf '%s\n' "$out" | tr ' ' '\n' | sed -n 's/^rounds=//p') vsock_irqs=$(($(irqs) - before)) vsock_ticks=$(($(timer_irqs) - ticks))"
phase vsock end
grep -E 'virtio|ivshmem' /proc/interrupts | sed 's/^/IRQ /'
# A vCPU starved by a loaded host shows as soft lockups and RCU stalls (each with a Call
# Trace): reported, not counted as problems of the drivers.
echo "FACT starvation reports: $(dmesg | grep -c -E 'soft lockup|rcu.*stall')"
dmesg | grep -E 'BUG|Oops|WARNING|general protection|exhausted' | grep -v 'soft lockup' |
    sed 's/^/DMESG-PROBLEM /'
exit 0
