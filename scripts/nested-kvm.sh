#!/usr/bin/env bash
# The ordinary-KVM test bed: QEMU in TCG mode emulates an AMD CPU with SVM and nested paging; a
# stock Debian kernel booted in it (L1) loads kvm_amd and has an ordinary /dev/kvm, on which our
# VMM runs guest programs and boots Linux (L2). See docs/nested-kvm.md.
#
#   scripts/nested-kvm.sh prepare                  # fetch kernel + busybox (Debian), cache them
#   scripts/nested-kvm.sh run SCENARIO_DIR [options] [-- QEMU_ARGS...]
#   scripts/nested-kvm.sh rootfs OUT_DIR [--size MB] [--script FILE]   # L2 kernel, initrd, ext4 root
#
# A scenario is a directory with `l1.sh` (run by L1's /init after the kvm modules are loaded,
# with our binaries on PATH) and optionally `l2.sh` (becomes /scenario.sh in the L2 initramfs
# at /l2/initrd.gz; /l2/vmlinuz is the kernel, the same one L1 runs). Options:
#   --bins DIR      where vmm, ivshmem-server, ivshmem-client, kvm-hold are (default: target/debug)
#   --arg K=V       exported to l1.sh (repeatable); also written to /scenario.env
#   --file SRC:DST  an extra file in the L1 initramfs (repeatable)
#   --binary PATH[:DST]  an extra program in L1 at the same path (or DST), with the libraries
#                   ldd lists
#   --qemu          the host's qemu-system-x86_64 in L1 (a baseline VMM there) with the firmware
#                   its x86 machines load (ship_qemu)
#   --l2-file SRC:DST, --l2-binary SRC:DST   the same for the L2 initramfs
#   --modules "M..."     kernel modules L1's /init loads after kvm (dependencies come along)
#   --l2-modules "M..."  modules in L2's initramfs, loaded by its /init
#   --l2-rootfs MB  L2's files (busybox, l2.sh, --l2-file/--l2-binary) go on an ext4 image of
#                   MB MiB at /l2/rootfs.img instead; L2's /init, given root=/dev/vda (a
#                   virtio-blk disk on that image), loads --l2-modules and switch_roots onto it
#   --vmlinux       also put the ELF kernel at /l2/vmlinux (large: only when a scenario boots it)
#   --smp N         L1 vCPUs (default 2)
#   --icount        L1's clock counts emulated instructions (QEMU -icount shift=0,sleep=off: 1 ns
#                   each, idle time skipped to the next timer) instead of following the host's:
#                   a time measured in L1 is then the work done, whatever the host's speed
#                   (docs/nested-kvm.md). One L1 vCPU (QEMU 7.2 does not bring up a second one
#                   under icount); every boot runs several times slower in wall time.
#   --timeout S     give up after S seconds (default 900)
# A scenario's host.sh, when there is one, is sourced on the host before the initramfs is built
# and adds to these options (third-party programs, modules, files).
# QEMU_ARGS are appended to the L1 QEMU command line (e.g. QEMU's own ivshmem devices).
# Everything L1 prints goes to stdout; the exit status is l1.sh's (125: the bed failed: no KVM
# in L1, timeout, QEMU error).
#
# NESTED_L1_CMDLINE is appended to L1's kernel command line (e.g. loglevel=7 to see L1's
# kernel messages in full). NESTED_BED_ATTEMPTS (3), NESTED_L1_BOOT_TIMEOUT (300 s) and
# NESTED_SILENCE_TIMEOUT (900 s of a silent console) bound a failing bed (docs/nested-kvm.md).
# Cache: $NESTED_CACHE or <target>/nested (kernel and busybox packages resolved at run time from
# apt: the kernel is the package linux-image-amd64 depends on, so its ABI number may change).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

die() { echo "nested-kvm: $*" >&2; exit 125; }

cache=${NESTED_CACHE:-}
[ -n "$cache" ] || cache="$(target_dir)/nested"
mkdir -p "$cache"

