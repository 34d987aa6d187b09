//! Identity-mapping page tables (4-level), two sets at the same place (`PAGE_TABLES_ADDR`):
//!
//! - `tables`, for guest programs (2 MiB pages except the first 2 MiB). Mapped, all
//!   user-accessible and writable: RAM `[4 KiB, ram_size)` write-back (page 0 is not present so
//!   null pointers fault), the device area `[0xB000_0000, 4 GiB)` uncached (PCD|PWT), and the
//!   64-bit PCI window write-back (ivshmem BAR2 is shared RAM and must run at memory speed).
//! - `linux_tables`, for the Linux 64-bit boot protocol, which asks for an identity map of the
//!   kernel, zero page and command line and which real firmware extends to all of low memory:
//!   the decompressor reads the BIOS data area in page 0 (0x40E, 0x413) before it has a
//!   page-fault handler. So the whole first 4 GiB is mapped with 2 MiB pages, supervisor-only,
//!   page 0 included: RAM write-back, the device area uncached. Linux replaces these tables early.
use super::layout::*;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const USER: u64 = 4;
const WRITE_THROUGH: u64 = 8;
const CACHE_DISABLE: u64 = 0x10;
const HUGE: u64 = 0x80;
const TABLE: u64 = PRESENT | WRITABLE | USER;

const PAGE: u64 = 0x1000;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

/// The top-level page table (CR3).
pub const PML4_ADDR: u64 = PAGE_TABLES_ADDR;
const PDPT_ADDR: u64 = PAGE_TABLES_ADDR + PAGE;
const PT_LOW_ADDR: u64 = PAGE_TABLES_ADDR + 2 * PAGE;
/// Four page directories for 0..4 GiB.
const PD_LOW_ADDR: u64 = PAGE_TABLES_ADDR + 3 * PAGE;
/// Page directories for the 64-bit PCI window, one per GiB.
const PD_HIGH_ADDR: u64 = PD_LOW_ADDR + 4 * PAGE;
const PD_HIGH_COUNT: u64 = PCI_MMIO64_SIZE / GIB;

const _: () = assert!(PD_HIGH_ADDR + PD_HIGH_COUNT * PAGE <= PAGE_TABLES_END);
const _: () = assert!(PCI_MMIO64_ADDR + PCI_MMIO64_SIZE <= 512 * GIB, "one PDPT");

/// The page tables as (guest address, 4 KiB table) pairs.
pub fn tables(ram_size: u64) -> Vec<(u64, Vec<u64>)> {
    let mut pml4 = vec![0u64; 512];
    pml4[0] = PDPT_ADDR | TABLE;

    let mut pdpt = vec![0u64; 512];
    for gib in 0..4 {
        pdpt[gib as usize] = (PD_LOW_ADDR + gib * PAGE) | TABLE;
    }
    for i in 0..PD_HIGH_COUNT {
        pdpt[((PCI_MMIO64_ADDR >> 30) + i) as usize] = (PD_HIGH_ADDR + i * PAGE) | TABLE;
    }

    let mut pt_low = vec![0u64; 512];
    for page in 1..512u64 {
        if page * PAGE < ram_size {
            pt_low[page as usize] = (page * PAGE) | PRESENT | WRITABLE | USER;
        }
    }

    let mut pd_low = vec![0u64; 4 * 512];
    pd_low[0] = PT_LOW_ADDR | TABLE;
    for i in 1..(4 * 512u64) {
        let addr = i * MIB2;
        pd_low[i as usize] = if addr < ram_size {
            addr | PRESENT | WRITABLE | USER | HUGE
        } else if (DEVICE_AREA_ADDR..DEVICE_AREA_END).contains(&addr) {
            addr | PRESENT | WRITABLE | USER | HUGE | CACHE_DISABLE | WRITE_THROUGH
        } else {
            0
        };
    }

    let pd_high: Vec<u64> = (0..PD_HIGH_COUNT * 512)
        .map(|i| (PCI_MMIO64_ADDR + i * MIB2) | PRESENT | WRITABLE | USER | HUGE)
        .collect();

    let mut out = vec![(PML4_ADDR, pml4), (PDPT_ADDR, pdpt), (PT_LOW_ADDR, pt_low)];
    for (i, pd) in pd_low.chunks(512).enumerate() {
        out.push((PD_LOW_ADDR + i as u64 * PAGE, pd.to_vec()));
    }
    for (i, pd) in pd_high.chunks(512).enumerate() {
        out.push((PD_HIGH_ADDR + i as u64 * PAGE, pd.to_vec()));
    }
    out
}

