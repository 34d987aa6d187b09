//! PCI bus 0: the host bridge at 00:00.0, device slots, and the two ways in to config space:
//! configuration mechanism #1 (I/O ports 0xCF8 address / 0xCFC data) and ECAM (MMIO, 4 KiB per
//! function, bus 0 only).
//!
//! Only function 0 of each slot exists. Config reads of an absent function return all-ones (what
//! enumeration looks for); reads past the 256 bytes of a present conventional function return 0.
//! A config write that moves BARs commits the affected address space before returning, so a
//! BAR write from a vCPU's MMIO exit takes effect before the guest's next instruction.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::config::{PciIds, CONFIG_SPACE_SIZE};
use super::function::{BarSpaces, PciFunction, Remapped};
use crate::memory::{IoAccess, MemoryRegion, RegionOps};

/// Slots on bus 0.
pub const SLOTS: usize = 32;
/// ECAM bytes per function and for bus 0.
pub const ECAM_FUNCTION_SIZE: u64 = 4096;
/// ECAM bytes for all of bus 0 (32 devices, 8 functions each).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Configuration mechanism #1 ports.
pub const CONF1_ADDRESS_PORT: u64 = 0xCF8;
/// Configuration mechanism #1 data port (0xCFC..=0xCFF).
pub const CONF1_DATA_PORT: u64 = 0xCFC;
const CONF1_ENABLE: u32 = 1 << 31;

/// Host bridge identity (QEMU q35's MCH: Intel 82G33/G31/P35/P31 DRAM controller).
pub const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor_id: 0x8086,
    device_id: 0x29C0,
    revision: 0,
    class: 0x06,
    subclass: 0x00,
    prog_if: 0,
    subsystem_vendor_id: 0x1AF4,
    subsystem_id: 0x1100,
};

/// Bus/device/function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bdf {
    /// Bus number (always 0 here).
    pub bus: u8,
    /// Device (slot) number, 0..32.
    pub device: u8,
    /// Function number (always 0 here).
    pub function: u8,
}

impl Bdf {
    /// The function at `bus:device.function`.
    pub fn new(bus: u8, device: u8, function: u8) -> Self {
        Self {
            bus,
            device,
            function,
        }
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Why a device could not be plugged in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Slot beyond 31.
    #[error("PCI slot {0} is out of range (0..31)")]
    BadSlot(u8),
    /// A device is already in that slot.
    #[error("PCI slot {0} is already occupied")]
    SlotTaken(u8),
    /// All 32 slots are taken.
    #[error("no free PCI slot on bus 0")]
    Full,
}

/// PCI bus 0: up to 32 single-function devices, reached through conf1 and ECAM, with their
/// BARs mapped into the VM's address spaces as the guest programs them.
pub struct PciBus {
    slots: Mutex<Vec<Option<PciFunction>>>,
    spaces: BarSpaces,
}

impl PciBus {
    /// A bus with the host bridge at 00:00.0, mapping BARs into `spaces`.
    pub fn new(spaces: BarSpaces) -> Arc<Self> {
        let bus = Arc::new(Self {
            slots: Mutex::new((0..SLOTS).map(|_| None).collect()),
            spaces,
        });
        let bridge = PciFunction::new("host-bridge", HOST_BRIDGE_IDS);
        bus.add_device_at(0, bridge)
            .expect("slot 0 is free on a new bus");
        bus
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<PciFunction>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address spaces BARs map into.
    pub fn spaces(&self) -> &BarSpaces {
        &self.spaces
    }

    /// Plug `function` into the first free slot.
    pub fn add_device(&self, function: PciFunction) -> Result<Bdf, BusError> {
        let slot = self
            .lock()
            .iter()
            .position(Option::is_none)
            .ok_or(BusError::Full)?;
        self.add_device_at(slot as u8, function)
    }

    /// Plugs `function` into `slot` (0 is the host bridge's).
    pub fn add_device_at(&self, slot: u8, mut function: PciFunction) -> Result<Bdf, BusError> {
        let mut slots = self.lock();
        let entry = slots
            .get_mut(slot as usize)
            .ok_or(BusError::BadSlot(slot))?;
        if entry.is_some() {
            return Err(BusError::SlotTaken(slot));
        }
        // A device may come up with decoding enabled and addresses set.
        let remapped = function.update_mappings(&self.spaces);
        log::info!("pci: {} at 00:{slot:02x}.0", function.name());
        *entry = Some(function);
        self.commit(remapped);
        Ok(Bdf::new(0, slot, 0))
    }

    /// Run `f` on the function at `bdf` (device-side inspection, tests).
    pub fn with_function<R>(&self, bdf: Bdf, f: impl FnOnce(&PciFunction) -> R) -> Option<R> {
        if bdf.bus != 0 || bdf.function != 0 {
            return None;
        }
        let slots = self.lock();
        slots.get(bdf.device as usize)?.as_ref().map(f)
    }

    /// A config read of `size` (1, 2 or 4) bytes at `offset` (0..4096).
    pub fn config_read(&self, bdf: Bdf, offset: usize, size: usize) -> u32 {
        let all_ones = if size >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * size)) - 1
        };
        if bdf.bus != 0 || bdf.function != 0 {
            return all_ones;
        }
        let slots = self.lock();
        match slots.get(bdf.device as usize).and_then(Option::as_ref) {
            None => all_ones,
            Some(_) if offset >= CONFIG_SPACE_SIZE => 0,
            Some(function) => function.config_read(offset, size),
        }
    }

    /// A guest config-space write to `bdf` (through conf1 or ECAM); BAR and MSI-X changes are
    /// applied and committed to the address spaces before it returns. Writes to absent functions
    /// are dropped, as on hardware.
    pub fn config_write(&self, bdf: Bdf, offset: usize, size: usize, value: u32) {
        if bdf.bus != 0 || bdf.function != 0 || offset >= CONFIG_SPACE_SIZE {
            return;
        }
        let mut slots = self.lock();
        let Some(function) = slots.get_mut(bdf.device as usize).and_then(Option::as_mut) else {
            return;
        };
        let remapped = function.config_write(offset, size, value, &self.spaces);
        // Commit with the bus locked: a concurrent config cycle must not see the old mapping.
        self.commit(remapped);
    }

    fn commit(&self, remapped: Remapped) {
        if remapped.memory {
            self.spaces.memory.commit();
        }
        if remapped.io {
            self.spaces.io.commit();
        }
    }

    /// The ECAM window for bus 0 (1 MiB MMIO region).
    pub fn ecam_region(self: &Arc<Self>) -> MemoryRegion {
        MemoryRegion::io(
            "pci-ecam",
            ECAM_BUS_SIZE,
            Arc::new(EcamOps(Arc::downgrade(self))),
            IoAccess::sizes(1, 4),
        )
    }

    /// Configuration mechanism #1: (address register region at 0xCF8, data region at 0xCFC),
    /// 4 bytes each, for the I/O address space.
    pub fn conf1_regions(self: &Arc<Self>) -> (MemoryRegion, MemoryRegion) {
        let conf1 = Arc::new(Conf1 {
            bus: Arc::downgrade(self),
            address: AtomicU32::new(0),
        });
        let address = MemoryRegion::io(
            "pci-conf-idx",
            4,
            Arc::new(Conf1AddressOps(conf1.clone())),
            IoAccess::sizes(1, 4),
        );
        let data = MemoryRegion::io(
            "pci-conf-data",
            4,
            Arc::new(Conf1DataOps(conf1)),
            IoAccess::sizes(1, 4),
        );
        (address, data)
    }
}

