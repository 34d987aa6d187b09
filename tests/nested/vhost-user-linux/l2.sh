# Runs in L2: load the virtio modules, use the share, vsock both ways and /dev/hwrng; FACT lines.
for m in virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci fuse virtiofs \
    vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport virtio-rng; do
    insmod /modules/$m.ko || echo "FACT insmod $m failed"
done
n=0
for dev in /sys/bus/pci/devices/*; do
    [ "$(basename "$(readlink "$dev/driver" 2>/dev/null)")" = virtio-pci ] && n=$((n + 1))
done
echo "FACT drivers $n"
mkdir -p /mnt
mount -t virtiofs myshare /mnt && echo "FACT fs_mounted"
echo "FACT l1file $(cat /mnt/l1.txt)"
echo "from-L2" >/mnt/l2.txt && sync
echo "FACT vsock_out $(timeout 30 vsock-probe vsock-connect 2 5000 hello-from-l2 2>&1)"
timeout 60 vsock-probe vsock-serve 6000 >/tmp/vsock-in.log 2>&1 &
serve=$!
sleep 1
echo "VSOCK-LISTENING"
wait $serve
echo "FACT vsock_in $(grep got /tmp/vsock-in.log) $(grep vsock-probe /tmp/vsock-in.log)"
bytes=0
for try in 1 2 3 4 5; do
    bytes=$(timeout 5 dd if=/dev/hwrng bs=16 count=1 2>/dev/null | wc -c)
    [ "$bytes" -gt 0 ] && break
    sleep 1
done
echo "FACT hwrng_bytes $bytes"
umount /mnt
dmesg | grep -iE 'virtio|vsock|fuse' | sed 's/^/DMESG /'
