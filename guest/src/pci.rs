//! PCI for guest programs: ECAM config access (bus 0), enumeration, BAR sizing and assignment
//! from the layout's MMIO windows, command register, capabilities and MSI-X set-up.
//!
//! Everything goes through ECAM (MMIO), never the 0xCF8 ports: ring-3 port I/O is not reliable on
//! this project's KVM (see docs/environment.md). BARs are sized with decoding off, as firmware does.
use crate::layout::{
    LAPIC_ADDR, PCI_ECAM_ADDR, PCI_MMIO32_ADDR, PCI_MMIO32_END, PCI_MMIO64_ADDR, PCI_MMIO64_SIZE,
};
use crate::mmio;

/// Command register offset (16 bits).
pub const COMMAND: u16 = 0x04;
/// Status register offset (16 bits).
pub const STATUS: u16 = 0x06;
/// Command: decode I/O BARs.
pub const COMMAND_IO: u16 = 0x1;
/// Command: decode memory BARs.
pub const COMMAND_MEMORY: u16 = 0x2;
/// Command: bus master (needed for MSI writes).
pub const COMMAND_MASTER: u16 = 0x4;
/// Status: the capability list is valid.
pub const STATUS_CAP_LIST: u16 = 0x10;
/// The MSI-X capability's id.
pub const CAP_ID_MSIX: u8 = 0x11;
const CAPABILITY_LIST: u16 = 0x34;
const BAR0: u16 = 0x10;

/// Bus/device/function on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    /// Always 0: ECAM here covers bus 0.
    pub bus: u8,
    /// Device (slot), 0..32.
    pub device: u8,
    /// Function, 0..8.
    pub function: u8,
}

impl Bdf {
    /// Device `device`, function `function` on bus 0.
    pub const fn new(device: u8, function: u8) -> Self {
        Self {
            bus: 0,
            device,
            function,
        }
    }

    fn config_addr(self, offset: u16) -> u64 {
        PCI_ECAM_ADDR
            + ((self.bus as u64) << 20)
            + ((self.device as u64) << 15)
            + ((self.function as u64) << 12)
            + (offset as u64 & 0xFFF)
    }

    /// Reads a config byte.
    pub fn read8(self, offset: u16) -> u8 {
        // SAFETY: ECAM is identity-mapped for ring 3; reads have no side effects.
        unsafe { mmio::read8(self.config_addr(offset)) }
    }
    /// Reads a config word.
    pub fn read16(self, offset: u16) -> u16 {
        // SAFETY: as read8.
        unsafe { mmio::read16(self.config_addr(offset)) }
    }
    /// Reads a config dword.
    pub fn read32(self, offset: u16) -> u32 {
        // SAFETY: as read8.
        unsafe { mmio::read32(self.config_addr(offset)) }
    }
    /// Writes a config byte.
    pub fn write8(self, offset: u16, value: u8) {
        // SAFETY: ECAM is identity-mapped for ring 3.
        unsafe { mmio::write8(self.config_addr(offset), value) }
    }
    /// Writes a config word.
    pub fn write16(self, offset: u16, value: u16) {
        // SAFETY: as write8.
        unsafe { mmio::write16(self.config_addr(offset), value) }
    }
    /// Writes a config dword.
    pub fn write32(self, offset: u16, value: u32) {
        // SAFETY: as write8.
        unsafe { mmio::write32(self.config_addr(offset), value) }
    }

    /// The vendor id (0xFFFF: no function here).
    pub fn vendor_id(self) -> u16 {
        self.read16(0)
    }
    /// The device id.
    pub fn device_id(self) -> u16 {
        self.read16(2)
    }
    /// Base class, subclass, programming interface (bits 23..0).
    pub fn class(self) -> u32 {
        self.read32(8) >> 8
    }
    /// The command register.
    pub fn command(self) -> u16 {
        self.read16(COMMAND)
    }
    /// Writes the command register.
    pub fn set_command(self, value: u16) {
        self.write16(COMMAND, value)
    }
    /// Turn memory decoding (and bus mastering, needed for MSI-X) on or off.
    pub fn enable_memory(self, on: bool) {
        let command = self.command();
        let bits = COMMAND_MEMORY | COMMAND_MASTER;
        self.set_command(if on { command | bits } else { command & !bits });
    }

