# A stock Debian kernel boots in our VMM on ordinary KVM to a usable userspace: console output
# and input, CPUs, memory, the UART's interrupt on the IOAPIC, the RTC (read, and set by the
# guest), write-combining (MTRRs/PAT), PCI, a clean power-off (or reboot).
# Arguments (--arg): KERNEL=vmlinuz|vmlinux (bzImage or ELF), CPUS=N, MEMORY=SIZE,
# CMDLINE_EXTRA (appended to the kernel command line; `scenario_end=reboot` makes L2 reboot
# instead of powering off).
. ../lib.sh
KERNEL=${KERNEL:-vmlinuz} CPUS=${CPUS:-1} MEMORY=${MEMORY:-256M}

dd if=/dev/zero of=/dev/shm/plain bs=1M count=4 2>/dev/null
mkfifo /tmp/console-in
# The L2 console: its output to a log (shown after the run), its input from a fifo we write into.
timeout 300 vmm --kernel /l2/$KERNEL --initrd /l2/initrd.gz --memory "$MEMORY" --cpus "$CPUS" \
    --cmdline "console=ttyS0 quiet panic=-1 $CMDLINE_EXTRA" --ivshmem plain,path=/dev/shm/plain \
    </tmp/console-in >/tmp/l2.log 2>&1 &
vmm=$!
exec 3>/tmp/console-in
if wait_for /tmp/l2.log 'L2-WAITING-INPUT' 240; then
    echo "typed into the serial console" >&3
fi
wait $vmm
status=$?
exec 3>&-
sed 's/^/L2| /' /tmp/l2.log
l2() { grep -a "$1" /tmp/l2.log | tr -d '\r'; }

check boots_to_init 0 'L2-READY' l2 L2-READY
check vmm_exit_status 0 '' test "$status" = 0
check powers_off 1 '' grep -q 'terminating on signal' /tmp/l2.log
check console_output 0 'L2-CONSOLE-OK' l2 L2-CONSOLE-OK
check console_input 0 'L2-INPUT typed into the serial console' l2 L2-INPUT
check cpus 0 "FACT cpus $CPUS\$" l2 'FACT cpus'
mem_kb=$(l2 'FACT mem_kb' | awk '{print $3}')
ram_kb=$(l2 'FACT ram_kb' | awk '{print $3}')
mem_want=$(( $(echo "$MEMORY" | tr -d M) * 1024 ))
# All of --memory but the legacy hole (0x9FC00..1 MiB) and page 0 is RAM to the kernel; a stock
# Debian kernel keeps about 50 MiB of it for itself (image, page structs), so MemTotal is lower.
check memory 0 '' test "${ram_kb:-0}" -gt $((mem_want - 1024)) -a "${ram_kb:-0}" -le "$mem_want" \
    -a "${mem_kb:-0}" -gt $((mem_want * 7 / 10))
check uart_on_ioapic 0 'IO-APIC.*ttyS0' l2 'FACT irq'
check rtc 0 'FACT rtc rtc_cmos' l2 'FACT rtc'
check rtc_time 0 "FACT year $(date -u +%Y)" l2 'FACT year'
check rtc_hwclock 0 "FACT hwclock .*$(date -u +%Y)" l2 'FACT hwclock'
check rtc_set_by_guest 0 'FACT rtc_set .*2031' l2 'FACT rtc_set'
check write_combining 0 'FACT pat .* WC ' l2 'FACT pat'
case " $CMDLINE_EXTRA " in
*" scenario_end=reboot "*) check reboots 0 'L2-REBOOTING' l2 L2-REBOOTING ;;
esac
check pci_ivshmem 0 'FACT pci .*1af4:1110' l2 'FACT pci'
check machine_cmdline 0 'FACT cmdline .* pci=noearly' l2 'FACT cmdline'
check no_early_pci_probe 0 'FACT agp_probes 0$' l2 'FACT agp_probes'
check no_boot_complaints 0 'FACT complaints 0$' l2 'FACT complaints'
exit 0
