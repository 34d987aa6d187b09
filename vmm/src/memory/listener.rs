//! `MemoryListener`: what an address space tells interested parties (the KVM listener, tests)
//! when its flat view changes.
//!
//! On each commit a listener first hears every range and ioeventfd that went away, then every
//! one that appeared; a range that moved or changed shape is a deletion plus an addition. A
//! listener added to a space hears the current view as additions.

use super::flat_view::{FlatRange, IoEventFdRange};

/// Told the changes of an address space's flat view; every method defaults to doing nothing.
pub trait MemoryListener: Send {
    /// A range appeared.
    fn region_add(&mut self, _range: &FlatRange) {}
    /// A range went away.
    fn region_del(&mut self, _range: &FlatRange) {}
    /// An ioeventfd appeared.
    fn eventfd_add(&mut self, _eventfd: &IoEventFdRange) {}
    /// An ioeventfd went away.
    fn eventfd_del(&mut self, _eventfd: &IoEventFdRange) {}
}
