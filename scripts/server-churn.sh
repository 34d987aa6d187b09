#!/usr/bin/env bash
# The server's memory under client churn (BENCHMARKS.md, Soak): a server and loops of
# `ivshmem-client -c dump` joining and leaving one after another (each a new process, so a new
# pid), the server's VmRSS, VmHWM and fd count sampled as it goes.
#
#   scripts/server-churn.sh CYCLES EVERY [SERVER_ARGS...]
#     CYCLES   join/leave cycles in all;  EVERY: a sample every EVERY cycles
#     PAR=N    N client loops in parallel (default 1);  IDLE=S: a last sample after S s idle
#     CLIENT_CMD  the client's commands (default: dump)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cycles=${1:?CYCLES}; every=${2:?EVERY}; shift 2
par=${PAR:-1}; idle=${IDLE:-0}
cargo build --release --quiet -p ivshmem-server -p ivshmem-peer
bin="$(target_dir)/release"
work=$(mktemp -d /tmp/server-churn.XXXX)
sock=$work/sock
"$bin/ivshmem-server" -F -S "$sock" --memfd -l 16M -n 2 "$@" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$server/status"; }
fds() { ls "/proc/$server/fd" | wc -l; }
echo "cycle rss_kib hwm_kib fds secs"
echo "0 $(rss) $(hwm) $(fds) $SECONDS"
per=$((cycles / par))
loops=()
for ((p = 0; p < par; p++)); do
    (failed=0
     for ((n = 1; n <= per; n++)); do
         "$bin/ivshmem-client" -S "$sock" -c "${CLIENT_CMD:-dump}" >/dev/null 2>&1 || failed=$((failed + 1))
         if ((p == 0 && n % (every / par) == 0)); then echo "$((n * par)) $(rss) $(hwm) $(fds) $SECONDS"; fi
     done
     echo "$failed" >"$work/failed.$p") &
    loops+=($!)
done
wait "${loops[@]}"
echo "end $(rss) $(hwm) $(fds) $SECONDS (failed: $(cat "$work"/failed.* | paste -sd+ | bc))"
if [ "$idle" -gt 0 ]; then sleep "$idle"; echo "idle+${idle}s $(rss) $(hwm) $(fds) $SECONDS"; fi
echo "server log lines $(wc -l <"$work/server.log"); overflow summaries: $(grep -c 'too many sources' "$work/server.log" || true)"
