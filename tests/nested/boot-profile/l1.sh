# Where an L2 Linux boot's time goes (docs/boot-time.md): boots L2 in our VMM (and, with
# VMM=ours,qemu, in QEMU microvm too) ROUNDS times, each time twice: once with `--stats` ending
# right at /init (`BOOT-PROFILE vmm MS_TO_INIT` and the `vmm-stats:` line with the exits by kind
# and port/address), once with `initcall_debug printk.time=1` (quiet kept) printing L2's kernel
# log with its timestamps (`DMESG ` lines: everything but initcalls under DMESG_MIN_US).
#   scripts/nested-kvm.sh run tests/nested/boot-profile [--vmlinux --arg KERNEL=vmlinux]
#       [--arg CPUS=2] [--arg MEMORY=1G] [--arg CMDLINE_EXTRA=...] [--arg VMM=ours,qemu]
#       [--arg MODES=stats] [--arg EXIT_BENCH=1]   (with `qemu` in VMM: --qemu, the host's QEMU)
# VMM lists what boots, alternated: `ours` (vmm), `qemu`, `firecracker` or `cloud-hypervisor`
# (shipped with --binary PATH:/usr/local/bin/NAME; MEMORY in M), or NAME for a binary `vmm-NAME` shipped
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

# wait_until_still LOG PID: waits for a peer VMM to end; QEMU microvm, firecracker and
# cloud-hypervisor do not end on L2's power-off (they would hold every boot for timeout's 300 s),
# so once LOG has not grown for 5 s, L2 has said everything and PID is stopped.
wait_until_still() {
    local log=$1 pid=$2 size=-1 still=0 now
    while kill -0 "$pid" 2>/dev/null; do
        now=$(stat -c %s "$log" 2>/dev/null || echo 0)
        if [ "$now" = "$size" ]; then
            still=$((still + 1))
            if [ "$still" -ge 10 ]; then kill -TERM "$pid" 2>/dev/null; break; fi
        else
            still=0 size=$now
        fi
        sleep 0.5
    done
    wait "$pid" 2>/dev/null || true
}

# boot WHO MODE CMDLINE: one boot; prints the time to L2-READY and what L2 and the VMM said.
boot() {
    local who=$1 mode=$2 cmdline="$3 profile=$2" start ready pid bin
    case $who in
        qemu) set -- qemu-system-x86_64 -M microvm -accel kvm -cpu host -m "$MEMORY" -smp "$CPUS" \
            -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
            -kernel "/l2/$KERNEL" -initrd /l2/initrd.gz -append "$cmdline" ;;
        # Peers shipped with --binary ...:/usr/local/bin/NAME (built as BENCHMARKS.md says);
        # no --stats there, only the kernel's own timeline (MODES=dmesg).
        firecracker)
            cat >/tmp/firecracker.json <<EOF
{"boot-source": {"kernel_image_path": "/l2/$KERNEL", "initrd_path": "/l2/initrd.gz", "boot_args": "$cmdline"},
 "drives": [], "machine-config": {"vcpu_count": $CPUS, "mem_size_mib": ${MEMORY%M}}}
EOF
            rm -f /tmp/firecracker.sock
            set -- firecracker --no-api --no-seccomp --config-file /tmp/firecracker.json \
                --api-sock /tmp/firecracker.sock ;;
        cloud-hypervisor) set -- cloud-hypervisor --kernel "/l2/$KERNEL" --initramfs /l2/initrd.gz \
            --cmdline "$cmdline" --cpus "boot=$CPUS" --memory "size=$MEMORY" --serial tty --console off ;;
        *) [ "$who" = ours ] && bin=vmm || bin=vmm-$who
            set -- "$bin" --stats --kernel "/l2/$KERNEL" --initrd /l2/initrd.gz --memory "$MEMORY" \
                --cpus "$CPUS" --cmdline "$cmdline" ;;
    esac
    start=$(now_ms)
    timeout 300 "$@" </dev/null >/tmp/boot.log 2>&1 &
    pid=$!
    wait_l2_ready /tmp/boot.log $pid
    ready=$(now_ms)
    # Our builds end on L2's power-off and print their --stats line then: wait for them.
    if [ -n "$bin" ]; then wait $pid; else wait_until_still /tmp/boot.log $pid; fi
    if grep -q L2-READY /tmp/boot.log; then
        echo "BOOT-PROFILE $who $mode $KERNEL cpus=$CPUS memory=$MEMORY $((ready - start)) ms"
    else
        echo "BOOT-FAILED $who $mode"; tail -n 30 /tmp/boot.log
    fi
    tr -d '\r' </tmp/boot.log | grep -E '^(vmm-stats:|DMESG |CPU )' || true
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
