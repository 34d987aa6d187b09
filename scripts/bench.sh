#!/usr/bin/env bash
# Benchmarks: every figure is a ratio against a baseline measured in the same run.
# Writes the sections it ran into BENCHMARKS.md (or the file given as $1), keeping the other
# sections as their last run left them (scripts/bench_merge.py), and prints the file.
#
#   scripts/bench.sh                 # all sections
#   SECTIONS="host server" scripts/bench.sh
#   SECTIONS=nested_virtio VIRTIO_ROUNDS=2 scripts/bench.sh   # fewer alternated boots (default 3)
#   SECTIONS=virtio_depth DEPTH_POLL_US=0 scripts/bench.sh    # no busy polling (default 5 µs)
#   FIRECRACKER=... CLOUD_HYPERVISOR=... SECTIONS=nested_icount scripts/bench.sh   # peers' boots
#
# Sections: host (peer library vs raw eventfd / memcpy), server (connect and join/leave load
# vs a minimal broker), vmm (exit dispatch, guest RAM bandwidth, start-up, RSS), ivshmem
# (VM doorbells and BAR2 bandwidth), virtio (virtio over ivshmem: requests through a virtqueue to
# vhost-user-echo, from the host and from a VM, vs a UNIX socket pair), virtio_depth (the same
# with 16 requests in flight, EVENT_IDX and indirect descriptors, vs a socket pair at depth 16
# and memcpy, unpinned and all on one CPU, with the raw eventfd round trip as the floor), nested (Linux boot time
# and memory against QEMU/KVM on the ordinary-KVM bed, scripts/nested-kvm.sh), nested_icount
# (the same boots against firecracker and cloud-hypervisor on that bed with L1's clock counting
# emulated instructions: the host's changing speed out of the figures), guest_linux (a
# Linux guest's doorbell round trip and BAR2 bandwidth through the ivshmem driver, on that bed),
# nested_virtio (L2 Linux on vhost-user devices from third-party backends: disk, virtiofs, vsock,
# boot and memory, our VMM against QEMU -accel kvm on that bed), nested_linux_virtio (a Linux
# guest's /dev/hwrng and vsock through virtio_ivshmem.ko and vhost-bridge against QEMU's
# vhost-user-rng-pci and vhost-user-vsock-pci, same backends, in QEMU -accel kvm on that bed).
# Run it on a quiet machine: the round trips are sensitive to other load, which is why medians
# are reported next to means.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
out=${1:-BENCHMARKS.md}
sections=${SECTIONS:-host server vmm ivshmem virtio virtio_depth nested nested_icount nested_virtio nested_linux_virtio guest_linux}

echo "bench.sh: building (release)" >&2
cargo build --release --quiet --workspace --bins
cargo build --release --quiet -p ivshmem-peer --examples
cargo build --release --quiet -p ivshmem-server --examples
R=$(target_dir)/release
export PATH="$R:$PATH"
start_scratch bench

rows=()
section=""
# row METRIC RESULT BASELINE RATIO TARGET COMMAND: one row of the section being run
row() { rows+=("$section	| $1 | $2 | $3 | $4 | $5 | \`$6\` |"); echo "  $1: $2 vs $3 -> $4 (target $5)" >&2; }
# value KEY TEXT: the value of the first `KEY=value` line in TEXT
value() { printf '%s\n' "$2" | sed -n "s/^$1=//p" | head -n1; }
# stat KEY TEXT: KEY of the `vmm-stats: {JSON}` line (vmm --stats) in TEXT
stat() {
    printf '%s\n' "$2" | python3 -c 'import json, sys
for line in sys.stdin:
    if line.startswith("vmm-stats: "):
        print(json.loads(line[len("vmm-stats: "):])[sys.argv[1]]); break' "$1"
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}')" "$1" "$2"; }

# start_server SOCK ARGS...: a foreground server logging to SOCK.log, waited for
start_server() {
    local sock=$1; shift
    ivshmem-server -F -S "$sock" "$@" 2>"$sock.log" &
    pids+=("$!")
    wait_for_line "$sock.log" "listening on" 10 && return 0
    echo "bench.sh: server on $sock did not start" >&2; cat "$sock.log" >&2; exit 1
}

# wait_joined SOCK PID: waits until the server on SOCK logged process PID's join
wait_joined() { wait_for_line "$1.log" "joined (pid $2," 10; }

# median NUMBERS...: the median of its arguments
median() { python3 -c "import statistics,sys; print(format(statistics.median(float(x) for x in sys.argv[1:]), '.10g'))" "$@"; }

# bench_median WHO KEY: the median of KEY over WHO's `BENCH who key=value` lines in $out (the
# calling section's output from the nested bed), or nothing when there are none.
bench_median() {
    local values
    values=$(printf '%s\n' "$out" |
        awk -v who="$1" '$1 == "BENCH" && $2 == who {for (i = 3; i <= NF; i++) print $i}' |
        sed -n "s/^$2=\([0-9.]*\)$/\1/p" | xargs)
    # shellcheck disable=SC2086  # one number per word
    [ -z "$values" ] || median $values
}

# bench_count WHO KEY: how many `BENCH WHO ... KEY=N` values $out holds (boots that measured KEY).
bench_count() {
    printf '%s\n' "$out" | awk -v who="$1" -v key="$2=" '$1 == "BENCH" && $2 == who {
        for (i = 3; i <= NF; i++) if (index($i, key) == 1) n++ } END { print n + 0 }'
}

# Round trips are sensitive to whatever else the machine runs, so the doorbell and its raw
# eventfd baseline are measured in alternation, three times each, and the medians compared.
host_section() {
    echo "== host peers" >&2
    local sock=$work/host.sock
    start_server "$sock" --memfd -l 256M -n 1
    local base door spin bw i
    local base_p50=() base_mean=() door_p50=() door_mean=()
    for i in 1 2 3; do
        base=$("$R/examples/bench" eventfd -n 40000 --warmup 4000)
        door=$("$R/examples/bench" doorbell -S "$sock" -n 40000 --warmup 4000)
        base_p50+=("$(value rtt_p50_ns "$base")"); base_mean+=("$(value rtt_ns "$base")")
        door_p50+=("$(value rtt_p50_ns "$door")"); door_mean+=("$(value rtt_ns "$door")")
    done
    EVENTFD_P50=$(median "${base_p50[@]}")
    EVENTFD_MEAN=$(median "${base_mean[@]}")
    local dp50 dmean
    dp50=$(median "${door_p50[@]}")
    dmean=$(median "${door_mean[@]}")
    row "doorbell round trip host↔host, median of p50s (3 runs)" "$dp50 ns" \
        "raw eventfd pair $EVENTFD_P50 ns" "$(ratio "$dp50" "$EVENTFD_P50")" "≤ 1.10" \
        "bench doorbell -S SOCK -n 40000 vs bench eventfd -n 40000, alternated 3×"
    row "doorbell round trip host↔host, median of means (3 runs)" "$dmean ns" \
        "raw eventfd pair $EVENTFD_MEAN ns" "$(ratio "$dmean" "$EVENTFD_MEAN")" "≤ 1.10" \
        "same runs"
    spin=$("$R/examples/bench" spin -S "$sock" -n 1000000 --warmup 100000)
    row "round trip by spinning on a shared flag, median" "$(value rtt_p50_ns "$spin") ns" \
        "raw eventfd pair $EVENTFD_P50 ns" \
        "$(ratio "$(value rtt_p50_ns "$spin")" "$EVENTFD_P50")" "(memory path)" \
        "bench spin -S SOCK -n 1000000"
    local shm=() private=()
    for i in 1 2 3; do
        bw=$("$R/examples/bench" bandwidth -S "$sock" --size $((64 << 20)) --millis 1000)
        shm+=("$(value shm_gbps "$bw")"); private+=("$(value private_gbps "$bw")")
    done
    local shm_med private_med
    shm_med=$(median "${shm[@]}"); private_med=$(median "${private[@]}")
    row "write bandwidth into shared memory, median of 3" "$shm_med GB/s" \
        "memcpy to private memory $private_med GB/s" \
        "$(ratio "$shm_med" "$private_med")" "≥ 0.95" \
        "bench bandwidth -S SOCK --size 67108864 --millis 1000, 3×"
}