# deb_of PACKAGE: downloads the package's .deb into the cache once; prints its path.
deb_of() {
    local pkg=$1 found
    found=$(ls "$cache"/debs/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$found" ]; then
        mkdir -p "$cache/debs"
        (cd "$cache/debs" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
            { apt-get update -qq >/dev/null 2>&1 && (cd "$cache/debs" && apt-get download -q "$pkg" >/dev/null); } ||
            die "apt-get download $pkg failed"
        found=$(ls "$cache"/debs/"${pkg}"_*.deb | head -n1)
    fi
    echo "$found"
}

# kernel_package: the versioned package linux-image-amd64 points at (e.g. linux-image-6.1.0-48-amd64).
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

# vmlinux_of BZIMAGE OUT: the ELF kernel inside a bzImage (its payload is xz- or gzip-compressed).
vmlinux_of() {
    python3 - "$1" "$2" <<'EOF'
import gzip, lzma, sys
data = open(sys.argv[1], "rb").read()
for magic, unpack in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                      (b"\x1f\x8b\x08", lambda b: gzip.GzipFile(fileobj=__import__("io").BytesIO(b)).read())):
    at = data.find(magic)
    while at >= 0:
        try:
            out = unpack(data[at:])
        except Exception:
            out = b""
        if out[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(out)
            sys.exit(0)
        at = data.find(magic, at + 1)
sys.exit("no ELF kernel found inside " + sys.argv[1])
EOF
}

# Modules the bed can ship (their dependencies come along): guest drivers for virtio-pci devices
# (disk, virtiofs, vsock, rng, console, network), ext4 for a root filesystem, and for L1 the
# kernel's vhost-net with TAP devices.
EXTRA_MODULES="virtio_pci virtio_blk ext4 crc32c_generic virtiofs vmw_vsock_virtio_transport
    virtio_rng virtio_console virtio_net vhost_net"

# copy_module BASE NAME: NAME.ko (a '-' or '_' in the name matches either) from the unpacked
# kernel package under BASE/x into BASE/modules, after the modules it depends on.
copy_module() {
    local base=$1 name=$2 file deps d
    grep -q "^${name//-/_} " "$base/modules/deps" && return 0
    file=$(find "$base"/x/lib/modules/*/kernel -name "$(printf '%s' "$name" | sed 's/[-_]/[-_]/g').ko" | head -n1)
    [ -n "$file" ] || die "module $name missing in the kernel package"
    deps=$(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do copy_module "$base" "$d"; done
    cp "$file" "$base/modules/${name//-/_}.ko"
    printf '%s %s\n' "${name//-/_}" "$deps" >>"$base/modules/deps"
}

# modules_closure BASE NAMES...: NAMES and what they depend on, each once, dependencies first.
modules_closure() {
    local base=$1 name deps d
    shift
    for name in "$@"; do
        name=${name//-/_}
        deps=$(awk -v m="$name" '$1 == m {print $2}' "$base/modules/deps")
        grep -q "^$name " "$base/modules/deps" ||
            [ -f "$base/modules/$name.ko" ] || die "module $name is not in the bed's cache (EXTRA_MODULES)"
        for d in ${deps//,/ }; do modules_closure "$base" "$d"; done
        echo "$name"
    done | awk '!seen[$0]++'
}

# prepare: kernel (bzImage, ELF vmlinux, the four kvm modules) and busybox under $cache/base.
prepare() {
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"
    local pkg
    pkg=$(kernel_package)
    [ -n "$pkg" ] || die "cannot resolve linux-image-amd64's kernel package (apt-get update?)"
    local base="$cache/base-$pkg"
    # Concurrent runs (parallel tests) prepare the cache once.
    exec 9>"$cache/lock"
    flock 9
    # (ready-2: the cache also holds the virtio, vsock, ext4 and vhost-net modules)
    if [ -f "$base/ready-2" ]; then echo "$base"; return; fi
    rm -rf "$base" && mkdir -p "$base/x"
    dpkg-deb -x "$(deb_of "$pkg")" "$base/x"
    dpkg-deb -x "$(deb_of busybox-static)" "$base/x"
    cp "$base"/x/boot/vmlinuz-* "$base/vmlinuz"
    vmlinux_of "$base/vmlinuz" "$base/vmlinux" || die "could not extract vmlinux"
    mkdir -p "$base/modules"
    local m
    for m in virt/lib/irqbypass drivers/crypto/ccp/ccp arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
        cp "$base"/x/lib/modules/*/kernel/$m.ko "$base/modules/" || die "module $m.ko missing in $pkg"
    done
    # The drivers a scenario may load (--modules, --l2-modules) with everything they depend on;
    # $base/modules/deps has one line per module: NAME DEP,DEP,...
    : >"$base/modules/deps"
    for m in $EXTRA_MODULES; do copy_module "$base" "$m"; done
    cp "$base/x/bin/busybox" "$base/busybox"
    rm -rf "$base/x"
    touch "$base/ready-2"
    echo "$base"
}

# add_binary ROOT FILE [DEST]: a binary and the shared libraries ldd lists, at their paths.
add_binary() {
    local root=$1 file=$2 dest=${3:-/bin/$(basename "$2")} lib
    install -D -m 0755 "$file" "$root$dest"
    for lib in $(ldd "$file" 2>/dev/null | grep -o '/[^ ]*' || true); do
        [ -e "$root$lib" ] || install -D -m 0755 "$lib" "$root$lib"
    done
}

# busybox_root DIR BASE: a root with busybox and the usual directories.
busybox_root() {
    local root=$1 base=$2
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,root}
    install -m 0755 "$base/busybox" "$root/bin/busybox"
    ln -sf busybox "$root/bin/sh"
}

# cpio_of DIR OUT: a gzip'd newc archive of DIR.
cpio_of() {
    (cd "$1" && find . -print0 | cpio --null -o -H newc --quiet --owner 0:0) | gzip -1 >"$2"
}

# ext4_of DIR OUT SIZE_MB: an ext4 image of DIR, built without root or loop devices (mke2fs -d).
ext4_of() {
    local mke2fs
    mke2fs=$(PATH="$PATH:/sbin:/usr/sbin" command -v mke2fs) || die "mke2fs not found (apt-get install e2fsprogs)"
    rm -f "$2"
    "$mke2fs" -q -F -t ext4 -L l2root -d "$1" "$2" "${3}M" >/dev/null || die "mke2fs -d $1 failed"
}

# hold_bed_lock: one bed at a time on this machine. Two L1s with two TCG vCPUs each on a
# two-core host starve each other's vCPUs, which is when the bed's own timing faults appear; the
# runs are CPU-bound, so running them one after another costs little. Held until this script
# ends (the lock is on a file descriptor). NESTED_LOCK names the file.
hold_bed_lock() {
    local lock=${NESTED_LOCK:-${TMPDIR:-/tmp}/ivshmem-nested-bed.lock}
    exec {bed_lock_fd}>>"$lock"
    if ! flock -n "$bed_lock_fd"; then
        echo "nested-kvm: waiting for another bed run to end ($lock)" >&2
        flock "$bed_lock_fd"
    fi
}

# monitor_command SOCKET COMMAND...: the commands' output from QEMU's human monitor on SOCKET
# (one session, the commands in turn).
monitor_command() {
    python3 - "$@" <<'PY' 2>/dev/null || echo "(QEMU's monitor did not answer)"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
out = b""
s.sendall("".join(c + "\n" for c in sys.argv[2:]).encode())
end = time.time() + 5
while time.time() < end:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode(errors="replace").replace("\r", ""))
PY
}

# l1_cpu_stuck SOCKET NCPUS: whether an L1 CPU sits halted, interrupts enabled, with an interrupt
# in its local APIC's IRR above its processor priority: one it may take and has not. A CPU in
# that state for seconds is not waiting for work, TCG lost its wake-up (seen 2026-12-06: L1's
# CPU 0 halted with its timer's and two IPIs' vectors pending for minutes, the scenario stuck
# behind it). Prints each such CPU.
l1_cpu_stuck() {
    local commands=("info registers -a") i
    for ((i = 0; i < $2; i++)); do commands+=("info lapic $i"); done
    monitor_command "$1" "${commands[@]}" | python3 -c '
import re, sys
text = sys.stdin.read()
regs = {int(c): (rip, int(rfl, 16), hlt) for c, rip, rfl, hlt in
        re.findall(r"CPU#(\d+)\n.*?RIP=([0-9a-f]+) RFL=([0-9a-f]+).*?HLT=(\d)", text, re.S)}
stuck = False
for cpu, irr, ppr in re.findall(
        r"local APIC state for CPU (\d+)\s*\n.*?IRR\s+([^\n]*)\n.*?PPR 0x([0-9a-f]+)", text, re.S):
    vectors = [int(v) for v in irr.split() if v.isdigit()]
    rip, rflags, halted = regs.get(int(cpu), ("?", 0, "0"))
    if halted == "1" and rflags & 0x200 and vectors and max(vectors) >> 4 > int(ppr, 16) >> 4:
        print("CPU#%s halted at RIP=%s, interrupts enabled, IRR %s above PPR 0x%s" % (cpu, rip, irr.strip(), ppr))
        stuck = True
sys.exit(0 if stuck else 1)
'
}

# tcg_crash LOG: when the run in LOG was ended by one of TCG's crashes of a VM, which retries the
# bed even though the scenario reported a status, says which (status 0); else status 1.
# - Our VMM reporting a triple fault (seen in CI under heavy load, a bzImage boot on 1 vCPU), with
#   L1's trace of it (NESTED-L2-SHUTDOWN): no scenario asks for one.
# - Any L2's shutdown while a page fault was being delivered (`intr_info 0x8000..0e`; CI,
#   2026-12-06, the vhost-user-devices QEMU baseline 34 s in). A Linux reboot's triple fault,
#   which QEMU takes as a reset, is traced too but is no crash.
# - A kernel's `stack guard page was hit`: an endless chain of page faults at exc_page_fault's
#   first %gs access (L1's own kernel, or an L2's: CI, 2026-12-06, L2 Linux in our VMM, GS base
#   and KERNEL_GS_BASE both the kernel's).
# - L1's kernel reporting a soft lockup in a VMM's vCPU thread (ours `vcpuN`, QEMU's `CPU N/KVM`,
#   firecracker's `fc_vcpu N`): the thread sat in KVM_RUN for tens of seconds without being
#   scheduled, which TCG's emulation of SVM does and no VMM in L1 can (CI, 2026-12-06: our vcpu1
#   stuck for 52-117 s, its L2 stalled behind it).
# A benchmark scenario that retried a boot itself quotes its console in BENCH-FAILED-LOG lines:
# those are no reason to run it all again.
tcg_crash() {
    awk '/BENCH-FAILED-LOG/ { next }
         /NESTED-L2-SHUTDOWN/ { traced = 1 }
         /vmm: guest triple fault/ { ours = 1 }
         /NESTED-L2-SHUTDOWN.*intr_info 0x8000[0-9a-f][0-9a-f]0e/ { why = "an L2 VM triple-faulted while a page fault was being delivered (NESTED-L2-SHUTDOWN above)" }
         /soft lockup - CPU#[0-9]+ stuck for [0-9]+s! \[(vcpu[0-9]+|CPU [0-9]+\/KVM|fc_vcpu [0-9]+):/ { why = "L1 ran a vCPU thread for tens of seconds without scheduling (`soft lockup` above)" }
         /stack guard page was hit/ { why = "a kernel'"'"'s page-fault handler faulted on its own per-CPU access (`stack guard page was hit` above)" }
         END { if (why == "" && ours && traced) why = "an L2 VM of ours triple-faulted (NESTED-L2-SHUTDOWN above)"
               if (why == "") exit 1; print why }' "$1"
}

# last_reset LOG: the end of QEMU's `-d cpu_reset` log: the CPU state at each reset (the first
# ones are L1's power-on) and QEMU's "Triple fault" line when that is what ended L1.
last_reset() {
    if [ -s "$1" ]; then tail -n 40 "$1"; else echo "(QEMU logged no reset)"; fi
}

write_l1_init() {
    cat >"$1/init" <<'EOF'
#!/bin/sh
# L1: mount, load kvm_amd, run the scenario, report its status, power off.
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts; mount -t tmpfs shm /dev/shm; mount -t tmpfs tmp /tmp
for m in irqbypass ccp kvm kvm-amd $(cat /modules/load 2>/dev/null); do
    insmod /modules/$m.ko || echo "nested-kvm: insmod $m failed"
done
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
if [ ! -c /dev/kvm ]; then
    echo "NESTED-NO-KVM"; dmesg | tail -n 20
    poweroff -f
fi
# One VM held for the whole run keeps KVM's static keys from patching L1's kernel text at
# every VM start and end (QEMU's TCG sometimes hangs L1 there; see kvm-hold's docs).
kvm-hold >/tmp/kvm-hold.log 2>&1 &
for i in $(seq 100); do grep -q holding /tmp/kvm-hold.log && break; sleep 0.1; done
grep -q holding /tmp/kvm-hold.log || { echo "nested-kvm: kvm-hold did not start:"; cat /tmp/kvm-hold.log; }
# An L2 triple fault: KVM on AMD reinitializes the vCPU before it reports the shutdown to the
# VMM, so the VMM can only print reset-state registers; the faulting rip is in KVM's exit trace.
# Keep that one event on, filtered to shutdowns (SVM exit code 0x7f), and print what it caught.
# KVM's per-VM counters (tests/nested/lib.sh kvm_exits) live in debugfs.
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
t=/sys/kernel/tracing
mount -t tracefs nodev $t 2>/dev/null
echo 'exit_reason == 127' >$t/events/kvm/kvm_exit/filter 2>/dev/null &&
    echo 1 >$t/events/kvm/kvm_exit/enable 2>/dev/null
echo "NESTED-L1-READY $(uname -r) $(nproc) cpus"
set -a; [ -f /scenario.env ] && . /scenario.env; set +a
(cd /scenario && sh ./l1.sh)
status=$?
# Only the shutdown exits: a scenario may have traced other events meanwhile (boot-bench
# TRACE=1, vhost-user-devices TRACE_PHASE=).
grep ' kvm_exit: ' $t/trace 2>/dev/null | sed 's/^ */NESTED-L2-SHUTDOWN /'
echo "NESTED-EXIT $status"
poweroff -f
EOF
    chmod 0755 "$1/init"
}

write_l2_init() {
    cat >"$1/init" <<'EOF'
#!/bin/sh
# L2: mount, load the modules in /modules/load; with root=DEV on the command line, mount DEV
# (ext4) and switch_root onto it (its /sbin/init goes on as below); run /scenario.sh, report its
# status, power off.
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules/load 2>/dev/null); do insmod /modules/$m.ko || echo "nested-kvm: insmod $m failed"; done
root=$(sed -n 's/.*\<root=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$root" ] && [ -f /modules/load ]; then
    for i in $(seq 300); do [ -b "$root" ] && break; sleep 0.1; done
    mkdir -p /newroot
    if mount -t ext4 -o rw "$root" /newroot; then
        echo "L2-SWITCH-ROOT $root"
        umount /dev /sys /proc
        exec switch_root /newroot /sbin/init
    fi
    echo "nested-kvm: cannot mount $root; staying in the initramfs"
fi
mount -t tmpfs tmp /tmp
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
echo "L2-READY $(nproc) cpus"
sh /scenario.sh
echo "L2-EXIT $?"
poweroff -f
EOF
    chmod 0755 "$1/init"
}

# ship_qemu: adds the host's qemu-system-x86_64 to L1 (binaries+=) with the firmware its x86
# machines load (files+=): SeaBIOS for pc/q35, qboot for microvm, the option ROMs that boot a
# -kernel. Debian 12's QEMU calls qboot bios-microvm.bin; Debian 13's (and bookworm-backports')
# ships it as qboot.rom and still looks for bios-microvm.bin, so L1 gets it under that name.
ship_qemu() {
    local qemu rom qboot=""
    qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found (scripts/test.sh installs it)"
    binaries+=("$qemu")
    for rom in /usr/share/qemu/bios-microvm.bin /usr/share/qemu/qboot.rom; do
        [ -e "$rom" ] && { qboot=$rom; break; }
    done
    [ -n "$qboot" ] || die "QEMU's qboot firmware (/usr/share/qemu/bios-microvm.bin or qboot.rom) not found"
    files+=("$qboot:/usr/share/qemu/bios-microvm.bin"
        /usr/share/seabios/bios-256k.bin:/usr/share/seabios/bios-256k.bin)
    for rom in linuxboot_dma.bin kvmvapic.bin pvh.bin; do
        [ ! -e "/usr/share/qemu/$rom" ] || files+=("/usr/share/qemu/$rom:/usr/share/qemu/$rom")
    done
}

run() {
    local scenario=${1:?scenario directory}
    shift
    [ -f "$scenario/l1.sh" ] || die "$scenario/l1.sh not found"
    local bins="" smp=2 timeout_s=900 vmlinux="" args=() files=() binaries=() qemu_extra=()
    local icount=""
    local l2_files=() l2_binaries=() modules="" l2_modules="" l2_rootfs=""
    while [ $# -gt 0 ]; do
        case $1 in
            --bins) bins=$2; shift 2 ;;
            --arg) args+=("$2"); shift 2 ;;
            --file) files+=("$2"); shift 2 ;;
            --binary) binaries+=("$2"); shift 2 ;;
            --qemu) ship_qemu; shift ;;
            --l2-file) l2_files+=("$2"); shift 2 ;;
            --l2-binary) l2_binaries+=("$2"); shift 2 ;;
            --modules) modules="$modules $2"; shift 2 ;;
            --l2-modules) l2_modules="$l2_modules $2"; shift 2 ;;
            --l2-rootfs) l2_rootfs=$2; shift 2 ;;
            --smp) smp=$2; shift 2 ;;
            --icount) icount=1; shift ;;
            --vmlinux) vmlinux=1; shift ;;
            --timeout) timeout_s=$2; shift 2 ;;
            --) shift; qemu_extra=("$@"); break ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ -n "$bins" ] || bins="$(target_dir)/debug"
    if [ -n "$icount" ]; then
        smp=1
        qemu_extra=(-icount shift=0,sleep=off "${qemu_extra[@]}")
    fi
    local base
    base=$(prepare)
    start_scratch nested
    # A scenario's host.sh (sourced here, on the host) adds what it needs to the options above:
    # third-party programs (binaries+=), files, modules.
    # shellcheck disable=SC1091
    [ ! -f "$scenario/host.sh" ] || . "$scenario/host.sh"

    # L2: busybox, /init, the scenario's l2.sh: the initramfs, or with --l2-rootfs an ext4 image
    # (/l2/rootfs.img in L1, /sbin/init on it) and an initramfs of busybox, /init and modules.
    local l2="$work/l2root"
    busybox_root "$l2" "$base"
    write_l2_init "$l2"
    if [ -f "$scenario/l2.sh" ]; then cp "$scenario/l2.sh" "$l2/scenario.sh"; else echo 'true' >"$l2/scenario.sh"; fi
    local f m
    for f in "${l2_files[@]}"; do install -D "${f%%:*}" "$l2${f#*:}"; done
    for f in "${l2_binaries[@]}"; do add_binary "$l2" "${f%%:*}" "${f#*:}"; done
    local l2_initramfs=$l2
    if [ -n "$l2_rootfs" ]; then
        l2_initramfs="$work/l2initramfs"
        busybox_root "$l2_initramfs" "$base"
        mv "$l2/init" "$l2_initramfs/init"
        install -m 0755 "$l2_initramfs/init" "$l2/sbin/init"
    fi
    if [ -n "$l2_modules" ]; then
        mkdir -p "$l2_initramfs/modules"
        # shellcheck disable=SC2086
        for m in $(modules_closure "$base" $l2_modules); do
            cp "$base/modules/$m.ko" "$l2_initramfs/modules/"
            echo "$m" >>"$l2_initramfs/modules/load"
        done
    fi

    # L1 initramfs: busybox, modules, our binaries with their libraries, the L2 kernel and initramfs.
    local l1="$work/l1root"
    busybox_root "$l1" "$base"
    write_l1_init "$l1"
    mkdir -p "$l1/modules" "$l1/l2" "$l1/scenario"
    cp "$base"/modules/{irqbypass,ccp,kvm,kvm-amd}.ko "$l1/modules/"
    cp "$base/vmlinuz" "$l1/l2/"
    [ -z "$vmlinux" ] || cp "$base/vmlinux" "$l1/l2/"
    cpio_of "$l2_initramfs" "$l1/l2/initrd.gz"
    [ -z "$l2_rootfs" ] || ext4_of "$l2" "$l1/l2/rootfs.img" "$l2_rootfs"
    if [ -n "$modules" ]; then
        # shellcheck disable=SC2086
        modules_closure "$base" $modules >"$l1/modules/load"
        while read -r m; do cp "$base/modules/$m.ko" "$l1/modules/"; done <"$l1/modules/load"
    fi
    local b
    for b in vmm ivshmem-server ivshmem-client kvm-hold; do
        [ -x "$bins/$b" ] || die "$bins/$b not found (cargo build --workspace)"
        add_binary "$l1" "$bins/$b" "/usr/local/bin/$b"
    done
    cp -r "$scenario"/. "$l1/scenario/"
    # Helpers shared by the scenarios next to this one (sourced as ../lib.sh).
    [ ! -f "$scenario/../lib.sh" ] || cp "$scenario/../lib.sh" "$l1/lib.sh"
    : >"$l1/scenario.env"
    local kv
    for kv in "${args[@]}"; do printf '%s\n' "$kv" >>"$l1/scenario.env"; done
    for f in "${files[@]}"; do install -D "${f%%:*}" "$l1${f#*:}"; done
    for f in "${binaries[@]}"; do
        case $f in
            *:*) add_binary "$l1" "${f%%:*}" "${f#*:}" ;;
            *) add_binary "$l1" "$f" "$f" ;;
        esac
    done
    cpio_of "$l1" "$work/l1.gz"

    local log="$work/console.log" resets="$work/qemu-resets.log"
    local status attempt input=/dev/null
    [ -t 0 ] && input=/dev/stdin    # interactive use: a terminal reaches L1's console
    hold_bed_lock
    # no_timer_check: under TCG on a loaded host L1's IO-APIC timer check can time out and
    # panic. L1 is our test equipment, not the system under test: a run where L1 never reached
    # the scenario, or reset in the middle of it (no panic, no status: TCG's own failure; QEMU
    # logs the CPU state of every reset, printed below), or whose kernel panicked (TCG has been
    # seen to take an interrupt in L1 with a guest's GS base: `BUG: TASK stack guard page was
    # hit` in exc_page_fault while QEMU or our VMM sat in KVM_RUN), is retried, up to
    # NESTED_BED_ATTEMPTS (3) attempts in all; so is a run where an L2 VM triple-faulted (L1's
    # kvm_exit trace prints where; seen at an L2's first instruction in QEMU and in ours alike).
    # L1's own boot takes well under a minute even on a loaded host; TCG has been seen to hang in
    # it (no output after SeaBIOS for 15 minutes). A watchdog stops an L1 that has not reached
    # its init within NESTED_L1_BOOT_TIMEOUT seconds, and that attempt counts as a failed bed.
    # TCG has also been seen to hang L1 in the middle of a scenario (one L1 CPU busy for good, the
    # console silent; the scenario's own time limits then never fire): an L1 whose console has
    # been silent for NESTED_SILENCE_TIMEOUT seconds (900; every scenario prints well within
    # that) is stopped the same way, after printing where its CPUs are (QEMU's monitor, `info
    # registers -a`: L1 runs with nokaslr, so its RIPs read against the kernel's System.map).
    local l1_boot_s=${NESTED_L1_BOOT_TIMEOUT:-300} silence_s=${NESTED_SILENCE_TIMEOUT:-900} watchdog
    # Under --icount L1 boots slower, and QEMU 7.2 has been seen to stop for good in the middle of
    # an L2 boot (one vCPU at a fixed address, the clock no longer moving, so no timeout inside
    # L1 fires): a boot prints within a few minutes, so 8 silent minutes mean that.
    if [ -n "$icount" ]; then
        l1_boot_s=${NESTED_L1_BOOT_TIMEOUT:-600} silence_s=${NESTED_SILENCE_TIMEOUT:-480}
    fi
    local attempts=${NESTED_BED_ATTEMPTS:-3} monitor="$work/monitor.sock"
    for attempt in $(seq "$attempts"); do
        status=0
        rm -f "$resets" "$work/qemu.pid" "$monitor"
        : >"$log"
        (
            stop_l1() { kill "$(cat "$work/qemu.pid" 2>/dev/null)" 2>/dev/null || true; }
            ready=""
            for _ in $(seq "$l1_boot_s"); do
                sleep 1
                grep -a -q 'NESTED-L1-READY\|NESTED-NO-KVM' "$log" 2>/dev/null && { ready=1; break; }
            done
            if [ -z "$ready" ]; then
                echo "nested-kvm: L1 did not reach its init within ${l1_boot_s}s; stopping it" >&2
                stop_l1; exit 0
            fi
            size=-1 quiet=0
            while sleep 10; do
                now=$(stat -c %s "$log" 2>/dev/null || echo 0)
                if [ "$now" = "$size" ]; then quiet=$((quiet + 10)); else quiet=0 size=$now; fi
                # A quiet L1 with a CPU that has not taken a pending interrupt, twice 10 s apart:
                # hung for good, no need to wait out the silence limit.
                if [ "$quiet" -ge 60 ] && [ $((quiet % 30)) = 0 ] && l1_cpu_stuck "$monitor" "$smp" >/dev/null &&
                    sleep 10 && stuck=$(l1_cpu_stuck "$monitor" "$smp"); then
                    echo "nested-kvm: L1 is hung (TCG): a CPU has not taken its pending interrupts:" >&2
                    echo "$stuck" >&2
                    stop_l1; exit 0
                fi
                [ "$quiet" -ge "$silence_s" ] || continue
                echo "nested-kvm: L1's console has been silent for ${silence_s}s (TCG hung it?);" \
                    "where its CPUs are:" >&2
                monitor_command "$monitor" "info registers -a" | grep -a -o -E "CPU#[0-9]+|RIP=[0-9a-f]+|RSP=[0-9a-f]+|CR3=[0-9a-f]+|HLT=[01]|monitor did not answer" >&2 || true
                stop_l1; exit 0
            done
        ) &
        watchdog=$!
        timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max,-xsave -m 2G \
            -smp "$smp" -nographic -no-reboot -nodefaults -serial stdio \
            -d cpu_reset -D "$resets" -pidfile "$work/qemu.pid" \
            -monitor "unix:$monitor,server=on,wait=off" \
            -kernel "$base/vmlinuz" -initrd "$work/l1.gz" \
            -append "console=ttyS0 quiet loglevel=3 panic=-1 no_timer_check nokaslr ${NESTED_L1_CMDLINE:-}" \
            "${qemu_extra[@]}" \
            <"$input" | tee "$log" || status=$?
        kill "$watchdog" 2>/dev/null || true; wait "$watchdog" 2>/dev/null || true
        [ "$status" -eq 124 ] && break
        local crash
        if [ "$attempt" -lt "$attempts" ] && crash=$(tcg_crash "$log"); then
            echo "nested-kvm: $crash (TCG's emulation, not the system under test); retrying" >&2
            tr -d '\r' <"$log" | grep -a -m 3 -E 'BUG:|Comm:|Kernel panic' >&2 || true
            echo "NESTED-BED-RETRY"
            continue
        fi
        grep -a -q 'NESTED-EXIT [0-9]' "$log" && break
        grep -q NESTED-NO-KVM "$log" && break
        if grep -a -q 'Kernel panic' "$log"; then
            echo "nested-kvm: L1's kernel panicked in the middle of the scenario (the bed, not the" \
                "system under test):" >&2
            tr -d '\r' <"$log" | grep -a -m 3 -E 'BUG:|Comm:|Kernel panic' >&2
        elif grep -q NESTED-L1-READY "$log"; then
            echo "nested-kvm: L1 ended in the middle of the scenario without a panic or a status" \
                "(QEMU status $status); the end of QEMU's reset log:" >&2
            last_reset "$resets" >&2
        fi
        [ "$attempt" = "$attempts" ] && break
        echo "nested-kvm: the bed failed (attempt $attempt of $attempts); retrying" >&2
        echo "NESTED-BED-RETRY"   # on stdout: what L1 printed before it is not the verdict
    done
    [ "$status" -eq 124 ] && die "timed out after ${timeout_s}s"
    grep -q NESTED-NO-KVM "$log" && die "L1 has no /dev/kvm (kvm_amd did not load)"
    local exit_line
    exit_line=$(grep -a -o 'NESTED-EXIT [0-9]*' "$log" | tail -n1 || true)
    [ -n "$exit_line" ] || die "L1 ended without reporting the scenario's status (QEMU status $status)"
    return "${exit_line#NESTED-EXIT }"
}

