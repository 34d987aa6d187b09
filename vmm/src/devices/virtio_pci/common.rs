//! The common configuration structure (virtio 1.x §4.1.4.3): feature windows, device status,
//! MSI-X vector numbers and the per-queue registers, as a plain state machine. It knows nothing
//! of PCI or backends: [`CommonConfig::write`] says what the write means ([`StatusChange`]) and
//! the device (`super::VirtioPciDevice`) acts on it.
//!
//! What is refused, and how (the driver sees the value not stick; a warning names it):
//! - a queue size of 0, above the maximum or not a power of two (split rings need one);
//! - a queue register write while that queue is enabled or after DRIVER_OK;
//! - a vector number beyond the MSI-X table (reads back as NO_VECTOR, as the spec asks);
//! - FEATURES_OK with features the device did not offer, or without VIRTIO_F_VERSION_1
//!   (FEATURES_OK stays clear, so the driver sees the negotiation failed).
//!
//! Ring addresses are checked at DRIVER_OK (alignment here, RAM by the backend); a bad one
//! makes the device set DEVICE_NEEDS_RESET.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};

/// Register offsets in the common configuration structure.
pub mod reg {
    /// Which 32 bits of the device features `DEVICE_FEATURE` shows (u32).
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// The selected 32 device feature bits (u32, read-only).
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// Which 32 bits of the driver features `DRIVER_FEATURE` holds (u32).
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// The selected 32 driver feature bits (u32).
    pub const DRIVER_FEATURE: u64 = 0x0C;
    /// MSI-X vector for configuration changes (u16).
    pub const MSIX_CONFIG: u64 = 0x10;
    /// Number of queues (u16, read-only).
    pub const NUM_QUEUES: u64 = 0x12;
    /// Device status (u8).
    pub const DEVICE_STATUS: u64 = 0x14;
    /// Configuration generation (u8, read-only).
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// Which queue the queue registers below address (u16).
    pub const QUEUE_SELECT: u64 = 0x16;
    /// Queue size (u16).
    pub const QUEUE_SIZE: u64 = 0x18;
    /// Queue MSI-X vector (u16).
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1A;
    /// Queue enable (u16).
    pub const QUEUE_ENABLE: u64 = 0x1C;
    /// Queue notify offset, in notify_off_multiplier units (u16, read-only).
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    /// Descriptor table address (u64 as two u32).
    pub const QUEUE_DESC: u64 = 0x20;
    /// Driver (available) ring address (u64 as two u32).
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// Device (used) ring address (u64 as two u32).
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// Size of the structure.
    pub const SIZE: u64 = 0x38;
}

/// "No vector" in `msix_config` and `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xFFFF;

/// One queue's registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRegs {
    /// Largest size the device accepts (the reset value of `size`).
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// MSI-X vector, or [`NO_VECTOR`].
    pub msix_vector: u16,
    /// The driver enabled the queue.
    pub enabled: bool,
    /// Descriptor table (guest-physical).
    pub desc: u64,
    /// Driver ring (guest-physical).
    pub driver: u64,
    /// Device ring (guest-physical).
    pub device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        QueueRegs {
            max_size,
            size: max_size,
            msix_vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// Why this enabled queue cannot run, if it cannot: the ring alignments of virtio 1.x
    /// §2.7 (descriptors 16, driver ring 2, device ring 4).
    pub fn check(&self) -> Result<(), String> {
        if !self.desc.is_multiple_of(16)
            || !self.driver.is_multiple_of(2)
            || !self.device.is_multiple_of(4)
        {
            return Err(format!(
                "misaligned rings: desc {:#x} (16), driver {:#x} (2), device {:#x} (4)",
                self.desc, self.driver, self.device
            ));
        }
        Ok(())
    }
}

/// What a write to the common configuration asks the device to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// Nothing beyond the register itself.
    None,
    /// The driver wrote 0 to device_status: reset the device.
    Reset,
    /// The driver set DRIVER_OK: start the queues.
    DriverOk,
}

/// The common configuration registers of one device.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    name: String,
    device_features: u64,
    msix_vectors: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    msix_config: u16,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    queues: Vec<QueueRegs>,
}

