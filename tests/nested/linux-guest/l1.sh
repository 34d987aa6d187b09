# The Linux guest side of ivshmem in QEMU's own devices (L1 is the guest here): the ivshmem
# module binds two ivshmem-plain and one ivshmem-doorbell device (on our server, outside QEMU,
# with the test as the host peer); ivshmem-guest-client talks to the host peer through
# memory and doorbells on every vector, both ways. Then: bad arguments, unbind/rebind and rmmod
# while the device is open, and the host peer leaving while we wait.
# Arguments (--arg): PLAIN_A, DOORBELL, PLAIN_B: the devices' PCI addresses (bus:slot.fn);
# HOST_ID: the host peer's id; GUEST_ID: ours (the doorbell device's).
# Files: /ivshmem.ko, /usr/local/bin/ivshmem-guest-client, /usr/local/bin/driver_checks.
# Shared-memory layout agreed with tests/tests/nested_linux_guest.rs (doorbell device):
#   256 host greeting, 512 guest greeting, 768 guest's step marker (READY, WAITING).
. ../lib.sh
C=ivshmem-guest-client
DB=0000:$DOORBELL
unbind_path=/sys/bus/pci/drivers/ivshmem

check insmod 0 '' insmod /ivshmem.ko
check list_three_devices 0 "ivshmem0 0000:$PLAIN_A .*ivshmem1 0000:$DOORBELL .*ivshmem2 0000:$PLAIN_B " \
    sh -c "$C --list | tr '\n' ' '"
check sysfs_attributes 0 "^2 4194304 0000:$DOORBELL $GUEST_ID $" \
    sh -c 'cd /sys/class/ivshmem/ivshmem1 && echo $(cat vectors shm_size pci_address iv_position) ""'
check sysfs_device_link 0 "$DOORBELL\$" readlink /sys/class/ivshmem/ivshmem1/device

# ivshmem-plain: memory both ways (the host checks our text in its file after the run).
check plain_a_reads_host 0 'host to plain A' $C -d $PLAIN_A -c 'read 0 32'
check plain_b_reads_host 0 'host to plain B' $C -d $PLAIN_B -c 'read 0 32'
check plain_a_writes 0 '' $C -d $PLAIN_A -c 'write 64 guest to plain A\0'
check plain_b_writes 0 '' $C -d 2 -c 'write 64 guest to plain B\0'
check plain_has_no_vectors 1 'no interrupt vectors' $C -d $PLAIN_A -c 'wait any 10'

# ivshmem-doorbell: our id, memory both ways.
check doorbell_dump 0 "our_id = $GUEST_ID.*vector 1 is enabled.*4194304 bytes.*mapped register page" \
    sh -c "$C -d $DB -c dump | tr '\n' ' '"
check doorbell_reads_host 0 'hello from the h' $C -d $DOORBELL -c 'read 256 32'
check doorbell_writes 0 '' $C -d $DOORBELL -c 'write 512 hello from the guest\0'

# Bad arguments: errors, never an oops.
check cli_vector_out_of_range 1 'out of range' $C -d $DB -c "int $HOST_ID 70000"
check cli_unknown_vector 1 'no vector 5' $C -d $DB -c 'wait 5 10'
check cli_read_outside 1 'outside the shared memory' $C -d $DB -c 'read 0x400000 1'
check cli_no_peer_list 1 'not available in a guest' $C -d $DB -c 'int all'
check cli_no_device 2 'cannot open' $C -d 7 -c dump
check cli_no_pci_device 2 'no ivshmem device has PCI address' $C -d 00:1f.0 -c dump
check driver_edges 0 'CHECKS 0 failed' driver_checks edges /dev/ivshmem1

# Unbind while a program holds the device mapped: it is told, keeps running; then rebind.
$C -d $DB -c 'wait any 60000' >/tmp/waiter.log 2>&1 &
waiter=$!
wait_for /proc/$waiter/maps /dev/ivshmem 30
mkfifo /tmp/hold-in
driver_checks hold /dev/ivshmem1 </tmp/hold-in >/tmp/hold.log 2>&1 &
holder=$!
exec 3>/tmp/hold-in
wait_for /tmp/hold.log HOLDING 30
check unbind_while_open 0 '' sh -c "echo $DB > $unbind_path/unbind"
echo go >&3
exec 3>&-
wait $holder
check removal_seen_by_holder 0 'CHECKS 0 failed' cat /tmp/hold.log
wait $waiter
waiter_status=$?
check removal_wakes_waiter 0 'device is gone' cat /tmp/waiter.log
check removal_waiter_status 0 '' test "$waiter_status" = 1
check rebind 0 '' sh -c "echo $DB > $unbind_path/bind"
check rebind_reads_host 0 'hello from the h' $C -d $DOORBELL -c 'read 256 32'

# Doorbells both ways on every vector, after the rebind: we ring the host and it rings back
# the same vector; by a store to the mapped register and by the ioctl.
check ring_by_store 0 'vector=0.*vector=1' \
    sh -c "$C -d $DOORBELL -c 'write 768 READY\0; int $HOST_ID 0; wait 0 60000; int $HOST_ID 1; wait 1 60000' | tr '\n' ' '"
check ring_by_ioctl 0 'vector=0.*vector=1' \
    sh -c "$C -d $DOORBELL --ring-ioctl -c 'int $HOST_ID 0; wait 0 60000; int $HOST_ID 1; wait 1 60000' | tr '\n' ' '"

# rmmod while open is refused; the program keeps working; after it closes, rmmod works.
mkfifo /tmp/open-in
$C -d $DOORBELL </tmp/open-in >/tmp/open.log 2>&1 &
opener=$!
exec 4>/tmp/open-in
wait_for /proc/$opener/maps /dev/ivshmem 30
check rmmod_while_open 1 'in use|busy|unavailable' rmmod ivshmem
echo 'read 256 32' >&4
exec 4>&-
wait $opener
check open_program_unharmed 0 'hello from the h' cat /tmp/open.log
check rmmod_after_close 0 '' rmmod ivshmem
check reinsmod 0 '' insmod /ivshmem.ko

# The host peer leaves while we wait: the wait times out cleanly, the device keeps working.
check peer_leaves_while_waiting 1 'no notification on any vector within 20000 ms' \
    $C -d $DOORBELL -c 'write 768 WAITING\0; wait any 20000'
check after_peer_left 0 'hello from the h' $C -d $DOORBELL -c "int $HOST_ID 0; read 256 32"

check no_oops 1 '' sh -c "dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|general protection'"
dmesg | grep -i ivshmem | sed 's/^/DMESG /'
exit 0
