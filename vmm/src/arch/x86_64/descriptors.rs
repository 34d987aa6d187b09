//! GDT, TSS and IDT for guest programs.
//!
//! GDT: null, ring-0 code/data, ring-3 code/data, then one 16-byte TSS descriptor per vCPU (each
//! vCPU's TR selects its own TSS, whose RSP0 is that vCPU's ring-0 stack). IDT: vectors 0..31 go
//! to the exception entry stubs, 32..255 to the interrupt entry stubs; all are DPL-0 interrupt
//! gates (IF cleared on entry), #GP going to the handler that doubles as the ring-3 `hlt` gate
//! (see `stubs`).
use super::layout::*;
use super::stubs;

const fn segment(access: u8, flags: u8) -> u64 {
    // Base 0, limit 0xFFFFF (ignored in 64-bit mode for code; flat for data).
    0xFFFF | (0xF << 48) | (access as u64) << 40 | ((flags as u64) << 52)
}

/// Present, DPL 0, code, execute/read, accessed.
const KERNEL_CODE: u64 = segment(0x9B, 0xA); // G=1, L=1
/// Present, DPL 0, data, read/write, accessed.
const KERNEL_DATA: u64 = segment(0x93, 0xC); // G=1, D/B=1
const USER_CODE: u64 = segment(0xFB, 0xA);
const USER_DATA: u64 = segment(0xF3, 0xC);
/// The GDT for the Linux boot protocol: code at 0x10 (`__BOOT_CS`), data at 0x18 (`__BOOT_DS`).
pub fn linux_boot_gdt() -> Vec<u64> {
    vec![0, 0, KERNEL_CODE, KERNEL_DATA]
}

/// Size of a 64-bit TSS without its I/O permission bitmap.
pub const TSS_SIZE: u64 = 0x68;

/// `cpu`'s TSS base.
pub fn tss_base(cpu: u32) -> u64 {
    TSS_ADDR + cpu as u64 * TSS_STRIDE
}

/// `cpu`'s TSS limit: up to the end of the shared I/O bitmap.
pub fn tss_limit(cpu: u32) -> u64 {
    IO_BITMAP_ADDR + IO_BITMAP_SIZE - 1 - tss_base(cpu)
}

/// The shared I/O permission bitmap: every port allowed, then the terminator byte.
pub fn io_bitmap() -> Vec<u8> {
    let mut bitmap = vec![0u8; IO_BITMAP_SIZE as usize];
    bitmap[IO_BITMAP_SIZE as usize - 1] = 0xFF;
    bitmap
}

/// The raw GDT entries as u64 words (null, kernel code, kernel data, user code, user data,
/// then two words per vCPU TSS).
pub fn gdt(ncpus: u32) -> Vec<u64> {
    let mut gdt = vec![0, KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA];
    for cpu in 0..ncpus as u64 {
        let base = tss_base(cpu as u32);
        let limit = tss_limit(cpu as u32);
        // Available 64-bit TSS (type 9), present, DPL 0.
        let low = (limit & 0xFFFF)
            | (base & 0xFF_FFFF) << 16
            | 0x89u64 << 40
            | ((limit >> 16) & 0xF) << 48
            | ((base >> 24) & 0xFF) << 56;
        gdt.push(low);
        gdt.push(base >> 32);
    }
    gdt
}

/// One vCPU's TSS: RSP0 = top of its ring-0 stack, no IST, I/O map base = the shared bitmap.
pub fn tss(cpu: u32) -> [u8; TSS_SIZE as usize] {
    let mut tss = [0u8; TSS_SIZE as usize];
    let rsp0 = kernel_stack_top(cpu);
    tss[4..12].copy_from_slice(&rsp0.to_le_bytes());
    let io_map_base = (IO_BITMAP_ADDR - tss_base(cpu)) as u16;
    tss[0x66..0x68].copy_from_slice(&io_map_base.to_le_bytes());
    tss
}

/// Top of vCPU `cpu`'s ring-0 stack (the TSS's RSP0; stacks grow down).
pub fn kernel_stack_top(cpu: u32) -> u64 {
    KERNEL_STACKS_ADDR + (cpu as u64 + 1) * KERNEL_STACK_SIZE
}

fn gate(handler: u64, dpl: u8) -> [u8; 16] {
    debug_assert!(dpl <= 3);
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&SEL_KERNEL_CODE.to_le_bytes());
    g[4] = 0; // IST
    g[5] = 0x8E | (dpl << 5); // present, 64-bit interrupt gate
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

/// The IDT (256 gates, 4 KiB).
pub fn idt() -> Vec<u8> {
    let mut idt = Vec::with_capacity(256 * 16);
    for vector in 0..=255u8 {
        idt.extend_from_slice(&gate(stubs::handler_addr(vector), 0));
    }
    idt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let gdt = gdt(2);
        assert_eq!(gdt.len(), 5 + 4);
        let low = gdt[5 + 2];
        let base = TSS_ADDR + TSS_STRIDE;
        assert_eq!((low >> 16) & 0xFF_FFFF, base & 0xFF_FFFF);
        assert_eq!(low & 0xFFFF, tss_limit(1) & 0xFFFF);
        assert_eq!(
            tss_base(1) + tss_limit(1),
            IO_BITMAP_ADDR + IO_BITMAP_SIZE - 1
        );
        let t = tss(1);
        let io_map_base = u16::from_le_bytes([t[0x66], t[0x67]]) as u64;
        assert_eq!(tss_base(1) + io_map_base, IO_BITMAP_ADDR);
        assert_eq!((low >> 40) & 0xFF, 0x89);
        assert_eq!(SEL_TSS0 as usize, 5 * 8);
    }

    #[test]
    fn user_segments_have_dpl3() {
        assert_eq!((USER_CODE >> 45) & 3, 3);
        assert_eq!((USER_DATA >> 45) & 3, 3);
        assert_eq!((KERNEL_CODE >> 53) & 1, 1, "L bit");
    }
}
