# Linux (L2) in our VMM with its root filesystem on a virtio-blk disk that qemu-storage-daemon
# serves in L1: L2's initramfs (/init from this scenario's l2-init, given as --l2-file) loads
# the virtio and ext4 modules, mounts /dev/vda and switch_roots into it; the root's own
# /sbin/init reports, writes a file and powers off; L1 finds the file in the image.
# Needs: --file ROOTFS.img:/rootfs.img (ext4 with busybox, /sbin/init, /etc/marker), --binary
# qemu-storage-daemon, --l2-file l2-init:/init and the modules as --l2-file ...:/modules/NAME.ko.
. ../lib.sh
MEMORY=${MEMORY:-256M}

qemu-storage-daemon --blockdev driver=file,node-name=disk,filename=/rootfs.img \
    --export type=vhost-user-blk,id=e,node-name=disk,addr.type=unix,addr.path=/tmp/blk.sock,writable=on \
    >/tmp/qsd.log 2>&1 &
qsd=$!
for i in $(seq 100); do [ -S /tmp/blk.sock ] && break; sleep 0.1; done

timeout 300 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz \
    --memory "$MEMORY,shared=on" --device vhost-user-blk,socket=/tmp/blk.sock \
    --cmdline "console=ttyS0 quiet panic=-1" </dev/null >/tmp/l2.log 2>&1
status=$?
sed 's/^/L2| /' /tmp/l2.log
l2() { grep -a "$1" /tmp/l2.log | tr -d '\r'; }
kill $qsd 2>/dev/null
wait $qsd 2>/dev/null

check vmm_exit_status 0 '' test "$status" = 0
check root_mounted 0 'ROOT-MOUNTED' l2 ROOT-MOUNTED
check root_init_runs 0 'ROOTFS rootfs-from-host' l2 'ROOTFS '
check root_is_vda_ext4 0 'FACT root /dev/vda / ext4' l2 'FACT root'
check root_write_reaches_l1 0 'written-by-l2-root' sh -c 'strings /rootfs.img | grep written-by-l2-root'
exit 0
