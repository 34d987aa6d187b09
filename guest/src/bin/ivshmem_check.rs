//! Checks an ivshmem device against QEMU's (docs/protocol.md, "The device"): identity, BARs, MSI-X
//! and the BAR0 registers, then that the shared memory reads back what is written.
//!
//! Guest args (all optional): `index=N` which ivshmem device (default 0); `variant=plain|doorbell`
//! (default: whatever it is); `id=N` the IVPosition expected (plain: always 0); `size=BYTES`
//! BAR2's expected size; `vectors=N` the MSI-X table size expected.
//!
//! Exit status: 0 ok; 10 no ivshmem device; 11 vendor/device id; 12 revision or class;
//! 13 subsystem ids; 14 interrupt pin not 0; 15 BAR0 not 32-bit non-prefetchable 256 bytes;
//! 16 BAR1/MSI-X wrong (or present on plain); 17 BAR2 not 64-bit prefetchable or wrong size;
//! 18 IntrMask not plain storage; 19 IntrStatus not cleared on read; 20 IVPosition wrong or
//! writable; 21 Doorbell does not read 0; 22 reserved registers not 0; 23 shared memory does not
//! read back; 24 variant differs from `variant=`; 25 command register without I/O and memory
//! decoding (QEMU's realize sets both); 2 bad guest args.
#![no_std]
#![no_main]

use guest::args;
use guest::ivshmem::{self, reg, Ivshmem};
use guest::pci::{self, BarKind};
use guest::println;

fn fail(code: i32, what: core::fmt::Arguments<'_>) -> i32 {
    println!("ivshmem_check: FAIL ({code}): {what}");
    code
}

