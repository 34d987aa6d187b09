//! `MemoryListener`: what an address space tells interested parties (the KVM listener, tests)
//! when its flat view changes.
//!
//! On each commit a listener first hears every range and ioeventfd that went away, then every
//! one that appeared; a range that moved or changed shape is a deletion plus an addition. A
//! listener added to a space hears the current view as additions.

use super::flat_view::{FlatRange, IoEventFdRange};

pub trait MemoryListener: Send {
    fn region_add(&mut self, _range: &FlatRange) {}
    fn region_del(&mut self, _range: &FlatRange) {}
    fn eventfd_add(&mut self, _eventfd: &IoEventFdRange) {}
    fn eventfd_del(&mut self, _eventfd: &IoEventFdRange) {}
}
