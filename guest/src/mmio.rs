//! Volatile MMIO accessors. Ring-3 code reaches devices at their physical addresses because the
//! VMM identity-maps every device window as user-accessible.

/// # Safety
/// `addr` must be a mapped device register or memory the caller may read.
#[inline(always)]
pub unsafe fn read8(addr: u64) -> u8 {
    core::ptr::read_volatile(addr as *const u8)
}
/// # Safety
/// As [`read8`].
#[inline(always)]
pub unsafe fn read16(addr: u64) -> u16 {
    core::ptr::read_volatile(addr as *const u16)
}
/// # Safety
/// As [`read8`].
#[inline(always)]
pub unsafe fn read32(addr: u64) -> u32 {
    core::ptr::read_volatile(addr as *const u32)
}
/// # Safety
/// As [`read8`].
#[inline(always)]
pub unsafe fn read64(addr: u64) -> u64 {
    core::ptr::read_volatile(addr as *const u64)
}
/// # Safety
/// `addr` must be a mapped device register or memory the caller may write.
#[inline(always)]
pub unsafe fn write8(addr: u64, value: u8) {
    core::ptr::write_volatile(addr as *mut u8, value)
}
/// # Safety
/// As [`write8`].
#[inline(always)]
pub unsafe fn write16(addr: u64, value: u16) {
    core::ptr::write_volatile(addr as *mut u16, value)
}
/// # Safety
/// As [`write8`].
#[inline(always)]
pub unsafe fn write32(addr: u64, value: u32) {
    core::ptr::write_volatile(addr as *mut u32, value)
}
/// # Safety
/// As [`write8`].
#[inline(always)]
pub unsafe fn write64(addr: u64, value: u64) {
    core::ptr::write_volatile(addr as *mut u64, value)
}
