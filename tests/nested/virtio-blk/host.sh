# shellcheck shell=bash disable=SC2154  # sourced by nested-kvm.sh: binaries, l2_modules, die are its
# Sourced by scripts/nested-kvm.sh on the host (docs/nested-kvm.md): qemu-storage-daemon (Debian's
# qemu-system-common) into L1; Debian's virtio-blk drivers into L2's initramfs, loaded by its /init.
binaries+=("$(command -v qemu-storage-daemon || die "qemu-storage-daemon not found (apt-get install qemu-system-common)"):/usr/local/bin/qemu-storage-daemon")
l2_modules="$l2_modules virtio_pci virtio_blk"
