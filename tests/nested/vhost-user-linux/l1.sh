# Linux (L2) in our VMM with a shared folder, host sockets and an entropy source, each a
# virtio-pci device served by a third-party vhost-user backend in L1: Debian's C virtiofsd
# (vhost-user-fs), rust-vmm's vhost-device-vsock (vhost-user-vsock) and vhost-device-rng (the
# generic vhost-user device, virtio id 4). Files cross the share both ways, vsock connects both
# ways (L2 -> L1 through the backend's UDS_PORT socket, L1 -> L2 with `CONNECT PORT`), and
# /dev/hwrng gives bytes. Needs (see tests/tests/nested_virtio.rs): the backends and vsock-probe
# as --binary, vsock-probe as --l2-binary, the L2 modules as --l2-file ...:/modules/NAME.ko.
. ../lib.sh
MEMORY=${MEMORY:-256M}
# --binary puts each backend at its host path (e.g. ~/.cargo/bin): EXTRA_PATH names those dirs.
[ -z "${EXTRA_PATH:-}" ] || PATH=$PATH:$EXTRA_PATH

mkdir -p /tmp/share
echo "from-L1" >/tmp/share/l1.txt
/usr/lib/qemu/virtiofsd --socket-path=/tmp/fs.sock -o source=/tmp/share -o sandbox=chroot \
    -o cache=none >/tmp/virtiofsd.log 2>&1 &
vhost-device-vsock --vm guest-cid=3,socket=/tmp/vsock.sock,uds-path=/tmp/vsock.uds \
    >/tmp/vsock.log 2>&1 &
vhost-device-rng --socket-path /tmp/rng.sock >/tmp/rng.log 2>&1 &
for sock in /tmp/fs.sock /tmp/vsock.sock /tmp/rng.sock0; do
    for i in $(seq 100); do [ -S $sock ] && break; sleep 0.1; done
done
# L2 -> L1: the backend forwards a guest connection to port 5000 to this socket.
timeout 280 vsock-probe unix-serve /tmp/vsock.uds_5000 >/tmp/unix-serve.log 2>&1 &

RUST_LOG=info timeout 300 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz \
    --memory "$MEMORY,shared=on" --cmdline "console=ttyS0 quiet panic=-1" \
    --device vhost-user-fs,socket=/tmp/fs.sock,tag=myshare \
    --device vhost-user-vsock,socket=/tmp/vsock.sock \
    --device vhost-user,socket=/tmp/rng.sock0,virtio-id=4,queues=1 \
    </dev/null >/tmp/l2.log 2>&1 &
vmm=$!
# L1 -> L2: once L2 listens on port 6000.
if wait_for /tmp/l2.log 'VSOCK-LISTENING' 240; then
    timeout 30 vsock-probe unix-connect /tmp/vsock.uds 6000 hello-from-l1 >/tmp/unix-connect.log 2>&1
fi
wait_bounded $vmm 280
status=$?
sed 's/^/L2| /' /tmp/l2.log
for log in virtiofsd vsock rng unix-serve unix-connect; do sed "s/^/$log| /" /tmp/$log.log; done
l2() { grep -a "$1" /tmp/l2.log | tr -d '\r'; }

check vmm_exit_status 0 '' test "$status" = 0
check boots_to_init 0 'L2-READY' l2 L2-READY
check drivers_bind 0 'FACT drivers 3$' l2 'FACT drivers'
check fs_mounts 0 'FACT fs_mounted' l2 'FACT fs_mounted'
check fs_l1_file_read_in_l2 0 'FACT l1file from-L1' l2 'FACT l1file'
check fs_l2_file_seen_in_l1 0 'from-L2' cat /tmp/share/l2.txt
check vsock_l2_to_l1 0 'FACT vsock_out reply: pong hello-from-l2' l2 'FACT vsock_out'
check vsock_l1_saw_l2 0 'got: hello-from-l2' cat /tmp/unix-serve.log
check vsock_l1_to_l2 0 'reply: pong hello-from-l1' cat /tmp/unix-connect.log
check vsock_l2_saw_l1 0 'FACT vsock_in got: hello-from-l1' l2 'FACT vsock_in'
check hwrng_gives_bytes 0 'FACT hwrng_bytes [1-9]' l2 'FACT hwrng_bytes'
check no_needs_reset 1 '' grep -q 'DEVICE_NEEDS_RESET' /tmp/l2.log
exit 0
