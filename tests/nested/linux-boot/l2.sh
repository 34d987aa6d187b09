# Runs in L2 (Linux in our VMM): print what a user relies on as FACT lines for l1.sh to check.
echo "L2-CONSOLE-OK"
echo "L2-WAITING-INPUT"
read -t 120 line && echo "L2-INPUT $line"
echo "FACT cpus $(nproc)"
echo "FACT mem_kb $(awk '/MemTotal/ {print $2}' /proc/meminfo)"
grep -E 'ttyS0|serial' /proc/interrupts | sed 's/^/FACT irq /'
for rtc in /sys/class/rtc/rtc*; do [ -e "$rtc/name" ] && echo "FACT rtc $(cat $rtc/name)"; done
echo "FACT year $(date -u +%Y)"
for dev in /sys/bus/pci/devices/*; do
    echo "FACT pci ${dev##*/} $(sed 's/0x//' $dev/vendor):$(sed 's/0x//' $dev/device)"
done
# What the kernel complained about while booting (shown, and counted for the check).
complaints() {
    dmesg | grep -iE 'broken|fail|error|warn|bug|call trace|not accessible' | grep -v 'This is not a bug'
}
complaints | sed 's/^/COMPLAINT /'
echo "FACT complaints $(complaints | wc -l)"
