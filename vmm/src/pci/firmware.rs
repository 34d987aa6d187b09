//! What PC firmware does to PCI before an operating system starts: size every BAR of every
//! function on bus 0, give each an address in the host bridge's windows and turn decoding on.
//!
//! Linux keeps an assignment it finds inside the windows the DSDT declares. Doing it here, as
//! SeaBIOS and OVMF do, matters for more than convenience: firmware gives every memory BAR at least
//! a page of its own, so a driver can map a small register BAR (ivshmem's 256-byte BAR0) into
//! userspace without exposing a neighbour; Linux's own allocator packs small BARs together.
//! Guest programs do their own enumeration and never run this.
use super::bus::{Bdf, PciBus};
use crate::arch::x86_64::layout::{
    PCI_MMIO32_ADDR, PCI_MMIO32_END, PCI_MMIO64_ADDR, PCI_MMIO64_SIZE,
};

const VENDOR_ID: usize = 0x00;
const COMMAND: usize = 0x04;
const HEADER_TYPE: usize = 0x0E;
const BAR0: usize = 0x10;
const BARS: usize = 6;
const COMMAND_IO: u32 = 1 << 0;
const COMMAND_MEMORY: u32 = 1 << 1;
const BAR_IO: u32 = 1;
const BAR_MEM_TYPE_64: u32 = 0x4;
const PAGE: u64 = 4096;
/// The I/O window firmware hands out (the DSDT's window above the conf1 ports, 0xD00..0xFFFF).
const IO_WINDOW: (u64, u64) = (0xC000, 0x1_0000);

/// One BAR to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRequest {
    /// The function.
    pub bdf: Bdf,
    /// The BAR slot (0..=5).
    pub index: usize,
    /// Its size in bytes (a power of two).
    pub size: u64,
    /// The window it goes in.
    pub kind: BarSpace,
}

/// Which window a BAR is placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BarSpace {
    /// The I/O-port window.
    Io,
    /// The 32-bit memory window below 4 GiB.
    Memory32,
    /// The 64-bit memory window above RAM.
    Memory64,
}

/// A bump allocator over one window, aligning each BAR to its size (and memory BARs to a page).
struct Window {
    next: u64,
    end: u64,
}

impl Window {
    fn take(&mut self, size: u64, min_align: u64) -> Option<u64> {
        let align = size.max(min_align);
        let addr = self.next.checked_add(align - 1)? & !(align - 1);
        let end = addr.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            addr
        })
    }
}

/// Sizes every BAR of every function on bus 0 (the standard write-all-ones probe, through the
/// bus's config space, exactly as a guest would) and restores it.
pub fn probe(bus: &PciBus) -> Vec<BarRequest> {
    let mut bars = Vec::new();
    for device in 0..32 {
        let bdf = Bdf::new(0, device, 0);
        if bus.config_read(bdf, VENDOR_ID, 2) == 0xFFFF
            || bus.config_read(bdf, HEADER_TYPE, 1) & 0x7F != 0
        {
            continue;
        }
        // Decoding off while sizing, so the all-ones probe maps nothing anywhere.
        let command = bus.config_read(bdf, COMMAND, 2);
        bus.config_write(bdf, COMMAND, 2, command & !(COMMAND_IO | COMMAND_MEMORY));
        let mut index = 0;
        while index < BARS {
            let offset = BAR0 + 4 * index;
            let original = bus.config_read(bdf, offset, 4);
            let is_64 = original & BAR_IO == 0 && original & 0x6 == BAR_MEM_TYPE_64;
            bus.config_write(bdf, offset, 4, u32::MAX);
            let low = bus.config_read(bdf, offset, 4);
            bus.config_write(bdf, offset, 4, original);
            let mut mask = if original & BAR_IO != 0 {
                // I/O BARs may implement only 16 address bits.
                u64::from(low & !0x3) | 0xFFFF_FFFF_FFFF_0000
            } else {
                u64::from(low & !0xF) | 0xFFFF_FFFF_0000_0000
            };
            if is_64 {
                let original_high = bus.config_read(bdf, offset + 4, 4);
                bus.config_write(bdf, offset + 4, 4, u32::MAX);
                let high = bus.config_read(bdf, offset + 4, 4);
                bus.config_write(bdf, offset + 4, 4, original_high);
                mask = (u64::from(high) << 32) | (mask & 0xFFFF_FFFF);
            }
            let size = (!mask).wrapping_add(1);
            if low != 0 && size != 0 {
                let kind = match (original & BAR_IO != 0, is_64) {
                    (true, _) => BarSpace::Io,
                    (false, false) => BarSpace::Memory32,
                    (false, true) => BarSpace::Memory64,
                };
                bars.push(BarRequest {
                    bdf,
                    index,
                    size,
                    kind,
                });
            }
            index += if is_64 { 2 } else { 1 };
        }
        bus.config_write(bdf, COMMAND, 2, command);
    }
    bars
}