server_section() {
    echo "== server load" >&2
    local load cycles pin regime
    # Both wake-up regimes: unpinned (the scheduler spreads the processes over both CPUs, ~50 µs
    # wake-ups between idle vCPUs) and everything on
    # one CPU (~2.6 µs wake-ups, where the server's own work per message shows).
    # The ratios are wall time; next to them the CPU time (schedstat) of the broker alone and of
    # the whole workload (broker and client threads), which other load on the machine does not
    # move: where the wall ratio and the CPU ratio disagree, the machine's load did.
    for regime in unpinned pinned; do
        pin=()
        if [ "$regime" = pinned ]; then pin=(taskset -c 0); fi
        load=$("${pin[@]}" "$R/examples/load" connect --server "$R/ivshmem-server" --peers 1000 --vectors 4)
        row "connect 1,000 peers × 4 vectors ($regime${pin:+, taskset -c 0})" "$(value connect_ms "$load") ms (rounds $(value connect_ms_rounds "$load")), server RSS $(value server_rss_kib "$load") KiB; CPU: server $(value server_cpu_ms "$load") ms, workload $(value connect_cpu_ms "$load") ms" \
            "minimal blocking broker $(value floor_connect_ms "$load") ms (rounds $(value floor_connect_ms_rounds "$load")); CPU: broker $(value floor_broker_cpu_ms "$load") ms, workload $(value floor_connect_cpu_ms "$load") ms; CPU ratios: workload $(value connect_cpu_ratio "$load"), broker $(value broker_cpu_ratio "$load")" \
            "$(value connect_ratio "$load")" "≤ 1.1" \
            "${pin[*]:+${pin[*]} }load connect --server ivshmem-server --peers 1000 --vectors 4 (2 storms each, alternated S F F S; means)"
        cycles=$("${pin[@]}" "$R/examples/load" cycles --server "$R/ivshmem-server" --secs 3)
        row "join/leave cycles per second ($regime${pin:+, taskset -c 0})" "$(value cycles_per_sec "$cycles")/s (fds $(value server_fds_before "$cycles")→$(value server_fds_after "$cycles")); CPU per cycle: server $(value server_cpu_us_per_cycle "$cycles") µs, workload $(value cycle_cpu_us "$cycles") µs" \
            "minimal blocking broker $(value floor_cycles_per_sec "$cycles")/s; CPU per cycle: broker $(value floor_broker_cpu_us_per_cycle "$cycles") µs, workload $(value floor_cycle_cpu_us "$cycles") µs; CPU ratios (floor/ours): workload $(value cycles_cpu_ratio "$cycles"), broker $(value broker_cpu_ratio "$cycles")" \
            "$(value cycles_ratio "$cycles")" "≥ 0.91 (1/1.1)" \
            "${pin[*]:+${pin[*]} }load cycles --server ivshmem-server --secs 3 (server and floor in 6 alternating 0.5 s slices; medians)"
    done
}

# recovery_ms MODE SERVER SCRATCH N: median/min/max ms over N samples from a signal to the next
# server answering a new connection. MODE upgrade: SIGUSR2 to the serving process, then (once it
# has exited, so any answer comes from its successor) a connection gets its first message.
# MODE crash: `--keeper`, SIGKILL to the serving process (pid from --status --json), then a
# connection (queued on the listener the keeper holds) gets its first message.
recovery_ms() {
    python3 - "$@" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, time
mode, server, scratch, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sock = os.path.join(scratch, f"ops-{mode}.sock")
args = [server, "-F", "-S", sock, "--memfd", "-l", "1M", "-n", "1"] + (["--keeper"] if mode == "crash" else [])
proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def answer(deadline=10.0):
    end = time.monotonic() + deadline
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(max(0.01, end - time.monotonic()))
            s.connect(sock)
            data = s.recv(8)
            s.close()
            if len(data) == 8:
                return
        except OSError:
            pass
        if time.monotonic() > end:
            raise SystemExit(f"no answer on {sock}")
        time.sleep(0.0005)
def serving_pid():
    out = subprocess.run([server, "--status", "--json", "-S", sock], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["pid"]
try:
    answer()
    times = []
    for _ in range(n):
        time.sleep(0.2)
        pid = serving_pid()
        t0 = time.perf_counter()
        if mode == "upgrade":
            os.kill(pid, signal.SIGUSR2)
            # The old process exits once its successor serves; it may be our child or not.
            # A zombie counts as gone (an orphan waits for its reaper).
            while pid != proc.pid or proc.poll() is None:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                            break
                except OSError:
                    break
                time.sleep(0.0002)
        else:
            os.kill(pid, signal.SIGKILL)
        answer()
        times.append((time.perf_counter() - t0) * 1000)
    print(f"{statistics.median(times):.1f} {min(times):.1f} {max(times):.1f}")
finally:
    try:
        pid = serving_pid()
        os.kill(pid, signal.SIGTERM)
    except Exception:
        pass
    if mode == "crash":
        try:
            proc.terminate()
        except Exception:
            pass
    try:
        proc.wait(timeout=10)
    except Exception:
        proc.kill()
PY
}

server_ops_section() {
    echo "== server operations" >&2
    local off on a b
    # Join/leave throughput with the state table kept in the shared memory vs without, each
    # run three times, alternating, medians.
    off=(); on=()
    for _ in 1 2 3; do
        # The table takes ~1 MiB (one slot per possible id): both runs get 4 MiB of memory.
        a=$("$R/examples/load" cycles --server "$R/ivshmem-server" --secs 2 --server-arg=-l --server-arg=4M)
        b=$("$R/examples/load" cycles --server "$R/ivshmem-server" --secs 2 --server-arg=-l --server-arg=4M --server-arg=--state-table=0)
        off+=("$(value cycles_per_sec "$a")"); on+=("$(value cycles_per_sec "$b")")
    done
    a=$(median "${off[@]}"); b=$(median "${on[@]}")
    row "join/leave cycles per second, --state-table 0 (unpinned, median of 3)" "$b/s" \
        "without the state table $a/s" "$(ratio "$b" "$a")" "≥ 0.95" \
        "load cycles --server ivshmem-server --secs 2 --server-arg=-l --server-arg=4M [--server-arg=--state-table=0], alternating, 3×"
    local up crash
    up=$(recovery_ms upgrade "$R/ivshmem-server" "$work" 20)
    row "upgrade pause: SIGUSR2 → a new connection answered by the successor (unpinned, median of 20)" \
        "${up%% *} ms (range ${up#* } ms)" "—" "—" "(reference)" \
        "ivshmem-server -F -S SOCK --memfd -l 1M -n 1; 20× SIGUSR2, then connect + read 8 bytes once the old process exited (recovery_ms in bench.sh)"
    crash=$(recovery_ms crash "$R/ivshmem-server" "$work" 20)
    row "crash recovery under --keeper: SIGKILL → a new connection answered (unpinned, median of 20)" \
        "${crash%% *} ms (range ${crash#* } ms)" "—" "—" "(reference; issue: within 1 s)" \
        "ivshmem-server -F -S SOCK --memfd -l 1M -n 1 --keeper; 20× SIGKILL to the serving pid (--status --json), then connect + read 8 bytes (recovery_ms in bench.sh)"
}

# wall_ms N CMD...: median wall time of N runs of CMD, in ms
wall_ms() {
    python3 - "$@" <<'PY'
import statistics, subprocess, sys, time
n, cmd = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(n):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.2f}")
PY
}

vmm_section() {
    echo "== vmm" >&2
    local i out mmio=() pio=() bare_mmio=() bare_pio=() ram=() host=() hostcpy=()
    for i in 1 2 3; do
        out=$(vmm --guest builtin:exit_bench 2>&1 | tr ' ' '\n')
        mmio+=("$(value mmio_exits_per_sec "$out")"); pio+=("$(value pio_exits_per_sec "$out")")
        out=$(vmm --guest builtin:exit_bench --bench-bare-exits 2>&1 | tr ' ' '\n')
        bare_mmio+=("$(value mmio_exits_per_sec "$out")"); bare_pio+=("$(value pio_exits_per_sec "$out")")
    done
    local m p bm bp
    m=$(median "${mmio[@]}"); p=$(median "${pio[@]}")
    bm=$(median "${bare_mmio[@]}"); bp=$(median "${bare_pio[@]}")
    row "MMIO exits per second through the memory-model dispatch, median of 3" "$m/s" \
        "bare KVM_RUN loop answering in the vCPU thread $bm/s" "$(ratio "$m" "$bm")" "close to 1" \
        "vmm --guest builtin:exit_bench [--bench-bare-exits], alternated 3×"
    row "PIO exits per second through the memory-model dispatch, median of 3" "$p/s" \
        "bare KVM_RUN loop $bp/s" "$(ratio "$p" "$bp")" "close to 1" \
        "vmm --guest builtin:exit_bench [--bench-bare-exits], alternated 3×"
    for i in 1 2 3; do
        out=$(vmm --guest builtin:ram_bandwidth --memory 1G 2>&1 | tr ' ' '\n')
        ram+=("$(value ram_write_gbps "$out")")
        out=$(vmm --bench-host-memcpy 509M 2>&1 | tr ' ' '\n')
        host+=("$(value host_memset_gbps "$out")")
        hostcpy+=("$(value host_memcpy_gbps "$out")")
    done
    local rm hm hc
    rm=$(median "${ram[@]}"); hm=$(median "${host[@]}"); hc=$(median "${hostcpy[@]}")
    row "guest RAM write bandwidth (ring 3), median of 3" "$rm GB/s" \
        "host memset, same size $hm GB/s (memcpy $hc GB/s)" "$(ratio "$rm" "$hm")" "close to 1" \
        "vmm --guest builtin:ram_bandwidth --memory 1G vs vmm --bench-host-memcpy 509M"
    local first spawn run
    first=$(vmm --guest builtin:hello --stats 2>&1)
    spawn=$(wall_ms 20 vmm --version)
    run=$(wall_ms 20 vmm --guest builtin:hello)
    row "VM creation to first guest exit" "$(stat first_exit_us "$first") µs; whole hello run $run ms (median of 20)" \
        "starting the vmm binary (--version) $spawn ms" "$(ratio "$run" "$spawn")" "(set-up cost)" \
        "vmm --guest builtin:hello --stats (first_exit_us); wall time vs vmm --version"
    # A kernel-sized image (64 MiB, in the page cache) copied into fresh guest RAM as `--kernel`
    # and `--initrd` are loaded (boot::image: several threads), against one thread.
    head -c 64M /dev/urandom >"$work/image.bin"
    out=$(vmm --bench-image-copy "$work/image.bin" 2>&1 | tr ' ' '\n')
    local one par threads
    one=$(value one_thread_ms "$out"); par=$(value parallel_ms "$out"); threads=$(value threads "$out")
    rm -f "$work/image.bin"
    row "kernel image (64 MiB) copied into fresh guest RAM on $threads threads, median of 5" "$par ms" \
        "the same copy on one thread $one ms" "$(ratio "$par" "$one")" "< 1" \
        "vmm --bench-image-copy FILE (alternated 5×)"
    local rss qemu_rss qpid
    rss=$(stat rss_kib "$first")
    if command -v qemu-system-x86_64 >/dev/null; then
        qemu-system-x86_64 -accel tcg -S -display none -nodefaults -m 64 \
            -qmp "unix:$work/qmp.sock,server=on,wait=off" &
        qpid=$!; pids+=("$qpid")
        qmp_ready "$work/qmp.sock" # the machine is built (paused at -S)
        qemu_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$qpid/status")
        kill "$qpid"; wait "$qpid" 2>/dev/null || true
        row "VMM resident memory (hello guest, 64 MiB RAM)" "$rss KiB" \
            "QEMU 64 MiB, paused, no devices $qemu_rss KiB" "$(ratio "$rss" "$qemu_rss")" "< 1" \
            "vmm --guest builtin:hello --stats (rss_kib) vs qemu-system-x86_64 -accel tcg -S -display none -nodefaults -m 64"
    fi
}

