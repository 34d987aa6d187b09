# Boot time and memory of our VMM against QEMU (microvm, -accel kvm) and, when the L1 carries
# them, firecracker and cloud-hypervisor, on the same ordinary KVM: same kernel, initramfs, memory
# and command line; alternated ROUNDS times per configuration. Prints one line per boot:
# `BOOT CONFIG WHO MS_TO_INIT RSS_KIB` (process start to L2's /init; resident memory then), with
# CONFIG = KERNEL:CPUS:MEMORY. Run by scripts/bench.sh, which ships QEMU (--qemu) and
# the peers given by $FIRECRACKER / $CLOUD_HYPERVISOR (--binary ...:/usr/local/bin/NAME).
#   CONFIGS=vmlinuz:1:256M,vmlinux:1:256M,vmlinuz:2:256M,vmlinuz:1:1G (default: vmlinuz:1:256M;
#   commas, since --arg values reach l1.sh unquoted; a vmlinux configuration needs --vmlinux)
#   TRACE=1 (by hand, not for bench.sh: tracing costs time) also splits each boot with L1's ftrace
#   (docs/boot-time.md): `BOOT-TRACE CONFIG WHO setup_ms=` (the VMM's exec to its first entry
#   into the guest: loading the kernel, memory, devices) `run_ms=` (from there to L2's /init)
#   `userspace_exit_ms=` (the vCPU thread in the VMM between a userspace exit and the next entry)
#   `vcpu_preempted_ms=` (the vCPU thread runnable but not running) `entries=` (= exits + 1).
#   PIN=CPUS runs every VMM under `taskset -c CPUS` (L1's CPU numbers; default: not pinned).
#   WARMUP=0 skips the untimed first boot (`BOOT CONFIG warmup ...`, ours, the first
#   configuration): the first L2 boot in a fresh L1 ran 25-40% faster than every later one
#   (3.62, 3.65 and 3.84 s against 4.2-7.0 s in three runs, 2026-12-06), whichever VMM it is:
#   TCG's state, not the VMM. Without it, the first configuration's first VMM gets that edge.
#   SETTLE=1 compacts L1's memory before every boot, so that each VMM's guest starts from the
#   same supply of free 2 MiB blocks (docs/boot-time.md).
# Every boot also prints `BOOT-L1MEM CONFIG WHO free_2m_blocks=` (before it) and L1's huge-page
# and compaction counters over it (`thp_fault_alloc=`, `thp_fault_fallback=`, `compact_stall=`):
# L1 backs each first touch of guest RAM with a transparent huge page, zeroed under TCG.
. ../lib.sh
ROUNDS=${ROUNDS:-3}
CONFIGS=${CONFIGS:-vmlinuz:1:256M}
TRACE=${TRACE:-0}
SETTLE=${SETTLE:-0}
PIN=${PIN:-}
WARMUP=${WARMUP:-1}
CMDLINE="console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA"
T=/sys/kernel/debug/tracing

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# trace_start: L1's ftrace from now on: process starts, scheduling, entries into L2, userspace
# exits (cleared first).
trace_start() {
    local e
    echo 16384 >$T/buffer_size_kb
    echo >$T/trace
    for e in sched/sched_process_exec sched/sched_switch kvm/kvm_entry kvm/kvm_userspace_exit; do
        echo 1 >$T/events/$e/enable
    done
    echo 1 >$T/tracing_on
}

