# Boot time and memory of our VMM against QEMU (microvm, -accel kvm) on the same ordinary KVM,
# same kernel, initramfs, memory and command line; alternated ROUNDS times. Prints one line per
# boot: `BOOT vmm|qemu MS_TO_INIT RSS_KIB` (process start to L2's /init; resident memory while
# L2 runs). Run by scripts/bench.sh, which needs the L1 to carry QEMU (--binary, --file).
. ../lib.sh
ROUNDS=${ROUNDS:-3}
CMDLINE="console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA"

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# boot_once NAME CMD...: starts CMD, waits for L2's /init, samples RSS, then tells L2 (a line on
# its serial console, which both VMMs feed from their stdin) that it may end, and waits for it.
boot_once() {
    local name=$1 start ready rss pid
    shift
    rm -f /tmp/console-in; mkfifo /tmp/console-in
    exec 3<>/tmp/console-in
    start=$(now_ms)
    "$@" </tmp/console-in >/tmp/boot.log 2>&1 &
    pid=$!
    for _ in $(seq 30000); do
        grep -q L2-READY /tmp/boot.log && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.01
    done
    ready=$(now_ms)
    rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null)
    echo sampled >&3
    wait $pid
    exec 3>&-
    if grep -q L2-READY /tmp/boot.log; then
        echo "BOOT $name $((ready - start)) ${rss:-0}"
    else
        echo "BOOT-FAILED $name"; tail -n 20 /tmp/boot.log
    fi
}

for round in $(seq "$ROUNDS"); do
    boot_once vmm timeout 120 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory 256M \
        --cpus 1 --cmdline "$CMDLINE"
    boot_once qemu timeout 120 qemu-system-x86_64 -M microvm -accel kvm -cpu host -m 256M -smp 1 \
        -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -kernel /l2/vmlinuz -initrd /l2/initrd.gz -append "$CMDLINE"
done
exit 0
