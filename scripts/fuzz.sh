#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time and fails if any finds a
# crash. scripts/test.sh runs it after the cargo tests, so CI does too.
#
#   scripts/fuzz.sh          # 20 s per target (11 targets: under 4 minutes after the build)
#   scripts/fuzz.sh 300      # longer runs
#   FUZZ_TARGETS="pci_config memory_dispatch" scripts/fuzz.sh 60
#
# cargo fuzz needs nightly compiler flags (-Z sanitizer, ...); only a stable toolchain is assumed
# here, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them. cargo-fuzz is installed from
# crates.io if missing, and libFuzzer is compiled from source by libfuzzer-sys (needs a C++
# compiler). Each run starts from the committed seeds in fuzz/corpus/TARGET (read only: new
# inputs go to a scratch directory). A crash leaves its input in fuzz/artifacts/TARGET/;
# reproduce it with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...`
# (from fuzz/), fix it, add a regression test next to the code and the input as a seed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds="${1:-20}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install)"
    cargo install --locked --quiet cargo-fuzz
fi

cd fuzz
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "== fuzz: building $(echo $targets | wc -w) targets"
cargo fuzz build

start_scratch fuzz
failed=()
for target in $targets; do
    mkdir -p "$work/$target" "corpus/$target"
    echo "== fuzz: $target for ${seconds}s"
    # -max_total_time bounds the run; -timeout flags an input that hangs; -rss_limit_mb one
    # that eats memory. stdin is closed so that nothing waits on a terminal.
    if ! cargo fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 </dev/null >"$work/$target.log" 2>&1; then
        echo "fuzz.sh: $target FAILED; its output:" >&2
        tail -n 60 "$work/$target.log" >&2
        failed+=("$target")
    else
        grep -E "^(Done|stat::number_of_executed_units)" "$work/$target.log" | tr '\n' ' ' || true
        echo
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crashes"
