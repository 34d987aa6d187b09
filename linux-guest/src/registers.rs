//! The device's register page (BAR0) mapped into this process, uncached: ringing a doorbell is
//! one 32-bit store, without a system call.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::uapi;

/// One mapped page of registers; unmapped on drop.
#[derive(Debug)]
pub struct RegisterPage {
    base: NonNull<u8>,
    len: NonZeroUsize,
}

// SAFETY: the page is device memory owned by this value and only accessed with volatile 32-bit
// loads and stores, which any thread may issue.
unsafe impl Send for RegisterPage {}
// SAFETY: see `Send`; `&RegisterPage` offers only volatile register accesses.
unsafe impl Sync for RegisterPage {}

impl RegisterPage {
    /// Maps the register page of the device open as `device`.
    pub fn map(device: BorrowedFd<'_>) -> io::Result<RegisterPage> {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?
            .and_then(|n| usize::try_from(n).ok())
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::new(4096).expect("non-zero"));
        let offset = libc::off_t::try_from(uapi::REGS_MMAP_OFFSET)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh shared mapping at an address the kernel picks; the driver checks that
        // the range is the register page.
        let ptr = unsafe {
            mmap(
                None,
                page,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                device,
                offset,
            )
        }?;
        Ok(RegisterPage {
            base: ptr.cast(),
            len: page,
        })
    }

    fn register(&self, offset: usize) -> *mut u32 {
        debug_assert!(offset + 4 <= self.len.get() && offset & 3 == 0);
        // SAFETY: offsets are the uapi's register offsets, inside the first 256 bytes of the
        // mapped page and 4-byte aligned.
        unsafe { self.base.as_ptr().add(offset).cast() }
    }

    /// Writes the Doorbell register: rings `vector` of `peer`.
    pub fn ring(&self, peer: u16, vector: u16) {
        let value = (u32::from(peer) << 16) | u32::from(vector);
        // SAFETY: an aligned register inside the mapping, which lives as long as `self`; device
        // registers need volatile access.
        unsafe { self.register(uapi::REG_DOORBELL).write_volatile(value) }
    }

    /// Reads the IVPosition register.
    pub fn iv_position(&self) -> i32 {
        // SAFETY: as in `ring`.
        unsafe { self.register(uapi::REG_IV_POSITION).read_volatile() as i32 }
    }
}

impl Drop for RegisterPage {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; nothing borrows it past `self`.
        if let Err(e) = unsafe { munmap(self.base.cast(), self.len.get()) } {
            log::warn!("munmap of the register page failed: {e}");
        }
    }
}
