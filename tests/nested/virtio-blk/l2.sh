# Runs in L2, after /init loaded the virtio modules (host.sh): read and write /dev/vda, print
# FACT lines.
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
for dev in /sys/bus/pci/devices/*; do
    [ -e "$dev/driver" ] && echo "FACT driver ${dev##*/} $(basename "$(readlink "$dev/driver")")"
done
echo "FACT vda_sectors $(cat /sys/block/vda/size 2>/dev/null)"
echo "FACT sector0 $(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 17)"
printf 'L2-WROTE-THIS' | dd of=/dev/vda bs=512 seek=1 conv=sync,fsync 2>/dev/null && echo "FACT wrote"
dmesg | grep -iE 'virtio|vda' | sed 's/^/DMESG /'
