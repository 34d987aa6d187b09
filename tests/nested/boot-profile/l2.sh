# profile=stats: end at once (the VMM's --stats then cover the boot to /init and the power-off);
# profile=dmesg: print the kernel log (initcalls only when they took dmesg_min_us or more), and
# the CPU as the guest sees it (`CPU ` lines: cpuinfo's family, model, flags and bugs, and the
# kernel's mitigations), since what CPUID offers decides which code the kernel patches in.
arg() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
if [ "$(arg profile)" = dmesg ]; then
    min=$(arg dmesg_min_us)
    dmesg | awk -v min="${min:-2000}" '
        / calling / { next }
        / initcall .* returned / { for (i = 1; i < NF; i++) if ($i == "after") us = $(i + 1);
            if (us + 0 < min + 0) next }
        { print "DMESG " $0 }'
    grep -m 6 -E '^(vendor_id|cpu family|model|model name|flags|bugs)' /proc/cpuinfo | sed 's/^/CPU /'
    for f in /sys/devices/system/cpu/vulnerabilities/*; do echo "CPU ${f##*/}: $(cat "$f")"; done
fi
