#!/usr/bin/env bash
# Builds the guest programs (guest/, a separate no_std workspace) as static x86-64 ELFs in
# guest/target/x86_64-unknown-linux-gnu/release/, for `vmm --guest FILE`. `cargo build` of the
# vmm does the same on its own and embeds them (`vmm --guest builtin:NAME`); this script is for
# working on guest programs and for running them from files.
set -euo pipefail
cd "$(dirname "$0")/../guest"
cargo build --release --bins "$@"
out=target/x86_64-unknown-linux-gnu/release
for src in src/bin/*.rs; do
    name=$(basename "$src" .rs)
    echo "$PWD/$out/$name"
done