/// Places `bars` (largest first within each window, so alignment wastes least) and returns each
/// with its address; a BAR that does not fit is left unassigned (None) for the OS to deal with.
pub fn place(bars: &[BarRequest]) -> Vec<(BarRequest, Option<u64>)> {
    let mut io = Window {
        next: IO_WINDOW.0,
        end: IO_WINDOW.1,
    };
    let mut mem32 = Window {
        next: PCI_MMIO32_ADDR,
        end: PCI_MMIO32_END,
    };
    let mut mem64 = Window {
        next: PCI_MMIO64_ADDR,
        end: PCI_MMIO64_ADDR + PCI_MMIO64_SIZE,
    };
    let mut order: Vec<BarRequest> = bars.to_vec();
    order.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.size.cmp(&a.size)));
    order
        .into_iter()
        .map(|bar| {
            let addr = match bar.kind {
                BarSpace::Io => io.take(bar.size, 1),
                BarSpace::Memory32 => mem32.take(bar.size, PAGE),
                BarSpace::Memory64 => mem64.take(bar.size, PAGE),
            };
            (bar, addr)
        })
        .collect()
}

/// Probes, places and programs every BAR on bus 0 and enables I/O and memory decoding on each
/// function that has BARs of that kind.
pub fn assign_bars(bus: &PciBus) {
    for (bar, addr) in place(&probe(bus)) {
        let Some(addr) = addr else {
            log::warn!(
                "pci: no room for {} BAR{} ({:#x} bytes); left for the guest to place",
                bar.bdf,
                bar.index,
                bar.size
            );
            continue;
        };
        let offset = BAR0 + 4 * bar.index;
        let flags =
            bus.config_read(bar.bdf, offset, 4) & if bar.kind == BarSpace::Io { 0x3 } else { 0xF };
        bus.config_write(bar.bdf, offset, 4, addr as u32 | flags);
        if bar.kind == BarSpace::Memory64 {
            bus.config_write(bar.bdf, offset + 4, 4, (addr >> 32) as u32);
        }
        let enable = if bar.kind == BarSpace::Io {
            COMMAND_IO
        } else {
            COMMAND_MEMORY
        };
        let command = bus.config_read(bar.bdf, COMMAND, 2);
        bus.config_write(bar.bdf, COMMAND, 2, command | enable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(device: u8, index: usize, size: u64, kind: BarSpace) -> BarRequest {
        BarRequest {
            bdf: Bdf::new(0, device, 0),
            index,
            size,
            kind,
        }
    }

    #[test]
    fn small_memory_bars_get_a_page_each_and_large_ones_their_alignment() {
        let bars = [
            request(1, 0, 0x100, BarSpace::Memory32),
            request(1, 1, 0x1000, BarSpace::Memory32),
            request(2, 0, 0x100, BarSpace::Memory32),
            request(1, 2, 4 << 20, BarSpace::Memory64),
            request(2, 2, 1 << 30, BarSpace::Memory64),
            request(3, 0, 0x20, BarSpace::Io),
        ];
        let placed = place(&bars);
        let addr = |device: u8, index: usize| {
            placed
                .iter()
                .find(|(b, _)| b.bdf.device == device && b.index == index)
                .and_then(|(_, a)| *a)
                .unwrap()
        };
        for (bar, addr) in &placed {
            let addr = addr.unwrap();
            assert_eq!(
                addr % bar.size,
                0,
                "{bar:?} at {addr:#x} is not size-aligned"
            );
            if bar.kind != BarSpace::Io {
                assert_eq!(addr % PAGE, 0, "{bar:?} at {addr:#x} shares a page");
            }
        }
        let mut pages: Vec<u64> = [(1, 0), (1, 1), (2, 0)]
            .iter()
            .map(|&(d, i)| addr(d, i) / PAGE)
            .collect();
        pages.dedup();
        assert_eq!(pages.len(), 3, "each small BAR has its own page");
        assert!((PCI_MMIO32_ADDR..PCI_MMIO32_END).contains(&addr(2, 0)));
        assert!(addr(2, 2) >= PCI_MMIO64_ADDR && addr(1, 2) >= PCI_MMIO64_ADDR);
        assert!((IO_WINDOW.0..IO_WINDOW.1).contains(&addr(3, 0)));
    }

    #[test]
    fn a_bar_larger_than_its_window_is_left_unassigned() {
        let placed = place(&[request(1, 0, 1 << 32, BarSpace::Memory32)]);
        assert_eq!(placed[0].1, None);
    }
}
