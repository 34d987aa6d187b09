# Who is there, from a Linux guest: L2 Linux (in our VMM inside L1) reads the server's state
# table with ivshmem-guest-client --state-table (peers, wait-peer, int all), woken by the
# lifecycle doorbell. The server keeps the table at 2M and rings vector 2 on joins and leaves.
# Ids: 0 the host peer, 1 the Linux guest, 2 a host peer that joins while L2 waits for it.
# L2's checks are in l2.sh.
. ../lib.sh

ivshmem-server -F -S /tmp/sock -l 4M -n 3 --state-table 2M --lifecycle-vector 2 \
    2>/tmp/server.log &
server=$!
wait_for /tmp/server.log 'listening' 10

# The host peer (id 0): waits for the guest's `int all` on vector 0.
mkfifo /tmp/host-in
ivshmem-client -S /tmp/sock </tmp/host-in >/tmp/host.log 2>&1 &
host=$!
exec 3>/tmp/host-in
wait_for /tmp/server.log 'peer 0 joined' 10
echo 'wait 0 240000' >&3

# The newcomer (id 2) joins once L2 says it waits for it, and stays until L2 is done.
(
    wait_for /tmp/l2.log 'WAITING-FOR-PEER-2' 400 &&
        ivshmem-client -S /tmp/sock -c 'sleep 120000' >/tmp/late.log 2>&1
) &
late=$!

# The Linux guest (id 1).
timeout 400 vmm --kernel /l2/vmlinuz --initrd /l2/initrd.gz --memory 256M --stats \
    --cmdline 'console=ttyS0 quiet panic=-1' \
    --ivshmem doorbell,socket=/tmp/sock,vectors=3 \
    </dev/null 2>&1 | tee /tmp/l2.log
exec 3>&-
wait_bounded $host
kill $late 2>/dev/null
check l2_ran 0 'L2-EXIT 0' cat /tmp/l2.log
check host_rung_by_int_all 0 'vector=0' cat /tmp/host.log
kill $server
exit 0
