//! What the transport asks of whatever serves the device's queues ([`VirtioBackend`]): a
//! vhost-user backend process today, anything else later. The transport owns the virtio-pci
//! registers; the backend owns the device's features, its configuration space and the queues
//! once the driver has set them up.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// One queue as the driver programmed it, handed over at DRIVER_OK.
#[derive(Clone)]
pub struct QueueActivation {
    /// Queue index.
    pub index: u16,
    /// Ring size the driver chose (a power of two, at most the queue's maximum).
    pub size: u16,
    /// Guest-physical address of the descriptor table.
    pub desc: u64,
    /// Guest-physical address of the driver (available) ring.
    pub driver: u64,
    /// Guest-physical address of the device (used) ring.
    pub device: u64,
    /// Signalled by KVM when the driver writes the queue's notify address (ioeventfd).
    pub kick: Arc<EventFd>,
    /// Signal it to interrupt the driver: the MSI-X source of the queue's vector (irqfd).
    pub call: Arc<EventFd>,
    /// Signalled by a backend that found the ring broken (vhost-user SET_VRING_ERR).
    pub err: Arc<EventFd>,
}

/// Everything the driver negotiated, at DRIVER_OK.
#[derive(Clone)]
pub struct Activation {
    /// The features the driver acknowledged (a subset of [`VirtioBackend::device_features`]).
    pub features: u64,
    /// The queues the driver enabled, by index.
    pub queues: Vec<QueueActivation>,
}

/// The device behind a virtio-pci transport. Called with the transport's lock held, from vCPU
/// threads (register accesses): calls must be bounded in time.
pub trait VirtioBackend: Send {
    /// Feature bits offered to the driver (VIRTIO_F_VERSION_1 must be among them).
    fn device_features(&self) -> u64;
    /// Reads `data.len()` bytes of the device configuration space at `offset`; bytes past its
    /// end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver wrote `data` at `offset` in the device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: start serving `activation.queues`. An error makes the
    /// transport set DEVICE_NEEDS_RESET.
    fn activate(&mut self, activation: Activation) -> anyhow::Result<()>;
    /// The driver reset the device (status 0): stop every queue and forget the negotiation.
    fn reset(&mut self);
}
