//! The 256-byte configuration space of a conventional PCI function, with per-byte write masks.
//!
//! Every byte has a write mask (`wmask`: bits the guest may change) and a write-1-to-clear mask
//! (`w1cmask`: bits a guest write of 1 clears). Everything else is read-only to the guest; the
//! device model sets values with the `set_*` methods, which ignore the masks. This is the whole
//! access-control model: BAR sizing (all-ones probing) falls out of a BAR's write mask, and the
//! capability list is plain read-only data.

/// Size of a conventional PCI configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;

// Standard header offsets (type 0).
/// Vendor ID (16 bits).
pub const VENDOR_ID: usize = 0x00;
/// Device ID (16 bits).
pub const DEVICE_ID: usize = 0x02;
/// Command register (16 bits): decoding and bus-master enables.
pub const COMMAND: usize = 0x04;
/// Status register (16 bits).
pub const STATUS: usize = 0x06;
/// Revision ID (8 bits).
pub const REVISION_ID: usize = 0x08;
/// Programming interface (8 bits), the low byte of the class code.
pub const CLASS_PROG: usize = 0x09;
/// Subclass and class (16 bits).
pub const CLASS_DEVICE: usize = 0x0A;
/// Cache line size (8 bits).
pub const CACHE_LINE_SIZE: usize = 0x0C;
/// Latency timer (8 bits).
pub const LATENCY_TIMER: usize = 0x0D;
/// Header type (8 bits): 0 for a device.
pub const HEADER_TYPE: usize = 0x0E;
/// First of six BARs (32 bits each).
pub const BAR0: usize = 0x10;
/// Subsystem vendor ID (16 bits).
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2C;
/// Subsystem ID (16 bits).
pub const SUBSYSTEM_ID: usize = 0x2E;
/// Offset of the first capability (8 bits).
pub const CAPABILITY_LIST: usize = 0x34;
/// Interrupt line (8 bits): scratch for the guest's IRQ routing.
pub const INTERRUPT_LINE: usize = 0x3C;
/// Interrupt pin (8 bits): 0 means no INTx.
pub const INTERRUPT_PIN: usize = 0x3D;
/// First byte available to capabilities.
pub const CAPABILITIES_START: usize = 0x40;

/// Command: decode I/O BARs.
pub const COMMAND_IO: u16 = 0x0001;
/// Command: decode memory BARs.
pub const COMMAND_MEMORY: u16 = 0x0002;
/// Command: the device may master the bus (DMA and MSI writes).
pub const COMMAND_MASTER: u16 = 0x0004;
/// Command: parity error response.
pub const COMMAND_PARITY: u16 = 0x0040;
/// Command: SERR# enable.
pub const COMMAND_SERR: u16 = 0x0100;
/// Command: INTx disabled.
pub const COMMAND_INTX_DISABLE: u16 = 0x0400;

/// Status: the capability list at [`CAPABILITY_LIST`] is valid.
pub const STATUS_CAP_LIST: u16 = 0x0010;
/// Error bits of the status register, all write-1-to-clear.
pub const STATUS_W1C: u16 = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000;

/// Capability IDs.
pub const CAP_ID_MSIX: u8 = 0x11;

/// Why config space could not take a capability (a device model's bug).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The capability does not fit between the header and the end of the 256 bytes.
    #[error("no room for a {size}-byte capability in configuration space")]
    NoRoomForCapability {
        /// The capability's size in bytes.
        size: usize,
    },
}

