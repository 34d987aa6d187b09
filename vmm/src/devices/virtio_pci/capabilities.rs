//! The virtio-pci vendor capabilities (virtio 1.x §4.1.4) and where each structure lives in the
//! device's memory BAR. The layout is QEMU's: one 16 KiB 64-bit prefetchable BAR (BAR4), a 4 KiB
//! page per structure, so a driver written against QEMU finds the same offsets.

use crate::pci::{ConfigError, ConfigSpace};

/// PCI capability id of vendor-specific capabilities.
pub const CAP_ID_VENDOR: u8 = 0x09;

/// `cfg_type` values.
pub mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
}

/// The BAR holding the four structures (QEMU's choice).
pub const BAR_INDEX: u8 = 4;
/// The BAR holding the MSI-X table and PBA (exclusive, as QEMU's).
pub const MSIX_BAR_INDEX: u8 = 1;
/// Offsets of the structures in [`BAR_INDEX`], and their sizes.
pub const COMMON_OFFSET: u64 = 0x0000;
/// ISR status: one byte, read-to-clear.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Notify addresses, [`NOTIFY_OFF_MULTIPLIER`] bytes apart.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Each structure's page.
pub const PAGE: u64 = 0x1000;
/// Size of the whole BAR.
pub const BAR_SIZE: u64 = 0x4000;

/// Queue `n` is notified at `NOTIFY_OFFSET + n * 4`: an address of its own per queue, so each
/// queue's ioeventfd needs no datamatch and catches a write of any width (a multiplier of 0
/// would put every queue on one address, told apart only by a datamatch on the written index,
/// which ties the eventfd to one access width). 4 is also QEMU's value.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Queues one notify page holds.
pub const MAX_QUEUES: usize = (PAGE / NOTIFY_OFF_MULTIPLIER as u64) as usize;

/// Adds the four vendor capabilities describing a BAR laid out as above.
pub fn add_all(config: &mut ConfigSpace, device_config_len: u32) -> Result<(), ConfigError> {
    add(
        config,
        cfg_type::COMMON,
        COMMON_OFFSET,
        super::common::reg::SIZE as u32,
        None,
    )?;
    add(config, cfg_type::ISR, ISR_OFFSET, 1, None)?;
    add(
        config,
        cfg_type::DEVICE,
        DEVICE_OFFSET,
        device_config_len.max(1),
        None,
    )?;
    add(
        config,
        cfg_type::NOTIFY,
        NOTIFY_OFFSET,
        PAGE as u32,
        Some(NOTIFY_OFF_MULTIPLIER),
    )?;
    Ok(())
}

/// One `virtio_pci_cap` (16 bytes), or `virtio_pci_notify_cap` (20) with a multiplier.
fn add(
    config: &mut ConfigSpace,
    kind: u8,
    offset: u64,
    length: u32,
    notify_multiplier: Option<u32>,
) -> Result<usize, ConfigError> {
    let len = if notify_multiplier.is_some() { 20 } else { 16 };
    let cap = config.add_capability(CAP_ID_VENDOR, len)?;
    config.set_byte(cap + 2, len as u8);
    config.set_byte(cap + 3, kind);
    config.set_byte(cap + 4, BAR_INDEX);
    config.set_dword(cap + 8, offset as u32);
    config.set_dword(cap + 12, length);
    if let Some(multiplier) = notify_multiplier {
        config.set_dword(cap + 16, multiplier);
    }
    Ok(cap)
}
