# Linux sees our ivshmem devices as it sees QEMU's: L1 Linux (in QEMU) dumps the config space of
# QEMU's own ivshmem-plain (00:04.0) and ivshmem-doorbell (00:05.0); L2 Linux (in our VMM, same
# kernel) dumps ours; tests/tests/nested_linux.rs compares them. L2 also moves data through BAR2
# both ways with a host peer (ivshmem-client) of the server in L1.
. ../lib.sh

dump_config() { # dump_config LABEL SYSFS_DEVICE_DIR
    echo "CONFIG $1 $(od -An -v -tx1 -N256 "$2/config" | tr -d ' \n')"
}
dump_config qemu-plain /sys/bus/pci/devices/0000:00:04.0
dump_config qemu-doorbell /sys/bus/pci/devices/0000:00:05.0

ivshmem-server -F -S /tmp/sock -l 4M -n 2 2>/tmp/server.log &
server=$!
wait_for /tmp/server.log listening 10
dd if=/dev/zero of=/dev/shm/plain bs=1M count=4 2>/dev/null
check host_writes 0 '' ivshmem-client -S /tmp/sock -c 'write 256 HOST'
timeout 300 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory 256M \
    --cmdline "console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA" \
    --ivshmem plain,path=/dev/shm/plain --ivshmem doorbell,socket=/tmp/sock,vectors=2 \
    </dev/null 2>&1 | tee /tmp/l2.log
check l2_reads_host_data 0 'BAR2 0x54534F48' grep 'BAR2' /tmp/l2.log
check host_reads_l2_data 0 'GEST' ivshmem-client -S /tmp/sock -c 'read 512 4'
kill $server
exit 0
