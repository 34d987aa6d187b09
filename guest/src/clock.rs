//! Monotonic time from the VMM (one MMIO exit per read).
use crate::layout::{testdev, TESTDEV_ADDR};

/// Nanoseconds since the VM was created.
pub fn now_ns() -> u64 {
    // SAFETY: testdev register read.
    unsafe { crate::mmio::read64(TESTDEV_ADDR + testdev::CLOCK_NS) }
}
