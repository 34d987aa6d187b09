//! QEMU's memory model, in Rust.
//!
//! - `region`: the tree of `MemoryRegion`s (RAM, I/O, container, alias, reservation);
//! - `flat_view`: rendering a tree into sorted, non-overlapping `FlatRange`s (QEMU's rules);
//! - `address_space`: a root region, its committed `FlatView`, listeners, `commit()`;
//! - `listener`: the `MemoryListener` trait (diffs between views);
//! - `kvm_listener`: KVM memory slots and ioeventfds following the view;
//! - `dispatch`: guest reads/writes (MMIO and port exits) served from a view;
//! - `guest_ram`: how RAM is backed (shared memfd, hugepages) and how outside processes map it;
//! - `mtree`: `info mtree` / `info flatview` text.
//!
//! Tree changes take effect at `AddressSpace::commit()`, like QEMU's transactions.

mod address_space;
mod dispatch;
mod flat_view;
mod guest_ram;
mod kvm_listener;
mod listener;
mod mtree;
mod region;

#[cfg(test)]
mod tests;

pub use address_space::{AddressSpace, SpaceKind};
pub use flat_view::{FlatRange, FlatView, IoEventFdRange};
pub use guest_ram::{GuestRam, GuestRamRegion, MemoryOptions, RamBacking};
pub use kvm_listener::{KvmListenerStats, KvmMemoryListener};
pub use listener::MemoryListener;
pub use region::{AccessSizes, IoAccess, MemoryRegion, RegionOps};

/// Guest and host page size KVM slots are built from.
pub const PAGE_SIZE: u64 = 4096;

/// Errors creating regions.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A region of size 0.
    #[error("memory region {0}: size is zero")]
    ZeroSize(String),
    #[error("memory region {name}: size {size:#x} is too large to map")]
    /// The size does not fit this host's address space.
    TooLarge {
        /// The region's name.
        name: String,
        /// The size asked for.
        size: u64,
    },
    #[error("memory region {name}: file offset {offset:#x} is not page-aligned")]
    /// A file-backed region starts at an offset that is not a multiple of the page size.
    UnalignedOffset {
        /// The region's name.
        name: String,
        /// The offset in the file.
        offset: u64,
    },
    /// Mapping the backing memory failed.
    #[error("memory region {name}: mapping {size:#x} bytes failed: {source}")]
    Mmap {
        /// The region's name.
        name: String,
        /// The size asked for.
        size: u64,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// A memfd for shared RAM could not be created or sized.
    #[error("memory region {name}: creating a memfd{}: {source}", if *hugepages { " on hugepages" } else { "" })]
    Memfd {
        /// The region's name.
        name: String,
        /// Whether hugetlb pages were asked for.
        hugepages: bool,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not enough free hugepages for a hugepage-backed region.
    #[error(
        "memory region {name}: cannot map {size:#x} bytes on hugepages: not enough free 2 MiB \
         hugepages (see HugePages_Free in /proc/meminfo; raise vm.nr_hugepages)"
    )]
    NoHugepages {
        /// The region's name.
        name: String,
        /// The size asked for.
        size: u64,
    },
    /// The backing fd could not be duplicated (to keep it past the caller's copy).
    #[error("memory region {name}: duplicating the backing fd: {source}")]
    DupFd {
        /// The region's name.
        name: String,
        /// The dup error.
        #[source]
        source: std::io::Error,
    },
}
