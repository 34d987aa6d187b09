//! BAR programming and moving with `--device pci-testdev`: assigns the BARs, checks the registers
//! in BAR0 and the RAM in BAR2, then moves both BARs (with decoding on: the VMM remaps at the
//! config write) and checks the old addresses read all-ones and the new ones show the same
//! device and the same RAM contents; finally turns memory decoding off and on.
//! Exit status: 0 ok; 20 no device; 21 BAR0 registers wrong; 22 RAM BAR not memory;
//! 23 BAR2 move not effective; 24 BAR0 move not effective; 25 decode off still decodes;
//! 26 decode back on lost the contents.
#![no_std]
#![no_main]

use guest::mmio::{read32, read64, write32, write64};
use guest::pci::{self, testdev as td, BarAllocator};
use guest::println;

const WORDS: u64 = 1024;

fn pattern(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A
}

fn check_ram(base: u64) -> bool {
    // SAFETY: `base` is the RAM BAR (>= 8 KiB), identity-mapped.
    (0..WORDS).all(|i| unsafe { read64(base + 8 * i) } == pattern(i))
}

fn main() -> i32 {
    let Some(dev) = pci::find(td::VENDOR_ID, td::DEVICE_ID) else {
        println!("pci_bar: no pci-testdev (run with --device pci-testdev)");
        return 20;
    };
    let mut allocator = BarAllocator::new();
    let bars = pci::assign_bars(dev, &mut allocator);
    let (Some((_, regs)), Some((ram_bar, ram))) = (bars[0], bars[2]) else {
        println!("pci_bar: BAR0/BAR2 not assigned: {bars:?}");
        return 20;
    };
    println!(
        "pci_bar: {dev} BAR0 at {regs:#x}, BAR2 ({:#x} bytes) at {ram:#x}",
        ram_bar.size
    );

    // SAFETY: (all MMIO below) addresses inside BARs we just assigned, or the old/new
    // addresses of moved BARs, all inside the identity-mapped PCI windows.
    unsafe {
        if read32(regs + td::reg::MAGIC) != td::MAGIC {
            println!("pci_bar: bad magic {:#x}", read32(regs + td::reg::MAGIC));
            return 21;
        }
        write32(regs + td::reg::SCRATCH, 0x1234_5678);
        if read32(regs + td::reg::SCRATCH) != 0x1234_5678 {
            return 21;
        }
        let size = (read32(regs + td::reg::RAM_SIZE_HI) as u64) << 32
            | read32(regs + td::reg::RAM_SIZE_LO) as u64;
        if size != ram_bar.size {
            println!(
                "pci_bar: device says RAM is {size:#x}, BAR says {:#x}",
                ram_bar.size
            );
            return 21;
        }

        for i in 0..WORDS {
            write64(ram + 8 * i, pattern(i));
        }
        if !check_ram(ram) {
            return 22;
        }

        // Move BAR2 within the 64-bit window with decoding on.
        let new_ram = allocator
            .allocate(ram_bar.kind, ram_bar.size)
            .and_then(|_| allocator.allocate(ram_bar.kind, ram_bar.size))
            .unwrap_or(0);
        pci::set_bar_address(dev, &ram_bar, new_ram);
        if pci::bar_address(dev, &ram_bar) != new_ram {
            return 23;
        }
        let old = read64(ram);
        if old != u64::MAX || !check_ram(new_ram) {
            println!("pci_bar: after moving BAR2 to {new_ram:#x}: old reads {old:#x}");
            return 23;
        }
        // Write at the new place, move back, see it there.
        write64(new_ram + 8 * WORDS, 0xFEED);
        pci::set_bar_address(dev, &ram_bar, ram);
        if read64(ram + 8 * WORDS) != 0xFEED || read64(new_ram) != u64::MAX {
            return 23;
        }
        println!("pci_bar: BAR2 moved {ram:#x} -> {new_ram:#x} -> {ram:#x}");

        // Move BAR0 (MMIO registers).
        let regs_bar = bars[0].map(|(b, _)| b).unwrap_or(ram_bar);
        let new_regs = allocator
            .allocate(regs_bar.kind, regs_bar.size)
            .unwrap_or(0);
        pci::set_bar_address(dev, &regs_bar, new_regs);
        if read32(regs + td::reg::MAGIC) != u32::MAX
            || read32(new_regs + td::reg::MAGIC) != td::MAGIC
            || read32(new_regs + td::reg::SCRATCH) != 0x1234_5678
        {
            return 24;
        }
        println!("pci_bar: BAR0 moved {regs:#x} -> {new_regs:#x}");

        // Memory decoding off: nothing answers; on again: all back.
        dev.enable_memory(false);
        if read32(new_regs + td::reg::MAGIC) != u32::MAX || read64(ram) != u64::MAX {
            return 25;
        }
        dev.enable_memory(true);
        if read32(new_regs + td::reg::MAGIC) != td::MAGIC || !check_ram(ram) {
            return 26;
        }
    }
    println!("pci_bar: ok");
    0
}

guest::entry!(main);
