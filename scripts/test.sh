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
# for the tests that drive third-party vhost-user backends (vhost-device-rng and -vsock, installed
# here with cargo install; qemu-storage-daemon, virtiofsd from Debian); IVSHMEM_NESTED=0 skips the
# nested-KVM tests (scripts/nested-kvm.sh, about a minute each) for quick local runs.
set -euo pipefail
cd "$(dirname "$0")/.."

install_packages() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v iasl >/dev/null || missing+=(acpica-tools)
    command -v cpio >/dev/null || missing+=(cpio)
    # The nested bed's vhost-user scenario: qemu-storage-daemon (vhost-user-blk; Debian's C
    # virtiofsd comes with qemu-system-x86's qemu-system-common) and mke2fs for L2's root image.
    command -v qemu-storage-daemon >/dev/null || missing+=(qemu-system-common)
    # Newer Debian ships virtiofsd (the Rust one) as its own package, no longer in QEMU's.
    if [ ! -x /usr/lib/qemu/virtiofsd ] && [ ! -x /usr/libexec/virtiofsd ] &&
        ! command -v virtiofsd >/dev/null && apt-cache show virtiofsd >/dev/null 2>&1; then
        missing+=(virtiofsd)
    fi
    PATH="$PATH:/sbin:/usr/sbin" command -v mke2fs >/dev/null || missing+=(e2fsprogs)
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

# rust-vmm's vhost-device-rng, -vsock and -console from crates.io: third-party vhost-user
# backends. The virtio tests drive rng over ivshmem; the nested bed's vhost-user scenario serves
# L2's /dev/hwrng and vsock with them, the Linux virtio-over-ivshmem scenario all three. Cached:
# installed once (about 1.5 min each on 2 cores), then found on PATH. A crate whose own lock file
# no longer builds is retried with fresh dependencies.
install_vhost_devices() {
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    local tool
    for tool in vhost-device-rng vhost-device-vsock vhost-device-console; do
        command -v "$tool" >/dev/null && continue
        echo "test.sh: installing $tool (cargo install)"
        cargo install --locked --quiet "$tool" || cargo install --quiet "$tool" \
            || echo "test.sh: could not install $tool; the tests that need it will skip" >&2
    done
}

install_packages
install_vhost_devices
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
