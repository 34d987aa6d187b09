#!/usr/bin/env bash
# The ivshmem-rs scene: builds everything, starts an ivshmem-server, two host peers
# exchanging a message through shared memory and a doorbell each way, then tears down.
# No download needed. Run from anywhere: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

say "building (cargo build --workspace)"
cargo build --workspace --quiet
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug

work=$(mktemp -d /tmp/ivshmem-demo.XXXXXX)
sock="$work/ivshmem.sock"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say "starting ivshmem-server (16 MiB memfd, 2 vectors per peer) on $sock"
"$bin/ivshmem-server" -F -S "$sock" --memfd -l 16M -n 2 2> >(sed 's/^/[server] /' >&2) &
server=$!
pids+=("$server")
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

say "host peer A: writes a message, then waits for a doorbell on vector 1"
"$bin/ivshmem-client" -S "$sock" -c 'dump; write 0x100 hello-from-host-peer-A\0; wait-peer any 10000; int all; wait 1 10000; read 0x200 24' \
    2>&1 | sed 's/^/[peer A] /' &
a=$!
pids+=("$a")
sleep 0.3

say "host peer B: reads A's message, answers, rings A's vector 1"
"$bin/ivshmem-client" -S "$sock" -c 'peers; read 0x100 24; write 0x200 hello-back-from-peer-B\0; wait 0 10000; int all' \
    2>&1 | sed 's/^/[peer B] /'

wait "$a"
say "stopping the server (SIGTERM): peers are told, the socket file is removed"
kill -TERM "$server"
wait "$server" || true
[ ! -e "$sock" ] && echo "socket file removed"
say "demo finished"
