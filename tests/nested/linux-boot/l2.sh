# Runs in L2 (Linux in our VMM): print what a user relies on as FACT lines for l1.sh to check.
echo "L2-CONSOLE-OK"
echo "L2-WAITING-INPUT"
read -t 120 line && echo "L2-INPUT $line"
echo "FACT cpus $(nproc)"
echo "FACT mem_kb $(awk '/MemTotal/ {print $2}' /proc/meminfo)"
# The RAM the kernel found (e820), before its own image and tables are taken out of MemTotal.
echo "FACT ram_kb $(dmesg | sed -n 's|.*Memory: [0-9]*K/\([0-9]*\)K available.*|\1|p')"
grep -E 'ttyS0|serial' /proc/interrupts | sed 's/^/FACT irq /'
for rtc in /sys/class/rtc/rtc*; do [ -e "$rtc/name" ] && echo "FACT rtc $(cat $rtc/name)"; done
echo "FACT year $(date -u +%Y)"
echo "FACT hwclock $(hwclock -r -u 2>&1)"
# Setting the RTC moves only this VM's offset from the host clock; it reads back what was set.
date -u -s '2031-05-06 07:08:09' >/dev/null && hwclock -w -u &&
    echo "FACT rtc_set $(hwclock -r -u 2>&1)"
echo "FACT pat $(dmesg | grep 'x86/PAT: Configuration')"
for dev in /sys/bus/pci/devices/*; do
    echo "FACT pci ${dev##*/} $(sed 's/0x//' $dev/vendor):$(sed 's/0x//' $dev/device)"
done
# The VMM's machine parameter reached the kernel, and with it no early AGP probe ran.
echo "FACT cmdline $(cat /proc/cmdline)"
echo "FACT agp_probes $(dmesg | grep -c 'AGP: Checking aperture')"
# What the kernel complained about while booting (shown, and counted for the check). Two lines
# every x86 ACPI boot prints, and that only mention bugs, are not complaints: the pci=nocrs hint
# and AMD-Vi's "This is not a bug" (the bed's CPU is an AMD one).
complaints() {
    dmesg | grep -iE 'broken|fail|error|warn|bug|call trace|not accessible' |
        grep -vE 'use "pci=nocrs" and report a bug|This is not a bug'
}
complaints | sed 's/^/COMPLAINT /'
echo "FACT complaints $(complaints | wc -l)"
# CMDLINE_EXTRA=scenario_end=reboot: end by a reboot instead of the init's power-off.
case " $(cat /proc/cmdline) " in
*" scenario_end=reboot "*) echo "L2-REBOOTING"; reboot -f ;;
esac
