# Linux in a VM with real I/O devices, each served by a third-party backend process in L1:
# root on virtio-blk (qemu-storage-daemon, vhost-user-blk), a host directory over virtio-fs
# (virtiofsd), vsock both ways (vhost-device-vsock), a generic vhost-user device (vhost-device-rng,
# virtio id 4 → /dev/hwrng) and a network (virtio-net on the kernel's vhost-net and a TAP device).
#
#   VMM=qemu    QEMU -accel kvm with vhost-user-*-pci devices: the baseline; QEMU_MACHINE=q35
#               (default) or microvm,pcie=on (the benchmarks: no SeaBIOS)
#   VMM=ours    our vmm with --device vhost-user-... (the same backends and sockets)
#   MODE=test   the checks (RESULT lines; L2's own checks come through its console)
#   MODE=bench  VMM may list both ("qemu,ours"): ROUNDS alternated boots, each printing
#               `BENCH <vmm> key=value` lines (boot to /init, RSS, disk, virtiofs, vsock) and
#               where the time goes: per phase, KVM's exit counters (name_exits=, ...), the CPU
#               ticks of the VM's vCPU threads, its other threads and the backends
#               (name_vcpu_ticks=, name_vmm_other_ticks=, name_backend_ticks=), L2's interrupts
#               per vector (name_irq_LABEL=), and the features each driver took
#   VMM_STATS=1 (bench) ours runs with --stats: its exits by address (whole run) as BENCH-DIAG
#   READY_TIMEOUT=300 (bench) seconds for a boot to reach /init; BOOT_ATTEMPTS=3 boots at most
#               per round and VMM (a failed one is booted again)
#   TRACE_PHASE=vsock (bench, by hand: tracing costs time) L1's ftrace over that phase of each
#               boot: `<vmm>: TRACE-LAT kick_to_call|call_to_next_kick n= p25= p50= p75= mean=`
#               (µs; kicks are KVM's `kvm_mmio` writes at notify addresses, calls its
#               `kvm_msi_set_irq` injections) and `<vmm>: TRACE-COUNT n task event ...`, the
#               most frequent scheduler events and who caused them (docs/virtio-pci.md)
#
# L2 boots /l2/vmlinuz with /l2/initrd.gz (busybox, the virtio modules) and root=/dev/vda: the
# first disk is /l2/rootfs.img (ext4: busybox, l2.sh as /scenario.sh, bed-io), the second a
# scratch disk for the benchmarks. Its /init loads the modules and switch_roots onto /dev/vda.
. ../lib.sh
VMM=${VMM:-qemu}
MODE=${MODE:-test}
ROUNDS=${ROUNDS:-1}
VMM_STATS=${VMM_STATS:-0}
READY_TIMEOUT=${READY_TIMEOUT:-300}
BOOT_ATTEMPTS=${BOOT_ATTEMPTS:-3}
TRACE_PHASE=${TRACE_PHASE:-}
stats_flag=""
[ "$VMM_STATS" = 1 ] && stats_flag=--stats
CPUS=${CPUS:-1}
QEMU_MACHINE=${QEMU_MACHINE:-q35}
MEM=512M
CMDLINE="console=ttyS0 quiet panic=-1 root=/dev/vda bed_mode=$MODE $CMDLINE_EXTRA"
S=/tmp/vu
SHARE=/tmp/share

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# The command line of each VMM: the same kernel, initramfs, memory (shared memfd: backends map
# guest RAM), vCPUs, devices in the same order (vda = root, vdb = scratch) and sockets. It ends
# with the option that takes the kernel's command line (QEMU's -append, our --cmdline).
vm_command() {
    case $1 in
        qemu) echo qemu-system-x86_64 -M "$QEMU_MACHINE",memory-backend=mem -accel kvm -cpu host -m $MEM -smp "$CPUS" \
            -object memory-backend-memfd,id=mem,size=$MEM,share=on \
            -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
            -kernel /l2/vmlinuz -initrd /l2/initrd.gz \
            -chardev socket,id=blk0,path=$S/blk-root.sock -device vhost-user-blk-pci,chardev=blk0 \
            -chardev socket,id=blk1,path=$S/blk-scratch.sock -device vhost-user-blk-pci,chardev=blk1 \
            -chardev socket,id=fs,path=$S/fs.sock -device vhost-user-fs-pci,chardev=fs,tag=share \
            -chardev socket,id=vsock,path=$S/vsock.sock -device vhost-user-vsock-pci,chardev=vsock \
            -chardev socket,id=rng,path=$S/rng.sock0 -device vhost-user-rng-pci,chardev=rng \
            -netdev tap,id=net0,ifname=tap0,script=no,downscript=no,vhost=on \
            -device virtio-net-pci,netdev=net0,romfile= -append ;;
        ours) echo vmm ${stats_flag:+"$stats_flag"} --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory $MEM,shared=on --cpus "$CPUS" \
            --device vhost-user-blk,socket=$S/blk-root.sock \
            --device vhost-user-blk,socket=$S/blk-scratch.sock \
            --device vhost-user-fs,socket=$S/fs.sock,tag=share \
            --device vhost-user-vsock,socket=$S/vsock.sock \
            --device vhost-user,socket=$S/rng.sock0,virtio-id=4,queues=1 \
            --device virtio-net,tap=tap0 --cmdline ;;
        *) echo "l1.sh: VMM=$1: qemu or ours" >&2; return 1 ;;
    esac
}