fn main() -> i32 {
    let index = args::u64_or("index", 0) as usize;
    let Some(bdf) = ivshmem::find_nth(index) else {
        return fail(10, format_args!("no ivshmem device #{index}"));
    };

    // Identity (before we touch anything).
    if bdf.vendor_id() != ivshmem::VENDOR_ID || bdf.device_id() != ivshmem::DEVICE_ID {
        return fail(
            11,
            format_args!("ids {:04x}:{:04x}", bdf.vendor_id(), bdf.device_id()),
        );
    }
    let revision = bdf.read8(0x08);
    if revision != ivshmem::REVISION || bdf.class() != ivshmem::CLASS {
        return fail(
            12,
            format_args!("revision {revision}, class {:06x}", bdf.class()),
        );
    }
    let (subsystem_vendor, subsystem) = (bdf.read16(0x2C), bdf.read16(0x2E));
    if subsystem_vendor != ivshmem::SUBSYSTEM_VENDOR_ID || subsystem != ivshmem::SUBSYSTEM_ID {
        return fail(
            13,
            format_args!("subsystem {subsystem_vendor:04x}:{subsystem:04x}"),
        );
    }
    let pin = bdf.read8(0x3D);
    if pin != 0 {
        return fail(14, format_args!("interrupt pin {pin}"));
    }
    // QEMU's realize turns I/O and memory decoding on.
    let decode = pci::COMMAND_IO | pci::COMMAND_MEMORY;
    if bdf.command() & decode != decode {
        return fail(25, format_args!("command register {:#06x}", bdf.command()));
    }

    // BARs, sized before assignment.
    let bars = pci::bars(bdf);
    match bars[0] {
        Some(b)
            if b.kind
                == (BarKind::Memory32 {
                    prefetchable: false,
                })
                && b.size == 0x100 => {}
        other => return fail(15, format_args!("BAR0 {other:?}")),
    }
    let has_msix = bdf.find_capability(pci::CAP_ID_MSIX).is_some();
    let variant = if has_msix { "doorbell" } else { "plain" };
    if let Some(want) = args::get("variant") {
        if want != variant {
            return fail(24, format_args!("device is {variant}, expected {want}"));
        }
    }
    if has_msix {
        match bars[1] {
            Some(b) if matches!(b.kind, BarKind::Memory32 { .. }) && b.size >= 0x1000 => {}
            other => return fail(16, format_args!("BAR1 (MSI-X) {other:?}")),
        }
    } else if bars[1].is_some() {
        return fail(16, format_args!("plain device has BAR1 {:?}", bars[1]));
    }
    let bar2 = match bars[2] {
        Some(b) if ivshmem::is_64bit_prefetchable(&b) && b.size.is_power_of_two() => b,
        other => return fail(17, format_args!("BAR2 {other:?}")),
    };
    if let Some(size) = args::opt_u64("size") {
        if bar2.size != size {
            return fail(
                17,
                format_args!("BAR2 is {:#x} bytes, expected {size:#x}", bar2.size),
            );
        }
    }
    if bars[4].is_some() || bars[5].is_some() {
        return fail(
            17,
            format_args!("unexpected BAR4/5 {:?} {:?}", bars[4], bars[5]),
        );
    }

    let Some(dev) = Ivshmem::open_nth(index) else {
        return fail(10, format_args!("cannot assign the BARs of {bdf}"));
    };
    if dev.shm < guest::layout::PCI_MMIO64_ADDR {
        return fail(17, format_args!("BAR2 placed at {:#x}", dev.shm));
    }

    if let Some(msix) = dev.msix {
        let table = bdf.read32(msix.cap + 4);
        let pba = bdf.read32(msix.cap + 8);
        let bar1 = bars[1].map(|b| b.size).unwrap_or(0);
        let want_pba = (16 * msix.vectors as u32).max(0x800);
        if table != 1 || pba != (want_pba | 1) || bar1 < (want_pba as u64 + 8) {
            return fail(
                16,
                format_args!("MSI-X table {table:#x}, PBA {pba:#x}, BAR1 {bar1:#x} bytes"),
            );
        }
        if let Some(want) = args::opt_u64("vectors") {
            if msix.vectors as u64 != want {
                return fail(
                    16,
                    format_args!("{} MSI-X vectors, expected {want}", msix.vectors),
                );
            }
        }
        if !msix.is_enabled() {
            return fail(16, format_args!("MSI-X did not enable"));
        }
    }

    // Registers.
    for value in [0xDEAD_BEEF, 0, 0xFFFF_FFFF, 0x1234_5678] {
        dev.write_reg(reg::INTR_MASK, value);
        let (a, b) = (dev.read_reg(reg::INTR_MASK), dev.read_reg(reg::INTR_MASK));
        if a != value || b != value {
            return fail(
                18,
                format_args!("IntrMask wrote {value:#x}, read {a:#x} {b:#x}"),
            );
        }
    }
    dev.write_reg(reg::INTR_MASK, 0);
    dev.write_reg(reg::INTR_STATUS, 0x5A5A);
    let (first, second) = (
        dev.read_reg(reg::INTR_STATUS),
        dev.read_reg(reg::INTR_STATUS),
    );
    if first != 0x5A5A || second != 0 {
        return fail(
            19,
            format_args!("IntrStatus read {first:#x} then {second:#x}"),
        );
    }
    let id = dev.read_reg(reg::IV_POSITION);
    let want_id = if has_msix {
        args::opt_u64("id")
    } else {
        Some(0)
    };
    if want_id.is_some_and(|want| want != id as u64) || id > 0xFFFF {
        return fail(20, format_args!("IVPosition {id}, expected {want_id:?}"));
    }
    dev.write_reg(reg::IV_POSITION, id ^ 0x55);
    if dev.read_reg(reg::IV_POSITION) != id {
        return fail(20, format_args!("IVPosition is writable"));
    }
    if dev.read_reg(reg::DOORBELL) != 0 {
        return fail(
            21,
            format_args!("Doorbell reads {:#x}", dev.read_reg(reg::DOORBELL)),
        );
    }
    let mut offset = 0x10;
    while offset < ivshmem::BAR0_SIZE {
        dev.write_reg(offset, 0xFFFF_FFFF);
        let value = dev.read_reg(offset);
        if value != 0 {
            return fail(22, format_args!("register {offset:#x} reads {value:#x}"));
        }
        offset += 4;
    }

    // Shared memory: a pattern at the start, the middle and the last page reads back (and is
    // then restored, since other peers may use the memory).
    for at in [0, dev.shm_size / 2, dev.shm_size - 4096] {
        let saved: [u64; 4] = core::array::from_fn(|i| dev.read_u64(at + 8 * i as u64));
        for i in 0..4u64 {
            dev.write_u64(at + 8 * i, 0xC0FF_EE00_0000_0000 | at | i);
        }
        for i in 0..4u64 {
            let got = dev.read_u64(at + 8 * i);
            if got != 0xC0FF_EE00_0000_0000 | at | i {
                return fail(
                    23,
                    format_args!("shm word {:#x} reads {got:#x}", at + 8 * i),
                );
            }
        }
        for (i, word) in saved.iter().enumerate() {
            dev.write_u64(at + 8 * i as u64, *word);
        }
    }

    println!(
        "ivshmem_check: ok: {variant} device #{index} at {bdf}, id={id} shm_size={} bar2={:#x} \
         msix_vectors={}",
        dev.shm_size,
        dev.shm,
        dev.msix.map(|m| m.vectors).unwrap_or(0)
    );
    0
}

guest::entry!(main);
