# shellcheck shell=dash
# Stock Linux virtio drivers over ivshmem against QEMU's vhost-user-*-pci, on the same backends,
# in the same L1, with the same VMM (QEMU -accel kvm) so that only the transport differs:
#
#   pci      -device vhost-user-rng-pci, vhost-user-vsock-pci (guest RAM: a shared memfd)
#   ivshmem  -device ivshmem-doorbell on ivshmem-server; vhost-bridge publishes an entropy
#            device (header 0) and a vsock device (header 0x200000) served by the same backend
#            binaries; L2 loads ivshmem.ko and virtio_ivshmem.ko (linux-guest/driver)
#
# Backends (fresh for every boot): vhost-device-rng, vhost-device-vsock (guest CID 3, host side
# on /tmp/b/vsock.uds; `bed-io uds-echo` answers port 5002). Linux takes one vsock transport
# device at a time, so each boot has one transport. ROUNDS rounds of one boot per transport
# (TRANSPORTS, alternated); each boot prints `BENCH <transport> key=value` lines (l2.sh).
#   ROUNDS=3 RNG_SECS=5 PINGS=2000     the benchmark (scripts/bench.sh nested_linux_virtio)
#   READY_TIMEOUT=300                  seconds for a boot to start its first phase
#   BOOT_ATTEMPTS=3                    boots at most per round and transport (a failed one is
#                                      booted again)
#   MODE=test                          also RESULT lines: both transports delivered bytes and
#                                      round trips (tests/tests/nested_linux_virtio_bench.rs)
. ../lib.sh
MODE=${MODE:-bench}
ROUNDS=${ROUNDS:-3}
RNG_SECS=${RNG_SECS:-5}
PINGS=${PINGS:-2000}
READY_TIMEOUT=${READY_TIMEOUT:-300}
BOOT_ATTEMPTS=${BOOT_ATTEMPTS:-3}
TRANSPORTS=${TRANSPORTS:-pci,ivshmem}
QEMU_MACHINE=${QEMU_MACHINE:-microvm,pcie=on}
MEM=256M
B=/tmp/b
CMDLINE="console=ttyS0 quiet panic=-1 bed_rng_secs=$RNG_SECS bed_pings=$PINGS"

# vm_command TRANSPORT: QEMU's command line up to -append (the same machine, memory, vCPU and
# kernel for both; only the devices differ).
vm_command() {
    local devices
    case $1 in
        pci) devices="-chardev socket,id=rng,path=$B/rng.sock0 -device vhost-user-rng-pci,chardev=rng,vectors=2
            -chardev socket,id=vsock,path=$B/vsock.sock -device vhost-user-vsock-pci,chardev=vsock" ;;
        ivshmem) devices="-chardev socket,id=db,path=$B/ivshmem.sock -device ivshmem-doorbell,chardev=db,vectors=8" ;;
        *) echo "l1.sh: TRANSPORTS: pci or ivshmem, not $1" >&2; return 1 ;;
    esac
    echo qemu-system-x86_64 -M "$QEMU_MACHINE",memory-backend=mem -accel kvm -cpu host -m $MEM -smp 1 \
        -object memory-backend-memfd,id=mem,size=$MEM,share=on \
        -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -kernel /l2/vmlinuz -initrd /l2/initrd.gz "$devices" -append
}

# start_side TRANSPORT: the backends (and for ivshmem the server and two bridges) for one boot.
start_side() {
    rm -rf $B; mkdir -p $B
    procs=""
    vhost-device-rng --socket-path $B/rng.sock >$B/rng.log 2>&1 &
    procs="$procs $!"
    vhost-device-vsock --guest-cid 3 --socket $B/vsock.sock --uds-path $B/vsock.uds >$B/vsock.log 2>&1 &
    procs="$procs $!"
    bed-io uds-echo $B/vsock.uds_5002 >$B/echo.log 2>&1 &
    procs="$procs $!"
    wait_socket $B/rng.sock0 && wait_socket $B/vsock.sock || return 1
    [ "$1" = ivshmem ] || return 0
    ivshmem-server -F -S $B/ivshmem.sock -l 8M -n 8 2>$B/server.log &
    procs="$procs $!"
    wait_for $B/server.log listening 10 || return 1
    RUST_LOG=info vhost-bridge -S $B/ivshmem.sock --backend $B/rng.sock0 --device entropy \
        >$B/rng-bridge.log 2>&1 &
    procs="$procs $!"
    RUST_LOG=info vhost-bridge -S $B/ivshmem.sock --backend $B/vsock.sock --device 19 --queues 3 \
        --config-size 8 --header 0x200000 >$B/vsock-bridge.log 2>&1 &
    procs="$procs $!"
    wait_for $B/rng-bridge.log 'serving virtio device' 30 &&
        wait_for $B/vsock-bridge.log 'serving virtio device' 30
}