# start_backends: fresh backend processes for one VM (virtiofsd and the vhost-device daemons
# serve one front-end connection each). The disks serve one queue per vCPU: QEMU's
# vhost-user-blk-pci asks for that many (and refuses fewer), ours takes that many by default.
start_backends() {
    rm -rf $S; mkdir -p $S
    qemu-storage-daemon \
        --blockdev driver=file,node-name=root,filename=/l2/rootfs.img \
        --export type=vhost-user-blk,id=root,node-name=root,addr.type=unix,addr.path=$S/blk-root.sock,writable=on,num-queues=$CPUS \
        --blockdev driver=file,node-name=scratch,filename=/tmp/scratch.img \
        --export type=vhost-user-blk,id=scratch,node-name=scratch,addr.type=unix,addr.path=$S/blk-scratch.sock,writable=on,num-queues=$CPUS \
        >/tmp/qsd.log 2>&1 &
    backends="$!"
    if [ -x /usr/lib/qemu/virtiofsd ]; then
        /usr/lib/qemu/virtiofsd --socket-path=$S/fs.sock -o source=$SHARE -o sandbox=chroot \
            -o cache=none >/tmp/virtiofsd.log 2>&1 &
    else
        virtiofsd --socket-path=$S/fs.sock --shared-dir=$SHARE --sandbox=chroot --cache=never \
            >/tmp/virtiofsd.log 2>&1 &
    fi
    backends="$backends $!"
    vhost-device-vsock --guest-cid 3 --socket $S/vsock.sock --uds-path $S/vsock.uds \
        >/tmp/vsock.log 2>&1 &
    backends="$backends $!"
    # vhost-device-rng listens on SOCKET-PATH followed by its index (--socket-count): rng.sock0.
    vhost-device-rng --socket-path $S/rng.sock >/tmp/rng.log 2>&1 &
    backends="$backends $!"
    local sock
    for sock in blk-root.sock blk-scratch.sock fs.sock vsock.sock rng.sock0; do
        wait_socket $S/$sock || { tail -n 5 /tmp/qsd.log /tmp/virtiofsd.log /tmp/vsock.log /tmp/rng.log; return 1; }
    done
}

stop_backends() {
    local pid
    for pid in $backends; do kill "$pid" 2>/dev/null; done
    for pid in $backends; do wait_bounded "$pid" 20 2>/dev/null; done
    backends=""
}

# wait_for_vm PATTERN SECONDS: until the VM's console (/tmp/vm.log) has PATTERN; fails at once
# when the VM (/tmp/vm.pid) has ended.
wait_for_vm() {
    for _ in $(seq $(($2 * 10))); do
        grep -qE -- "$1" /tmp/vm.log 2>/dev/null && return 0
        [ -s /tmp/vm.pid ] && ! kill -0 "$(cat /tmp/vm.pid)" 2>/dev/null && return 1
        sleep 0.1
    done
    return 1
}

# start_vm NAME: the VM in the background, console in /tmp/vm.log; sets vm_pid, vm_start_ms.
start_vm() {
    local cmd
    cmd=$(vm_command "$1") || return 1
    vm_start_ms=$(now_ms)
    # shellcheck disable=SC2086  # the command line is words; the kernel's is one argument
    $cmd "$CMDLINE" </dev/null >/tmp/vm.log 2>&1 &
    vm_pid=$!
}

