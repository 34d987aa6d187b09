# Shared by the nested scenarios' l1.sh (sourced): `check` runs one command and prints one
# `RESULT name pass|fail` line, which tests/src/nested.rs collects. Every command is bounded
# (CHECK_TIMEOUT seconds, default 240), so one stuck VM fails its own check with its output
# instead of silencing the whole bed until its overall timeout.
CHECK_TIMEOUT=${CHECK_TIMEOUT:-240}

# bounded SECONDS CMD...: runs CMD in the background and waits for it. Past SECONDS it gets
# SIGTERM (our VMM then says where each vCPU was), and SIGKILL 10 s later; the status is then
# 124 whatever CMD returned, and a line on stderr says so. The watchdog writes nothing to CMD's
# output, so a caller capturing it with $(...) is not held open by the watchdog's sleep.
bounded() {
    local limit=$1 pid watchdog rc mark
    shift
    mark=/tmp/.bounded.$$.$RANDOM
    "$@" &
    pid=$!
    (sleep "$limit"; touch "$mark"; kill -TERM "$pid"; sleep 10; kill -KILL "$pid") \
        >/dev/null 2>&1 &
    watchdog=$!
    wait "$pid"
    rc=$?
    kill "$watchdog" 2>/dev/null
    if [ -e "$mark" ]; then
        rm -f "$mark"
        echo "bounded: '$*' ran over ${limit}s: stopped (status $rc)" >&2
        return 124
    fi
    return "$rc"
}

# check NAME WANT_STATUS PATTERN CMD...: runs CMD (bounded); passes when it exits WANT_STATUS and
# its output (stdout and stderr) contains PATTERN (grep -E). On failure the output's tail follows.
check() {
    local name=$1 want=$2 pattern=$3 out rc
    shift 3
    out=$(bounded "$CHECK_TIMEOUT" "$@" 2>&1)
    rc=$?
    if [ "$rc" = "$want" ] && printf '%s\n' "$out" | grep -qE -- "$pattern"; then
        echo "RESULT $name pass"
    else
        echo "RESULT $name fail (status $rc, wanted $want and /$pattern/)"
        printf '%s\n' "$out" | tail -n 25 | sed "s/^/  $name| /"
    fi
}

# wait_bounded PID [SECONDS]: waits for a background job started by this shell, SIGTERM then
# SIGKILL past SECONDS (default CHECK_TIMEOUT); the status is the job's, or 124 when stopped.
wait_bounded() {
    local pid=$1 limit=${2:-$CHECK_TIMEOUT} i
    for i in $(seq "$((limit * 10))"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "wait_bounded: job $pid ran over ${limit}s: stopping it" >&2
        kill -TERM "$pid"
        for i in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid"
        return 124
    fi
    wait "$pid"
}

# wait_console FILE PATTERN SECONDS PID: until FILE (a VM's console) contains PATTERN (grep -E;
# status 0), PID ends (1) or SECONDS of wall time pass (1). Wall time, not a count of polls: on
# a loaded bed each poll takes longer, and TCG has been seen to hang an L2 at its start (QEMU's
# and ours alike). It polls every 10 ms, since boot benchmarks time the pattern's arrival by it,
# and reads the clock at every 100th poll only.
wait_console() {
    local deadline polls=0
    deadline=$(($(awk '{printf "%d", $1}' /proc/uptime) + $3))
    while :; do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$4" 2>/dev/null || return 1
        polls=$((polls + 1))
        if [ $((polls % 100)) = 0 ] && [ "$(awk '{printf "%d", $1}' /proc/uptime)" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.01
    done
}

# wait_for FILE PATTERN [SECONDS]: polls until FILE contains PATTERN (grep -E).
wait_for() {
    local i
    for i in $(seq $((${3:-30} * 10))); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_socket PATH: until a backend's listening socket exists (30 s at most).
wait_socket() {
    for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done
    echo "$1 did not appear" >&2
    return 1
}

# hwrng_read: 16 bytes from /dev/hwrng, bounded (busybox timeout kills dd); prints the count.
hwrng_read() { timeout 20 dd if=/dev/hwrng bs=16 count=1 2>/dev/null | wc -c; }

# hwrng_first_read (in a guest, with virtio_rng bound): vhost-device-rng 0.1 may drop the
# driver's first request: the front-end's kick can reach it before it has processed
# SET_VRING_ENABLE (QEMU does not wait for it), and it reads the kick with its ring still
# disabled; the driver then waits for that request forever. Rebinding the driver resets the
# device and asks again (up to three times). Reports each read as a FACT line.
hwrng_first_read() {
    local n i dev
    n=$(hwrng_read)
    echo "FACT hwrng first read: $n bytes"
    for i in 1 2 3; do
        [ "$n" = 16 ] && break
        dev=$(basename /sys/bus/virtio/drivers/virtio_rng/virtio*)
        echo "$dev" >/sys/bus/virtio/drivers/virtio_rng/unbind
        echo "$dev" >/sys/bus/virtio/drivers/virtio_rng/bind
        n=$(hwrng_read)
        echo "FACT hwrng read after rebinding $dev ($i): $n bytes"
    done
}

# wait_l2_ready LOG PID: waits (at most 300 s of wall time) until LOG shows L2-READY (L2's /init
# started); fails as soon as PID, the VMM writing LOG, has ended without it.
wait_l2_ready() { wait_console "$1" L2-READY 300 "$2"; }

# watch_phases PID: while the VM of process PID runs, at each `PHASE name begin|end` line on its
# console (/tmp/vm.log), appends that line and `phase_sample PID` (key=value words; the scenario
# defines it, e.g. KVM's debugfs exit counters) to /tmp/phases.
watch_phases() {
    local seen=0 n
    : >/tmp/phases
    while kill -0 "$1" 2>/dev/null; do
        n=$(grep -c '^PHASE' /tmp/vm.log)
        while [ "$seen" -lt "$n" ]; do
            seen=$((seen + 1))
            echo "$(grep '^PHASE' /tmp/vm.log | sed -n "${seen}p" | tr -d '\r') $(phase_sample "$1")" >>/tmp/phases
        done
        sleep 0.05
    done
}

# phase_exits: BENCH words name_key=N (end minus begin, for every sampled key) from /tmp/phases.
phase_exits() {
    awk '$1 == "PHASE" {
        for (i = 4; i <= NF; i++) { split($i, kv, "="); v[$2, $3, kv[1]] = kv[2]; keys[kv[1]] = 1; names[$2] = 1 }
    } END {
        for (n in names) for (k in keys) if ((n, "end", k) in v && (n, "begin", k) in v)
            printf "%s_%s=%d ", n, k, v[n, "end", k] - v[n, "begin", k]
    }' /tmp/phases
}

# kvm_exits PID KEY...: KVM's counters KEY (debugfs, summed over the VM's vCPUs) of the VM of
# process PID, as key=value words (nothing when debugfs has no such VM).
kvm_exits() {
    local d f pid=$1
    shift
    for d in /sys/kernel/debug/kvm/"$pid"-*; do break; done
    [ -d "$d" ] || return 0
    for f in "$@"; do
        printf '%s=%s ' "$f" "$(cat "$d/$f" 2>/dev/null)"
    done
}
