//! RAM BAR access without VM exits: writes and reads the pci-testdev's RAM BAR many times over
//! (the integration test runs this with `--stats` and checks the MMIO exit count stays tiny).
//! Prints the bytes moved and the BAR0 access counter (each BAR0 access is an exit).
//! Exit status: 0 ok; 30 no device; 31 data mismatch.
#![no_std]
#![no_main]

use guest::mmio::{read32, read64, write64};
use guest::pci::{self, testdev as td, BarAllocator};
use guest::println;

const PASSES: u64 = 64;

fn main() -> i32 {
    let Some(dev) = pci::find(td::VENDOR_ID, td::DEVICE_ID) else {
        println!("pci_ram: no pci-testdev");
        return 30;
    };
    let bars = pci::assign_bars(dev, &mut BarAllocator::new());
    let (Some((_, regs)), Some((bar, ram))) = (bars[0], bars[2]) else {
        return 30;
    };
    let words = bar.size / 8;
    let start = guest::clock::now_ns();
    let mut sum = 0u64;
    // SAFETY: all addresses are inside the assigned RAM BAR / BAR0.
    unsafe {
        let before = read32(regs + td::reg::ACCESSES);
        for pass in 0..PASSES {
            for i in 0..words {
                write64(ram + 8 * i, i ^ pass);
            }
            for i in 0..words {
                let v = read64(ram + 8 * i);
                if v != i ^ pass {
                    println!("pci_ram: word {i} pass {pass}: {v:#x}");
                    return 31;
                }
                sum = sum.wrapping_add(v);
            }
        }
        let after = read32(regs + td::reg::ACCESSES);
        let ns = (guest::clock::now_ns() - start).max(1);
        let bytes = 2 * PASSES * bar.size;
        println!(
            "pci_ram: ok: {} accesses, {bytes} bytes in {} us ({} MB/s), BAR0 exits {} (sum {sum:#x})",
            2 * PASSES * words,
            ns / 1000,
            bytes * 1000 / ns,
            after - before
        );
    }
    0
}

guest::entry!(main);