# rootfs OUT_DIR [--size MB] [--script FILE] [--l2-file SRC:DST] [--l2-binary SRC:DST]: the bed's
# L2 as files for any VMM: OUT_DIR/vmlinuz (the bed's Debian kernel), OUT_DIR/initrd.gz (busybox,
# the virtio drivers, the /init that loads them and switch_roots onto root=/dev/vda) and
# OUT_DIR/rootfs.img (ext4: busybox, /sbin/init running /scenario.sh: FILE, or an interactive
# shell on the console; the VM powers off when it ends).
rootfs() {
    local out=${1:?output directory} size=64 script="" files=() binaries=() f m
    shift
    while [ $# -gt 0 ]; do
        case $1 in
            --size) size=$2; shift 2 ;;
            --script) script=$2; shift 2 ;;
            --l2-file) files+=("$2"); shift 2 ;;
            --l2-binary) binaries+=("$2"); shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    local base
    base=$(prepare)
    start_scratch rootfs
    local root="$work/root" initramfs="$work/initramfs"
    busybox_root "$root" "$base"
    busybox_root "$initramfs" "$base"
    write_l2_init "$initramfs"
    install -m 0755 "$initramfs/init" "$root/sbin/init"
    if [ -n "$script" ]; then cp "$script" "$root/scenario.sh"; else echo 'sh -l' >"$root/scenario.sh"; fi
    for f in "${files[@]}"; do install -D "${f%%:*}" "$root${f#*:}"; done
    for f in "${binaries[@]}"; do add_binary "$root" "${f%%:*}" "${f#*:}"; done
    mkdir -p "$initramfs/modules" "$out"
    # shellcheck disable=SC2086
    for m in $(modules_closure "$base" $EXTRA_MODULES); do
        case $m in vhost* | tun | tap) continue ;; esac   # host-side modules
        cp "$base/modules/$m.ko" "$initramfs/modules/"
        echo "$m" >>"$initramfs/modules/load"
    done
    cpio_of "$initramfs" "$out/initrd.gz"
    ext4_of "$root" "$out/rootfs.img" "$size"
    cp "$base/vmlinuz" "$out/vmlinuz"
    echo "$out: vmlinuz initrd.gz rootfs.img (boot with root=/dev/vda, the image as the first virtio-blk disk)"
}

case ${1:-} in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    rootfs) shift; rootfs "$@" ;;
    *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