# trace_summary CONFIG WHO: the BOOT-TRACE line of the boot traced since trace_start, whose end
# is the L2-READY mark. The VMM's start is the first exec that is not busybox's `timeout` (which
# runs as /proc/self/exe); its vCPU is the thread of the first entry. Task names may hold spaces
# (firecracker's "fc_vcpu 0"): the pid follows the last '-' before the "[cpu]" field.
trace_summary() {
    awk -v config="$1" -v who="$2" '
        /^#/ { next }
        { for (i = 2; i <= NF; i++) if ($i ~ /^\[[0-9]+\]$/) break
          task = $1; for (j = 2; j < i; j++) task = task " " $j
          pid = task; sub(/.*-/, "", pid)
          t = $(i + 2); sub(/:$/, "", t); t += 0; ev = $(i + 3) }
        ev == "sched_process_exec:" && exec0 == "" && !/filename=\/proc\/self\/exe/ &&
            !/filename=[^ ]*\/timeout / && !/filename=[^ ]*\/taskset / { exec0 = t }
        ev == "kvm_entry:" {
            if (vcpu == "") { vcpu = pid; entry0 = t }
            if (user != "") { user_s += t - user; user = "" }
            entries++ }
        ev == "kvm_userspace_exit:" && pid == vcpu { user = t }
        ev == "sched_switch:" && vcpu != "" {
            if ($0 ~ ("prev_pid=" vcpu " ") && $0 ~ /prev_state=R/) off = t
            if ($0 ~ ("next_pid=" vcpu " ") && off != "") { preempted_s += t - off; off = "" } }
        ev == "tracing_mark_write:" && /L2-READY/ { ready = t }
        END { if (exec0 == "" || entry0 == "" || ready == "") { print "BOOT-TRACE-FAILED", config, who; exit }
              printf "BOOT-TRACE %s %s setup_ms=%d run_ms=%d userspace_exit_ms=%d vcpu_preempted_ms=%d entries=%d\n",
                  config, who, (entry0 - exec0) * 1000, (ready - entry0) * 1000, user_s * 1000,
                  preempted_s * 1000, entries }' $T/trace
}

# free_2m_blocks: L1's free blocks of 2 MiB or more, counted in 2 MiB (buddyinfo's orders 9, 10).
free_2m_blocks() { awk '{ n += $(NF - 1) + 2 * $NF } END { print n }' /proc/buddyinfo; }

# vmstat_of NAME...: those counters of /proc/vmstat, as NAME=VALUE words (in /proc/vmstat's order).
vmstat_of() { awk -v names=" $* " 'index(names, " " $1 " ") { printf "%s=%s ", $1, $2 }' /proc/vmstat; }

# boot_once CONFIG NAME CMD...: starts CMD, waits for L2's /init, samples RSS, then tells L2 (a
# line on its serial console, which every VMM here feeds from its stdin) that it may end, and
# waits for it.
boot_once() {
    local config=$1 name=$2 start ready rss pid
    shift 2
    rm -f /tmp/console-in; mkfifo /tmp/console-in
    exec 3<>/tmp/console-in
    if [ "$SETTLE" = 1 ]; then
        echo 1 >/proc/sys/vm/compact_memory
        sleep 1
    fi
    local before
    before=$(vmstat_of thp_fault_alloc thp_fault_fallback compact_stall)
    echo "BOOT-L1MEM $config $name free_2m_blocks=$(free_2m_blocks)"
    [ "$TRACE" != 1 ] || trace_start
    [ -z "$PIN" ] || set -- taskset -c "$PIN" "$@"
    start=$(now_ms)
    "$@" </tmp/console-in >/tmp/boot.log 2>&1 &
    pid=$!
    wait_l2_ready /tmp/boot.log $pid
    ready=$(now_ms)
    # L1's counters over the boot (to /init): what backing the guest's first touches cost.
    echo "BOOT-L1MEM $config $name over_boot $(awk -v b="$before" \
        -v a="$(vmstat_of thp_fault_alloc thp_fault_fallback compact_stall)" 'BEGIN {
            n = split(b, x, " "); split(a, y, " ")
            for (i = 1; i <= n; i++) { split(x[i], p, "="); split(y[i], q, "="); printf "%s=%d ", p[1], q[2] - p[2] } }')"
    if [ "$TRACE" = 1 ]; then
        echo L2-READY >$T/trace_marker
        echo 0 >$T/tracing_on
    fi
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
    # is bounded: what is measured was sampled above. 5 s: ours ends in under 0.5 s, and
    # firecracker (it ends on a reboot) and cloud-hypervisor never ended within 20 s either.
    wait_bounded "$pid" 5 || true
    echo "BOOT-END $config $name $(( $(now_ms) - ready ))"
    [ "$TRACE" != 1 ] || trace_summary "$config" "$name"
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

first=${CONFIGS%%,*}
if [ "$WARMUP" = 1 ] && [ -f "/l2/${first%%:*}" ]; then
    rest=${first#*:}
    boot_once "$first" warmup timeout 300 vmm --kernel "/l2/${first%%:*}" --initrd /l2/initrd.gz \
        --memory "${rest#*:}" --cpus "${rest%%:*}" --cmdline "$CMDLINE"
fi
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