    /// Offset of the first capability with `id`.
    pub fn find_capability(self, id: u8) -> Option<u16> {
        if self.read16(STATUS) & STATUS_CAP_LIST == 0 {
            return None;
        }
        let mut at = self.read8(CAPABILITY_LIST) as u16 & !3;
        for _ in 0..48 {
            if at == 0 {
                return None;
            }
            if self.read8(at) == id {
                return Some(at);
            }
            at = self.read8(at + 1) as u16 & !3;
        }
        None
    }
}

impl core::fmt::Display for Bdf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Every present function 0 on bus 0 (our VMM has single-function devices), in slot order.
pub fn devices() -> impl Iterator<Item = Bdf> {
    (0..32u8)
        .map(|device| Bdf::new(device, 0))
        .filter(|bdf| bdf.vendor_id() != 0xFFFF)
}

/// The first device with these IDs.
pub fn find(vendor_id: u16, device_id: u16) -> Option<Bdf> {
    devices().find(|bdf| bdf.vendor_id() == vendor_id && bdf.device_id() == device_id)
}

/// What a BAR decodes, from its low bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// Memory below 4 GiB.
    Memory32 {
        /// Reads may be cached and combined.
        prefetchable: bool,
    },
    /// Memory anywhere (the BAR takes two slots).
    Memory64 {
        /// Reads may be cached and combined.
        prefetchable: bool,
    },
}

/// A BAR as sized (and, once assigned, placed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// The BAR slot (0..=5).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// Its size in bytes.
    pub size: u64,
}

fn bar_offset(index: u8) -> u16 {
    BAR0 + 4 * index as u16
}

/// Size BAR `index` by writing all-ones (memory and I/O decoding are turned off meanwhile and
/// the BAR restored afterwards). `None` for an unimplemented BAR or the high half of a 64-bit one.
pub fn size_bar(bdf: Bdf, index: u8) -> Option<BarInfo> {
    if index >= 6 {
        return None;
    }
    let command = bdf.command();
    bdf.set_command(command & !(COMMAND_MEMORY | COMMAND_IO));
    let offset = bar_offset(index);
    let original = bdf.read32(offset);
    bdf.write32(offset, 0xFFFF_FFFF);
    let probed = bdf.read32(offset);
    bdf.write32(offset, original);
    let mut info = None;
    if probed != 0 {
        if probed & 1 == 1 {
            let mask = probed & !0x3 | 0xFFFF_0000;
            info = Some(BarInfo {
                index,
                kind: BarKind::Io,
                size: (!mask).wrapping_add(1) as u64 & 0xFFFF,
            });
        } else {
            let prefetchable = probed & 0x8 != 0;
            if probed & 0x6 == 0x4 && index < 5 {
                let high_offset = offset + 4;
                let high_original = bdf.read32(high_offset);
                bdf.write32(high_offset, 0xFFFF_FFFF);
                let high = bdf.read32(high_offset);
                bdf.write32(high_offset, high_original);
                let mask = (high as u64) << 32 | (probed & !0xF) as u64;
                info = Some(BarInfo {
                    index,
                    kind: BarKind::Memory64 { prefetchable },
                    size: (!mask).wrapping_add(1),
                });
            } else {
                let mask = probed & !0xF;
                info = Some(BarInfo {
                    index,
                    kind: BarKind::Memory32 { prefetchable },
                    size: (!mask).wrapping_add(1) as u64,
                });
            }
        }
    }
    bdf.set_command(command);
    info
}

/// All BARs of a function (64-bit BARs once, at their first index).
pub fn bars(bdf: Bdf) -> [Option<BarInfo>; 6] {
    let mut result = [None; 6];
    let mut index = 0;
    while index < 6 {
        let info = size_bar(bdf, index);
        result[index as usize] = info;
        index += match info {
            Some(BarInfo {
                kind: BarKind::Memory64 { .. },
                ..
            }) => 2,
            _ => 1,
        };
    }
    result
}

/// The address programmed in a BAR (flag bits cleared).
pub fn bar_address(bdf: Bdf, bar: &BarInfo) -> u64 {
    let offset = bar_offset(bar.index);
    let low = bdf.read32(offset);
    match bar.kind {
        BarKind::Io => (low & !0x3) as u64,
        BarKind::Memory32 { .. } => (low & !0xF) as u64,
        BarKind::Memory64 { .. } => (bdf.read32(offset + 4) as u64) << 32 | (low & !0xF) as u64,
    }
}

