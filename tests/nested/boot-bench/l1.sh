# Boot time and memory of our VMM against QEMU (microvm, -accel kvm) and, when the L1 carries
# them, firecracker and cloud-hypervisor, on the same ordinary KVM: same kernel, initramfs, memory
# and command line; alternated ROUNDS times per configuration. Prints one line per boot:
# `BOOT CONFIG WHO MS_TO_INIT RSS_KIB` (process start to L2's /init; resident memory then), with
# CONFIG = KERNEL:CPUS:MEMORY. Run by scripts/bench.sh, which ships QEMU (--binary, --file) and
# the peers given by $FIRECRACKER / $CLOUD_HYPERVISOR (--binary ...:/usr/local/bin/NAME).
#   CONFIGS=vmlinuz:1:256M,vmlinux:1:256M,vmlinuz:2:256M,vmlinuz:1:1G (default: vmlinuz:1:256M;
#   commas, since --arg values reach l1.sh unquoted; a vmlinux configuration needs --vmlinux)
. ../lib.sh
ROUNDS=${ROUNDS:-3}
CONFIGS=${CONFIGS:-vmlinuz:1:256M}
CMDLINE="console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA"

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# boot_once CONFIG NAME CMD...: starts CMD, waits for L2's /init, samples RSS, then tells L2 (a
# line on its serial console, which every VMM here feeds from its stdin) that it may end, and
# waits for it.
boot_once() {
    local config=$1 name=$2 start ready rss pid
    shift 2
    rm -f /tmp/console-in; mkfifo /tmp/console-in
    exec 3<>/tmp/console-in
    start=$(now_ms)
    "$@" </tmp/console-in >/tmp/boot.log 2>&1 &
    pid=$!
    wait_l2_ready /tmp/boot.log $pid
    ready=$(now_ms)
    # Resident memory from the page tables (smaps), not VmRSS: L1's kernel (6.1) keeps VmRSS in
    # per-thread caches of up to 64 pages each, so a process with many threads (cloud-hypervisor)
    # reads up to a few MB low there (proc(5): "use smaps_rollup if accurate values are required").
    rss=$(awk '/^Rss:/ {print $2}' /proc/$pid/smaps_rollup 2>/dev/null)
    # What that RSS is: the largest mapping (guest RAM; its transparent huge pages) and the rest.
    awk -v who="$name" -v config="$config" -v vmrss="$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status 2>/dev/null)" '
        /^[0-9a-f]+-[0-9a-f]+ / { m++ } /^Rss:/ { rss[m] = $2; total += $2 }
        /^AnonHugePages:/ { huge[m] = $2 }
        END { for (i in rss) if (rss[i] > rss[big]) big = i
              print "RSS-SPLIT", config, who, "largest_mapping_kib=" rss[big], "its_thp_kib=" huge[big] + 0,
                  "rest_kib=" total - rss[big], "vmrss_kib=" vmrss }' /proc/$pid/smaps 2>/dev/null
    # What the boot made L1's KVM do for this VM (debugfs, summed over its vCPUs): exits that
    # reach the VMM (io, mmio) against those KVM handles itself (faults, halts, interrupts).
    echo "BOOT-EXITS $config $name $(kvm_exits "$pid" exits io_exits mmio_exits halt_exits \
        halt_wakeup irq_exits irq_window_exits irq_injections insn_emulation pf_taken pf_fixed \
        hypercalls)"
    echo sampled >&3
    # How long the VMM took to end after L2 was told to power off. QEMU microvm does not end on
    # it (measured: 272 s, until `timeout` stopped it, five minutes of every round), so the wait
    # is bounded: what is measured was sampled above.
    wait_bounded "$pid" 20 || true
    echo "BOOT-END $config $name $(( $(now_ms) - ready ))"
    exec 3>&-
    if grep -q L2-READY /tmp/boot.log; then
        echo "BOOT $config $name $((ready - start)) ${rss:-0}"
    else
        echo "BOOT-FAILED $config $name"; tail -n 20 /tmp/boot.log
    fi
}

# firecracker_config KERNEL CPUS MIB: firecracker's --config-file for this boot (it loads only
# ELF kernels on x86; its serial console is its stdin/stdout).
firecracker_config() {
    cat >/tmp/firecracker.json <<EOF
{"boot-source": {"kernel_image_path": "$1", "initrd_path": "/l2/initrd.gz", "boot_args": "$CMDLINE"},
 "drives": [], "machine-config": {"vcpu_count": $2, "mem_size_mib": $3}}
EOF
}

mib() { case $1 in *G) echo $((${1%G} * 1024)) ;; *M) echo "${1%M}" ;; *) echo "$1" ;; esac; }

for config in ${CONFIGS//,/ }; do
    kernel=/l2/${config%%:*}
    rest=${config#*:}
    cpus=${rest%%:*}
    memory=${rest#*:}
    if [ ! -f "$kernel" ]; then
        echo "BOOT-FAILED $config all: no $kernel (nested-kvm.sh --vmlinux)"
        continue
    fi
    for _ in $(seq "$ROUNDS"); do
        boot_once "$config" vmm timeout 300 vmm --kernel "$kernel" --initrd /l2/initrd.gz \
            --memory "$memory" --cpus "$cpus" --cmdline "$CMDLINE"
        boot_once "$config" qemu timeout 300 qemu-system-x86_64 -M microvm -accel kvm -cpu host \
            -m "$memory" -smp "$cpus" -nodefaults -no-user-config -nographic -serial stdio \
            -no-reboot -kernel "$kernel" -initrd /l2/initrd.gz -append "$CMDLINE"
        if command -v firecracker >/dev/null && [ "${kernel##*/}" = vmlinux ]; then
            firecracker_config "$kernel" "$cpus" "$(mib "$memory")"
            rm -f /tmp/firecracker.sock
            boot_once "$config" firecracker timeout 300 firecracker --no-api --no-seccomp \
                --config-file /tmp/firecracker.json --api-sock /tmp/firecracker.sock
        fi
        if command -v cloud-hypervisor >/dev/null; then
            boot_once "$config" cloud-hypervisor timeout 300 cloud-hypervisor --kernel "$kernel" \
                --initramfs /l2/initrd.gz --cmdline "$CMDLINE" --cpus "boot=$cpus" \
                --memory "size=$memory" --serial tty --console off
        fi
    done
done
exit 0
