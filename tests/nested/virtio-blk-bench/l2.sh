# Runs in L2 (in our VMM or in QEMU): O_DIRECT sequential read and write of /dev/vda, timed
# with /proc/uptime (Debian's busybox dd prints no rate).
for m in virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci virtio_blk; do
    insmod /modules/$m.ko 2>/dev/null
done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
MB=48
ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
rate() { awk -v mb=$MB -v ms=$1 'BEGIN { if (ms > 0) printf "%.1f\n", mb * 1048576 / (ms / 1000) / 1000000 }'; }
start=$(ms); dd if=/dev/vda of=/dev/null bs=1M count=$MB iflag=direct 2>/dev/null; end=$(ms)
echo "BENCH read $(rate $((end - start)))"
start=$(ms); dd if=/dev/zero of=/dev/vda bs=1M count=$MB oflag=direct 2>/dev/null; end=$(ms)
echo "BENCH write $(rate $((end - start)))"
