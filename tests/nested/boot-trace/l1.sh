# Where a boot's wall time goes, VMM by VMM, from L1's own tracer (docs/boot-time.md): boots L2
# (ELF vmlinux, 1 vCPU, 256 MiB, boot-bench's command line) in each VMM of VMMS, alternated
# ROUNDS times, with L1's ftrace recording process starts, scheduling and every entry into L2.
# Prints per boot `BOOT-TRACE WHO setup_ms=` (the VMM's exec to its first KVM_RUN entering the
# guest: loading, memory, devices) `run_ms=` (from there to L2's /init) `userspace_exit_ms=`
# (the vCPU thread in the VMM between a userspace exit and the next entry) `vcpu_preempted_ms=`
# (the vCPU thread runnable but not running) `entries=` (guest entries, = exits + 1).
#   scripts/nested-kvm.sh run tests/nested/boot-trace --vmlinux [--arg ROUNDS=3]
#       [--arg VMMS=vmm,firecracker] [--binary /path/to/firecracker:/usr/local/bin/firecracker]
. ../lib.sh
ROUNDS=${ROUNDS:-3}
VMMS=${VMMS:-vmm,firecracker}
CMDLINE="console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA"
T=/sys/kernel/debug/tracing
echo 16384 >$T/buffer_size_kb

cat >/tmp/firecracker.json <<EOT
{"boot-source": {"kernel_image_path": "/l2/vmlinux", "initrd_path": "/l2/initrd.gz", "boot_args": "$CMDLINE"},
 "drives": [], "machine-config": {"vcpu_count": 1, "mem_size_mib": 256}}
EOT

# summarize WHO: the BOOT-TRACE line from $T/trace (task names may hold spaces, e.g.
# firecracker's "fc_vcpu 0": the pid is what follows the last '-' before the "[cpu]" field).
summarize() {
    awk -v who="$1" '
        /^#/ { next }
        { for (i = 2; i <= NF; i++) if ($i ~ /^\[[0-9]+\]$/) break
          task = $1; for (j = 2; j < i; j++) task = task " " $j
          pid = task; sub(/.*-/, "", pid)
          t = $(i + 2); sub(/:$/, "", t); t += 0; ev = $(i + 3) }
        ev == "sched_process_exec:" && /filename=\/usr\/local\/bin\// && exec0 == "" { exec0 = t }
        ev == "kvm_entry:" {
            if (vcpu == "") { vcpu = pid; entry0 = t }
            if (user != "") { user_s += t - user; user = "" }
            entries++ }
        ev == "kvm_userspace_exit:" && pid == vcpu { user = t }
        ev == "sched_switch:" && vcpu != "" {
            if ($0 ~ ("prev_pid=" vcpu " ") && $0 ~ /prev_state=R/) off = t
            if ($0 ~ ("next_pid=" vcpu " ") && off != "") { preempted_s += t - off; off = "" } }
        ev == "tracing_mark_write:" && /L2-READY/ { ready = t }
        END { if (exec0 == "" || entry0 == "" || ready == "") { print "BOOT-TRACE-FAILED " who; exit }
              printf "BOOT-TRACE %s setup_ms=%d run_ms=%d userspace_exit_ms=%d vcpu_preempted_ms=%d entries=%d\n",
                  who, (entry0 - exec0) * 1000, (ready - entry0) * 1000, user_s * 1000, preempted_s * 1000, entries }' $T/trace
}

# boot WHO: one traced boot, ended as boot-bench ends it (a line on L2's console, then a bounded
# wait: firecracker does not end on L2's reset).
boot() {
    local who=$1 pid e
    rm -f /tmp/console-in /tmp/firecracker.sock
    mkfifo /tmp/console-in
    exec 3<>/tmp/console-in
    echo >$T/trace
    for e in sched/sched_process_exec sched/sched_switch kvm/kvm_entry kvm/kvm_userspace_exit; do
        echo 1 >$T/events/$e/enable
    done
    echo 1 >$T/tracing_on
    case $who in
        vmm) timeout 300 vmm --kernel /l2/vmlinux --initrd /l2/initrd.gz --memory 256M --cpus 1 \
            --cmdline "$CMDLINE" </tmp/console-in >/tmp/boot.log 2>&1 & ;;
        firecracker) timeout 300 firecracker --no-api --no-seccomp --config-file /tmp/firecracker.json \
            --api-sock /tmp/firecracker.sock </tmp/console-in >/tmp/boot.log 2>&1 & ;;
        *) echo "BOOT-TRACE-FAILED $who: VMMS lists vmm and firecracker"; return ;;
    esac
    pid=$!
    wait_l2_ready /tmp/boot.log $pid
    echo L2-READY >$T/trace_marker
    echo 0 >$T/tracing_on
    echo sampled >&3
    wait_bounded "$pid" 20 || true
    exec 3>&-
    summarize "$who"
}

for _ in $(seq "$ROUNDS"); do
    for who in ${VMMS//,/ }; do boot "$who"; done
done
exit 0
