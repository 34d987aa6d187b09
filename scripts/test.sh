#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian's qemu-system-x86 for the QEMU
# interoperability test and the nested ordinary-KVM bed, cpio for the bed's initramfs, the bed
# kernel's linux-headers, make and gcc for the guest kernel module,
# acpica-tools to check the VMM's ACPI tables with iasl), builds every binary (the guest programs are built and embedded by
# vmm/build.rs), checks formatting and lints, and runs unit and multi-process integration tests.
#
#   scripts/test.sh              # everything
#   scripts/test.sh server_      # only tests whose name matches a filter (passed to cargo test;
#                                # the fuzzing step, scripts/fuzz.sh, runs only without a filter)
#
# Environment: IVSHMEM_REQUIRE_KVM=1 makes tests that need /dev/kvm fail instead of skipping
# (CI sets it; it also makes the nested-KVM tests fail when their bed cannot run);
# IVSHMEM_REQUIRE_QEMU=1 does the same for the QEMU interop test, IVSHMEM_REQUIRE_VHOST_DEVICE=1
# for the virtio test that drives vhost-device-rng (installed here with cargo install); IVSHMEM_NESTED=0 skips the
# nested-KVM tests (scripts/nested-kvm.sh, about a minute each) for quick local runs.
set -euo pipefail
cd "$(dirname "$0")/.."

install_packages() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v iasl >/dev/null || missing+=(acpica-tools)
    command -v cpio >/dev/null || missing+=(cpio)
    # The guest kernel module (linux-guest/driver) is built against the bed's kernel headers.
    local abi
    abi=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {sub("linux-image-", "", $2); print $2; exit}')
    [ -z "$abi" ] || [ -f "/usr/src/linux-headers-$abi/Makefile" ] || missing+=("linux-headers-$abi")
    command -v make >/dev/null || missing+=(make)
    command -v gcc >/dev/null || missing+=(gcc)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "test.sh: installing ${missing[*]} (apt-get)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null; then
        echo "test.sh: could not install ${missing[*]}; the tests that need them will skip" >&2
    fi
}

# rust-vmm's vhost-device-rng and vhost-device-vsock from crates.io: third-party vhost-user
# backends the virtio tests drive (over ivshmem, and as the VMM's virtio-pci devices). Cached:
# installed once (a minute or two each on 2 cores), then found on PATH.
install_vhost_device_rng() {
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    local backend
    for backend in vhost-device-rng vhost-device-vsock; do
        command -v $backend >/dev/null && continue
        echo "test.sh: installing $backend (cargo install)"
        cargo install --locked --quiet $backend \
            || echo "test.sh: could not install $backend; the tests that drive it will skip" >&2
    done
}

install_packages
install_vhost_device_rng
if [ -n "${IVSHMEM_REQUIRE_KVM:-}" ] && command -v vhost-device-rng >/dev/null; then
    export IVSHMEM_REQUIRE_VHOST_DEVICE="${IVSHMEM_REQUIRE_VHOST_DEVICE:-1}"
fi
if [ -n "${IVSHMEM_REQUIRE_KVM:-}" ] && command -v qemu-system-x86_64 >/dev/null; then
    export IVSHMEM_REQUIRE_QEMU="${IVSHMEM_REQUIRE_QEMU:-1}"
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The peer library is for any host program: no command-line crates in its dependencies.
if cargo tree -p ivshmem-peer -e normal --prefix none | grep -E '^(clap|env_logger|anyhow) '; then
    echo "test.sh: the peer library depends on a CLI crate (above); it belongs in peer-cli" >&2
    exit 1
fi
# The guest programs are their own no_std workspace (no test harness: clippy without --all-targets).
(cd guest && cargo fmt -- --check && cargo clippy --release --quiet -- -D warnings)

echo "== build"
cargo build --workspace --quiet

echo "== tests"
cargo test --workspace --quiet -- "$@"

# Fuzzing (fuzz/, cargo fuzz): every target for a bounded time; skipped when only some tests run.
if [ $# -eq 0 ]; then
    echo "== fuzz"
    scripts/fuzz.sh
fi
echo "test.sh: all tests passed"