ivshmem_section() {
    echo "== ivshmem VMs" >&2
    local sock=$work/ivshmem.sock
    # A fresh server: the first peer to connect is id 0, the next id 1 (no probe connection).
    start_server "$sock" --memfd -l 64M -n 1
    local base echo_pid vm pong_pid vmvm mem memvm bw trap few many off
    base=$("$R/examples/bench" eventfd -n 100000 --warmup 10000)

    # VM <-> host doorbell round trip: host echo is peer 0, the VM (ping) peer 1.
    "$R/examples/bench" doorbell-echo -S "$sock" --partner 1 --rounds 22000 &
    echo_pid=$!; pids+=("$echo_pid"); wait_joined "$sock" "$echo_pid"
    vm=$(vmm --guest builtin:ivshmem_pingpong --ivshmem "doorbell,socket=$sock" \
        --guest-args "role=ping peer=0 rounds=20000 warmup=2000" --stats 2>&1)
    wait "$echo_pid"
    row "doorbell round trip VM↔host, mean" "$(value rtt_ns "$(tr ' ' '\n' <<<"$vm")") ns" \
        "raw eventfd pair $(value rtt_ns "$base") ns" \
        "$(ratio "$(value rtt_ns "$(tr ' ' '\n' <<<"$vm")")" "$(value rtt_ns "$base")")" "(interrupt path)" \
        "vmm --guest builtin:ivshmem_pingpong --guest-args 'role=ping peer=0' + bench doorbell-echo"
    row "VMM exits per doorbell round trip (ioeventfd + irqfd)" \
        "$(stat exits_mmio "$vm") exits for 22,000 round trips" \
        "slow doorbells $(stat ivshmem_slow_doorbells "$vm")" "—" "≈ set-up only" \
        "vmm --stats (exits_mmio, ivshmem_slow_doorbells)"

    # VM <-> VM doorbell round trip (partners found through the shared-memory directory).
    vmm --name pong --guest builtin:ivshmem_pingpong --ivshmem "doorbell,socket=$sock" \
        --guest-args "role=pong rounds=20000 warmup=2000" >/dev/null 2>&1 &
    pong_pid=$!; pids+=("$pong_pid")
    vmvm=$(vmm --guest builtin:ivshmem_pingpong --ivshmem "doorbell,socket=$sock" \
        --guest-args "role=ping rounds=20000 warmup=2000" 2>&1)
    wait "$pong_pid"
    row "doorbell round trip VM↔VM, mean" "$(value rtt_ns "$(tr ' ' '\n' <<<"$vmvm")") ns" \
        "raw eventfd pair $(value rtt_ns "$base") ns" \
        "$(ratio "$(value rtt_ns "$(tr ' ' '\n' <<<"$vmvm")")" "$(value rtt_ns "$base")")" "(2 interrupt paths)" \
        "vmm ... ivshmem_pingpong role=pong & vmm ... role=ping"

    # VM <-> host through shared memory only (both spin), against host <-> host.
    "$R/examples/bench" spin-echo -S "$sock" --offset 65536 --rounds 220000 &
    echo_pid=$!; pids+=("$echo_pid"); wait_joined "$sock" "$echo_pid"
    mem=$(vmm --guest builtin:ivshmem_pingpong --ivshmem "doorbell,socket=$sock" \
        --guest-args "role=ping transport=memory rounds=200000 warmup=20000" 2>&1)
    wait "$echo_pid"
    memvm=$("$R/examples/bench" spin -S "$sock" -n 200000 --warmup 20000)
    row "round trip VM↔host spinning on BAR2, mean" "$(value rtt_ns "$(tr ' ' '\n' <<<"$mem")") ns" \
        "host↔host (bench spin) $(value rtt_ns "$memvm") ns" \
        "$(ratio "$(value rtt_ns "$(tr ' ' '\n' <<<"$mem")")" "$(value rtt_ns "$memvm")")" "close to 1" \
        "ivshmem_pingpong transport=memory + bench spin-echo --offset 65536"

    # BAR2 write bandwidth (memory slot) vs guest RAM, and with mapping=trap.
    bw=$(vmm --guest builtin:ivshmem_bandwidth --ivshmem "doorbell,socket=$sock" \
        --guest-args "total_mb=2048" 2>&1)
    row "guest write bandwidth into BAR2 (16 MiB window)" "$(value bar2_gbps "$(tr ' ' '\n' <<<"$bw")") GB/s" \
        "guest RAM $(value ram_gbps "$(tr ' ' '\n' <<<"$bw")") GB/s" \
        "$(ratio "$(value bar2_gbps "$(tr ' ' '\n' <<<"$bw")")" "$(value ram_gbps "$(tr ' ' '\n' <<<"$bw")")")" "≥ 0.95" \
        "vmm --guest builtin:ivshmem_bandwidth --guest-args total_mb=2048"
    local host16
    host16=$(vmm --bench-host-memcpy 16M 2>&1 | tr ' ' '\n')
    row "guest write bandwidth into BAR2 vs the host" "$(value bar2_gbps "$(tr ' ' '\n' <<<"$bw")") GB/s" \
        "host memcpy $(value host_memcpy_gbps "$host16") GB/s (memset $(value host_memset_gbps "$host16") GB/s), 16 MiB" \
        "$(ratio "$(value bar2_gbps "$(tr ' ' '\n' <<<"$bw")")" "$(value host_memcpy_gbps "$host16")")" "≥ 0.9" \
        "ivshmem_bandwidth (above) vs vmm --bench-host-memcpy 16M"
    trap=$(vmm --guest builtin:ivshmem_bandwidth --ivshmem "plain,memfd,size=64M,mapping=trap" \
        --guest-args "total_mb=1 window_mb=1 max_ms=500" --stats 2>&1)
    row "guest write bandwidth into BAR2 with mapping=trap" "$(value bar2_mbps "$(tr ' ' '\n' <<<"$trap")") MB/s" \
        "mapping=slot $(value bar2_gbps "$(tr ' ' '\n' <<<"$bw")") GB/s" \
        "$(python3 -c "import sys; print(f'{float(sys.argv[1])/1000/float(sys.argv[2]):.5f}')" \
            "$(value bar2_mbps "$(tr ' ' '\n' <<<"$trap")")" "$(value bar2_gbps "$(tr ' ' '\n' <<<"$bw")")")" \
        "(every store exits)" \
        "vmm ... --ivshmem plain,memfd,size=64M,mapping=trap --guest-args 'total_mb=1 window_mb=1 max_ms=500'"
}