impl CommonConfig {
    /// Registers of a device named `name` (for logs) offering `device_features`, with one queue
    /// per entry of `queue_max_sizes` and `msix_vectors` MSI-X vectors.
    pub fn new(
        name: &str,
        device_features: u64,
        queue_max_sizes: &[u16],
        msix_vectors: u16,
    ) -> Self {
        CommonConfig {
            name: name.to_string(),
            device_features,
            msix_vectors,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|&m| QueueRegs::new(m)).collect(),
        }
    }

    /// Back to the power-on state (status 0), keeping what the device offers.
    pub fn reset(&mut self) {
        let max_sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        *self = CommonConfig::new(
            &self.name,
            self.device_features,
            &max_sizes,
            self.msix_vectors,
        );
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Sets DEVICE_NEEDS_RESET and bumps the configuration generation.
    pub fn set_needs_reset(&mut self) {
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET as u8;
        self.config_changed();
    }

    /// The device configuration changed: drivers re-read it when the generation moves.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    /// The features the driver has written so far.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The configuration-change vector, or [`NO_VECTOR`].
    pub fn msix_config(&self) -> u16 {
        self.msix_config
    }

    /// The queues' registers, by index.
    pub fn queues(&self) -> &[QueueRegs] {
        &self.queues
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(self.queue_select as usize)
    }

    fn vector_or_none(&self, vector: u16) -> u16 {
        if vector < self.msix_vectors {
            vector
        } else {
            if vector != NO_VECTOR {
                log::warn!(
                    "{}: MSI-X vector {vector} does not exist (the table has {}); using none",
                    self.name,
                    self.msix_vectors
                );
            }
            NO_VECTOR
        }
    }

    /// A driver read of `size` bytes at `offset` (any size; bytes outside a register read 0).
    pub fn read(&self, offset: u64, size: u32) -> u64 {
        let mut value = 0u64;
        for i in 0..u64::from(size.min(8)) {
            value |= u64::from(self.read_byte(offset + i)) << (8 * i);
        }
        value
    }

    fn read_byte(&self, offset: u64) -> u8 {
        // Each register as (start, width, value); the byte is picked out of the one holding it.
        let queue = self.selected();
        let q = |f: fn(&QueueRegs) -> u64| queue.map_or(0, f);
        let feature_window = |features: u64, select: u32| match select {
            0 => features & 0xFFFF_FFFF,
            1 => features >> 32,
            _ => 0,
        };
        let (start, value) = match offset {
            0x00..=0x03 => (
                reg::DEVICE_FEATURE_SELECT,
                u64::from(self.device_feature_select),
            ),
            0x04..=0x07 => (
                reg::DEVICE_FEATURE,
                feature_window(self.device_features, self.device_feature_select),
            ),
            0x08..=0x0B => (
                reg::DRIVER_FEATURE_SELECT,
                u64::from(self.driver_feature_select),
            ),
            0x0C..=0x0F => (
                reg::DRIVER_FEATURE,
                feature_window(self.driver_features, self.driver_feature_select),
            ),
            0x10..=0x11 => (reg::MSIX_CONFIG, u64::from(self.msix_config)),
            0x12..=0x13 => (reg::NUM_QUEUES, self.queues.len() as u64),
            0x14 => (reg::DEVICE_STATUS, u64::from(self.status)),
            0x15 => (reg::CONFIG_GENERATION, u64::from(self.config_generation)),
            0x16..=0x17 => (reg::QUEUE_SELECT, u64::from(self.queue_select)),
            // An unknown queue reads size 0: the driver's way of finding where queues end.
            0x18..=0x19 => (reg::QUEUE_SIZE, q(|q| u64::from(q.size))),
            0x1A..=0x1B => (
                reg::QUEUE_MSIX_VECTOR,
                queue.map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector)),
            ),
            0x1C..=0x1D => (reg::QUEUE_ENABLE, q(|q| u64::from(q.enabled))),
            0x1E..=0x1F => (reg::QUEUE_NOTIFY_OFF, u64::from(self.queue_select)),
            0x20..=0x27 => (reg::QUEUE_DESC, q(|q| q.desc)),
            0x28..=0x2F => (reg::QUEUE_DRIVER, q(|q| q.driver)),
            0x30..=0x37 => (reg::QUEUE_DEVICE, q(|q| q.device)),
            _ => return 0,
        };
        (value >> (8 * (offset - start))) as u8
    }

    /// A driver write of `size` bytes of `value` at `offset`. Registers are written whole (a
    /// 64-bit address as two 32-bit halves); other accesses are ignored with a warning.
    pub fn write(&mut self, offset: u64, size: u32, value: u64) -> StatusChange {
        let width = match offset {
            reg::DEVICE_FEATURE_SELECT
            | reg::DEVICE_FEATURE
            | reg::DRIVER_FEATURE_SELECT
            | reg::DRIVER_FEATURE => 4,
            reg::DEVICE_STATUS | reg::CONFIG_GENERATION => 1,
            0x20..=0x37 if offset.is_multiple_of(4) => {
                if size == 8 && offset.is_multiple_of(8) {
                    8
                } else {
                    4
                }
            }
            o if o < reg::SIZE && o.is_multiple_of(2) => 2,
            _ => 0,
        };
        if width == 0 || size != width {
            log::warn!(
                "{}: ignoring a {size}-byte write of {value:#x} at common config offset {offset:#x}",
                self.name
            );
            return StatusChange::None;
        }
        let driver_ok = self.status & VIRTIO_CONFIG_S_DRIVER_OK as u8 != 0;
        match offset {
            reg::DEVICE_FEATURE_SELECT => self.device_feature_select = value as u32,
            reg::DRIVER_FEATURE_SELECT => self.driver_feature_select = value as u32,
            reg::DRIVER_FEATURE => {
                if self.status & VIRTIO_CONFIG_S_FEATURES_OK as u8 != 0 {
                    log::warn!(
                        "{}: driver features written after FEATURES_OK; ignored",
                        self.name
                    );
                    return StatusChange::None;
                }
                let shift = match self.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return StatusChange::None,
                };
                self.driver_features &= !(0xFFFF_FFFFu64 << shift);
                self.driver_features |= (value & 0xFFFF_FFFF) << shift;
            }
            reg::MSIX_CONFIG => self.msix_config = self.vector_or_none(value as u16),
            reg::DEVICE_STATUS => return self.write_status(value as u8),
            reg::QUEUE_SELECT => self.queue_select = value as u16,
            reg::DEVICE_FEATURE | reg::NUM_QUEUES | reg::CONFIG_GENERATION => {}
            reg::QUEUE_NOTIFY_OFF => {}
            _ => self.write_queue(offset, width, value, driver_ok),
        }
        StatusChange::None
    }

    fn write_status(&mut self, value: u8) -> StatusChange {
        if value == 0 {
            self.reset();
            return StatusChange::Reset;
        }
        let mut value = value;
        let features_ok = VIRTIO_CONFIG_S_FEATURES_OK as u8;
        let driver_ok = VIRTIO_CONFIG_S_DRIVER_OK as u8;
        let needs_reset = VIRTIO_CONFIG_S_NEEDS_RESET as u8;
        // NEEDS_RESET is the device's bit: the driver can neither set nor clear it.
        value = (value & !needs_reset) | (self.status & needs_reset);
        if value & features_ok != 0 && self.status & features_ok == 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                log::warn!(
                    "{}: refusing FEATURES_OK for driver features {:#x} (offered {:#x}; \
                     VIRTIO_F_VERSION_1 is required)",
                    self.name,
                    self.driver_features,
                    self.device_features
                );
                value &= !features_ok;
            }
        }
        let newly_driver_ok = value & driver_ok != 0 && self.status & driver_ok == 0;
        if newly_driver_ok && value & features_ok == 0 {
            log::warn!("{}: DRIVER_OK without FEATURES_OK; ignored", self.name);
            value &= !driver_ok;
        }
        let change = if value & driver_ok != 0 && self.status & driver_ok == 0 {
            StatusChange::DriverOk
        } else {
            StatusChange::None
        };
        self.status = value;
        change
    }

    fn write_queue(&mut self, offset: u64, width: u32, value: u64, driver_ok: bool) {
        let name = self.name.clone();
        let select = self.queue_select;
        let vector = if offset == reg::QUEUE_MSIX_VECTOR {
            self.vector_or_none(value as u16)
        } else {
            NO_VECTOR
        };
        let Some(queue) = self.queues.get_mut(select as usize) else {
            log::warn!("{name}: write to queue {select}, which does not exist; ignored");
            return;
        };
        if queue.enabled || driver_ok {
            log::warn!(
                "{name}: queue {select} register {offset:#x} written while the queue is live; \
                 ignored"
            );
            return;
        }
        let set_half = |field: &mut u64, base: u64| {
            if width == 8 {
                *field = value;
            } else if offset == base {
                *field = (*field & !0xFFFF_FFFF) | (value & 0xFFFF_FFFF);
            } else {
                *field = (*field & 0xFFFF_FFFF) | (value << 32);
            }
        };
        match offset {
            reg::QUEUE_SIZE => {
                let size = value as u16;
                if size == 0 || size > queue.max_size || !size.is_power_of_two() {
                    log::warn!(
                        "{name}: queue {select} size {size} refused (a power of two up to {})",
                        queue.max_size
                    );
                } else {
                    queue.size = size;
                }
            }
            reg::QUEUE_MSIX_VECTOR => queue.msix_vector = vector,
            // Only 1 is meaningful: a queue is disabled by resetting the device.
            reg::QUEUE_ENABLE if value == 1 => queue.enabled = true,
            0x20..=0x27 => set_half(&mut queue.desc, reg::QUEUE_DESC),
            0x28..=0x2F => set_half(&mut queue.driver, reg::QUEUE_DRIVER),
            0x30..=0x37 => set_half(&mut queue.device, reg::QUEUE_DEVICE),
            _ => {}
        }
    }
}
