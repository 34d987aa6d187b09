//! The shared-memory mapping: one `MAP_SHARED` read/write mapping of the server's shared-memory fd,
//! with bounds-checked byte copies and aligned atomic views.
//!
//! Design: other processes (peers, guests) write this memory at any time, so nothing here hands out
//! `&[u8]` or `&mut [u8]` over the mapping — Rust references promise that the memory does not change
//! underneath them. Byte copies go through raw pointers instead, and synchronisation between peers
//! uses the atomic views ([`SharedMemory::atomic_u64`] and friends), which are sound on memory that
//! other processes modify concurrently.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;

/// Errors from mapping or accessing the shared memory.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// `fstat` of the shared-memory fd failed.
    #[error("cannot fstat the shared-memory fd: {0}")]
    Stat(#[source] std::io::Error),
    /// The fd reports size 0: there is nothing to map (a server that forgot to size its memory).
    #[error("the shared memory has size 0 (the server did not size it); refusing to map it")]
    ZeroSize,
    /// The fd reports a size this process cannot map (negative or larger than the address space).
    #[error("the shared memory size {0} bytes cannot be mapped on this host")]
    TooLarge(i64),
    /// `mmap` failed.
    #[error("cannot map {size} bytes of shared memory: {source}")]
    Map {
        /// Size we tried to map.
        size: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An access reaches outside the mapping.
    #[error(
        "access of {len} bytes at offset {offset:#x} is outside the shared memory (size {size:#x})"
    )]
    OutOfBounds {
        /// Start of the access.
        offset: usize,
        /// Length of the access in bytes.
        len: usize,
        /// Size of the shared memory.
        size: usize,
    },
    /// An atomic access at an offset that is not a multiple of its size.
    #[error("offset {offset:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The requested offset.
        offset: usize,
        /// The alignment the access needs.
        align: usize,
    },
}

