#!/usr/bin/env bash
# Soak: an ivshmem-server, two VMs playing doorbell ping-pong and host peers (ivshmem-client)
# that join, write and read shared memory, ring both VMs and leave, over and over, for MINUTES
# minutes (default 3). Samples the open fds and resident memory of the server and both VMMs
# every few seconds and prints them (start and end: the VMs alone on the server, before the
# first host peer and after the last; max: over the run) as a Markdown table, with the counts of
# host-peer cycles and failures. Not part of CI: a bounded run to spot leaks and growth.
#
# Usage: scripts/soak.sh [MINUTES]     (release build; SOAK_INTERVAL=SECONDS between samples)
#   SOAK_VMS=0    host peers only (no VMs, no KVM needed; they write, read back and leave)
#   SOAK_TRACE=1  also print every sample (seconds, host-peer cycles, server fds and RSS)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

minutes=${1:-3}
interval=${SOAK_INTERVAL:-5}
with_vms=${SOAK_VMS:-1}
trace=${SOAK_TRACE:-0}
case $minutes in '' | *[!0-9]*) echo "usage: $0 [MINUTES]" >&2; exit 2 ;; esac

cargo build --workspace --release --quiet
bin=$(target_dir)/release
start_scratch soak
sock="$work/ivshmem.sock"

"$bin/ivshmem-server" -F -S "$sock" --memfd -l 16M -n 2 2>"$work/server.log" &
server=$!
pids+=("$server")
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

# Two VMs ping-pong on vector 0 for as long as the soak lasts (stopped with SIGTERM at the end).
# The pong VM joins first (peer 0), the ping VM second (peer 1).
start_vm() { # NAME ROLE PEER
    RUST_LOG="warn,vmm::devices::ivshmem=info" "$bin/vmm" --name "$1" --serial "file=$work/$1.console" --guest builtin:ivshmem_pingpong \
        --guest-args "role=$2 peer=$3 rounds=4000000000 warmup=0 timeout_ms=60000" \
        --ivshmem "doorbell,socket=$sock,vectors=2" 2>"$work/$1.log" &
}
# joined N: waits until the server announced peer N.
joined() {
    for _ in $(seq 200); do grep -q "peer $1 joined" "$work/server.log" && return 0; sleep 0.05; done
    echo "soak: peer $1 did not join" >&2
    exit 1
}
# vm_saw NAME TEXT: waits until the VM's ivshmem link logged TEXT (it logs every join and leave
# it has applied to the device).
vm_saw() {
    for _ in $(seq 200); do grep -q "$2" "$work/$1.log" && return 0; sleep 0.05; done
    echo "soak: VM $1 never logged '$2'" >&2
    exit 1
}
processes=(server)
if [ "$with_vms" != 0 ]; then
    start_vm pong pong 1
    pong=$!
    pids+=("$pong")
    joined 0
    start_vm ping ping 0
    ping=$!
    pids+=("$ping")
    joined 1
    processes+=(pong ping)
    ring="int 0 1; int 1 1"
else
    ring="" # nobody to ring
fi

# Host peers: join, write and read back data, ring both VMs on vector 1, leave; repeat.
host_loop() {
    local n=0 failed=0
    while [ ! -e "$work/stop" ]; do
        n=$((n + 1))
        local text="soak-$n"
        if out=$("$bin/ivshmem-client" -S "$sock" -c "write 65536 $text; read 65536 ${#text}; $ring" 2>&1) &&
            grep -q "$text" <<<"$out"; then :; else
            failed=$((failed + 1))
            echo "$out" >"$work/host.failure"
        fi
        echo "$n $failed" >"$work/host.count"
    done
}

fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
declare -A first last max
sample() {
    local name pid v
    for name in "${processes[@]}"; do
        case $name in server) pid=$server ;; pong) pid=$pong ;; ping) pid=$ping ;; esac
        for metric in fds rss; do
            v=$($metric "$pid")
            [ -n "${first[$name.$metric]:-}" ] || first[$name.$metric]=$v
            last[$name.$metric]=$v
            [ "$v" -le "${max[$name.$metric]:-0}" ] || max[$name.$metric]=$v
        done
    done
    if [ "$trace" != 0 ]; then
        local cycles=0
        [ ! -e "$work/host.count" ] || read -r cycles _ <"$work/host.count"
        echo "soak: ${SECONDS}s cycles $cycles server fds ${last[server.fds]} rss ${last[server.rss]} KiB" >&2
    fi
}

# Start: the two VMs alone on the server. End: the same, after the last host peer left.
[ "$with_vms" = 0 ] || vm_saw pong "peer 1 joined" # the ping VM's join reached the pong VM
sample
host_loop &
host=$!
pids+=("$host")
end=$((SECONDS + minutes * 60))
while [ $SECONDS -lt $end ]; do
    sleep "$interval"
    for p in "$server" ${pong:-} ${ping:-}; do
        kill -0 "$p" 2>/dev/null || { echo "soak: process $p died" >&2; exit 1; }
    done
    sample
done

touch "$work/stop"
wait "$host" || true
if [ "$with_vms" != 0 ]; then # both VMMs have applied the last host peer's leave
    last_left=$(sed -n 's/.*peer \([0-9]*\) left.*/\1/p' "$work/server.log" | tail -n1)
    if [ -n "$last_left" ]; then
        vm_saw pong "peer $last_left left"
        vm_saw ping "peer $last_left left"
    fi
fi
sample
read -r cycles failures <"$work/host.count"
status=0
for vm in ${ping:-} ${pong:-}; do
    kill -TERM "$vm"
    wait "$vm" || status=1
done
kill -TERM "$server"
wait "$server" || status=1

echo
echo "Soak: $minutes min, samples every ${interval}s; host-peer cycles $cycles (failed $failures);" \
    "$([ "$with_vms" != 0 ] && echo VMs || echo server) ended with SIGTERM: $([ $status -eq 0 ] && echo 'clean exit' || echo 'ERROR')"
echo
echo "| process | fds start | fds end | fds max | RSS start (KiB) | RSS end (KiB) | RSS max (KiB) |"
echo "|---|---|---|---|---|---|---|"
for name in "${processes[@]}"; do
    label=$name
    [ $name = server ] && label=ivshmem-server || label="vmm ($name VM)"
    echo "| $label | ${first[$name.fds]} | ${last[$name.fds]} | ${max[$name.fds]} |" \
        "${first[$name.rss]} | ${last[$name.rss]} | ${max[$name.rss]} |"
done
if [ "$failures" -ne 0 ] || [ $status -ne 0 ]; then
    [ ! -e "$work/host.failure" ] || { echo "last host-peer failure:"; cat "$work/host.failure"; } >&2
    echo "soak: failures (see above)" >&2
    exit 1
fi
