# Where an L2 Linux boot's time goes (docs/boot-time.md): boots L2 in our VMM (and, with
# VMM=ours,qemu, in QEMU microvm too) ROUNDS times, each time twice: once with `--stats` ending
# right at /init (`BOOT-PROFILE vmm MS_TO_INIT` and the `vmm-stats:` line with the exits by kind
# and port/address, and `KVM-STATS` with the exits L1's KVM counted, nested page faults
# included), once with `initcall_debug printk.time=1` (quiet kept) printing L2's kernel
# log with its timestamps (`DMESG ` lines: everything but initcalls under DMESG_MIN_US).
#   scripts/nested-kvm.sh run tests/nested/boot-profile [--vmlinux --arg KERNEL=vmlinux]
#       [--arg CPUS=2] [--arg MEMORY=1G] [--arg CMDLINE_EXTRA=...] [--arg VMM=ours,qemu]
#       [--arg MODES=stats] [--arg EXIT_BENCH=1]
# VMM lists what boots, alternated: `ours` (vmm), `qemu`, or NAME for a binary `vmm-NAME` shipped
# with --binary (e.g. `--binary target/old/vmm:/usr/local/bin/vmm-before --arg VMM=before,ours`
# compares two builds in one L1).
. ../lib.sh
KERNEL=${KERNEL:-vmlinuz}
CPUS=${CPUS:-1}
MEMORY=${MEMORY:-256M}
ROUNDS=${ROUNDS:-1}
VMM=${VMM:-ours}
MODES=${MODES:-stats dmesg}
DMESG_MIN_US=${DMESG_MIN_US:-2000}
CMDLINE="console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA"

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# L1's KVM counts every exit, including those KVM handles itself and our --stats never sees
# (nested page faults: pf_fixed; exits in total). kvm_stats prints them, as one line.
mount -t debugfs none /sys/kernel/debug 2>/dev/null
KVM_STATS="exits pf_fixed pf_taken io_exits mmio_exits irq_exits halt_exits insn_emulation"
kvm_stats() {
    local name
    for name in $KVM_STATS; do
        printf '%s=%s ' "$name" "$(cat /sys/kernel/debug/kvm/$name 2>/dev/null || echo 0)"
    done
}

# boot WHO MODE CMDLINE: one boot; prints the time to L2-READY and what L2 and the VMM said.
boot() {
    local who=$1 mode=$2 cmdline="$3 profile=$2" start ready pid bin before
    case $who in
        qemu) set -- qemu-system-x86_64 -M microvm -accel kvm -cpu host -m "$MEMORY" -smp "$CPUS" \
            -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
            -kernel "/l2/$KERNEL" -initrd /l2/initrd.gz -append "$cmdline" ;;
        *) [ "$who" = ours ] && bin=vmm || bin=vmm-$who
            set -- "$bin" --stats --kernel "/l2/$KERNEL" --initrd /l2/initrd.gz --memory "$MEMORY" \
                --cpus "$CPUS" --cmdline "$cmdline" ;;
    esac
    before=$(kvm_stats)
    start=$(now_ms)
    timeout 300 "$@" </dev/null >/tmp/boot.log 2>&1 &
    pid=$!
    wait_l2_ready /tmp/boot.log $pid
    ready=$(now_ms)
    wait $pid
    # The VM's own share of L1 KVM's counters (the boot and its power-off).
    echo "KVM-STATS $who $mode $(echo "$before $(kvm_stats)" | tr ' ' '\n' | awk -F= '
        NF == 2 { if ($1 in a) printf "%s=%d ", $1, $2 - a[$1]; else a[$1] = $2 }')"
    if grep -q L2-READY /tmp/boot.log; then
        echo "BOOT-PROFILE $who $mode $KERNEL cpus=$CPUS memory=$MEMORY $((ready - start)) ms"
    else
        echo "BOOT-FAILED $who $mode"; tail -n 30 /tmp/boot.log
    fi
    tr -d '\r' </tmp/boot.log | grep -E '^(vmm-stats:|DMESG )' || true
}

# EXIT_BENCH=1: what one exit costs on this bed, through our dispatch and answered in the vCPU
# thread (`EXIT-BENCH dispatch|bare ...`), alternated twice.
if [ "${EXIT_BENCH:-0}" = 1 ]; then
    for _ in 1 2; do
        echo "EXIT-BENCH dispatch $(vmm --guest builtin:exit_bench 2>&1 | grep -o '[a-z_]*exits_per_sec=[0-9.]*' | tr '\n' ' ')"
        echo "EXIT-BENCH bare $(vmm --guest builtin:exit_bench --bench-bare-exits 2>&1 | grep -o '[a-z_]*exits_per_sec=[0-9.]*' | tr '\n' ' ')"
    done
fi

for _ in $(seq "$ROUNDS"); do
    for who in ${VMM//,/ }; do
        for mode in ${MODES//,/ }; do
            case $mode in
                stats) boot "$who" stats "$CMDLINE" ;;
                dmesg) boot "$who" dmesg "$CMDLINE initcall_debug printk.time=1 dmesg_min_us=$DMESG_MIN_US" ;;
            esac
        done
    done
done
exit 0
