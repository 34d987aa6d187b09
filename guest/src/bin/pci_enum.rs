//! PCI enumeration through ECAM: lists bus 0 (BDF, IDs, class, BAR sizes and types) and checks
//! the host bridge and, if present, the pci-testdev (`--device pci-testdev`).
//! Exit status: 0 ok; 10 no host bridge at 00:00.0; 11 pci-testdev BARs not as expected;
//! 12 pci-testdev missing MSI-X capability; 13 conf1 (0xCF8/0xCFC) and ECAM disagree.
#![no_std]
#![no_main]

use guest::pci::{self, BarKind, Bdf};
use guest::println;

fn main() -> i32 {
    let mut count = 0;
    for bdf in pci::devices() {
        count += 1;
        println!(
            "pci: {bdf} {:04x}:{:04x} class {:06x}",
            bdf.vendor_id(),
            bdf.device_id(),
            bdf.class()
        );
        for bar in pci::bars(bdf).into_iter().flatten() {
            let kind = match bar.kind {
                BarKind::Io => "io",
                BarKind::Memory32 {
                    prefetchable: false,
                } => "mem32",
                BarKind::Memory32 { prefetchable: true } => "mem32-pref",
                BarKind::Memory64 {
                    prefetchable: false,
                } => "mem64",
                BarKind::Memory64 { prefetchable: true } => "mem64-pref",
            };
            println!("pci: {bdf}   BAR{} {kind} size {:#x}", bar.index, bar.size);
        }
    }
    println!("pci: {count} device(s)");
    // The same config space through the legacy ports: reads agree, a write through one
    // mechanism is seen through the other.
    for bdf in pci::devices() {
        let line = bdf.read8(0x3C);
        pci::conf1::write32(bdf, 0x3C, 0x0000_0042);
        let ok = (0..16u16)
            .all(|dword| pci::conf1::read32(bdf, 4 * dword) == bdf.read32(4 * dword))
            && pci::conf1::read16(bdf, 2) == bdf.device_id()
            && bdf.read8(0x3C) == 0x42;
        bdf.write8(0x3C, line);
        if !ok {
            println!("pci_enum: conf1 and ECAM disagree for {bdf}");
            return 13;
        }
    }
    if pci::conf1::read32(Bdf::new(31, 0), 0) != u32::MAX {
        return 13;
    }
    println!("pci: conf1 agrees with ECAM");
    let host = Bdf::new(0, 0);
    if host.vendor_id() != 0x8086 || host.device_id() != 0x29c0 || host.class() >> 8 != 0x0600 {
        println!("pci_enum: no host bridge at 00:00.0");
        return 10;
    }
    let Some(dev) = pci::find(pci::testdev::VENDOR_ID, pci::testdev::DEVICE_ID) else {
        println!("pci_enum: ok (no pci-testdev)");
        return 0;
    };
    let bars = pci::bars(dev);
    const MMIO: BarKind = BarKind::Memory32 {
        prefetchable: false,
    };
    const RAM: BarKind = BarKind::Memory64 { prefetchable: true };
    // BAR0 registers (4 KiB), BAR1 MSI-X (4 KiB or more), BAR2 RAM (64-bit, any size).
    let bar_ok = |i: usize, kind: BarKind, min: u64, max: u64| {
        bars[i].is_some_and(|b| b.kind == kind && b.size >= min && b.size <= max)
    };
    if !bar_ok(0, MMIO, 0x1000, 0x1000)
        || !bar_ok(1, MMIO, 0x1000, 1 << 16)
        || !bar_ok(2, RAM, 0x1000, u64::MAX)
        || bars[3].is_some()
    {
        println!("pci_enum: unexpected pci-testdev BARs {bars:?}");
        return 11;
    }
    let Some(cap) = dev.find_capability(pci::CAP_ID_MSIX) else {
        println!("pci_enum: pci-testdev has no MSI-X capability");
        return 12;
    };
    println!(
        "pci_enum: ok, pci-testdev at {dev}, MSI-X cap at {cap:#x} with {} vectors",
        (dev.read16(cap + 2) & 0x7FF) + 1
    );
    0
}

guest::entry!(main);