# The host side of every device, set up once.
mkdir -p $SHARE /tmp/www
echo "hello from L1" >$SHARE/from-l1
echo "hello over the network" >/tmp/www/hello
# Written in full, not sparse: the first boot's writes would otherwise allocate L1's tmpfs
# pages (measured: QEMU's first seq write 77 MB/s, later ones 130-158, when it booted first).
dd if=/dev/zero of=/tmp/scratch.img bs=1M count=128 2>/dev/null
if tunctl -t tap0 >/dev/null && ip addr add 10.0.2.1/24 dev tap0 && ip link set tap0 up; then
    httpd -p 8080 -h /tmp/www
else
    echo "l1.sh: cannot set up tap0"
fi

if [ "$MODE" = test ]; then
    echo "vhost-user-devices: VMM=$VMM: $(vm_command "$VMM" | tr '\n' ' ')"
    # L2 connects to vsock CID 2 port 5001: vhost-device-vsock connects to UDS_5001.
    start_backends || echo "l1.sh: the backends did not start"
    rm -f /tmp/vm.pid
    bed-io uds-listen $S/vsock.uds_5001 "hello from L1 over vsock" >/tmp/uds-listen.log 2>&1 &
    uds_listener=$!
    # The VM with its console shown as it comes (L2's RESULT lines are the scenario's too) and
    # kept in /tmp/vm.log, its exit status on the last line.
    cmd=$(vm_command "$VMM")
    # QEMU's microvm L2 on this bed sometimes dies within seconds with "PCI: Fatal: No config
    # space access function found" (its ACPI tables did not arrive; docs/nested-kvm.md): the
    # baseline, not the system under test, so that one failure boots it a second time.
    for try in 1 2; do
        # shellcheck disable=SC2086  # the command line is words; the kernel's is one argument
        ( $cmd "$CMDLINE" </dev/null 2>&1 & echo $! >/tmp/vm.pid; wait $!; echo "VM-STATUS $?" ) |
            tr -d '\r' | tee /tmp/vm.log &
        console=$!
        # L2 listens on vsock port 5000 and says so on its console; L1 connects through the UDS.
        if wait_for_vm 'vsock: listening on port 5000' "$CHECK_TIMEOUT"; then
            check vsock_l1_to_l2 0 'hello from L2 over vsock' bed-io uds-connect $S/vsock.uds 5000
            break
        fi
        if [ "$try" = 1 ] && [ "$VMM" = qemu ] &&
            grep -q 'PCI: Fatal: No config space access function found' /tmp/vm.log; then
            echo "vhost-user-devices: QEMU's L2 found no PCI configuration access; booting it again"
            wait_bounded $console 30 || kill "$(cat /tmp/vm.pid)"
            stop_backends
            start_backends || echo "l1.sh: the backends did not start"
            rm -f /tmp/vm.pid
            continue
        fi
        echo "RESULT vsock_l1_to_l2 fail (L2 never listened on vsock port 5000)"
        break
    done
    wait_bounded $console 900 || kill "$(cat /tmp/vm.pid)"
    check vm_exit_status 0 'VM-STATUS 0' cat /tmp/vm.log
    check l2_switched_root 0 'L2-SWITCH-ROOT /dev/vda' cat /tmp/vm.log
    check l2_ran 0 'L2-EXIT 0' cat /tmp/vm.log
    check fs_l2_to_l1 0 'hello from L2' cat $SHARE/from-l2
    check vsock_l2_to_l1_listener 0 'accepted' cat /tmp/uds-listen.log
    kill $uds_listener 2>/dev/null
    stop_backends
    exit 0
fi