# Virtio over ivshmem: echo requests through queue 0 of vhost-user-echo behind vhost-bridge,
# from a host driver and from a VM, against the same payloads over a UNIX socket pair (an echo
# thread in the same bench program). Host figures: medians of 3 alternated runs.
virtio_section() {
    echo "== virtio over ivshmem" >&2
    cargo build --release --quiet -p vhost-bridge --examples
    local sock=$work/virtio.sock bench=$R/examples/virtio_bench
    start_server "$sock" --memfd -l 16M -n 2
    vhost-user-echo --socket "$work/echo.sock" 2>"$work/echo.log" &
    pids+=("$!"); wait_for_line "$work/echo.log" "listening on" 10
    vhost-bridge -S "$sock" --backend "$work/echo.sock" --device echo 2>"$work/bridge.log" &
    pids+=("$!"); wait_for_line "$work/bridge.log" "serving virtio device" 10
    local bytes n i out virtio_rps=() pair_rps=() virtio_mbs=() pair_mbs=() virtio_rtt=()
    for bytes in 64 65536; do
        n=$(( bytes == 64 ? 20000 : 5000 ))
        virtio_rps=(); pair_rps=(); virtio_mbs=(); pair_mbs=()
        for i in 1 2 3; do
            out=$("$bench" virtio -S "$sock" --bytes "$bytes" -n "$n")
            virtio_rps+=("$(value requests_per_sec "$out")"); virtio_mbs+=("$(value mb_per_sec "$out")")
            [ "$bytes" = 64 ] && virtio_rtt+=("$(value rtt_ns "$out")")
            out=$("$bench" socketpair --bytes "$bytes" -n "$n")
            pair_rps+=("$(value requests_per_sec "$out")"); pair_mbs+=("$(value mb_per_sec "$out")")
        done
        local v p
        if [ "$bytes" = 64 ]; then
            v=$(median "${virtio_rps[@]}"); p=$(median "${pair_rps[@]}")
            row "echo requests/s, host driver ↔ vhost-user-echo through a virtqueue over ivshmem, 64 B, median of 3" \
                "$v/s" "UNIX socket pair echo, same payloads $p/s" "$(ratio "$v" "$p")" "≥ 1" \
                "virtio_bench virtio -S SOCK --bytes 64 -n $n vs virtio_bench socketpair, alternated 3×"
        else
            v=$(median "${virtio_mbs[@]}"); p=$(median "${pair_mbs[@]}")
            row "echo MB/s, host driver ↔ vhost-user-echo through a virtqueue over ivshmem, 64 KiB, median of 3" \
                "$v MB/s" "UNIX socket pair echo, same payloads $p MB/s" "$(ratio "$v" "$p")" "≥ 1" \
                "virtio_bench virtio -S SOCK --bytes 65536 -n $n vs virtio_bench socketpair, alternated 3×"
        fi
    done
    local host_rtt vm vm_rtt poll poll_rtt
    host_rtt=$(median "${virtio_rtt[@]}")
    vm=$(vmm --stats --guest builtin:virtio_echo --ivshmem "doorbell,socket=$sock,vectors=2" \
        --guest-args "requests=20000 warmup=1000 bytes=64" 2>&1)
    vm_rtt=$(value ns_per_round "$(tr ' ' '\n' <<<"$vm")")
    row "echo request VM ↔ vhost-user-echo through a virtqueue over ivshmem, 64 B, mean" "$vm_rtt ns" \
        "host driver, same device and payloads $host_rtt ns" "$(ratio "$vm_rtt" "$host_rtt")" "(interrupt path)" \
        "vmm --guest builtin:virtio_echo --guest-args 'requests=20000 warmup=1000 bytes=64' vs virtio_bench virtio"
    row "VMM exits per virtio request from a VM (kick = ioeventfd, call = irqfd)" \
        "$(stat exits_mmio "$vm") exits for 21,000 requests" \
        "slow doorbells $(stat ivshmem_slow_doorbells "$vm")" "—" "≈ set-up only" \
        "vmm --stats (exits_mmio, ivshmem_slow_doorbells) of the run above"
    poll=$(vmm --stats --guest builtin:virtio_echo --ivshmem "doorbell,socket=$sock,vectors=2" \
        --guest-args "requests=20000 warmup=1000 bytes=64 wait=poll" 2>&1 | tr ' ' '\n')
    poll_rtt=$(value ns_per_round "$poll")
    row "echo request from a VM polling the used ring (no calls), 64 B, mean" "$poll_rtt ns, $(value calls "$poll") calls" \
        "with calls (MSI-X) $vm_rtt ns" "$(ratio "$poll_rtt" "$vm_rtt")" "< 1" \
        "vmm --guest builtin:virtio_echo --guest-args 'requests=20000 warmup=1000 bytes=64 wait=poll'"
}

# Virtio over ivshmem with 16 requests in flight: a host driver keeps 16 echo requests out on
# queue 0 of vhost-user-echo (EVENT_IDX and indirect descriptors negotiated, one slot of the
# shared memory per request, the payload stamped in place, every answer read out and checked
# whole) against the same payloads through a UNIX socket pair at depth 16 (one non-blocking
# client thread, an echo thread that returns whatever one read brought) and against memcpy of
# the same payloads between 16 + 16 buffers. Two wake-up regimes: unpinned (each process where
# the scheduler puts it) and everything, server and backend included, under `taskset -c 0`. The
# floor of each regime is a raw eventfd round trip between two processes (examples/bench
# eventfd). Both sides busy-poll their ring for up to DEPTH_POLL_US µs (yielding the CPU between
# looks) before they arm a notification and sleep: vhost-user-echo --poll-us and virtio_bench
# --poll-us (the driver's DriverOptions::busy_poll); 0 turns polling off. Medians of 3
# alternated runs.
DEPTH_POLL_US=${DEPTH_POLL_US:-5}
# listed VALUES...: the values separated by ", " (each run of a row).
listed() { local all="$*"; echo "${all// /, }"; }
virtio_depth_section() {
    echo "== virtio over ivshmem, 16 in flight" >&2
    cargo build --release --quiet -p vhost-bridge --examples
    local bench=$R/examples/virtio_bench regime pin sock i bytes n out load label cmd
    local v_mbs v_rps p_mbs p_rps p1 m_mbs m_rps r_rps floor_p50 floor_mean kicks calls v p m r what unit
    for regime in unpinned pinned; do
        pin=(); label="unpinned"
        if [ "$regime" = pinned ]; then pin=(taskset -c 0); label="all on CPU 0"; fi
        local rpids=()
        sock=$work/depth-$regime.sock
        "${pin[@]}" ivshmem-server -F -S "$sock" --memfd -l 16M -n 2 2>"$sock.log" &
        rpids+=("$!"); pids+=("$!"); wait_for_line "$sock.log" "listening on" 10
        "${pin[@]}" vhost-user-echo --socket "$work/depth-$regime-echo.sock" --poll-us "$DEPTH_POLL_US" \
            2>"$work/depth-$regime-echo.log" &
        rpids+=("$!"); pids+=("$!"); wait_for_line "$work/depth-$regime-echo.log" "listening on" 10
        "${pin[@]}" vhost-bridge -S "$sock" --backend "$work/depth-$regime-echo.sock" --device echo \
            2>"$work/depth-$regime-bridge.log" &
        rpids+=("$!"); pids+=("$!")
        wait_for_line "$work/depth-$regime-bridge.log" "serving virtio device" 10
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        floor_p50=(); floor_mean=()
        for i in 1 2 3; do
            out=$("${pin[@]}" "$R/examples/bench" eventfd -n 20000 --warmup 2000)
            floor_p50+=("$(value rtt_p50_ns "$out")"); floor_mean+=("$(value rtt_ns "$out")")
        done
        for bytes in 65536 64; do
            # Long enough for the scheduler to settle where the two sides run: 200,000 64 B
            # requests (a few tens of ms) often ended before it had put them on their own CPUs.
            n=$(( bytes == 64 ? 2000000 : 20000 ))
            v_mbs=(); v_rps=(); p_mbs=(); p_rps=(); m_mbs=(); m_rps=(); r_rps=(); kicks=(); calls=()
            for i in 1 2 3; do
                out=$("${pin[@]}" "$bench" virtio -S "$sock" --bytes "$bytes" -n "$n" --depth 16 \
                    --event-idx --indirect --poll-us "$DEPTH_POLL_US")
                if [ "$(value max_outstanding "$out")" != 16 ]; then
                    echo "virtio_depth: not 16 in flight: $out" >&2; exit 1
                fi
                v_mbs+=("$(value mb_per_sec "$out")"); v_rps+=("$(value requests_per_sec "$out")")
                kicks+=("$(value kicks "$out")"); calls+=("$(value calls "$out")")
                out=$("${pin[@]}" "$bench" socketpair --bytes "$bytes" -n "$n" --depth 16)
                p_mbs+=("$(value mb_per_sec "$out")"); p_rps+=("$(value requests_per_sec "$out")")
                out=$("${pin[@]}" "$bench" memcpy --bytes "$bytes" -n "$((n * 10))" --depth 16)
                m_mbs+=("$(value mb_per_sec "$out")"); m_rps+=("$(value requests_per_sec "$out")")
                if [ "$bytes" = 64 ]; then
                    out=$("${pin[@]}" "$bench" ring-model --bytes 64 -n "$((n * 10))" --depth 16)
                    r_rps+=("$(value requests_per_sec "$out")")
                fi
            done
            out=$("${pin[@]}" "$bench" socketpair --bytes "$bytes" -n "$((n < 200000 ? n : 200000))" --depth 1)
            if [ "$bytes" = 65536 ]; then
                v=$(median "${v_mbs[@]}"); p=$(median "${p_mbs[@]}"); m=$(median "${m_mbs[@]}")
                what="echo MB/s, 64 KiB, 16 in flight"; unit=" MB/s"
                p1="$(value mb_per_sec "$out") MB/s"
            else
                v=$(median "${v_rps[@]}"); p=$(median "${p_rps[@]}"); m=$(median "${m_rps[@]}")
                what="echo requests/s, 64 B, 16 in flight"; unit="/s"
                p1="$(value requests_per_sec "$out")/s"
            fi
            cmd="virtio_bench virtio -S SOCK --bytes $bytes -n $n --depth 16 --event-idx --indirect --poll-us $DEPTH_POLL_US (vhost-user-echo --poll-us $DEPTH_POLL_US)"
            [ "$regime" = pinned ] && cmd="taskset -c 0 (server, backend, bridge, bench): $cmd"
            polling="busy polling up to $DEPTH_POLL_US µs on both sides"
            [ "$DEPTH_POLL_US" = 0 ] && polling="no busy polling"
            local runs
            if [ "$bytes" = 65536 ]; then runs=$(listed "${v_mbs[@]}"); else runs=$(listed "${v_rps[@]}"); fi
            row "$what, host driver ↔ vhost-user-echo over ivshmem ($label, $polling; per request $(median "${kicks[@]}") kicks, $(median "${calls[@]}") calls), median of 3 (runs: $runs)" \
                "$v$unit" "UNIX socket pair at depth 16 $p$unit (at depth 1: $p1)" \
                "$(ratio "$v" "$p")" "≥ 3" "$cmd vs virtio_bench socketpair --depth 16, alternated 3×"
            row "$what ($label, $polling), same runs" "$v$unit" "memcpy of the same payloads $m$unit" \
                "$(ratio "$v" "$m")" "≥ 0.25" \
                "same runs vs virtio_bench memcpy --bytes $bytes -n $((n * 10)) --depth 16"
            if [ "$bytes" = 64 ]; then
                r=$(median "${r_rps[@]}")
                row "$what, a minimal split ring between two threads of one process ($label; no vhost-user, no bounds checks, no notifications: the ring's own cost on this machine), same rounds, median of 3 (runs: $(listed "${r_rps[@]}"))" \
                    "$r$unit" "memcpy of the same payloads $m$unit" "$(ratio "$r" "$m")" "(reference)" \
                    "${pin[*]:+taskset -c 0 }virtio_bench ring-model --bytes 64 -n $((n * 10)) --depth 16 vs virtio_bench memcpy, alternated 3×"
                row "$what, ours against that ring model ($label)" "$v$unit" "ring model $r$unit" \
                    "$(ratio "$v" "$r")" "(diagnosis)" "same runs"
            fi
        done
        row "floor ($label): raw eventfd round trip between two processes, median of 3 (load average at the start: $load)" \
            "p50 $(median "${floor_p50[@]}") ns, mean $(median "${floor_mean[@]}") ns" "—" "—" \
            "(the wake-up cost)" "${pin[*]:+taskset -c 0 }bench eventfd -n 20000 --warmup 2000, 3×"
        for i in "${rpids[@]}"; do kill "$i" 2>/dev/null || true; done
        for i in "${rpids[@]}"; do wait "$i" 2>/dev/null || true; done
    done
}

