# The Linux guest side of ivshmem in our own VMM on ordinary KVM: L2 Linux (in our VMM inside
# L1) loads the ivshmem module for our ivshmem-doorbell and ivshmem-plain devices and, with
# ivshmem-guest-client, talks to a host peer and to a guest-program VM on one server in L1:
# memory both ways, doorbells both ways on every vector, VM<->VM round trips; the driver's edge
# cases behave as on QEMU's devices (tests/nested/linux-guest). L2's checks are in l2.sh.
# Ids on the server: 0 the host peer, 1 the guest-program VM (pong), 2 the Linux guest.
. ../lib.sh
ROUNDS=10

dd if=/dev/zero of=/dev/shm/plain bs=1M count=4 2>/dev/null
printf 'host to plain' | dd of=/dev/shm/plain conv=notrunc 2>/dev/null
ivshmem-server -F -S /tmp/sock -l 4M -n 2 2>/tmp/server.log &
server=$!
wait_for /tmp/server.log 'listening' 10

# The host peer (id 0): greets at 256 and answers the Linux guest once on each vector.
mkfifo /tmp/host-in
ivshmem-client -S /tmp/sock </tmp/host-in >/tmp/host.log 2>&1 &
host=$!
exec 3>/tmp/host-in
echo 'write 256 hello from the host\0' >&3
wait_for /tmp/server.log 'peer 0 joined' 10
# The guest-program VM (id 1): answers the Linux guest's rings on vector 0, ROUNDS times.
vmm --name pong --guest builtin:ivshmem_pingpong --stats \
    --guest-args "role=pong peer=2 rounds=$ROUNDS warmup=0 timeout_ms=240000" \
    --ivshmem doorbell,socket=/tmp/sock,vectors=2 >/tmp/pong.log 2>&1 &
pong=$!
wait_for /tmp/server.log 'peer 1 joined' 10
echo 'wait 0 240000; int 2 0; wait 1 240000; int 2 1; read 512 32' >&3

# The Linux guest (id 2).
timeout 400 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory 256M --stats \
    --cmdline 'console=ttyS0 quiet panic=-1' \
    --ivshmem doorbell,socket=/tmp/sock,vectors=2 --ivshmem plain,path=/dev/shm/plain \
    </dev/null 2>&1 | tee /tmp/l2.log
exec 3>&-
wait_bounded $host
wait_bounded $pong
pong_status=$?
check l2_ran 0 'L2-EXIT 0' cat /tmp/l2.log
check l2_no_slow_doorbells 0 '"ivshmem_slow_doorbells":0[,}]' cat /tmp/l2.log
check host_got_both_vectors 0 'vector=0.*vector=1' sh -c "tr '\n' ' ' </tmp/host.log"
check host_reads_linux 0 'hello from linux' cat /tmp/host.log
check plain_file_has_linux 0 'linux to plain' dd if=/dev/shm/plain bs=1 skip=64 count=14 2>/dev/null
check pong_answered_all 0 '' test "$pong_status" = 0
check pong_no_slow_doorbells 0 '"ivshmem_slow_doorbells":0[,}]' cat /tmp/pong.log
kill $server
exit 0
