#!/usr/bin/env bash
# Builds the ivshmem guest kernel modules (linux-guest/driver) against Debian's headers and prints
# the path of ivshmem.ko on stdout; virtio_ivshmem.ko (the virtio transport) is next to it.
#
#   scripts/build-guest-driver.sh              # for the kernel linux-image-amd64 depends on (the
#                                              # nested test bed's L1 kernel, e.g. 6.1.0-48-amd64)
#   scripts/build-guest-driver.sh RELEASE      # for another kernel release (uname -r in the guest)
#
# It also copies the distribution's own virtio modules that virtio_ivshmem.ko and the tests load
# (virtio, virtio_ring, virtio-rng, virtio_console, vsock's) into
# <target>/guest-driver/RELEASE-distro/, from linux-image-RELEASE (apt-get download, once).
#
# Installs linux-headers-RELEASE with apt-get when missing (needs root or password-less sudo).
# The build runs in a copy of the sources under <target>/guest-driver/RELEASE, so the source tree
# stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

die() { echo "build-guest-driver: $*" >&2; exit 1; }

release=${1:-}
if [ -z "$release" ]; then
    release=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {sub("linux-image-", "", $2); print $2; exit}')
    [ -n "$release" ] || die "cannot resolve linux-image-amd64's kernel (apt-get update?)"
fi

kdir=/usr/src/linux-headers-$release
if [ ! -f "$kdir/Makefile" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "build-guest-driver: installing linux-headers-$release (apt-get)" >&2
    { $sudo apt-get install -y -qq --no-install-recommends "linux-headers-$release" ||
        { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "linux-headers-$release"; }
    } >/dev/null 2>&1 || die "could not install linux-headers-$release"
fi
command -v make >/dev/null && command -v gcc >/dev/null || die "make and gcc are needed (apt-get install build-essential)"

out="$(target_dir)/guest-driver/$release"
mkdir -p "$(dirname "$out")"
# Tests running in parallel build it once: the first builds, the others wait and reuse it.
exec 9>"$out.lock"
flock 9
sources=(linux-guest/driver/{ivshmem.c,ivshmem_uapi.h,ivshmem_kernel.h,virtio_ivshmem.c,Kbuild,Makefile})
if [ -f "$out/ivshmem.ko" ] && [ -f "$out/virtio_ivshmem.ko" ] && [ -f "$out-distro/ready" ] &&
    [ -z "$(find "${sources[@]}" -newer "$out/ivshmem.ko")" ]; then
    echo "$out/ivshmem.ko"
    exit 0
fi
# distro_modules: the kernel package's virtio modules, next to ours (once per release).
distro_modules() {
    local dir="$out-distro" x deb m
    [ -f "$dir/ready" ] && return 0
    rm -rf "$dir" && mkdir -p "$dir/debs"
    (cd "$dir/debs" && apt-get download -q "linux-image-$release" >/dev/null 2>&1) ||
        { apt-get update -qq >/dev/null 2>&1 && (cd "$dir/debs" && apt-get download -q "linux-image-$release" >/dev/null 2>&1); } ||
        die "apt-get download linux-image-$release failed"
    deb=$(ls "$dir"/debs/*.deb | head -n1)
    x=$(mktemp -d /tmp/guest-driver-distro.XXXXXX)
    dpkg-deb -x "$deb" "$x"
    for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/char/hw_random/virtio-rng \
        drivers/char/virtio_console net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common \
        net/vmw_vsock/vmw_vsock_virtio_transport; do
        cp "$x"/lib/modules/*/kernel/$m.ko "$dir/" || { rm -rf "$x"; die "$m.ko missing in linux-image-$release"; }
    done
    rm -rf "$x" "$dir/debs"
    touch "$dir/ready"
}
distro_modules
rm -rf "$out" && mkdir -p "$out"
cp "${sources[@]}" "$out/"
make -s -C "$kdir" M="$out" modules >&2 || die "the module did not build against $kdir"
echo "$out/ivshmem.ko"
