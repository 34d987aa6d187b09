//! Port I/O from ring 3. Allowed by the I/O permission bitmap the VMM puts in every TSS (this
//! project's KVM ignores RFLAGS.IOPL for ring 3). Device access normally goes through MMIO; PIO
//! is for the string-I/O test, PIO benchmarks and legacy ports.
use core::arch::asm;

/// # Safety
/// Port I/O has device side effects.
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags));
}
/// # Safety
/// As [`outb`].
#[inline(always)]
pub unsafe fn outl(port: u16, value: u32) {
    asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags));
}
/// # Safety
/// As [`outb`].
#[inline(always)]
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    asm!("in eax, dx", in("dx") port, out("eax") value, options(nostack, preserves_flags));
    value
}
/// `rep outsb`: one string I/O instruction writing `bytes` to `port`.
///
/// # Safety
/// As [`outb`].
pub unsafe fn outsb(port: u16, bytes: &[u8]) {
    asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
         inout("rcx") bytes.len() => _, options(nostack, preserves_flags));
}
/// `rep insd`: one string I/O instruction filling `words` from `port`.
///
/// # Safety
/// As [`outb`].
pub unsafe fn insd(port: u16, words: &mut [u32]) {
    asm!("rep insd", in("dx") port, inout("rdi") words.as_mut_ptr() => _,
         inout("rcx") words.len() => _, options(nostack, preserves_flags));
}