fn ecam_decode(offset: u64) -> (Bdf, usize) {
    let bdf = Bdf::new(
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1F) as u8,
        ((offset >> 12) & 0x7) as u8,
    );
    (bdf, (offset & (ECAM_FUNCTION_SIZE - 1)) as usize)
}

/// The accessors hold the bus weakly: the bus owns the address spaces that hold the accessors.
struct EcamOps(Weak<PciBus>);

impl RegionOps for EcamOps {
    fn read(&self, offset: u64, size: u32) -> u64 {
        let (bdf, register) = ecam_decode(offset);
        match self.0.upgrade() {
            Some(bus) => bus.config_read(bdf, register, size as usize) as u64,
            None => size_mask(size),
        }
    }
    fn write(&self, offset: u64, size: u32, value: u64) {
        let (bdf, register) = ecam_decode(offset);
        if let Some(bus) = self.0.upgrade() {
            bus.config_write(bdf, register, size as usize, value as u32);
        }
    }
}

struct Conf1 {
    bus: Weak<PciBus>,
    address: AtomicU32,
}

impl Conf1 {
    /// The function and register the address register selects, if config cycles are enabled.
    fn target(&self, byte: u64) -> Option<(Bdf, usize)> {
        let address = self.address.load(Ordering::Relaxed);
        if address & CONF1_ENABLE == 0 {
            return None;
        }
        let bdf = Bdf::new(
            (address >> 16) as u8,
            ((address >> 11) & 0x1F) as u8,
            ((address >> 8) & 0x7) as u8,
        );
        Some((bdf, (address & 0xFC) as usize + byte as usize))
    }
}

struct Conf1AddressOps(Arc<Conf1>);

impl RegionOps for Conf1AddressOps {
    fn read(&self, offset: u64, size: u32) -> u64 {
        (self.0.address.load(Ordering::Relaxed) as u64 >> (8 * offset)) & size_mask(size)
    }
    fn write(&self, offset: u64, size: u32, value: u64) {
        // Only full dword writes select a register; byte writes to 0xCF9 etc. are other
        // chipset registers that we do not model.
        if offset == 0 && size == 4 {
            self.0.address.store(value as u32, Ordering::Relaxed);
        }
    }
}

struct Conf1DataOps(Arc<Conf1>);

impl RegionOps for Conf1DataOps {
    fn read(&self, offset: u64, size: u32) -> u64 {
        match (self.0.target(offset), self.0.bus.upgrade()) {
            (Some((bdf, register)), Some(bus)) => {
                bus.config_read(bdf, register, size as usize) as u64
            }
            _ => size_mask(size),
        }
    }
    fn write(&self, offset: u64, size: u32, value: u64) {
        if let (Some((bdf, register)), Some(bus)) = (self.0.target(offset), self.0.bus.upgrade()) {
            bus.config_write(bdf, register, size as usize, value as u32);
        }
    }
}

fn size_mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    }
}
