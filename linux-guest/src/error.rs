//! The typed errors of opening, ringing and waiting.

use std::path::PathBuf;

use peer::ShmError;

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `open` of the device node failed.
    #[error("cannot open {path}: {source} (is the ivshmem module loaded? see /sys/class/ivshmem)")]
    Open {
        /// The device node.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No device has that PCI address.
    #[error("no ivshmem device has PCI address {0} (see /sys/class/ivshmem/*/pci_address)")]
    NoSuchPciAddress(String),
    /// The node does not answer the driver's information ioctl.
    #[error("{path} is not an ivshmem device: {source}")]
    NotIvshmem {
        /// The device node.
        path: PathBuf,
        /// The OS error of the ioctl.
        #[source]
        source: std::io::Error,
    },
    /// The shared memory could not be mapped.
    #[error("cannot map the shared memory of {path}: {source}")]
    MapShm {
        /// The device node.
        path: PathBuf,
        /// Why.
        #[source]
        source: ShmError,
    },
    /// An eventfd for one of our vectors could not be created or bound.
    #[error("cannot bind an eventfd to vector {vector}: {source}")]
    BindVector {
        /// The vector.
        vector: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why ringing failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The doorbell register holds 16 bits of vector.
    #[error("vector {0} is out of range 0..=65535")]
    VectorOutOfRange(u32),
    /// The device is gone (unbound or unplugged).
    #[error("the device is gone (unbound or unplugged)")]
    Gone,
    /// The ioctl failed.
    #[error("cannot ring vector {vector} of peer {peer}: {source}")]
    Io {
        /// Target peer.
        peer: u16,
        /// Target vector.
        vector: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why waiting for or draining our vectors failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// We have no such vector.
    #[error("we have no vector {vector} (we have {count} vector(s))")]
    UnknownVector {
        /// Requested vector.
        vector: u32,
        /// How many vectors the device has.
        count: u32,
    },
    /// Another program holds the vector (the driver binds a vector to one open file).
    #[error("vector {0} is bound by another program that has the device open")]
    VectorBusy(u32),
    /// The device has no interrupt vectors (ivshmem-plain), so nothing can arrive.
    #[error("the device has no interrupt vectors (ivshmem-plain, or no MSI-X)")]
    NoVectors,
    /// The device is gone (unbound or unplugged).
    #[error("the device is gone (unbound or unplugged)")]
    Gone,
    /// poll or read failed.
    #[error("waiting for our vectors failed: {0}")]
    Io(#[from] std::io::Error),
}
