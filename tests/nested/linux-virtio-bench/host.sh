# shellcheck shell=bash disable=SC2154  # sourced by nested-kvm.sh: bins, die, binaries, files are its
# Sourced by scripts/nested-kvm.sh on the host before L1's initramfs is built (docs/nested-kvm.md):
# QEMU with its firmware, vhost-bridge, the rust-vmm backends vhost-device-rng and
# vhost-device-vsock, bed-io; for L2 the guest modules (ivshmem.ko, virtio_ivshmem.ko, built
# here by scripts/build-guest-driver.sh), bed-io and the distribution's virtio drivers.
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
backend() { command -v "$1" || die "$1 not found (scripts/test.sh installs it)"; }
for b in vhost-bridge bed-io; do
    [ -x "$bins/$b" ] || die "$bins/$b not found (cargo build --workspace)"
done
binaries+=("$(backend vhost-device-vsock):/usr/local/bin/vhost-device-vsock"
    "$(backend vhost-device-rng):/usr/local/bin/vhost-device-rng"
    "$bins/vhost-bridge:/usr/local/bin/vhost-bridge"
    "$bins/bed-io:/usr/local/bin/bed-io")
# QEMU -accel kvm inside L1: microvm (qboot) by default, q35 (SeaBIOS) with QEMU_MACHINE=q35.
ship_qemu
guest_module=$(scripts/build-guest-driver.sh) || die "cannot build the guest modules (scripts/build-guest-driver.sh)"
l2_files+=("$guest_module:/ivshmem.ko" "$(dirname "$guest_module")/virtio_ivshmem.ko:/virtio_ivshmem.ko"
    "$scenario/../lib.sh:/lib.sh")
l2_binaries+=("$bins/bed-io:/usr/local/bin/bed-io")
# L2's /init loads these (virtio_pci for QEMU's devices; virtio and virtio_ring, which
# virtio_ivshmem.ko needs, come along as dependencies).
l2_modules="$l2_modules virtio_pci virtio_rng vmw_vsock_virtio_transport"
