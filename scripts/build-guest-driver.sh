#!/usr/bin/env bash
# Builds the ivshmem guest kernel modules (linux-guest/driver) against Debian's headers and prints
# the path of ivshmem.ko on stdout; virtio_ivshmem.ko (the virtio transport) is next to it.
#
#   scripts/build-guest-driver.sh              # for the kernel linux-image-amd64 depends on (the
#                                              # nested test bed's L1 kernel, e.g. 6.1.0-48-amd64)
#   scripts/build-guest-driver.sh RELEASE      # for another kernel release (uname -r in the guest)
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
if [ -f "$out/ivshmem.ko" ] && [ -f "$out/virtio_ivshmem.ko" ] && [ -z "$(find "${sources[@]}" -newer "$out/ivshmem.ko")" ]; then
    echo "$out/ivshmem.ko"
    exit 0
fi
rm -rf "$out" && mkdir -p "$out"
cp "${sources[@]}" "$out/"
make -s -C "$kdir" M="$out" modules >&2 || die "the module did not build against $kdir"
echo "$out/ivshmem.ko"