/// Configuration space contents and masks.
#[derive(Clone)]
pub struct ConfigSpace {
    data: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    w1cmask: [u8; CONFIG_SPACE_SIZE],
    /// Next free byte for a capability.
    next_capability: usize,
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigSpace {
    /// An empty type-0 header with the standard writable fields (command bits, cache line size,
    /// latency timer, interrupt line) and the status error bits as write-1-to-clear.
    pub fn new() -> Self {
        let mut space = Self {
            data: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            w1cmask: [0; CONFIG_SPACE_SIZE],
            next_capability: CAPABILITIES_START,
        };
        space.set_wmask_word(
            COMMAND,
            COMMAND_IO
                | COMMAND_MEMORY
                | COMMAND_MASTER
                | COMMAND_PARITY
                | COMMAND_SERR
                | COMMAND_INTX_DISABLE,
        );
        space.w1cmask[STATUS..STATUS + 2].copy_from_slice(&STATUS_W1C.to_le_bytes());
        space.wmask[CACHE_LINE_SIZE] = 0xFF;
        space.wmask[LATENCY_TIMER] = 0xFF;
        space.wmask[INTERRUPT_LINE] = 0xFF;
        space
    }

    /// Guest read of `size` (1, 2 or 4) bytes; bytes past the end read as zero.
    pub fn read(&self, offset: usize, size: usize) -> u32 {
        let mut value = 0u32;
        for i in 0..size.min(4) {
            let byte = self.data.get(offset + i).copied().unwrap_or(0);
            value |= (byte as u32) << (8 * i);
        }
        value
    }

    /// Guest write: only `wmask` bits change; `w1cmask` bits written as 1 are cleared.
    pub fn write(&mut self, offset: usize, size: usize, value: u32) {
        for i in 0..size.min(4) {
            let Some(at) = offset.checked_add(i).filter(|&a| a < CONFIG_SPACE_SIZE) else {
                break;
            };
            let byte = (value >> (8 * i)) as u8;
            let writable = self.wmask[at];
            let clearable = self.w1cmask[at];
            self.data[at] = (self.data[at] & !writable) | (byte & writable);
            self.data[at] &= !(byte & clearable);
        }
    }

    // Device-side accessors: no masks applied.

    /// The byte at `offset`.
    pub fn byte(&self, offset: usize) -> u8 {
        self.data[offset]
    }
    /// The little-endian word at `offset`.
    pub fn word(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.data[offset], self.data[offset + 1]])
    }
    /// The little-endian dword at `offset`.
    pub fn dword(&self, offset: usize) -> u32 {
        self.read(offset, 4)
    }
    /// Sets the byte at `offset`.
    pub fn set_byte(&mut self, offset: usize, value: u8) {
        self.data[offset] = value;
    }
    /// Sets the little-endian word at `offset`.
    pub fn set_word(&mut self, offset: usize, value: u16) {
        self.data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }
    /// Sets the little-endian dword at `offset`.
    pub fn set_dword(&mut self, offset: usize, value: u32) {
        self.data[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    /// Sets which bits of the byte at `offset` the guest may write.
    pub fn set_wmask_byte(&mut self, offset: usize, mask: u8) {
        self.wmask[offset] = mask;
    }
    /// Sets which bits of the word at `offset` the guest may write.
    pub fn set_wmask_word(&mut self, offset: usize, mask: u16) {
        self.wmask[offset..offset + 2].copy_from_slice(&mask.to_le_bytes());
    }
    /// Sets which bits of the dword at `offset` the guest may write.
    pub fn set_wmask_dword(&mut self, offset: usize, mask: u32) {
        self.wmask[offset..offset + 4].copy_from_slice(&mask.to_le_bytes());
    }

    /// The command register as the guest last wrote it.
    pub fn command(&self) -> u16 {
        self.word(COMMAND)
    }

    /// Vendor, device, revision, class code (base class, subclass, programming interface) and
    /// subsystem IDs: the read-only identity fields.
    pub fn set_identity(&mut self, ids: &PciIds) {
        self.set_word(VENDOR_ID, ids.vendor_id);
        self.set_word(DEVICE_ID, ids.device_id);
        self.set_byte(REVISION_ID, ids.revision);
        self.set_byte(CLASS_PROG, ids.prog_if);
        self.set_byte(CLASS_DEVICE, ids.subclass);
        self.set_byte(CLASS_DEVICE + 1, ids.class);
        self.set_word(SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor_id);
        self.set_word(SUBSYSTEM_ID, ids.subsystem_id);
    }

    /// Reserve `size` bytes for a capability with `id`, link it at the head of the list (as
    /// QEMU does) and set the status register's capability-list bit. Returns its offset; the
    /// caller fills bytes 2.. and their masks.
    pub fn add_capability(&mut self, id: u8, size: usize) -> Result<usize, ConfigError> {
        // Capabilities are dword aligned.
        let offset = self.next_capability.next_multiple_of(4);
        if size < 2 || offset + size > CONFIG_SPACE_SIZE {
            return Err(ConfigError::NoRoomForCapability { size });
        }
        self.data[offset] = id;
        self.data[offset + 1] = self.data[CAPABILITY_LIST];
        self.data[CAPABILITY_LIST] = offset as u8;
        let status = self.word(STATUS) | STATUS_CAP_LIST;
        self.set_word(STATUS, status);
        self.next_capability = offset + size;
        Ok(offset)
    }

    /// Offset of the first capability with `id`, walking the list.
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        let mut at = self.data[CAPABILITY_LIST] as usize;
        let mut hops = 0;
        while at != 0 && hops < 48 {
            if self.data[at] == id {
                return Some(at);
            }
            at = self.data[at + 1] as usize;
            hops += 1;
        }
        None
    }
}