/// Program a BAR's address (low dword last for 64-bit BARs, so a 64-bit move done while
/// decoding is on passes through one intermediate address at most).
pub fn set_bar_address(bdf: Bdf, bar: &BarInfo, address: u64) {
    let offset = bar_offset(bar.index);
    if let BarKind::Memory64 { .. } = bar.kind {
        bdf.write32(offset + 4, (address >> 32) as u32);
    }
    bdf.write32(offset, address as u32);
}

/// A bump allocator over the layout's 32-bit and 64-bit PCI MMIO windows.
pub struct BarAllocator {
    next32: u64,
    next64: u64,
}

impl Default for BarAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl BarAllocator {
    /// An allocator at the start of the 32-bit and 64-bit PCI windows.
    pub const fn new() -> Self {
        Self {
            next32: PCI_MMIO32_ADDR,
            next64: PCI_MMIO64_ADDR,
        }
    }

    /// A `size`-aligned address for a BAR of `size` bytes: 64-bit BARs from the 64-bit window,
    /// others from the 32-bit one. I/O BARs are not supported (ring 3 cannot use ports).
    pub fn allocate(&mut self, kind: BarKind, size: u64) -> Option<u64> {
        let (next, end) = match kind {
            BarKind::Io => return None,
            BarKind::Memory32 { .. } => (&mut self.next32, PCI_MMIO32_END),
            BarKind::Memory64 { .. } => (&mut self.next64, PCI_MMIO64_ADDR + PCI_MMIO64_SIZE),
        };
        let address = next.checked_next_multiple_of(size)?;
        let after = address.checked_add(size)?;
        if after > end {
            return None;
        }
        *next = after;
        Some(address)
    }
}

/// Size every memory BAR of `bdf`, give each an address from `allocator`, and turn memory
/// decoding and bus mastering on. Returns the BARs with their addresses.
pub fn assign_bars(bdf: Bdf, allocator: &mut BarAllocator) -> [Option<(BarInfo, u64)>; 6] {
    let mut result = [None; 6];
    bdf.enable_memory(false);
    for bar in bars(bdf).into_iter().flatten() {
        if let Some(address) = allocator.allocate(bar.kind, bar.size) {
            set_bar_address(bdf, &bar, address);
            result[bar.index as usize] = Some((bar, address));
        }
    }
    bdf.enable_memory(true);
    result
}

/// MSI-X message control: enable.
pub const MSIX_ENABLE: u16 = 0x8000;
/// MSI-X message control: mask every vector.
pub const MSIX_FUNCTION_MASK: u16 = 0x4000;

/// A function's MSI-X capability with its table and PBA located through the (assigned) BARs.
#[derive(Clone, Copy, Debug)]
pub struct Msix {
    /// The function.
    pub bdf: Bdf,
    /// Offset of the capability in config space.
    pub cap: u16,
    /// Number of table entries.
    pub vectors: u16,
    /// Guest address of the table.
    pub table: u64,
    /// Guest address of the pending-bit array.
    pub pba: u64,
}

impl Msix {
    /// Finds the capability; the BARs holding the table and PBA must be assigned already.
    pub fn find(bdf: Bdf) -> Option<Msix> {
        let cap = bdf.find_capability(CAP_ID_MSIX)?;
        let control = bdf.read16(cap + 2);
        let table = bdf.read32(cap + 4);
        let pba = bdf.read32(cap + 8);
        let locate = |word: u32| -> Option<u64> {
            let bar = size_bar(bdf, (word & 7) as u8)?;
            Some(bar_address(bdf, &bar) + (word & !7) as u64)
        };
        Some(Msix {
            bdf,
            cap,
            vectors: (control & 0x7FF) + 1,
            table: locate(table)?,
            pba: locate(pba)?,
        })
    }

    fn control(&self) -> u16 {
        self.bdf.read16(self.cap + 2)
    }

    fn set_control_bit(&self, bit: u16, on: bool) {
        let control = self.control();
        let value = if on { control | bit } else { control & !bit };
        self.bdf.write16(self.cap + 2, value);
    }

    /// Sets or clears the MSI-X enable bit.
    pub fn enable(&self, on: bool) {
        self.set_control_bit(MSIX_ENABLE, on);
    }