/// The Linux boot page tables as (guest address, 4 KiB table) pairs: `[0, 4 GiB)` identity-mapped
/// with 2 MiB pages, uncached from `DEVICE_AREA_ADDR` up. They use the PML4, the PDPT and the four
/// low page directories' slots of the guest-program set (a VM uses one set or the other).
pub fn linux_tables() -> Vec<(u64, Vec<u64>)> {
    const KERNEL_PAGE: u64 = PRESENT | WRITABLE | HUGE;
    let mut pml4 = vec![0u64; 512];
    pml4[0] = PDPT_ADDR | PRESENT | WRITABLE;
    let mut pdpt = vec![0u64; 512];
    for gib in 0..4 {
        pdpt[gib as usize] = (PD_LOW_ADDR + gib * PAGE) | PRESENT | WRITABLE;
    }
    let mut out = vec![(PML4_ADDR, pml4), (PDPT_ADDR, pdpt)];
    for gib in 0..4u64 {
        let pd = (0..512u64)
            .map(|i| {
                let addr = gib * GIB + i * MIB2;
                if addr >= DEVICE_AREA_ADDR {
                    addr | KERNEL_PAGE | CACHE_DISABLE | WRITE_THROUGH
                } else {
                    addr | KERNEL_PAGE
                }
            })
            .collect();
        out.push((PD_LOW_ADDR + gib * PAGE, pd));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU: returns the physical address and the leaf entry.
    fn walk(tables: &[(u64, Vec<u64>)], va: u64) -> Option<(u64, u64)> {
        let table = |addr: u64| &tables.iter().find(|(a, _)| *a == addr).unwrap().1;
        let mut entry = table(PML4_ADDR)[((va >> 39) & 511) as usize];
        for (level, shift) in [(3, 30), (2, 21), (1, 12)] {
            if entry & PRESENT == 0 {
                return None;
            }
            entry = table(entry & !0xFFF & ((1 << 52) - 1))[((va >> shift) & 511) as usize];
            if entry & PRESENT == 0 {
                return None;
            }
            if level == 2 && entry & HUGE != 0 {
                return Some((
                    (entry & !0x1F_FFFF & ((1 << 52) - 1)) | (va & 0x1F_FFFF),
                    entry,
                ));
            }
        }
        Some(((entry & !0xFFF & ((1 << 52) - 1)) | (va & 0xFFF), entry))
    }

    #[test]
    fn identity_maps_ram_devices_and_high_window() {
        let t = tables(64 << 20);
        assert_eq!(walk(&t, 0), None, "page 0 not present");
        for va in [0x1000, 0x40_0000, (64 << 20) - 8] {
            let (pa, e) = walk(&t, va).unwrap();
            assert_eq!(pa, va);
            assert_eq!(e & (USER | CACHE_DISABLE), USER);
        }
        assert_eq!(walk(&t, 64 << 20), None);
        for va in [PCI_ECAM_ADDR, TESTDEV_ADDR + 0x40, LAPIC_ADDR + 0xB0] {
            let (pa, e) = walk(&t, va).unwrap();
            assert_eq!(pa, va);
            assert_eq!(e & (USER | CACHE_DISABLE), USER | CACHE_DISABLE);
        }
        let high = PCI_MMIO64_ADDR + PCI_MMIO64_SIZE - 8;
        let (pa, e) = walk(&t, high).unwrap();
        assert_eq!(pa, high);
        assert_eq!(e & CACHE_DISABLE, 0);
        assert_eq!(walk(&t, PCI_MMIO64_ADDR + PCI_MMIO64_SIZE), None);
    }

    #[test]
    fn linux_tables_identity_map_low_memory_and_all_ram() {
        let t = linux_tables();
        // Page 0 (BIOS data area), the zero page, the command line, the kernel, and RAM up to
        // the largest --memory: mapped, supervisor-only, write-back.
        for va in [0, 0x40E, 0x413, 0x7000, 0x8_0000, 0x10_0000, 0xAFFF_FFF8] {
            let (pa, e) = walk(&t, va).unwrap();
            assert_eq!(pa, va, "{va:#x}");
            assert_eq!(e & (USER | CACHE_DISABLE | WRITABLE), WRITABLE, "{va:#x}");
        }
        for va in [PCI_ECAM_ADDR, IOAPIC_ADDR, LAPIC_ADDR + 0xB0, (1 << 32) - 8] {
            let (pa, e) = walk(&t, va).unwrap();
            assert_eq!(pa, va);
            assert_eq!(e & CACHE_DISABLE, CACHE_DISABLE, "{va:#x} uncached");
        }
        assert_eq!(walk(&t, 1 << 32), None);
        assert!(t
            .iter()
            .all(|(addr, _)| (PAGE_TABLES_ADDR..PAGE_TABLES_END).contains(addr)));
    }
}