/// The identity of a PCI function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Base class code.
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

/// True if an access at `offset` of `size` bytes touches `[start, start + len)`.
pub fn overlaps(offset: usize, size: usize, start: usize, len: usize) -> bool {
    offset < start + len && start < offset + size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_read_only() {
        let mut cs = ConfigSpace::new();
        cs.set_identity(&PciIds {
            vendor_id: 0x1b36,
            device_id: 0x0005,
            revision: 1,
            class: 0x00,
            subclass: 0xff,
            ..Default::default()
        });
        cs.write(VENDOR_ID, 4, 0xFFFF_FFFF);
        cs.write(REVISION_ID, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(VENDOR_ID, 4), 0x0005_1b36);
        assert_eq!(cs.read(REVISION_ID, 4), 0x00ff_0001);
        assert_eq!(cs.read(VENDOR_ID, 2), 0x1b36);
        assert_eq!(cs.read(DEVICE_ID, 1), 0x05);
    }

    #[test]
    fn command_only_defined_bits_are_writable() {
        let mut cs = ConfigSpace::new();
        cs.write(COMMAND, 2, 0xFFFF);
        assert_eq!(
            cs.command(),
            COMMAND_IO
                | COMMAND_MEMORY
                | COMMAND_MASTER
                | COMMAND_PARITY
                | COMMAND_SERR
                | COMMAND_INTX_DISABLE
        );
        cs.write(COMMAND, 1, 0x00);
        assert_eq!(cs.command(), COMMAND_SERR | COMMAND_INTX_DISABLE);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut cs = ConfigSpace::new();
        cs.set_word(STATUS, 0x8000 | 0x2000 | STATUS_CAP_LIST);
        // Writing zeros changes nothing; writing a 1 clears only that error bit.
        cs.write(STATUS, 2, 0);
        assert_eq!(cs.word(STATUS), 0xA010);
        cs.write(STATUS, 2, (0x2000 | STATUS_CAP_LIST) as u32);
        assert_eq!(cs.word(STATUS), 0x8010);
        // A dword write to command+status clears status bits and sets command bits together.
        cs.write(COMMAND, 4, 0x8000_0002);
        assert_eq!(cs.word(STATUS), STATUS_CAP_LIST);
        assert_eq!(cs.command(), COMMAND_MEMORY);
    }

    #[test]
    fn interrupt_line_is_writable_pin_is_not() {
        let mut cs = ConfigSpace::new();
        cs.set_byte(INTERRUPT_PIN, 1);
        cs.write(INTERRUPT_LINE, 2, 0xFFFF);
        assert_eq!(cs.read(INTERRUPT_LINE, 2), 0x01FF);
    }

    #[test]
    fn capabilities_are_linked_and_found() {
        let mut cs = ConfigSpace::new();
        let a = cs.add_capability(0x09, 6).unwrap();
        let b = cs.add_capability(CAP_ID_MSIX, 12).unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x48);
        assert_eq!(cs.byte(CAPABILITY_LIST), 0x48);
        assert_eq!(cs.byte(b + 1), 0x40);
        assert_eq!(cs.byte(a + 1), 0);
        assert_ne!(cs.word(STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(cs.find_capability(CAP_ID_MSIX), Some(b));
        assert_eq!(cs.find_capability(0x05), None);
        // The list is read-only to the guest.
        cs.write(CAPABILITY_LIST, 1, 0);
        cs.write(b, 2, 0);
        assert_eq!(cs.find_capability(CAP_ID_MSIX), Some(b));
        assert_eq!(
            cs.add_capability(0x10, 200),
            Err(ConfigError::NoRoomForCapability { size: 200 })
        );
    }

    #[test]
    fn accesses_past_the_end_are_harmless() {
        let mut cs = ConfigSpace::new();
        cs.write(0xFE, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(0xFE, 4), 0);
        assert_eq!(cs.read(0x300, 4), 0);
    }
}
