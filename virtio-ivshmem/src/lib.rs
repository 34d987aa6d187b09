//! Virtio over ivshmem: a standard virtio device whose virtqueues and buffers live in ivshmem
//! shared memory, served by an ordinary vhost-user backend through the `vhost-bridge` process.
//!
//! * [`layout`] — the versioned header layout and the checks applied to peer-written values
//!   (`core` only, shared with no_std guest programs).
//! * [`header`] — atomic access to a header in a [`peer::SharedMemory`].
//! * [`virtqueue`] — the driver's half of a split virtqueue in the shared memory.
//! * [`driver`] — [`Driver`]: claim, negotiate, set up queues, submit and wait, on a
//!   [`peer::Peer`].
//!
//! docs/virtio-over-ivshmem.md explains the design.

#![warn(missing_docs)]

pub mod driver;
pub mod header;
pub mod layout;
pub mod virtqueue;

pub use driver::{Driver, DriverError, DriverOptions, DEFAULT_TIMEOUT, SPINS_PER_YIELD};
pub use header::Header;
pub use virtqueue::{Buffer, DriverQueue, QueueError, Used};

/// Virtio device ids used here (virtio 1.2 §5).
pub mod device_id {
    /// Entropy source (virtio-rng).
    pub const ENTROPY: u32 = 4;
    /// This project's echo test device (`vhost-user-echo`): every chain's readable bytes are
    /// copied into its writable buffers. Not a virtio-assigned id.
    pub const ECHO: u32 = 0xEC40;
}
