# Sequential O_DIRECT read and write throughput of a vhost-user-blk disk from L2 Linux: our VMM
# against QEMU (q35, -accel kvm, vhost-user-blk-pci, memfd RAM shared) on the same ordinary KVM,
# the same qemu-storage-daemon backend process, kernel, initramfs and memory; alternated ROUNDS
# times. Prints `BENCH vmm|qemu read|write MB_PER_S` lines. Absolute figures under TCG say
# nothing about hardware; compare the two in one run. Needs --binary qemu-storage-daemon and
# qemu-system-x86_64, SeaBIOS and QEMU's option ROMs as --file, the virtio modules for L2.
. ../lib.sh
ROUNDS=${ROUNDS:-2}
MEMORY=${MEMORY:-256M}
CMDLINE="console=ttyS0 quiet panic=-1"

dd if=/dev/zero of=/tmp/disk.img bs=1M count=64 2>/dev/null
qemu-storage-daemon --blockdev driver=file,node-name=disk,filename=/tmp/disk.img,cache.direct=off \
    --export type=vhost-user-blk,id=e,node-name=disk,addr.type=unix,addr.path=/tmp/blk.sock,writable=on \
    >/tmp/qsd.log 2>&1 &
for i in $(seq 100); do [ -S /tmp/blk.sock ] && break; sleep 0.1; done

run_once() {
    local name=$1
    shift
    timeout 300 "$@" </dev/null >/tmp/run.log 2>&1
    grep -a '^BENCH ' /tmp/run.log | tr -d '\r' | sed "s/^BENCH /BENCH $name /"
    grep -aq '^BENCH ' /tmp/run.log || { echo "BENCH-FAILED $name"; tail -n 30 /tmp/run.log; }
}

for round in $(seq "$ROUNDS"); do
    run_once vmm vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory "$MEMORY,shared=on" \
        --device vhost-user-blk,socket=/tmp/blk.sock --cmdline "$CMDLINE"
    run_once qemu qemu-system-x86_64 -M q35 -accel kvm -cpu host -m "$MEMORY" -smp 1 \
        -object memory-backend-memfd,id=mem,size="$MEMORY",share=on -numa node,memdev=mem \
        -nodefaults -no-user-config -nographic -serial stdio -no-reboot \
        -chardev socket,id=blk,path=/tmp/blk.sock -device vhost-user-blk-pci,chardev=blk \
        -kernel /l2/vmlinuz -initrd /l2/initrd.gz -append "$CMDLINE"
done
exit 0
