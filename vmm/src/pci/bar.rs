//! Base address registers: their config-space encoding (type flags, write masks that make
//! all-ones sizing work) and the decode rule that says where, if anywhere, a BAR is mapped.

use super::config::{ConfigSpace, BAR0, COMMAND_IO, COMMAND_MEMORY};
use crate::memory::MemoryRegion;

/// Number of BAR slots in a type-0 header.
pub const BAR_COUNT: usize = 6;
/// Size of the I/O port space a BAR can decode into.
pub const IO_SPACE_SIZE: u64 = 0x1_0000;

const FLAG_IO: u32 = 0x1;
const FLAG_MEM_64: u32 = 0x4;
const FLAG_PREFETCH: u32 = 0x8;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// An I/O-port BAR (bit 0 set).
    Io,
    /// A memory BAR below 4 GiB.
    Memory32 {
        /// The guest may cache and combine reads (bit 3).
        prefetchable: bool,
    },
    /// Uses two consecutive slots (the next one holds the high dword).
    Memory64 {
        /// The guest may cache and combine reads (bit 3).
        prefetchable: bool,
    },
}

impl BarKind {
    /// The read-only low bits of the BAR.
    pub fn flags(self) -> u32 {
        match self {
            BarKind::Io => FLAG_IO,
            BarKind::Memory32 { prefetchable } => prefetch_flag(prefetchable),
            BarKind::Memory64 { prefetchable } => FLAG_MEM_64 | prefetch_flag(prefetchable),
        }
    }

    /// True for an I/O-port BAR.
    pub fn is_io(self) -> bool {
        self == BarKind::Io
    }

    /// True for a 64-bit memory BAR (two slots).
    pub fn is_64bit(self) -> bool {
        matches!(self, BarKind::Memory64 { .. })
    }

    fn min_size(self) -> u64 {
        if self.is_io() {
            4
        } else {
            16
        }
    }
}

fn prefetch_flag(prefetchable: bool) -> u32 {
    if prefetchable {
        FLAG_PREFETCH
    } else {
        0
    }
}

/// A BAR a device offers: its kind and the region mapped at the BAR's address. The region's
/// size is the BAR size (a power of two).
#[derive(Clone)]
pub struct Bar {
    /// What the BAR decodes.
    pub kind: BarKind,
    /// The region the BAR maps: device registers or RAM.
    pub region: MemoryRegion,
}

impl Bar {
    /// An I/O-port BAR over `region`.
    pub fn io(region: MemoryRegion) -> Self {
        Self {
            kind: BarKind::Io,
            region,
        }
    }
    /// A 32-bit memory BAR over `region`.
    pub fn memory32(region: MemoryRegion, prefetchable: bool) -> Self {
        Self {
            kind: BarKind::Memory32 { prefetchable },
            region,
        }
    }
    /// A 64-bit memory BAR over `region`.
    pub fn memory64(region: MemoryRegion, prefetchable: bool) -> Self {
        Self {
            kind: BarKind::Memory64 { prefetchable },
            region,
        }
    }
}

/// A device model offered a BAR that cannot be installed (a VMM bug, not guest input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BarError {
    /// No such slot (0..=5), or no room for a 64-bit BAR's high half.
    #[error("BAR index {0} is out of range (0..=5, a 64-bit BAR needs index+1 too)")]
    BadIndex(usize),
    /// The slot (or a 64-bit BAR's high half) is taken.
    #[error("BAR {index} is already in use")]
    InUse {
        /// The slot.
        index: usize,
    },
    /// The region's size is not a power of two of the kind's minimum or more.
    #[error("BAR {index} size {size:#x} must be a power of two of at least {min} bytes")]
    BadSize {
        /// The slot.
        index: usize,
        /// The region's size.
        size: u64,
        /// The kind's minimum size.
        min: u64,
    },
    /// The size does not fit the BAR's width (4 GiB for a 32-bit BAR, 64 KiB for I/O).
    #[error("BAR {index} size {size:#x} is too large for its kind")]
    TooLarge {
        /// The slot.
        index: usize,
        /// The region's size.
        size: u64,
    },
}

/// Check a BAR definition against the slot it goes into.
pub fn validate(index: usize, kind: BarKind, size: u64) -> Result<(), BarError> {
    let slots = if kind.is_64bit() { 2 } else { 1 };
    if index + slots > BAR_COUNT {
        return Err(BarError::BadIndex(index));
    }
    let min = kind.min_size();
    if size < min || !size.is_power_of_two() {
        return Err(BarError::BadSize { index, size, min });
    }
    let max = match kind {
        BarKind::Io => 256, // the PCI spec's limit for I/O BARs
        BarKind::Memory32 { .. } => 1 << 31,
        BarKind::Memory64 { .. } => 1 << 62,
    };
    if size > max {
        return Err(BarError::TooLarge { index, size });
    }
    Ok(())
}

fn bar_offset(index: usize) -> usize {
    BAR0 + 4 * index
}

/// Write the BAR's flags and write masks into config space. Address bits below the size are
/// read-only zero, so writing all-ones and reading back yields `!(size - 1) | flags`.
pub fn install(config: &mut ConfigSpace, index: usize, kind: BarKind, size: u64) {
    let offset = bar_offset(index);
    let mask = !(size - 1);
    config.set_dword(offset, kind.flags());
    let low_flag_bits = if kind.is_io() { 0x3 } else { 0xF };
    config.set_wmask_dword(offset, mask as u32 & !low_flag_bits);
    if kind.is_64bit() {
        config.set_dword(offset + 4, 0);
        config.set_wmask_dword(offset + 4, (mask >> 32) as u32);
    }
}

