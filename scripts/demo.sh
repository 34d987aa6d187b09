#!/usr/bin/env bash
# The ivshmem-rs scene: builds everything, starts an ivshmem-server, two VMs running the
# built-in guest program ivshmem_demo and a host peer; they greet each other through the shared
# memory and ring each other's doorbells; then everything is torn down.
# No download needed. Run from anywhere: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

say "building (cargo build --workspace)"
cargo build --workspace --quiet
bin=$(target_dir)/debug

start_scratch demo
sock="$work/ivshmem.sock"
vms=()

say "starting ivshmem-server (16 MiB memfd, 2 vectors per peer) on $sock"
# Its log is kept in a file too: the demo waits on its lines (listening, each join).
log="$work/server.log"
"$bin/ivshmem-server" -F -S "$sock" --memfd -l 16M -n 2 2> >(tee "$log" | sed 's/^/[server] /' >&2) &
server=$!
pids+=("$server")
wait_for_line "$log" "listening on"

say "host peer (ivshmem-client): publishes a greeting in its directory slot"
# The guest demo keeps a directory of 64-byte slots at the start of the shared memory
# (slot = peer id: magic "IVSH", id, counter, text). The host peer joins first, so it is peer 0.
# It reads its commands from a FIFO that the demo feeds as the scene unfolds.
mkfifo "$work/host.in"
"$bin/ivshmem-client" -S "$sock" <"$work/host.in" 2>&1 | sed 's/^/[host] /' &
host=$!
pids+=("$host")
exec 3>"$work/host.in"
printf '%s\n' 'write 16 hello from the host peer\0; write 4 \x00\x00\x00\x00; write 0 IVSH' >&3
wait_for_line "$log" "peer 0 joined"

say "two VMs (vmm + built-in guest program ivshmem_demo), each with an ivshmem-doorbell device"
# One after the other, so that vm-a is peer 1 and vm-b peer 2 (the ids the host peer rings).
id=1
for name in vm-a vm-b; do
    "$bin/vmm" --name "$name" --guest builtin:ivshmem_demo --guest-args "peers=2 doorbells=2 timeout_ms=30000" \
        --ivshmem "doorbell,socket=$sock,vectors=2" --stats \
        > >(tee "$work/$name.out") 2> >(sed "s/^/[$name] /" >&2) &
    pids+=("$!")
    vms+=("$!")
    wait_for_line "$log" "peer $id joined"
    id=$((id + 1))
done

say "host peer: waits for a VM's doorbell, rings both VMs, reads their greetings"
# A doorbell that arrives before the guest has enabled MSI-X is lost (as with QEMU's device),
# so the host rings once both guests have written their slot, which they do after that.
# The VMs ring each other on vector 0 and the host rings them on vector 1, so no two doorbells
# merge into one interrupt (an eventfd counts, an MSI does not).
for name in vm-a vm-b; do wait_for_line "$work/$name.out" 'wrote "hello from VM'; done
printf '%s\n' 'wait 0 30000; int 1 1; int 2 1; read 64 48; read 128 48' >&3
exec 3>&-
status=0
for vm in "${vms[@]}"; do wait "$vm" || status=1; done
wait "$host" || status=1
[ $status -eq 0 ] && say "VMs and host peer exchanged messages and doorbells" || say "something failed (see above)"

say "stopping the server (SIGTERM): peers are told, the socket file is removed"
kill -TERM "$server"
wait "$server" || true
[ ! -e "$sock" ] && echo "socket file removed"
say "demo finished"
exit $status
