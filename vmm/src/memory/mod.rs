//! QEMU's memory model, in Rust.
//!
//! - `region`: the tree of `MemoryRegion`s (RAM, I/O, container, alias, reservation);
//! - `flat_view`: rendering a tree into sorted, non-overlapping `FlatRange`s (QEMU's rules);
//! - `address_space`: a root region, its committed `FlatView`, listeners, `commit()`;
//! - `listener`: the `MemoryListener` trait (diffs between views);
//! - `kvm_listener`: KVM memory slots and ioeventfds following the view;
//! - `dispatch`: guest reads/writes (MMIO and port exits) served from a view;
//! - `mtree`: `info mtree` / `info flatview` text.
//!
//! Tree changes take effect at `AddressSpace::commit()`, like QEMU's transactions.

mod address_space;
mod dispatch;
mod flat_view;
mod kvm_listener;
mod listener;
mod mtree;
mod region;

#[cfg(test)]
mod tests;

pub use address_space::{AddressSpace, SpaceKind};
pub use flat_view::{FlatRange, FlatView, IoEventFdRange};
pub use kvm_listener::{KvmListenerStats, KvmMemoryListener};
pub use listener::MemoryListener;
pub use region::{AccessSizes, IoAccess, MemoryRegion, RegionOps};

/// Guest and host page size KVM slots are built from.
pub const PAGE_SIZE: u64 = 4096;

/// Errors creating regions.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory region {0}: size is zero")]
    ZeroSize(String),
    #[error("memory region {name}: size {size:#x} is too large to map")]
    TooLarge { name: String, size: u64 },
    #[error("memory region {name}: file offset {offset:#x} is not page-aligned")]
    UnalignedOffset { name: String, offset: u64 },
    #[error("memory region {name}: mapping {size:#x} bytes failed: {source}")]
    Mmap {
        name: String,
        size: u64,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("memory region {name}: duplicating the backing fd: {source}")]
    DupFd {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