# Inside one L1 of the nested bed, the same L2 (kernel, initramfs, command line) boots in our VMM
# and in QEMU (microvm, -accel kvm), and in firecracker and cloud-hypervisor when $FIRECRACKER /
# $CLOUD_HYPERVISOR name their binaries (built from their public sources: BENCHMARKS.md; never by
# this script or CI), alternated three times per configuration: the bzImage and the ELF vmlinux
# with 1 vCPU and 256 MiB, then the ELF vmlinux with 2 vCPUs, and with 1 GiB (the ELF form,
# since firecracker boots only that on x86: all four VMMs then have rows in every configuration).
NESTED_CONFIGS=${NESTED_CONFIGS:-vmlinuz:1:256M vmlinux:1:256M vmlinux:2:256M vmlinux:1:1G}
NESTED_ROUNDS=${NESTED_ROUNDS:-3}
# Each boot starts from compacted L1 memory (boot-bench's SETTLE=1), so that every VMM's guest
# RAM is backed from the same supply of free huge pages; NESTED_SETTLE=0 boots without. An
# untimed boot of ours comes first (boot-bench's WARMUP): the first L2 boot in a fresh L1 is
# faster than any later one, whichever VMM it is.
NESTED_SETTLE=${NESTED_SETTLE:-1}
nested_section() {
    command -v qemu-system-x86_64 >/dev/null || { echo "  nested: no qemu-system-x86_64, skipped" >&2; return; }
    nested_boots nested "" "$NESTED_CONFIGS" "$NESTED_ROUNDS" --qemu
}

# The same boots on an instruction-clocked bed (nested-kvm.sh --icount: QEMU -icount
# shift=0,sleep=off, one L1 vCPU): L1's clock advances 1 ns per emulated instruction and skips
# idle time to the next timer, so a boot's time in L1 is the work the VMM, L1's kernel and the
# guest did (plus the guest's timed waits), not how fast the host happened to run. On this
# machine the host's own speed moves by up to 1.8x from one half second to the next
# (docs/boot-time.md), which no number of wall-clock rounds averages out; here repeated boots of
# one VMM agree within 1.5%. Without QEMU (its microvm boots are slow and it has the wall-clock
# rows) and without the warm-up boot (the first boot is not faster here). The configurations
# are the wall-clock section's; a 2-vCPU guest's vCPUs share L1's one. A boot takes about a
# minute of wall time (three with 2 vCPUs).
NESTED_ICOUNT_CONFIGS=${NESTED_ICOUNT_CONFIGS:-$NESTED_CONFIGS}
NESTED_ICOUNT_ROUNDS=${NESTED_ICOUNT_ROUNDS:-3}
nested_icount_section() {
    command -v qemu-system-x86_64 >/dev/null || { echo "  nested_icount: no qemu-system-x86_64, skipped" >&2; return; }
    nested_boots nested_icount "L1 clocked by instructions, " "$NESTED_ICOUNT_CONFIGS" \
        "$NESTED_ICOUNT_ROUNDS" --icount --arg WARMUP=0
}

# nested_boots SECTION LABEL CONFIGS ROUNDS BED_OPTIONS...: boot-bench in one L1 with the peers
# named by $FIRECRACKER / $CLOUD_HYPERVISOR, and a boot-time and a memory row per configuration and
# peer, LABEL heading each row's description of the configuration.
nested_boots() {
    local name=$1 label=$2 configs=$3 rounds=$4
    shift 4
    local boots peers=() config who
    [ -n "${FIRECRACKER:-}" ] && peers+=(--binary "$FIRECRACKER:/usr/local/bin/firecracker")
    [ -n "${CLOUD_HYPERVISOR:-}" ] && peers+=(--binary "$CLOUD_HYPERVISOR:/usr/local/bin/cloud-hypervisor")
    boots=$(scripts/nested-kvm.sh run tests/nested/boot-bench --bins "$R" --timeout 5400 --vmlinux --arg "ROUNDS=$rounds" \
        --arg "SETTLE=$NESTED_SETTLE" --arg "CONFIGS=${configs// /,}" "$@" "${peers[@]}" |
        tr -d '\r' | grep -E '^(BOOT|RSS-SPLIT)' || true)
    printf '%s\n' "$boots" | sed 's/^/  /' >&2
    # boot_median CONFIG WHO COLUMN: the median of that column over the `BOOT config who ms rss` lines.
    boot_median() {
        median $(awk -v c="$1" -v who="$2" -v col="$3" '$1 == "BOOT" && $2 == c && $3 == who {print $col}' <<<"$boots")
    }
    has() { grep -q "^BOOT $1 $2 " <<<"$boots"; }
    # boots_of CONFIG WHO: how many boots reached /init (bench.sh keeps the lines of every bed
    # attempt, so after a failed attempt there may be more than the rounds asked, or fewer).
    boots_of() { grep -c "^BOOT $1 $2 " <<<"$boots"; }
    local cmd="scripts/nested-kvm.sh run tests/nested/boot-bench --vmlinux $* --arg ROUNDS=$rounds --arg SETTLE=$NESTED_SETTLE --arg CONFIGS=${configs// /,} (alternated)"
    for config in $configs; do
        local kernel=${config%%:*} rest=${config#*:}
        local what="$label${kernel/vmlinuz/bzImage}, ${rest%%:*} vCPU, ${rest#*:}"
        what=${what/vmlinux/ELF vmlinux}
        if ! has "$config" vmm; then
            echo "  $name: $config: our VMM did not reach /init (BOOT-FAILED above), skipped" >&2
            continue
        fi
        local vmm_ms vmm_rss
        vmm_ms=$(boot_median "$config" vmm 4)
        vmm_rss=$(boot_median "$config" vmm 5)
        for who in qemu firecracker cloud-hypervisor; do
            has "$config" "$who" || continue
            local ms rss peer
            ms=$(boot_median "$config" "$who" 4)
            rss=$(boot_median "$config" "$who" 5)
            case $who in
                qemu) peer="QEMU -M microvm -accel kvm" ;;
                *) peer=$who ;;
            esac
            local counted
            counted="medians of $(boots_of "$config" vmm) boots of ours and $(boots_of "$config" "$who") of ${who/qemu/QEMU}'s ($rounds rounds asked)"
            row "Linux boot to /init ($what), $counted" "$vmm_ms ms" "$peer $ms ms" \
                "$(ratio "$vmm_ms" "$ms")" "≤ 1" "$cmd"
            row "VMM resident memory at /init ($what), $counted" "$vmm_rss KiB" "$peer $rss KiB" \
                "$(ratio "$vmm_rss" "$rss")" "< 1" "same runs (Rss of /proc/PID/smaps_rollup when L2 reaches /init)"
        done
    done
}