# cpu_ticks PID: CPU time (utime + stime, clock ticks) of the VM process's vCPU threads (ours
# `vcpuN`, QEMU's `CPU N/KVM`), of its other threads, and of the backend processes ($backends),
# as key=value words: what the VMM and the backends spend besides the guest. (QEMU names its
# threads only with `-name ...,debug-threads=on`, which the baseline does not use: all of its
# ticks show as vmm_other_ticks.)
cpu_ticks() {
    local t v vcpu=0 other=0 backend=0 pid
    for t in /proc/"$1"/task/*; do
        v=$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}')
        case $(cat "$t/comm" 2>/dev/null) in
            vcpu* | CPU*) vcpu=$((vcpu + ${v:-0})) ;;
            *) other=$((other + ${v:-0})) ;;
        esac
    done
    for pid in $backends; do
        v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
        backend=$((backend + ${v:-0}))
    done
    printf 'vcpu_ticks=%s vmm_other_ticks=%s backend_ticks=%s ' "$vcpu" "$other" "$backend"
}

# trace_phase begin|end: TRACE_PHASE's tracing. It starts at a marker in the buffer instead of
# clearing it (nested-kvm.sh's shutdown exits stay), leaves tracing on, and writes its summary
# to /tmp/trace-summary, which the boot's report prints.
T=/sys/kernel/tracing
TRACE_EVENTS="kvm/kvm_mmio kvm/kvm_msi_set_irq sched/sched_switch sched/sched_wakeup"
trace_phase() {
    local e k n
    if [ "$1" = begin ]; then
        echo 32768 >$T/buffer_size_kb
        for e in $TRACE_EVENTS; do echo 1 >$T/events/$e/enable; done
        echo TRACE-PHASE-BEGIN >$T/trace_marker
        return
    fi
    for e in $TRACE_EVENTS; do echo 0 >$T/events/$e/enable; done
    grep -v '^#' $T/trace | awk '/TRACE-PHASE-BEGIN/ { n = NR } { l[NR] = $0 } END { for (i = n + 1; i <= NR; i++) print l[i] }' >/tmp/trace.txt
    # Per event: the task, the event and what it did (switched to whom, woke whom, wrote where).
    awk '{ ev = ""; for (i = 1; i <= NF; i++) if ($i ~ /^[a-z_]+:$/ && $(i-1) ~ /^[0-9.]+:$/) { ev = $i; break }
        comm = $1; sub(/-[0-9]+$/, "", comm); key = comm " " ev
        if (ev == "sched_switch:") { n = $0; sub(/.*next_comm=/, "", n); sub(/ next_pid.*/, "", n); p = $0; sub(/.*prev_state=/, "", p); sub(/ .*/, "", p); key = key " " p " -> " n }
        if (ev == "sched_wakeup:") { n = $0; sub(/.*sched_wakeup: /, "", n); sub(/:[0-9]+ .*/, "", n); key = key " wakes " n }
        if (ev == "kvm_mmio:") { n = $0; sub(/.*kvm_mmio: /, "", n); sub(/ val.*/, "", n); key = key " " n }
        c[key]++ } END { for (k in c) print "TRACE-COUNT " c[k] " " k }' /tmp/trace.txt | sort -k2 -n -r | head -40 >/tmp/trace-summary
    # A kick opens a request, the next call closes it; the call opens the guest's turn, its next
    # kick closes that.
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) { t = substr($i, 1, length($i) - 1) + 0; break } }
        / kvm_mmio: mmio write/ { if (tm != "" && tk == "") print "call_to_next_kick", (t - tm) * 1e6; tk = t; tm = "" }
        / kvm_msi_set_irq:/ { if (tk != "") print "kick_to_call", (t - tk) * 1e6; tk = ""; tm = t }' /tmp/trace.txt >/tmp/lat.txt
    for k in kick_to_call call_to_next_kick; do
        awk -v k=$k '$1 == k {print $2}' /tmp/lat.txt | sort -n >/tmp/lat.one
        n=$(grep -c . /tmp/lat.one)
        [ "$n" -gt 0 ] || continue
        echo "TRACE-LAT $k n=$n p25=$(sed -n "$((n / 4 + 1))p" /tmp/lat.one) p50=$(sed -n "$((n / 2 + 1))p" /tmp/lat.one) p75=$(sed -n "$((n * 3 / 4 + 1))p" /tmp/lat.one) mean=$(awk '{s += $1} END {printf "%.1f", s / NR}' /tmp/lat.one)" >>/tmp/trace-summary
    done
    rm -f /tmp/trace.txt /tmp/lat.txt /tmp/lat.one
}

# phase_sample PID: what watch_phases records at each phase edge: KVM's counters and CPU ticks
# (and TRACE_PHASE's tracing; $seen is watch_phases' count of the phase lines so far).
phase_sample() {
    if [ -n "$TRACE_PHASE" ]; then
        case "$(grep '^PHASE' /tmp/vm.log | sed -n "${seen}p" | tr -d '\r')" in
            "PHASE $TRACE_PHASE begin") trace_phase begin ;;
            "PHASE $TRACE_PHASE end") trace_phase end ;;
        esac
    fi
    kvm_exits "$1" exits mmio_exits io_exits halt_exits halt_wakeup irq_injections irq_exits \
        irq_window_exits insn_emulation hypercalls pf_fixed pf_taken signal_exits \
        request_irq_exits host_state_reload
    cpu_ticks "$1"
}