/// A read/write, `MAP_SHARED` mapping of a shared-memory fd (write-back cached, as the kernel maps
/// shmem/hugetlbfs/memfd pages). Unmapped, and its fd closed, on drop.
///
/// All accessors check bounds. For raw speed, [`as_ptr`](Self::as_ptr) gives the base pointer.
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is not tied to a thread, and
// every access path either copies through raw pointers or uses atomics, which is what concurrent
// access from other processes requires anyway. Sharing it between threads adds nothing new.
unsafe impl Send for SharedMemory {}
// SAFETY: see `Send`: `&SharedMemory` only offers copies via raw pointers and atomic views.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Maps the whole of `fd` (size from `fstat`) read/write and `MAP_SHARED`, taking ownership of
    /// the fd. Refuses size 0 with [`ShmError::ZeroSize`].
    pub fn map(fd: OwnedFd) -> Result<SharedMemory, ShmError> {
        let stat = fstat(&fd).map_err(|e| ShmError::Stat(e.into()))?;
        let size = stat.st_size;
        if size == 0 {
            return Err(ShmError::ZeroSize);
        }
        let len = usize::try_from(size).map_err(|_| ShmError::TooLarge(size))?;
        SharedMemory::map_len(fd, len)
    }

    /// Maps the first `len` bytes of `fd` read/write and `MAP_SHARED`, taking ownership of the
    /// fd: for fds whose size `fstat` cannot tell, such as a device node (the guest driver's
    /// `/dev/ivshmemN`). Refuses `len` 0 with [`ShmError::ZeroSize`].
    pub fn map_len(fd: OwnedFd, len: usize) -> Result<SharedMemory, ShmError> {
        if isize::try_from(len).is_err() {
            return Err(ShmError::TooLarge(i64::try_from(len).unwrap_or(i64::MAX)));
        }
        let nonzero = NonZeroUsize::new(len).ok_or(ShmError::ZeroSize)?;
        // SAFETY: we ask the kernel for a fresh mapping at an address of its choosing, so no
        // existing Rust object is affected. The length is the fd's size (`map`) or the caller's
        // (`map_len`, for device nodes, whose driver refuses mappings larger than the device).
        let ptr = unsafe {
            mmap(
                None,
                nonzero,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| ShmError::Map {
            size: len,
            source: e.into(),
        })?;
        Ok(SharedMemory {
            base: ptr.cast(),
            len,
            fd,
        })
    }

    /// Size of the mapping in bytes (the fd's size when it was mapped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a zero-sized shared memory is refused when mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address of the mapping, for code that needs raw speed (e.g. `memcpy` of large blocks,
    /// SIMD, handing the memory to a device model).
    ///
    /// # Safety contract for users of the pointer
    /// - It is valid for reads and writes of [`len`](Self::len) bytes for as long as `self` lives;
    ///   it dangles after `self` is dropped.
    /// - Other processes may change any byte at any time. Do not create `&`/`&mut` references
    ///   (slices) over it unless you know nobody else writes that range meanwhile; prefer
    ///   `ptr::copy_nonoverlapping`, `read_volatile`/`write_volatile`, or atomics.
    /// - Keep accesses within `len` bytes.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The shared-memory fd (for example to pass it on, or to `fstat` it again).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Checks that `offset..offset+len` lies inside the mapping.
    pub fn check_range(&self, offset: usize, len: usize) -> Result<(), ShmError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ShmError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the shared memory into `buf`.
    ///
    /// The copy is not atomic: if another process writes the range meanwhile, `buf` may mix old
    /// and new bytes. Use the atomic views to synchronise.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), ShmError> {
        self.check_range(offset, buf.len())?;
        // SAFETY: the range is inside the mapping (checked above) and `buf` is private memory that
        // cannot overlap a mapping we created with mmap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    /// Copies `data` into the shared memory starting at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), ShmError> {
        self.check_range(offset, data.len())?;
        // SAFETY: the range is inside the mapping (checked above), which is writable, and `data`
        // cannot overlap the mapping (safe code never holds a slice over it).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.base.as_ptr().add(offset),
                data.len(),
            );
        }
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), ShmError> {
        self.check_range(offset, len)?;
        // SAFETY: the range is inside the writable mapping (checked above).
        unsafe { std::ptr::write_bytes(self.base.as_ptr().add(offset), byte, len) };
        Ok(())
    }

    /// Checks bounds and alignment for an `size`-byte atomic at `offset` and returns its address.
    fn atomic_ptr(&self, offset: usize, size: usize) -> Result<*mut u8, ShmError> {
        self.check_range(offset, size)?;
        // The mapping is page aligned, so the offset's alignment is the address's alignment;
        // sizes are powers of two.
        if offset & (size - 1) != 0 {
            return Err(ShmError::Misaligned {
                offset,
                align: size,
            });
        }
        // SAFETY: in bounds, checked above.
        Ok(unsafe { self.base.as_ptr().add(offset) })
    }

    /// An atomic view of the 8 bytes at `offset` (which must be 8-byte aligned). Other processes
    /// see these accesses as ordinary (lock-free, native-endian) 64-bit loads and stores, so this
    /// is the tool for flags, sequence numbers and volatile-style access (use `Relaxed` for a
    /// plain volatile load/store, `Acquire`/`Release` to order the surrounding copies).
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, ShmError> {
        let ptr = self.atomic_ptr(offset, 8)?;
        // SAFETY: the pointer is in bounds and 8-byte aligned, valid for the lifetime of `&self`
        // (the mapping lives as long as `self`); AtomicU64 has the layout of u64 and atomics are
        // the sanctioned way to access memory that others modify concurrently.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    /// An atomic view of the 4 bytes at `offset` (4-byte aligned). See [`atomic_u64`](Self::atomic_u64).
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, ShmError> {
        let ptr = self.atomic_ptr(offset, 4)?;
        // SAFETY: as in `atomic_u64`, with 4-byte alignment.
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast()) })
    }

    /// An atomic view of the byte at `offset`. See [`atomic_u64`](Self::atomic_u64).
    pub fn atomic_u8(&self, offset: usize) -> Result<&AtomicU8, ShmError> {
        let ptr = self.atomic_ptr(offset, 1)?;
        // SAFETY: as in `atomic_u64`; a byte is always aligned.
        Ok(unsafe { AtomicU8::from_ptr(ptr) })
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `map`; every reference
        // derived from it borrows `self`, so none outlives this point. The fd closes afterwards
        // when the `OwnedFd` field drops.
        if let Err(e) = unsafe { munmap(self.base.cast(), self.len) } {
            log::warn!("munmap of the shared memory failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn memfd(size: i64) -> OwnedFd {
        let fd = nix::sys::memfd::memfd_create("shm-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd_create");
        nix::unistd::ftruncate(&fd, size).expect("ftruncate");
        fd
    }

    #[test]
    fn zero_size_is_refused() {
        assert!(matches!(
            SharedMemory::map(memfd(0)),
            Err(ShmError::ZeroSize)
        ));
    }

    #[test]
    fn map_len_maps_a_prefix_and_refuses_zero() {
        let shm = SharedMemory::map_len(memfd(8192), 4096).unwrap();
        assert_eq!(shm.len(), 4096);
        assert!(shm.write(4095, b"ab").is_err());
        assert!(matches!(
            SharedMemory::map_len(memfd(4096), 0),
            Err(ShmError::ZeroSize)
        ));
    }

    #[test]
    fn read_write_round_trip_and_bounds() {
        let shm = SharedMemory::map(memfd(4096)).unwrap();
        assert_eq!(shm.len(), 4096);
        shm.write(4090, b"hello!").unwrap();
        let mut buf = [0u8; 6];
        shm.read(4090, &mut buf).unwrap();
        assert_eq!(&buf, b"hello!");
        assert!(matches!(
            shm.write(4091, b"hello!"),
            Err(ShmError::OutOfBounds {
                offset: 4091,
                len: 6,
                size: 4096
            })
        ));
        assert!(shm.read(usize::MAX, &mut buf).is_err());
        assert!(shm.read(4096, &mut []).is_ok());
        assert!(shm.read(4097, &mut []).is_err());
        shm.fill(0, 4096, 0xAB).unwrap();
        shm.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xAB; 6]);
    }

    #[test]
    fn two_mappings_of_one_fd_see_each_other() {
        let fd = memfd(8192);
        let other = fd.try_clone().unwrap();
        let a = SharedMemory::map(fd).unwrap();
        let b = SharedMemory::map(other).unwrap();
        a.atomic_u64(4096).unwrap().store(0x1122, Ordering::Release);
        assert_eq!(b.atomic_u64(4096).unwrap().load(Ordering::Acquire), 0x1122);
        let mut buf = [0u8; 8];
        b.read(4096, &mut buf).unwrap();
        assert_eq!(u64::from_ne_bytes(buf), 0x1122);
    }

    #[test]
    fn atomics_check_alignment_and_bounds() {
        let shm = SharedMemory::map(memfd(4096)).unwrap();
        assert!(matches!(
            shm.atomic_u64(4),
            Err(ShmError::Misaligned {
                offset: 4,
                align: 8
            })
        ));
        assert!(shm.atomic_u32(4).is_ok());
        assert!(shm.atomic_u64(4088).is_ok());
        assert!(matches!(
            shm.atomic_u64(4096),
            Err(ShmError::OutOfBounds { .. })
        ));
        assert!(shm.atomic_u8(4095).is_ok());
        assert!(shm.atomic_u8(4096).is_err());
    }
}