/// Where the BAR decodes now: `None` if decoding of its space is off in the command register or
/// the programmed address is not usable (0, past the end of the space, wrapping). Same rules
/// as QEMU's `pci_bar_address`.
pub fn decoded_address(
    config: &ConfigSpace,
    index: usize,
    kind: BarKind,
    size: u64,
) -> Option<u64> {
    let command = config.command();
    let offset = bar_offset(index);
    let low = config.dword(offset) as u64;
    let (enable, raw, limit) = match kind {
        BarKind::Io => (COMMAND_IO, low & !0x3, IO_SPACE_SIZE),
        // A 32-bit BAR whose last byte is 0xFFFF_FFFF is what sizing leaves behind: unmapped.
        BarKind::Memory32 { .. } => (COMMAND_MEMORY, low & !0xF, u32::MAX as u64),
        BarKind::Memory64 { .. } => {
            let high = config.dword(offset + 4) as u64;
            (COMMAND_MEMORY, (high << 32 | low) & !0xF, u64::MAX)
        }
    };
    if command & enable == 0 {
        return None;
    }
    let address = raw & !(size - 1);
    let last = address.checked_add(size - 1)?;
    if address == 0 || last >= limit {
        return None;
    }
    Some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::COMMAND;

    fn with_bar(index: usize, kind: BarKind, size: u64) -> ConfigSpace {
        let mut cs = ConfigSpace::new();
        install(&mut cs, index, kind, size);
        cs
    }

    #[test]
    fn memory32_sizing() {
        let mut cs = with_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x100,
        );
        assert_eq!(cs.read(0x10, 4), 0);
        cs.write(0x10, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(0x10, 4), 0xFFFF_FF00);
        cs.write(0x10, 4, 0xC000_0123);
        assert_eq!(cs.read(0x10, 4), 0xC000_0100);
    }

    #[test]
    fn memory64_prefetchable_sizing_uses_both_dwords() {
        let size = 16u64 << 30; // 16 GiB: the size shows up in the high dword
        let mut cs = with_bar(2, BarKind::Memory64 { prefetchable: true }, size);
        assert_eq!(cs.read(0x18, 4), 0xC);
        cs.write(0x18, 4, 0xFFFF_FFFF);
        cs.write(0x1C, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(0x18, 4), 0x0000_000C);
        assert_eq!(cs.read(0x1C, 4), 0xFFFF_FFFC);
        let mut cs = with_bar(2, BarKind::Memory64 { prefetchable: true }, 1 << 20);
        cs.write(0x18, 4, 0xFFFF_FFFF);
        cs.write(0x1C, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(0x18, 4), 0xFFF0_000C);
        assert_eq!(cs.read(0x1C, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn io_sizing() {
        let mut cs = with_bar(4, BarKind::Io, 0x20);
        assert_eq!(cs.read(0x20, 4), 1);
        cs.write(0x20, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(0x20, 4), 0xFFFF_FFE1);
    }

    #[test]
    fn unused_bars_read_zero_and_ignore_writes() {
        let mut cs = with_bar(
            0,
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x100,
        );
        cs.write(0x14, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(0x14, 4), 0);
    }

    #[test]
    fn decode_follows_command_bits_and_rejects_bad_addresses() {
        let kind = BarKind::Memory32 {
            prefetchable: false,
        };
        let mut cs = with_bar(0, kind, 0x1000);
        cs.write(0x10, 4, 0xC000_0000);
        assert_eq!(decoded_address(&cs, 0, kind, 0x1000), None);
        cs.write(COMMAND, 2, COMMAND_MEMORY as u32);
        assert_eq!(decoded_address(&cs, 0, kind, 0x1000), Some(0xC000_0000));
        cs.write(0x10, 4, 0xFFFF_FFFF); // sizing
        assert_eq!(decoded_address(&cs, 0, kind, 0x1000), None);
        cs.write(0x10, 4, 0);
        assert_eq!(decoded_address(&cs, 0, kind, 0x1000), None);
        // I/O decode needs the IO bit, not the memory bit.
        let mut cs = with_bar(1, BarKind::Io, 0x10);
        cs.write(0x14, 4, 0xC010);
        cs.write(COMMAND, 2, COMMAND_MEMORY as u32);
        assert_eq!(decoded_address(&cs, 1, BarKind::Io, 0x10), None);
        cs.write(COMMAND, 2, COMMAND_IO as u32);
        assert_eq!(decoded_address(&cs, 1, BarKind::Io, 0x10), Some(0xC010));
        cs.write(0x14, 4, 0x1_0000);
        assert_eq!(decoded_address(&cs, 1, BarKind::Io, 0x10), None);
        // 64-bit BARs combine both dwords.
        let kind = BarKind::Memory64 { prefetchable: true };
        let mut cs = with_bar(2, kind, 1 << 20);
        cs.write(0x18, 4, 0x0010_0000);
        cs.write(0x1C, 4, 0x10);
        cs.write(COMMAND, 2, COMMAND_MEMORY as u32);
        assert_eq!(decoded_address(&cs, 2, kind, 1 << 20), Some(0x10_0010_0000));
    }

    #[test]
    fn validation() {
        let m32 = BarKind::Memory32 {
            prefetchable: false,
        };
        let m64 = BarKind::Memory64 { prefetchable: true };
        assert!(validate(0, m32, 256).is_ok());
        assert_eq!(
            validate(0, m32, 8),
            Err(BarError::BadSize {
                index: 0,
                size: 8,
                min: 16
            })
        );
        assert!(validate(0, m32, 3 << 12).is_err());
        assert_eq!(validate(5, m64, 4096), Err(BarError::BadIndex(5)));
        assert!(validate(4, m64, 1 << 40).is_ok());
        assert!(validate(0, BarKind::Io, 512).is_err());
    }
}