    /// Sets or clears the function mask.
    pub fn function_mask(&self, on: bool) {
        self.set_control_bit(MSIX_FUNCTION_MASK, on);
    }

    /// True when the enable bit is set.
    pub fn is_enabled(&self) -> bool {
        self.control() & MSIX_ENABLE != 0
    }

    fn entry(&self, index: u16) -> u64 {
        self.table + 16 * index as u64
    }

    /// Point table entry `index` at CPU vector `vector` on APIC 0 (fixed, edge).
    pub fn set_entry(&self, index: u16, vector: u8) {
        let entry = self.entry(index);
        // SAFETY: the MSI-X table is inside an assigned BAR, identity-mapped for ring 3.
        unsafe {
            mmio::write32(entry, LAPIC_ADDR as u32);
            mmio::write32(entry + 4, 0);
            mmio::write32(entry + 8, vector as u32);
        }
    }

    /// Masks or unmasks entry `index`.
    pub fn mask(&self, index: u16, masked: bool) {
        // SAFETY: as set_entry.
        unsafe { mmio::write32(self.entry(index) + 12, masked as u32) }
    }

    /// True when entry `index` is masked.
    pub fn is_masked(&self, index: u16) -> bool {
        // SAFETY: as set_entry.
        unsafe { mmio::read32(self.entry(index) + 12) & 1 != 0 }
    }

    /// Table entry `index` as (address, data, vector control).
    pub fn read_entry(&self, index: u16) -> (u64, u32, u32) {
        let entry = self.entry(index);
        // SAFETY: as set_entry.
        unsafe {
            (
                mmio::read64(entry),
                mmio::read32(entry + 8),
                mmio::read32(entry + 12),
            )
        }
    }

    /// True when entry `index` fired while masked (its PBA bit).
    pub fn is_pending(&self, index: u16) -> bool {
        let word = self.pba + 8 * (index as u64 / 64);
        // SAFETY: the PBA is inside an assigned BAR, identity-mapped for ring 3.
        let bits = unsafe { mmio::read64(word) };
        bits & (1 << (index % 64)) != 0
    }

    /// Program entry `index` for CPU vector `vector` and unmask it.
    pub fn setup_vector(&self, index: u16, vector: u8) {
        self.set_entry(index, vector);
        self.mask(index, false);
    }
}

/// The VMM's `pci-testdev`: IDs, MAGIC and BAR0 registers (`reg`), from the shared ABI file.
pub mod testdev {
    pub use crate::abi::pci_testdev::{reg, DEVICE_ID, MAGIC, VENDOR_ID};
}

/// Configuration mechanism #1 (ports 0xCF8/0xCFC), for cross-checking ECAM. Ring-3 port I/O
/// works through the TSS I/O bitmap the VMM installs.
pub mod conf1 {
    use super::Bdf;
    use crate::pio::{inl, outl};

    const ADDRESS: u16 = 0xCF8;
    const DATA: u16 = 0xCFC;

    fn select(bdf: Bdf, offset: u16) {
        let address = 0x8000_0000
            | (bdf.bus as u32) << 16
            | (bdf.device as u32) << 11
            | (bdf.function as u32) << 8
            | (offset as u32 & 0xFC);
        // SAFETY: the conf1 address register only selects a config register.
        unsafe { outl(ADDRESS, address) };
    }

    /// A config dword read through ports 0xCF8/0xCFC.
    pub fn read32(bdf: Bdf, offset: u16) -> u32 {
        select(bdf, offset);
        // SAFETY: config reads have no side effects.
        unsafe { inl(DATA) }
    }

    /// A 16-bit read at `offset` (2-byte aligned): a word access to 0xCFC + (offset & 2).
    pub fn read16(bdf: Bdf, offset: u16) -> u16 {
        select(bdf, offset);
        let value: u16;
        // SAFETY: config reads have no side effects.
        unsafe {
            core::arch::asm!("in ax, dx", in("dx") DATA + (offset & 2), out("ax") value,
                             options(nostack, preserves_flags));
        }
        value
    }

    /// A config dword write through ports 0xCF8/0xCFC.
    pub fn write32(bdf: Bdf, offset: u16, value: u32) {
        select(bdf, offset);
        // SAFETY: the caller chose the register.
        unsafe { outl(DATA, value) };
    }
}
