# Where an L2 Linux boot's time goes (docs/boot-time.md): boots L2 in our VMM (and, with
# VMM=ours,qemu, in QEMU microvm too) ROUNDS times, each time twice: once with `--stats` ending
# right at /init (`BOOT-PROFILE vmm MS_TO_INIT` and the `vmm-stats:` line with the exits by kind
# and port/address), once with `initcall_debug printk.time=1` (quiet kept) printing L2's kernel
# log with its timestamps (`DMESG ` lines: everything but initcalls under DMESG_MIN_US).
#   scripts/nested-kvm.sh run tests/nested/boot-profile [--vmlinux --arg KERNEL=vmlinux]
#       [--arg CPUS=2] [--arg MEMORY=1G] [--arg CMDLINE_EXTRA=...] [--arg VMM=ours,qemu]
. ../lib.sh
KERNEL=${KERNEL:-vmlinuz}
CPUS=${CPUS:-1}
MEMORY=${MEMORY:-256M}
ROUNDS=${ROUNDS:-1}
VMM=${VMM:-ours}
DMESG_MIN_US=${DMESG_MIN_US:-2000}
CMDLINE="console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA"

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# boot WHO MODE CMDLINE: one boot; prints the time to L2-READY and what L2 and the VMM said.
boot() {
    local who=$1 mode=$2 cmdline="$3 profile=$2" start ready pid
    case $who in
        ours) set -- vmm --stats --kernel "/l2/$KERNEL" --initrd /l2/initrd.gz --memory "$MEMORY" \
            --cpus "$CPUS" --cmdline "$cmdline" ;;
        qemu) set -- qemu-system-x86_64 -M microvm -accel kvm -cpu host -m "$MEMORY" -smp "$CPUS" \
            -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
            -kernel "/l2/$KERNEL" -initrd /l2/initrd.gz -append "$cmdline" ;;
    esac
    start=$(now_ms)
    timeout 300 "$@" </dev/null >/tmp/boot.log 2>&1 &
    pid=$!
    for _ in $(seq 30000); do
        grep -q L2-READY /tmp/boot.log && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.01
    done
    ready=$(now_ms)
    wait $pid
    if grep -q L2-READY /tmp/boot.log; then
        echo "BOOT-PROFILE $who $mode $KERNEL cpus=$CPUS memory=$MEMORY $((ready - start)) ms"
    else
        echo "BOOT-FAILED $who $mode"; tail -n 30 /tmp/boot.log
    fi
    tr -d '\r' </tmp/boot.log | grep -E '^(vmm-stats:|DMESG )' || true
}

for _ in $(seq "$ROUNDS"); do
    for who in ${VMM//,/ }; do
        boot "$who" stats "$CMDLINE"
        boot "$who" dmesg "$CMDLINE initcall_debug printk.time=1 dmesg_min_us=$DMESG_MIN_US"
    done
done
exit 0
