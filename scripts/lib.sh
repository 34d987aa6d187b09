# Shared by the scripts (sourced, not run): where cargo puts binaries, and a scratch directory
# whose background processes are killed and which is removed when the script exits.

# target_dir: cargo's target directory (honours CARGO_TARGET_DIR and workspace settings).
target_dir() {
    cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# start_scratch NAME: sets $work to a new directory and arranges, on exit, to kill every pid
# the script appended to $pids and to remove $work.
start_scratch() {
    work=$(mktemp -d "/tmp/ivshmem-$1.XXXXXX")
    pids=()
    trap cleanup_scratch EXIT
}

cleanup_scratch() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# wait_for_line FILE TEXT [SECONDS]: waits until FILE has a line containing TEXT (a fixed
# string), e.g. a server's "peer 0 joined"; fails with a message after SECONDS (default 30).
wait_for_line() {
    local deadline=$((SECONDS + ${3:-30}))
    until grep -qF -- "$2" "$1" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after ${3:-30} s waiting for '$2' in $1" >&2
            return 1
        fi
        sleep 0.02
    done
}

# qmp_ready SOCK [SECONDS]: waits until a QEMU started with `-qmp unix:SOCK,server=on,wait=off`
# answers `query-status` on SOCK, i.e. has finished building its machine; fails after SECONDS
# (default 30).
qmp_ready() {
    python3 - "$1" "${2:-30}" <<'PY'
import json, socket, sys, time
path, limit = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + limit
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        s.connect(path)
        break
    except OSError:
        if time.monotonic() >= deadline:
            sys.exit(f"qmp_ready: no QMP socket at {path} after {limit} s")
        time.sleep(0.02)
f = s.makefile("rw")
def ask(command):
    f.write(json.dumps({"execute": command}) + "\n"); f.flush()
    while True:
        reply = json.loads(f.readline())
        if "return" in reply or "error" in reply:
            return reply
json.loads(f.readline())  # the greeting
ask("qmp_capabilities")
if "return" not in ask("query-status"):
    sys.exit("qmp_ready: query-status failed")
PY
}
