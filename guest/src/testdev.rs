//! The VMM's debug/exit/console device (MMIO, usable from ring 3).
use crate::layout::{testdev as reg, TESTDEV_ADDR};
use crate::mmio;

/// Ends the VM with `code` as the vmm's exit status. Never returns.
pub fn exit(code: i32) -> ! {
    // SAFETY: the testdev EXIT register is identity-mapped for ring 3.
    unsafe { mmio::write32(TESTDEV_ADDR + reg::EXIT, code as u32) };
    crate::interrupts::park()
}

/// Sends `bytes` to the VMM console in one exit per 64 KiB.
pub fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(0xFFFF) {
        let word = chunk.as_ptr() as u64 | (chunk.len() as u64) << 48;
        // SAFETY: identity mapping: the pointer is the guest-physical address the VMM reads.
        unsafe { mmio::write64(TESTDEV_ADDR + reg::CONSOLE_STR, word) };
    }
}

/// Index of the calling vCPU.
pub fn cpu_id() -> u32 {
    // SAFETY: testdev register read.
    unsafe { mmio::read32(TESTDEV_ADDR + reg::CPU_ID) }
}

/// Number of vCPUs.
pub fn ncpus() -> u32 {
    // SAFETY: testdev register read.
    unsafe { mmio::read32(TESTDEV_ADDR + reg::NCPUS) }
}

/// Guest RAM size in bytes.
pub fn ram_size() -> u64 {
    // SAFETY: testdev register read.
    unsafe { mmio::read64(TESTDEV_ADDR + reg::RAM_SIZE) }
}

/// One MMIO exit that does nothing (benchmarks).
#[inline(always)]
pub fn nop_read() -> u64 {
    // SAFETY: testdev register read.
    unsafe { mmio::read64(TESTDEV_ADDR + reg::NOP) }
}