# phase_sample PID: what watch_phases records at each phase edge.
phase_sample() { kvm_exits "$1" exits mmio_exits io_exits halt_exits irq_injections; }

stop_side() {
    local pid
    for pid in $procs; do kill "$pid" 2>/dev/null; done
    for pid in $procs; do wait_bounded "$pid" 20 2>/dev/null; done
    procs=""
}

for t in $(echo "$TRANSPORTS" | tr , ' '); do
    echo "linux-virtio-bench: $t: $(vm_command "$t" | tr '\n' ' ') '$CMDLINE bed_dev=$t'"
done
for round in $(seq "$ROUNDS"); do
    for t in $(echo "$TRANSPORTS" | tr , ' '); do
        # A boot that fails (the bed's TCG has been seen to hang an L2 at its start and to
        # triple-fault one in the middle, QEMU's and ours) is reported as BENCH-FAILED and booted
        # again with a fresh side (BOOT_ATTEMPTS in all), so that the round keeps its boot. One
        # that has not started its first phase in READY_TIMEOUT (wall time; a quiet bed: under
        # 30 s) is stopped.
        for attempt in $(seq "$BOOT_ATTEMPTS"); do
            if ! start_side "$t"; then
                echo "BENCH-FAILED $t set-up"
                tail -n 5 $B/*.log | sed 's/^/BENCH-FAILED-LOG | /'
                stop_side
                continue 2
            fi
            cmd=$(vm_command "$t")
            # shellcheck disable=SC2086  # the command line is words; the kernel's is one argument
            $cmd "$CMDLINE bed_dev=$t" </dev/null >/tmp/vm.log 2>&1 &
            vm=$!
            watch_phases $vm &
            watcher=$!
            if wait_console /tmp/vm.log '^PHASE rng begin' "$READY_TIMEOUT" $vm; then
                wait_bounded $vm 600
            else
                if kill -0 $vm 2>/dev/null; then
                    echo "BENCH-FAILED $t: L2 did not start its first phase in $READY_TIMEOUT s; stopping it"
                fi
                wait_bounded $vm 1
            fi
            status=$?
            wait_bounded $watcher 10
            tr -d '\r' </tmp/vm.log | grep -E '^(FACT|IRQ|DMESG-PROBLEM)' | sed "s/^/$t: /"
            if [ "$status" = 0 ] && grep -q 'L2-EXIT 0' /tmp/vm.log; then
                tr -d '\r' </tmp/vm.log | sed -n "s/^BENCH /BENCH $t /p"
                echo "BENCH $t $(phase_exits)"
                break
            fi
            echo "BENCH-FAILED $t (VM status $status, attempt $attempt of $BOOT_ATTEMPTS)"
            tail -n 30 /tmp/vm.log $B/*.log | tr -d '\r' | sed 's/^/BENCH-FAILED-LOG | /'
            [ "$attempt" = "$BOOT_ATTEMPTS" ] || stop_side
        done
        # What the bridges saw (set-up, resets) and the backends' complaints.
        [ "$t" = pci ] || tail -n 8 $B/rng-bridge.log $B/vsock-bridge.log | sed "s/^/$t: BRIDGE /"
        cp /tmp/vm.log "/tmp/vm-$t-$round.log"
        stop_side
    done
done

if [ "$MODE" = test ]; then
    for t in $(echo "$TRANSPORTS" | tr , ' '); do
        log=/tmp/vm-$t-$ROUNDS.log
        check "${t}_l2_ran" 0 'L2-EXIT 0' cat "$log"
        check "${t}_hwrng_delivered" 0 'read_bytes_per_s=[1-9]' grep -a '^BENCH read_bytes' "$log"
        check "${t}_vsock_round_trips" 0 'vsock_rtt_us=[0-9]' grep -a '^BENCH vsock_rtt' "$log"
        check "${t}_no_kernel_problems" 1 '' grep -q DMESG-PROBLEM "$log"
    done
fi
exit 0
