# Linux (L2) in our VMM reads and writes a disk served by qemu-storage-daemon in L1, through our
# virtio-pci transport and vhost-user frontend: the virtio modules load, /dev/vda appears with
# the image's size, sector 0 reads what L1 wrote there, a write from L2 lands in L1's image.
# host.sh puts qemu-storage-daemon in L1 and the virtio modules in L2's initramfs.
. ../lib.sh
MEMORY=${MEMORY:-256M}

dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null
printf 'L1-DISK-SIGNATURE' | dd of=/tmp/disk.img conv=notrunc 2>/dev/null
qemu-storage-daemon --blockdev driver=file,node-name=disk,filename=/tmp/disk.img \
    --export type=vhost-user-blk,id=e,node-name=disk,addr.type=unix,addr.path=/tmp/blk.sock,writable=on \
    >/tmp/qsd.log 2>&1 &
qsd=$!
for i in $(seq 100); do [ -S /tmp/blk.sock ] && break; sleep 0.1; done

RUST_LOG=info timeout 300 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz \
    --memory "$MEMORY,shared=on" --device vhost-user-blk,socket=/tmp/blk.sock \
    --cmdline "console=ttyS0 quiet panic=-1" </dev/null >/tmp/l2.log 2>&1
status=$?
sed 's/^/L2| /' /tmp/l2.log
l2() { grep -a "$1" /tmp/l2.log | tr -d '\r'; }

check vmm_exit_status 0 '' test "$status" = 0
check boots_to_init 0 'L2-READY' l2 L2-READY
check virtio_pci_binds 0 'FACT driver .* virtio-pci' l2 'FACT driver'
check disk_appears 0 'FACT vda_sectors 32768$' l2 'FACT vda_sectors'
check sector0_reads 0 'FACT sector0 L1-DISK-SIGNATURE' l2 'FACT sector0'
check write_reaches_l1 0 'L2-WROTE-THIS' dd if=/tmp/disk.img bs=512 skip=1 count=1
check no_needs_reset 1 '' grep -q 'DEVICE_NEEDS_RESET' /tmp/l2.log
kill $qsd 2>/dev/null
exit 0
