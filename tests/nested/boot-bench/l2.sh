# L2's /init has printed L2-READY; stay up a moment so L1 samples the VMM's memory, then reset
# (both VMMs end on a guest reset: ours always, QEMU with -no-reboot).
sleep 1
reboot -f
