//! The ivshmem device's typed options: the variant and where its shared memory comes from. The
//! command line's spellings are parsed at the edge (the `options` module).

use std::path::PathBuf;

/// Largest vector count we accept (the MSI-X table of BAR1 allows 2048; the server 1024).
pub const MAX_VECTORS: u32 = 1024;

/// Where a plain device's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedMemorySource {
    /// A file at this path (ivshmem-plain `path=` and `shm=`, which means /dev/shm/NAME).
    File(PathBuf),
    /// An anonymous memfd owned by this VM.
    Memfd,
}

/// Which device, with its variant's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvshmemVariant {
    /// `ivshmem-plain`: shared memory only, no interrupts.
    Plain {
        /// Where the memory comes from.
        source: SharedMemorySource,
        /// Bytes; `None` means "the file's current size".
        size: Option<u64>,
    },
    /// `ivshmem-doorbell`: memory and doorbells from an ivshmem server.
    Doorbell {
        /// The server's socket (`socket=`).
        socket: PathBuf,
        /// MSI-X vectors of the device (`vectors=`).
        vectors: u32,
        /// Doorbells through KVM ioeventfds (`ioeventfd=`, default on).
        ioeventfd: bool,
    },
}

/// How BAR2 reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar2Mapping {
    /// A KVM memory slot: guest accesses never exit.
    Slot,
    /// Every access exits and is served by the VMM (for comparison and debugging).
    Trap,
}

/// One ivshmem device's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvshmemOptions {
    /// The device variant and its settings.
    pub variant: IvshmemVariant,
    /// How BAR2 is mapped (`mapping=`).
    pub mapping: Bar2Mapping,
}
