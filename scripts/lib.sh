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
