//! Checks what the vmm's Linux boot path (`--kernel`) hands a kernel, without needing Linux:
//! run it with `vmm --kernel FILE` (FILE from `vmm --dump-builtin linux_boot_probe`, an ELF
//! "vmlinux"). It is entered like a kernel — ring 0, 64-bit, rsi = boot parameters — and prints
//! the boot protocol fields it finds (command line, initrd, e820, ACPI tables) on the serial
//! port and the testdev console, then exits 0, or 1 when something is missing.
//!
//! Ring 0 is emulated on this project's KVM and the emulator has no SSE: loops here are kept
//! from being vectorized.
#![no_std]
#![no_main]

use guest::{pio, println};

const COM1: u16 = 0x3F8;

fn serial_line(text: &str) {
    for &b in text.as_bytes().iter().chain(b"\n") {
        // SAFETY: COM1's data register; this program runs in ring 0.
        unsafe { pio::outb(COM1, b) };
    }
}

/// # Safety
/// `addr` must be readable guest memory (identity-mapped).
unsafe fn read<T: Copy>(addr: u64) -> T {
    core::ptr::read_unaligned(addr as *const T)
}

fn bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: callers pass ranges the boot protocol says are in RAM.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

/// Byte-by-byte with volatile reads: ring 0 is emulated here and the emulator cannot run the
/// SSE code the optimizer would vectorize this loop into.
fn checksum_ok(addr: u64, len: usize) -> bool {
    let mut sum = 0u8;
    for i in 0..len as u64 {
        // SAFETY: callers pass ACPI tables in RAM.
        sum = sum.wrapping_add(unsafe { core::ptr::read_volatile((addr + i) as *const u8) });
    }
    sum == 0
}

fn main() -> i32 {
    let zero_page = guest::rt::entry_args()[1];
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { core::arch::asm!("mov {0:x}, cs", out(reg) cs) };
    let mut ok = true;
    // The zero page, command line, initrd and ACPI tables the reads below look at are in RAM,
    // identity-mapped: that is what the boot protocol under test promises.
    // SAFETY: header fields inside the 4 KiB zero page that rsi points at.
    let (magic, loader) = unsafe {
        (
            read::<u32>(zero_page + 0x202),
            read::<u8>(zero_page + 0x210),
        )
    };
    println!("probe: zero page {zero_page:#x} magic {magic:#x} loader {loader:#x} cs {cs:#x}");
    ok &= magic == 0x5372_6448 && loader == 0xFF && cs & 3 == 0;

    // SAFETY: the zero page's cmd_line_ptr field.
    let cmd_ptr = unsafe { read::<u32>(zero_page + 0x228) } as u64;
    let cmd_len = (0..4096)
        .take_while(|&i| bytes(cmd_ptr + i, 1)[0] != 0)
        .count();
    let cmdline = core::str::from_utf8(bytes(cmd_ptr, cmd_len)).unwrap_or("?");
    println!("probe: cmdline {cmdline:?}");

    // SAFETY: the zero page's ramdisk_image and ramdisk_size fields.
    let (rd_addr, rd_size) = unsafe {
        (
            read::<u32>(zero_page + 0x218) as u64,
            read::<u32>(zero_page + 0x21C) as usize,
        )
    };
    if rd_size > 0 {
        let head = &bytes(rd_addr, rd_size)[..rd_size.min(32)];
        let text = core::str::from_utf8(head).unwrap_or("(binary)");
        println!("probe: initrd {rd_addr:#x} {rd_size} bytes {text:?}");
    } else {
        println!("probe: no initrd");
    }

    // SAFETY: the zero page's e820_entries field.
    let entries = unsafe { read::<u8>(zero_page + 0x1E8) } as u64;
    let mut ram = 0;
    for i in 0..entries {
        let e = zero_page + 0x2D0 + 20 * i;
        let (addr, size, kind) =
            // SAFETY: entry `i` of the zero page's e820 table (at most 128 of 20 bytes each).
            unsafe { (read::<u64>(e), read::<u64>(e + 8), read::<u32>(e + 16)) };
        println!("probe: e820 {addr:#012x}-{:#012x} type {kind}", addr + size);
        if kind == 1 {
            ram += size;
        }
    }
    ok &= entries >= 2 && ram > 0;

    // SAFETY: the zero page's acpi_rsdp_addr field.
    let rsdp = unsafe { read::<u64>(zero_page + 0x70) };
    guest::print!("probe: acpi");
    if bytes(rsdp, 8) == b"RSD PTR " && checksum_ok(rsdp, 20) && checksum_ok(rsdp, 36) {
        // SAFETY: the RSDP's XSDT address; its signature and checksums were checked above.
        let xsdt = unsafe { read::<u64>(rsdp + 24) };
        // SAFETY: the XSDT header's length field, in RAM where the VMM put the tables.
        let len = unsafe { read::<u32>(xsdt + 4) } as u64;
        ok &= checksum_ok(xsdt, len as usize);
        for i in 0..((len - 36) / 8).min(8) {
            // SAFETY: entry `i` of the XSDT, inside the `len` bytes its header gives.
            let table = unsafe { read::<u64>(xsdt + 36 + 8 * i) };
            // SAFETY: that table's header length field.
            let tlen = unsafe { read::<u32>(table + 4) } as usize;
            ok &= checksum_ok(table, tlen);
            guest::print!(
                " {}",
                core::str::from_utf8(bytes(table, 4)).unwrap_or("????")
            );
        }
    } else {
        println!("probe: no valid RSDP at {rsdp:#x}");
        ok = false;
    }
    println!();

    serial_line(if ok {
        "probe: serial ok, boot protocol ok"
    } else {
        "probe: FAILED"
    });
    if ok {
        0
    } else {
        1
    }
}

guest::entry!(main);
