# L2's /init has printed L2-READY; stay up until L1 has sampled the VMM's memory and says so on
# the serial console (bounded, should that line never come), then reset (both VMMs end on a
# guest reset: ours always, QEMU with -no-reboot).
read -r -t 60 _ </dev/ttyS0 || echo "boot-bench: no word from L1 within 60 s"
reboot -f