# MODE=bench: a file tree in the share for the virtiofs copy (200 files of 16 KiB in 10
# directories), then ROUNDS rounds of one boot per VMM in VMM, alternated.
for vmm in $(echo "$VMM" | tr , " "); do
    echo "vhost-user-devices: $vmm: $(vm_command "$vmm" | tr '\n' ' ') '$CMDLINE'"
done
for d in $(seq 10); do
    mkdir -p "$SHARE/tree/d$d"
    for f in $(seq 20); do dd if=/dev/urandom of="$SHARE/tree/d$d/f$f" bs=16k count=1 2>/dev/null; done
done
for _ in $(seq "$ROUNDS"); do
    for vmm in $(echo "$VMM" | tr , " "); do
        if ! vm_command "$vmm" >/dev/null || ! command -v "$(vm_command "$vmm" | awk '{print $1}')" >/dev/null; then
            echo "BENCH-SKIPPED $vmm (not available in L1)"; continue
        fi
        # Boot to /init with root on virtio-blk: L2-READY is printed by /sbin/init on /dev/vda
        # (17-30 s on a quiet bed). A boot that fails (the bed's TCG has been seen to hang an L2
        # at its start and to triple-fault one in the middle of a benchmark, QEMU's and ours) is
        # reported as BENCH-FAILED and booted again with fresh backends (BOOT_ATTEMPTS in all),
        # so that the round keeps its boot. One that has not reached /init in READY_TIMEOUT
        # (wall time) is stopped.
        for attempt in $(seq "$BOOT_ATTEMPTS"); do
            start_backends || { echo "BENCH-FAILED $vmm backends"; stop_backends; continue 2; }
            bed-io uds-echo $S/vsock.uds_5002 >/dev/null 2>&1 &
            echo_pid=$!
            start_vm "$vmm"
            watch_phases "$vm_pid" &
            watcher=$!
            rss=""
            if wait_console /tmp/vm.log L2-READY "$READY_TIMEOUT" "$vm_pid"; then
                ready=$(now_ms)
                # From the page tables: VmRSS is approximate on L1's kernel (boot-bench/l1.sh).
                rss=$(awk '/^Rss:/ {print $2}' "/proc/$vm_pid/smaps_rollup" 2>/dev/null)
                wait_bounded "$vm_pid" 600
            else
                if kill -0 "$vm_pid" 2>/dev/null; then
                    echo "BENCH-FAILED $vmm: L2 did not reach /init in $READY_TIMEOUT s; stopping it"
                fi
                wait_bounded "$vm_pid" 1   # SIGTERM: our VMM says where each vCPU was
            fi
            wait_bounded $watcher 120   # (TRACE_PHASE's summary takes a while under TCG)
            kill $echo_pid 2>/dev/null
            stop_backends
            [ ! -f /tmp/trace-summary ] || sed "s/^/$vmm: /" /tmp/trace-summary
            rm -f /tmp/trace-summary
            if grep -q 'L2-EXIT 0' /tmp/vm.log; then
                echo "BENCH $vmm boot_to_init_ms=$((ready - vm_start_ms)) rss_kib=${rss:-0}"
                tr -d '\r' </tmp/vm.log | sed -n "s/^BENCH /BENCH $vmm /p"
                echo "BENCH $vmm $(phase_exits)"
                tr -d '\r' </tmp/vm.log | sed -n "s/^BENCH-DIAG /BENCH-DIAG $vmm /p; s/^vmm-stats: /BENCH-DIAG $vmm vmm-stats /p"
                break
            fi
            # Shown by bench.sh (its lines start with BENCH), left out of its medians; L1's
            # trace names an L2 triple fault (NESTED-L2-SHUTDOWN, docs/nested-kvm.md).
            echo "BENCH-FAILED $vmm (attempt $attempt of $BOOT_ATTEMPTS)"
            tail -n 30 /tmp/vm.log /tmp/qsd.log /tmp/virtiofsd.log /tmp/vsock.log /tmp/rng.log |
                tr -d '\r' | sed 's/^/BENCH-FAILED-LOG | /'
        done
    done
done
exit 0
