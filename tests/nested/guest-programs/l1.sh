# Our VMM's basics on ordinary KVM (guest ring 0 native): exits, faults, SMP, interrupts,
# PCI/MSI-X, ivshmem plain and doorbell with a server, two VMs and a host peer.
. ../lib.sh

check hello 0 '^Hello from guest' vmm --guest builtin:hello
# The bed's own guard (docs/nested-kvm.md): one VM held all along, then VMs started and ended
# back to back, which without it hung L1 about once in 50.
check kvm_hold_running 0 '' pidof kvm-hold
check vm_churn 0 '^churn: 50 of 50 ended with 42$' sh -c '
    ok=0
    for i in $(seq 50); do
        vmm --guest builtin:exit_code >/dev/null 2>&1
        [ $? = 42 ] && ok=$((ok + 1))
    done
    echo "churn: $ok of 50 ended with 42"'
check exit_code 42 '' vmm --guest builtin:exit_code
check fault 3 'vector 14 \(#PF page fault\).*cr2=0x0' vmm --guest builtin:fault
check string_pio 0 'rep insd ok \[1, 2, 3, 4, 5, 6, 7, 8\]' vmm --guest builtin:string_pio
check smp 0 'smp: all 2 cpus up' vmm --guest builtin:smp --cpus 2
check irq_selftest 0 'irq_selftest: ok' vmm --guest builtin:irq_selftest
check reset 0 'reset: pulsing' vmm --guest builtin:reset
check pci_enum 0 '' vmm --guest builtin:pci_enum --device pci-testdev
check pci_bar 0 '' vmm --guest builtin:pci_bar --device pci-testdev
check pci_ram 0 '' vmm --guest builtin:pci_ram --device pci-testdev,ram=2M
check pci_msix 0 '' vmm --guest builtin:pci_msix --device pci-testdev

dd if=/dev/zero of=/dev/shm/plain bs=1M count=2 2>/dev/null
check ivshmem_plain 0 '' vmm --guest builtin:ivshmem_check --ivshmem plain,path=/dev/shm/plain --guest-args 'variant=plain size=2097152'

# The demo scene (scripts/demo.sh): a server, a host peer (peer 0) and two VMs greeting and ringing each other.
ivshmem-server -F -S /tmp/sock --memfd -l 16M -n 2 2>/tmp/server.log &
server=$!
wait_for /tmp/server.log 'listening' 10
# The host peer takes its commands from a FIFO, so that it rings the VMs only once both have
# greeted everyone (their consoles say so), i.e. once each is in its doorbell loop.
rm -f /tmp/host-in; mkfifo /tmp/host-in
ivshmem-client -S /tmp/sock </tmp/host-in >/tmp/host.log 2>&1 &
host=$!
exec 3>/tmp/host-in
echo 'write 16 hello from the host peer\0; write 4 \x00\x00\x00\x00; write 0 IVSH' >&3
wait_for /tmp/server.log 'peer 0 joined' 10
id=1
for name in vm-a vm-b; do
    vmm --name $name --guest builtin:ivshmem_demo --guest-args "peers=2 doorbells=2 timeout_ms=60000" \
        --ivshmem doorbell,socket=/tmp/sock,vectors=2 --stats >/tmp/$name.log 2>&1 &
    eval "pid_$(echo $name | tr - _)=\$!"
    wait_for /tmp/server.log "peer $id joined" 10
    id=$((id + 1))
done
wait_for /tmp/vm-a.log 'rang peer 2' 60
wait_for /tmp/vm-b.log 'rang peer 1' 60
echo 'int 1 1; int 2 1; read 64 48; read 128 48' >&3
exec 3>&-
for name in vm-a vm-b; do
    eval "wait_bounded \$pid_$(echo $name | tr - _)"
    check "demo_${name}_no_slow_doorbells" 0 '"ivshmem_slow_doorbells":0[,}]' cat /tmp/$name.log
    check "demo_${name}_hears_host" 0 'peer 0 says: "hello from the host peer"' cat /tmp/$name.log
done
wait_bounded $host
check ivshmem_doorbell_check 0 '' vmm --guest builtin:ivshmem_check --ivshmem doorbell,socket=/tmp/sock,vectors=2 --guest-args 'variant=doorbell vectors=2'
check demo_host 0 'hello from VM' cat /tmp/host.log
kill $server
wait_bounded $server 30
check server_shutdown 0 '' test ! -e /tmp/sock
exit 0