# On the nested bed (tests/nested/vhost-user-devices, MODE=bench): L2 Linux with its root on
# virtio-blk, a virtiofs share and vsock, every device served by the same third-party backend
# processes (qemu-storage-daemon, virtiofsd, vhost-device-vsock/-rng) in L1, booted in our VMM
# and in QEMU -accel kvm (microvm with PCIe: QEMU's quickest boot, as in the nested section;
# vhost-user-*-pci), alternated ROUNDS times in one L1. Until our
# VMM has vhost-user devices (issue 14) only QEMU runs: its rows have no ratio.
nested_virtio_section() {
    echo "== vhost-user devices (nested bed)" >&2
    local vmms=qemu,ours note="" out rounds=${VIRTIO_ROUNDS:-3}
    if ! grep -q 'vhost-user-blk' <<<"$(vmm --help 2>/dev/null)"; then   # (no pipe: pipefail and an early grep -q)
        echo "  nested_virtio: our vmm has no vhost-user devices yet (issue 14): QEMU alone, no ratios" >&2
        vmms=qemu note=" (our VMM: not yet, issue 14)"
    fi
    # Six L2 boots with their benchmarks: ~10 min on a quiet machine, past nested-kvm.sh's
    # default 900 s when other work shares the cores (everything then runs under TCG slower).
    out=$(PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin" scripts/nested-kvm.sh run \
        tests/nested/vhost-user-devices --bins "$R" --timeout 3600 --arg MODE=bench --arg "VMM=$vmms" \
        --arg ROUNDS=$rounds --arg QEMU_MACHINE=microvm,pcie=on | tr -d '\r' | grep -E '^BENCH' || true)
    printf '%s\n' "$out" | sed 's/^/  /' >&2
    if [ -z "$(bench_median qemu boot_to_init_ms)" ]; then
        echo "  nested_virtio: QEMU's L2 did not report (BENCH-FAILED above), skipped" >&2
        return
    fi
    local cmd="scripts/nested-kvm.sh run tests/nested/vhost-user-devices --arg MODE=bench --arg VMM=$vmms --arg ROUNDS=$rounds --arg QEMU_MACHINE=microvm,pcie=on"
    # virtio_row WHAT KEY UNIT TARGET COMMAND: ours against QEMU, medians of the rounds.
    virtio_row() {
        local q o r="—" n
        q=$(bench_median qemu "$2"); o=$(bench_median ours "$2")
        [ -z "$o" ] || [ -z "$q" ] || r=$(ratio "$o" "$q")
        n=$(boots_measured "$2")
        row "$1, median of $n$note" "${o:-—} $3" "QEMU -M microvm,pcie=on -accel kvm, vhost-user-*-pci: ${q:-—} $3" "$r" "$4" "$5"
    }
    # boots_measured KEY: "3", or "2 of ours and 3 of QEMU's (3 asked)" when boots failed twice.
    boots_measured() {
        local no nq
        no=$(bench_count ours "$1"); nq=$(bench_count qemu "$1")
        if [ "$no" = "$rounds" ] && [ "$nq" = "$rounds" ]; then echo "$rounds"
        else echo "$no of ours and $nq of QEMU's ($rounds asked)"; fi
    }
    virtio_row "Linux boot to /init with root on virtio-blk (nested bed)" boot_to_init_ms ms "≤ 1" \
        "$cmd (VMM start → L2-READY from /sbin/init on /dev/vda)"
    virtio_row "VMM resident memory at /init, 512 MiB shared guest RAM, 5 vhost-user devices + virtio-net" \
        rss_kib KiB "< 1" "same runs (Rss of the VMM process, /proc/PID/smaps_rollup)"
    virtio_row "virtio-blk sequential read (1 MiB O_DIRECT reads, 64 MiB)" seq_read_mbs MiB/s "≥ 1" \
        "same runs: bed-io seqread /dev/vdb 64 in L2"
    virtio_row "virtio-blk sequential write (1 MiB O_DIRECT writes + fsync, 64 MiB)" seq_write_mbs MiB/s "≥ 1" \
        "same runs: bed-io seqwrite /dev/vdb 64 in L2"
    virtio_row "virtio-blk 4 KiB random reads (O_DIRECT, 1 thread, 5 s)" randread_iops IOPS "≥ 1" \
        "same runs: bed-io randread /dev/vdb 5 in L2"
    virtio_row "virtiofs: copy a tree of 200 × 16 KiB files out of the share" fs_tree_read_ms ms "≤ 1" \
        "same runs: cp -a /share/tree /tmp/tree in L2"
    virtio_row "virtiofs: copy that tree into the share (+ sync)" fs_tree_write_ms ms "≤ 1" \
        "same runs: cp -a /tmp/tree /share/tree-copy && sync in L2"
    virtio_row "vsock round trip L2 → L1 (1 byte, echo on vhost-device-vsock's UDS)" vsock_rtt_us µs "≤ 1" \
        "same runs: bed-io vsock-ping 2 5002 2000 in L2, bed-io uds-echo in L1"
    # where WHO: per operation, the KVM exits (L1's debugfs, around each phase), device
    # interrupts and timer ticks (L2's /proc/interrupts) of the rows above, medians of the rounds.
    where() {
        local k args=()
        for k in reads randread_exits randread_virtio_irqs randread_irq_LOC randread_halt_exits \
            fsread_exits fsread_virtio_irqs fsread_irq_LOC fswrite_exits fswrite_virtio_irqs \
            fswrite_irq_LOC rounds vsock_exits vsock_virtio_irqs vsock_irq_LOC vsock_irq_window_exits; do
            args+=("$(bench_median "$1" "$k")")
        done
        python3 - "${args[@]}" <<'PY'
import sys
def f(x):
    return float(x) if x else float("nan")
r, re, ri, rt, rh, fre, fri, frt, fwe, fwi, fwt, p, ve, vi, vt, vw = map(f, sys.argv[1:])
n = p * 1.1  # bed-io vsock-ping adds a tenth for warm-up
print(f"per 4 KiB read {re / r:.1f} KVM exits ({rh / r:.2f} HLT), {ri / r:.2f} device interrupts, {rt / r:.2f} timer ticks; "
      f"per file copied out of / into the share {fre / 200:.0f} / {fwe / 200:.0f} exits, {fri / 200:.1f} / {fwi / 200:.1f} interrupts, "
      f"{frt / 200:.1f} / {fwt / 200:.1f} ticks; per vsock round trip {ve / n:.1f} exits ({vw / n:.2f} interrupt windows), "
      f"{vi / n:.2f} device interrupts, {vt / n:.2f} ticks")
PY
    }
    if [ -n "$(bench_median ours randread_exits)" ] && [ -n "$(bench_median qemu randread_exits)" ]; then
        row "where the time goes, ours (medians; L1 KVM debugfs exits, L2 /proc/interrupts)" "$(where ours)" \
            "QEMU -M microvm,pcie=on -accel kvm, vhost-user-*-pci: $(where qemu)" "—" "(diagnosis)" "same runs"
    fi
}

# On the nested bed (tests/nested/linux-virtio-bench): a Linux L2 guest in QEMU -accel kvm inside
# L1 reads /dev/hwrng and pings a vsock echo in L1, through the stock virtio-rng and vsock drivers
# on our transport (QEMU's ivshmem-doorbell on ivshmem-server, virtio_ivshmem.ko, vhost-bridge)
# and on QEMU's vhost-user-rng-pci / vhost-user-vsock-pci, the same backend binaries
# (vhost-device-rng, vhost-device-vsock) behind both. One transport per boot (Linux takes one
# vsock device), alternated, $rounds rounds, medians; per-operation interrupt and KVM exit counts
# (L2's /proc/interrupts, L1's KVM debugfs) say where the time goes.
nested_linux_virtio_section() {
    echo "== Linux virtio drivers over ivshmem vs vhost-user-pci (nested bed)" >&2
    local out rounds=3 secs=5 pings=1000
    out=$(PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin" scripts/nested-kvm.sh run \
        tests/nested/linux-virtio-bench --bins "$R" --arg ROUNDS=$rounds --arg RNG_SECS=$secs \
        --arg PINGS=$pings --timeout 3600 | tr -d '\r' | grep -E '^(BENCH|ivshmem: FACT|pci: FACT)' || true)
    printf '%s\n' "$out" | sed 's/^/  /' >&2
    local q o
    q=$(bench_median pci read_bytes_per_s); o=$(bench_median ivshmem read_bytes_per_s)
    if [ -z "$q" ] || [ -z "$o" ]; then
        echo "  nested_linux_virtio: a transport did not report (BENCH-FAILED above), skipped" >&2
        return
    fi
    local cmd="scripts/nested-kvm.sh run tests/nested/linux-virtio-bench --arg ROUNDS=$rounds --arg RNG_SECS=$secs --arg PINGS=$pings"
    local qemu="QEMU -M microvm,pcie=on -accel kvm"
    # boots WHO: how many of WHO's boots reported (a run cut short by the bed has fewer).
    boots() { printf '%s\n' "$out" | grep -c "^BENCH $1 read_bytes_per_s=" || true; }
    local n
    n="medians of $(boots ivshmem) boots over ivshmem, $(boots pci) with vhost-user-*-pci ($rounds rounds asked)"
    row "L2 Linux /dev/hwrng throughput: virtio-rng over ivshmem (QEMU ivshmem-doorbell + virtio_ivshmem.ko + vhost-bridge), $n" \
        "$o B/s" "$qemu, vhost-user-rng-pci (MSI-X): $q B/s" "$(ratio "$o" "$q")" "≥ 0.9" \
        "$cmd (bed-io read /dev/hwrng $secs 4096 in L2; vhost-device-rng behind both)"
    local qr or
    qr=$(bench_median pci vsock_rtt_us); or=$(bench_median ivshmem vsock_rtt_us)
    row "L2 Linux vsock round trips/s (1 byte, L2 → echo in L1): vsock over ivshmem, $n" \
        "$(python3 -c "print(round(1e6 / $or, 1))")/s ($or µs)" \
        "$qemu, vhost-user-vsock-pci: $(python3 -c "print(round(1e6 / $qr, 1))")/s ($qr µs)" \
        "$(ratio "$qr" "$or")" "≥ 0.9" \
        "same runs: bed-io vsock-ping 2 5002 $pings in L2, bed-io uds-echo on vhost-device-vsock's UDS in L1"
    # per_op WHO: interrupts and KVM exits per /dev/hwrng request (one interrupt each: virtio-rng
    # keeps one request out) and per vsock round trip (bed-io adds a tenth for warm-up).
    per_op() {
        python3 - "$(bench_median "$1" rng_bytes)" "$(bench_median "$1" rng_irqs)" \
            "$(bench_median "$1" rng_exits)" "$(bench_median "$1" rng_halt_exits)" \
            "$(bench_median "$1" rng_ticks)" "$(bench_median "$1" vsock_rounds)" \
            "$(bench_median "$1" vsock_irqs)" "$(bench_median "$1" vsock_exits)" \
            "$(bench_median "$1" vsock_halt_exits)" "$(bench_median "$1" vsock_ticks)" <<'PY'
import sys
def f(x):
    return float(x) if x else float("nan")
b, ri, re, rh, rt, p, vi, ve, vh, vt = map(f, sys.argv[1:])
n = p * 1.1
print(f"{b / ri:.0f} B/request; per request {re / ri:.1f} KVM exits ({rh / ri:.2f} HLT), {rt / ri:.2f} timer ticks; "
      f"per vsock round trip {vi / n:.2f} device interrupts, {ve / n:.1f} KVM exits ({vh / n:.2f} HLT), {vt / n:.2f} timer ticks")
PY
    }
    row "where the time goes, ours (medians; L2 /proc/interrupts, L1 KVM debugfs exits)" "$(per_op ivshmem)" \
        "$qemu, vhost-user-*-pci: $(per_op pci)" "—" "(diagnosis)" "same runs"
    # every WHO KEY: KEY of each of WHO's boots, in run order.
    every() {
        printf '%s\n' "$out" | awk -v who="$1" '$1 == "BENCH" && $2 == who {for (i = 3; i <= NF; i++) print $i}' |
            sed -n "s/^$2=//p" | paste -sd, - | sed 's/,/, /g'
    }
    local who
    for who in ivshmem pci; do
        row "every $who boot, in run order" "/dev/hwrng $(every "$who" read_bytes_per_s) B/s" \
            "vsock round trip $(every "$who" vsock_rtt_us) µs" "—" "(spread)" "same runs"
    done
}

# On the nested bed (tests/nested/guest-bench): guest_bench (linux-guest/examples) in L2 Linux in
# our VMM rings a guest-program pong VM and waits to be rung back, against the built-in
# ivshmem_pingpong program doing the same with its own pong VM; and writes into BAR2 through the
# driver's write-back mapping against its own anonymous memory.
guest_linux_section() {
    echo "== Linux guest (nested bed)" >&2
    local module benches
    module=$(scripts/build-guest-driver.sh) ||
        { echo "  guest_linux: cannot build the guest driver, skipped" >&2; return; }
    cargo build --release --quiet -p ivshmem-guest --examples
    benches=$(scripts/nested-kvm.sh run tests/nested/guest-bench --bins "$R" \
        --arg ROUNDS=1000 --arg BLOCKS=3 --arg WARMUP=100 \
        --l2-file "$module:/ivshmem.ko" --l2-file tests/nested/lib.sh:/lib.sh \
        --l2-binary "$R/examples/guest_bench:/usr/local/bin/guest_bench" |
        tr -d '\r' | grep -E '^(BENCH|RESULT)' || true)
    printf '%s\n' "$benches" | sed 's/^/  /' >&2
    benches=$(printf '%s\n' "$benches" | sed -n 's/^BENCH //p')
    local lmed lmean lp50 pmed lbar lram pbar pram
    lmed=$(value linux_rtt_block_median_ns "$benches")
    lmean=$(value linux_rtt_mean_ns "$benches"); lp50=$(value linux_rtt_p50_ns "$benches")
    # Every run of the guest program, before and after Linux's: the median of their means.
    pmed=$(printf '%s\n' "$benches" | sed -n 's/^program_rtt_block_ns=\([0-9]\+\)$/\1/p' | xargs)
    [ -z "$pmed" ] || pmed=$(median $pmed)
    lbar=$(value linux_bar2_gbps "$benches"); lram=$(value linux_ram_gbps "$benches")
    pbar=$(value program_bar2_gbps "$benches"); pram=$(value program_ram_gbps "$benches")
    if [ -z "$lmed" ] || [ -z "$pmed" ] || [ -z "$lbar" ] || [ -z "$lram" ]; then
        echo "  guest_linux: the guest-bench scenario did not report every figure, skipped" >&2
        return
    fi
    row "Linux guest doorbell round trip VM↔VM on the nested bed, median of 3 blocks' means" \
        "$lmed ns (all rounds: p50 $lp50 ns, mean $lmean ns)" \
        "guest program (ivshmem_pingpong), median of 6 runs' means (3 before, 3 after) $pmed ns" \
        "$(ratio "$lmed" "$pmed")" "(kernel wake-up path)" \
        "nested-kvm.sh run tests/nested/guest-bench --arg ROUNDS=1000 --arg BLOCKS=3: guest_bench rtt in L2 Linux vs ivshmem_pingpong, each with a pong VM"
    row "Linux guest write bandwidth into BAR2 (driver's write-back mmap) on the nested bed, median of 3" \
        "$lbar GB/s" "its own anonymous memory $lram GB/s (alternated)" "$(ratio "$lbar" "$lram")" \
        "≈ the guest program's ratio" "guest_bench bandwidth --window-mb 8 (same run)"
    if [ -n "$pbar" ] && [ -n "$pram" ]; then
        row "guest-program write bandwidth into BAR2 on the nested bed (the bed's own BAR2 cost)" \
            "$pbar GB/s" "guest RAM $pram GB/s" "$(ratio "$pbar" "$pram")" "(reference)" \
            "vmm --guest builtin:ivshmem_bandwidth --guest-args window_mb=8 in L1 (same run)"
    fi
}

declare -A titles=(
    [host]="host peers (peer library vs raw eventfd and memcpy)"
    [server]="server (connects and churn vs a minimal broker)"
    [server_ops]="server operations (upgrade pause, crash recovery, state table cost)"
    [vmm]="VMM (exit dispatch, guest RAM, start-up, memory)"
    [ivshmem]="ivshmem devices (VM doorbells and BAR2)"
    [virtio]="virtio over ivshmem (requests through a virtqueue vs a UNIX socket pair)"
    [virtio_depth]="virtio over ivshmem, 16 requests in flight (vs a socket pair at the same depth and memcpy)"
    [nested]="Linux boot on ordinary KVM (nested bed) vs QEMU, firecracker, cloud-hypervisor"
    [nested_icount]="Linux boot on an instruction-clocked nested bed vs firecracker, cloud-hypervisor"
    [nested_virtio]="Linux on vhost-user devices (nested bed) vs QEMU"
    [guest_linux]="a Linux guest's ivshmem driver (nested bed)"
    [nested_linux_virtio]="Linux virtio drivers over ivshmem vs vhost-user PCI devices (nested bed)"
)
fresh=()
for section in $sections; do
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    "${section}_section"
    load_after=$(cut -d' ' -f1 /proc/loadavg)
    mine=()
    for r in "${rows[@]}"; do
        if [ "${r%%	*}" = "$section" ]; then mine+=("${r#*	}"); fi
    done
    if [ ${#mine[@]} -eq 0 ]; then
        echo "bench.sh: section $section measured nothing; BENCHMARKS.md keeps its last figures" >&2
        continue
    fi
    block="$work/block-$section.md"
    {
        echo "## $section: ${titles[$section]}"
        echo
        echo "Measured $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -r); KVM modules:"
        echo "$(ls /sys/module 2>/dev/null | grep -E '^kvm' | paste -sd, -)) by \`SECTIONS=$section scripts/bench.sh\`;"
        echo "1-minute load average $load_before at the start, $load_after at the end."
        case $section in
            nested* | guest_linux)  # the bed's L1 and the QEMU baselines inside it
                echo "L1's TCG and the QEMU inside L1: $(qemu-system-x86_64 --version 2>/dev/null | head -n1 | sed 's/ emulator version//')." ;;
        esac
        echo
        echo "| what | result | baseline (same run) | ratio | target | command |"
        echo "|---|---|---|---|---|---|"
        printf '%s\n' "${mine[@]}"
    } >"$block"
    fresh+=("$section=$block")
done

cat >"$work/preamble.md" <<'PREAMBLE'
# Benchmarks

Produced by `scripts/bench.sh`: each line is one run, and its baseline was measured in the same
run. Each section says when and on what it was measured; `SECTIONS="host server"
scripts/bench.sh` re-measures only those sections and keeps the others. Binaries are in
`target/release` (`examples/bench`, `examples/load`, `vmm`).
PREAMBLE
{
    echo "## Notes"
    echo
    cat <<'NOTES'
- Host round trips are dominated by the two wake-ups of a blocking eventfd read; the doorbell
  goes through exactly the same kernel objects as the raw pair (the server only hands out the
  fds), so its ratio is 1 within noise.
- VM doorbells: a VM rings by writing BAR0's Doorbell register, which KVM turns into an eventfd
  signal (ioeventfd); the receiver's eventfd is bound to an MSI route (irqfd), which KVM injects.
  The VMM's userspace is not involved (the exits row: the only exits are the program's set-up and
  its console; `"ivshmem_slow_doorbells":0`). The extra time over a raw eventfd pair is the guest's
  interrupt entry on this machine's nested KVM, where guest ring-0 code (the interrupt stub) is
  emulated; on hardware KVM that part is native.
- Connecting 1,000 peers × 4 vectors is 4,003,000 protocol messages (each peer learns every other
  peer's vectors); the floor is a blocking broker without epoll, queues or leave handling.
- The nested rows run inside QEMU's software emulation (TCG) of an SVM CPU: absolute times there
  mean nothing for hardware, the ratio between two VMMs booting the same kernel on the same
  ordinary KVM does. Both VMMs' RSS includes the guest RAM Linux has touched by /init.
- Nested boot rows against firecracker and cloud-hypervisor appear when `FIRECRACKER` and
  `CLOUD_HYPERVISOR` name their binaries (`FIRECRACKER=... CLOUD_HYPERVISOR=... SECTIONS=nested
  scripts/bench.sh`); neither this script nor CI builds them, and none of their code is in this
  repository. Build them outside it from their public sources with their default features, e.g.
  `git clone https://github.com/firecracker-microvm/firecracker /work/peers/firecracker &&
  cargo build --release -p firecracker` and `git clone
  https://github.com/cloud-hypervisor/cloud-hypervisor /work/peers/cloud-hypervisor && cargo
  build --release` (binaries under each `target/release/`). On the bed L1 runs `-cpu
  max,-xsave`, so firecracker's list of required KVM capabilities (`kvm_capabilities`) must drop
  XSAVE and XCRS there (issue 15); firecracker loads only ELF kernels on x86, so it has rows for
  the ELF configuration only; both end on the guest's reset. Where a boot's time goes and why the
  VMMs differ: docs/boot-time.md.
- nested_icount rows: the same boots with L1's clock counting emulated instructions
  (`nested-kvm.sh --icount`, QEMU `-icount shift=0,sleep=off`, one L1 vCPU). A time there is
  the work the VMM, L1's KVM and the guest did, not how fast the host ran: this machine's own
  speed moves by up to 1.8x within seconds (docs/boot-time.md), and the wall-clock rows above
  carry that, while repeated boots of one VMM agree within 1.5% here. What it does not weigh as
  hardware would: an exit costs the instructions L1's KVM runs for it, not a world switch, and
  a copy costs its instructions, not its cache misses. Resident memory is measured as in the
  wall-clock rows.
- `mapping=trap` serves every guest access to BAR2 through an MMIO exit: it exists to show the gap.
- Linux guest rows (nested bed, TCG, cores shared, hence medians of blocks): the Linux program
  rings with one store to the driver's mapped Doorbell register and sleeps in poll() on its
  vector's eventfd, so each round adds the guest kernel's interrupt handler, eventfd wake-up,
  scheduler and system calls to what the guest program pays (its tiny ring-0 stub, plus two reads
  of the VMM's clock register per wait). Bandwidth compares glibc's memset into BAR2 with memset
  into the same program's anonymous memory, alternated; the guest program's row shows what BAR2
  costs on this bed without a kernel.
- vhost-user device rows (nested bed): L2 Linux with its root on virtio-blk boots in QEMU -accel
  kvm (`-M microvm,pcie=on`: qboot instead of SeaBIOS; vhost-user-*-pci) and in our VMM,
  alternated, each time on fresh backend processes
  (qemu-storage-daemon, virtiofsd, vhost-device-vsock, vhost-device-rng) inside the same L1; the
  data path is guest ↔ backend in both, so throughput ratios should be about 1 and show only what
  the VMMs' notification paths (ioeventfd, irqfd) cost. Under TCG the absolute figures are slow
  and move with the machine's load: only the ratio within one run means something, and on a
  loaded machine (the header's load averages) not even that: rounds then disagree by 2-4x.
  During the I/O rows the only exits to either VMM's userspace are the serial console's (L1's
  kvm tracepoints, docs/virtio-pci.md). Since 2026-12-05 our VMM offers the TSC-deadline timer
  as QEMU's `-cpu host` does; before, L2 armed its LAPIC timer through the initial-count
  register, with 1.7-1.8 times QEMU's timer writes for the same I/O.
- virtio_depth rows: with 16 requests out and both sides busy polling their ring for up to
  DEPTH_POLL_US µs (default 5; vhost-user-echo --poll-us, virtio_bench --poll-us: 32 looks per
  yield of the CPU) before they arm a notification and sleep, kicks and calls all but disappear
  (0.000 per request in our runs; without polling EVENT_IDX left one of each per 15 to 30
  requests, and even unpinned the two sides mostly took turns: 0.3 and 0.23 CPUs busy). Unpinned,
  the driver and vhost-user-echo then work on their own cores at once, which is also how 64 KiB
  echo comes near a single thread's memcpy rate; under `taskset -c 0` they take turns, two
  process switches (sched_yield) per 16 requests. Where a 64 B request's time went (perf, and
  CPU time per request from getrusage and /proc, 2026-12-05): vm-memory's `to_region_addr` was
  the largest user-space symbol on both sides (12 to 21 % of samples), one region search per
  field; now the driver looks each ring up once per operation and reaches fields through that
  slice, and vhost-user-echo reads the avail ring and the chains (direct and indirect) through
  slices looked up once per pass, with one vring lock per pass and nothing allocated per batch:
  user time per request, pinned, driver 180 -> 125 ns, backend 185 -> 100 ns. Same runs, same
  load (1.7 to 2.8 on the 2 cores): main's 1.1 M req/s became 2.2 M pinned and 2.2 to 6 M
  unpinned (6 M with both cores free; when other work takes a core, a side waits for it and the
  rate halves). The 64 B rows miss the 0.25× memcpy target, and the ring-model rows
  (`virtio_bench ring-model`, since 2026-12-06) show how far a two-sided echo is from it here
  even with nothing around the ring: the same 64 B echo, 16 in flight, through a minimal split
  ring between two threads of one process (rings and buffers as arrays of atomics; the device
  thread answers like vhost-user-echo, the driver thread stamps, offers and checks like
  `virtio_bench virtio`; both look 32 times and then yield, never sleep; no vhost-user, no
  vm-memory, no notifications) reaches 0.16× memcpy unpinned and 0.03× on one CPU. A 64-byte
  memcpy is 8 ns (about 120 M/s) in a single thread's cache; an echo moves the request's and the
  answer's cache lines, the descriptors, the avail entry and the used element between the two
  cores, or, on one CPU, pays two thread or process switches per 16 requests: the model's 3.4 M/s
  there is 16 requests per 4.6 µs, where 0.25× memcpy (30 M/s) would leave 0.5 µs for the 16 and
  both switches, so at depth 16 no echo between two threads or processes sharing a CPU can reach
  it. Since 2026-12-06 the host driver reads the device's used index once per batch of used
  elements and leaves descriptors that already hold a chain's buffers unwritten, and
  vhost-user-echo writes the used ring through its slice (docs/virtio-over-ivshmem.md). In the
  table's run ours is at 0.96 of the model on one CPU and 0.38 unpinned. 64 B rows take 2,000,000
  requests (the depth-1 socket pair 200,000): with 200,000, a run of a few tens of milliseconds
  often ended before the scheduler had put the two sides on their own CPUs. Unpinned runs are
  still bimodal: another run of the section the same hour had all three at the one-CPU rate
  (median 3.4 M/s). The floor row gives the wake-up cost and the load average at the time.
- Linux virtio drivers over ivshmem (nested bed): both boots are QEMU -accel kvm (`-M
  microvm,pcie=on`, 256 MiB memfd RAM, 1 vCPU) in the same L1, with the same kernel, drivers
  (virtio-rng, vmw_vsock_virtio_transport) and backend binaries (vhost-device-rng,
  vhost-device-vsock, fresh for every boot); only the transport differs. Over ivshmem the data
  path has no extra process either: a kick is a write of QEMU's ivshmem-doorbell register, a KVM
  ioeventfd on the backend's kick eventfd, and a call is the backend's write to our vector's
  eventfd, a KVM irqfd on its MSI-X route; vhost-bridge only does the set-up. What differs per
  operation is inside the guest: every buffer is copied into the shared-memory arena when
  mapped and back when unmapped (64 B per /dev/hwrng request, a 4 KiB receive buffer per vsock
  packet), and our transport gives every queue its own MSI-X vector where QEMU's
  vhost-user-vsock-pci (two vectors by default) shares one among its queues, so a vsock round
  trip takes more interrupts. `vhost-user-rng-pci` runs with `vectors=2`: its default of one
  vector leaves Linux on INTx through the IO-APIC. The rows give the interrupts and KVM exits
  per operation (L2's /proc/interrupts, L1's KVM debugfs) next to the local timer ticks, which
  cost exits of their own and grow with the time an operation takes.
NOTES
} >"$work/notes.md"
python3 scripts/bench_merge.py "$out" "$work/preamble.md" "$work/notes.md" "${fresh[@]}"
cat "$out"
