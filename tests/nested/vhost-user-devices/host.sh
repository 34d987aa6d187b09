# shellcheck shell=bash disable=SC2154  # sourced by nested-kvm.sh: args, bins, scenario, die are its
# Sourced by scripts/nested-kvm.sh on the host before L1's initramfs is built (see
# docs/nested-kvm.md): the third-party vhost-user backends, and QEMU with its firmware when
# VMM names it, go into L1 with their libraries; bed-io goes into L1 and onto L2's root.
# Backends: qemu-storage-daemon (Debian qemu-system-common), virtiofsd (Debian's C one in
# qemu-system-common, else the Rust one from crates.io), vhost-device-vsock and vhost-device-rng
# (crates.io; scripts/test.sh installs all of them).
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
backend() { command -v "$1" || die "$1 not found (scripts/test.sh installs it)"; }
binaries+=("$(backend qemu-storage-daemon):/usr/local/bin/qemu-storage-daemon"
    "$(backend vhost-device-vsock):/usr/local/bin/vhost-device-vsock"
    "$(backend vhost-device-rng):/usr/local/bin/vhost-device-rng"
    "$bins/bed-io:/usr/local/bin/bed-io")
[ -x "$bins/bed-io" ] || die "$bins/bed-io not found (cargo build --workspace)"
# virtiofsd: Debian 12's C one (qemu-system-common) at its path, where l1.sh looks first; else
# the Rust one (Debian 13's virtiofsd package in /usr/libexec, or crates.io) as
# /usr/local/bin/virtiofsd, which l1.sh runs with the Rust one's options.
if [ -x /usr/lib/qemu/virtiofsd ]; then
    binaries+=(/usr/lib/qemu/virtiofsd)
elif [ -x /usr/libexec/virtiofsd ]; then
    binaries+=(/usr/libexec/virtiofsd:/usr/local/bin/virtiofsd)
else
    binaries+=("$(backend virtiofsd):/usr/local/bin/virtiofsd")
fi
case " ${args[*]} " in
    *" VMM=ours "*) ;;
    *)  # QEMU -accel kvm inside L1: q35 (SeaBIOS, whose Debian path is /usr/share/seabios)
        # or microvm (qboot)
        ship_qemu ;;
esac
# L1: the kernel's vhost-net and TAP devices for the network.
modules="$modules vhost_net"
# L2: root on an ext4 image served by qemu-storage-daemon; the initramfs loads the drivers.
[ -n "$l2_rootfs" ] || l2_rootfs=64
l2_modules="$l2_modules virtio_pci virtio_blk ext4 crc32c_generic virtiofs
    vmw_vsock_virtio_transport virtio_rng virtio_net"
l2_files+=("$scenario/../lib.sh:/lib.sh")
l2_binaries+=("$bins/bed-io:/usr/local/bin/bed-io")
