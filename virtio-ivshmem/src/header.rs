//! [`Header`]: atomic access to one device's header in the shared memory, for both sides.
//!
//! Every field is one aligned atomic, so a value torn by a concurrent writer cannot be seen; the
//! values themselves come from another process and are checked by whoever acts on them
//! ([`crate::layout`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use peer::SharedMemory;

use crate::layout::{self, field, queue_field, queue_offset};

/// The header at `base` is not where a header can be.
#[derive(Debug, thiserror::Error)]
#[error(
    "a virtio header at offset {base:#x} must be 4 KiB aligned and lie inside the shared memory \
     ({shm_size:#x} bytes)"
)]
pub struct BadHeaderBase {
    /// The offset asked for.
    pub base: u64,
    /// The shared memory's size.
    pub shm_size: u64,
}

/// One device's header: `HEADER_SIZE` bytes at `base` in the shared memory.
#[derive(Clone, Copy)]
pub struct Header<'a> {
    shm: &'a SharedMemory,
    base: usize,
}

impl<'a> Header<'a> {
    /// The header at `base`, which must be 4 KiB aligned and inside the memory.
    pub fn new(shm: &'a SharedMemory, base: u64) -> Result<Header<'a>, BadHeaderBase> {
        let shm_size = shm.len() as u64;
        if !layout::valid_header_base(base, shm_size) {
            return Err(BadHeaderBase { base, shm_size });
        }
        Ok(Header {
            shm,
            base: base as usize,
        })
    }

    /// The header's offset in the shared memory.
    pub fn base(&self) -> u64 {
        self.base as u64
    }

    /// The shared memory it lives in.
    pub fn shm(&self) -> &'a SharedMemory {
        self.shm
    }

    fn u32_at(&self, offset: usize) -> &'a AtomicU32 {
        // The base was checked in `new` and every layout offset is an aligned field inside
        // HEADER_SIZE, so this cannot fail.
        self.shm
            .atomic_u32(self.base + offset)
            .expect("u32 field inside a checked header")
    }

    fn u64_at(&self, offset: usize) -> &'a AtomicU64 {
        self.shm
            .atomic_u64(self.base + offset)
            .expect("u64 field inside a checked header")
    }

    /// Reads a u32 field (acquire).
    pub fn get(&self, offset: usize) -> u32 {
        self.u32_at(offset).load(Ordering::Acquire)
    }

    /// Writes a u32 field (release).
    pub fn set(&self, offset: usize, value: u32) {
        self.u32_at(offset).store(value, Ordering::Release)
    }

    /// Reads a u64 field (acquire).
    pub fn get64(&self, offset: usize) -> u64 {
        self.u64_at(offset).load(Ordering::Acquire)
    }

    /// Writes a u64 field (release).
    pub fn set64(&self, offset: usize, value: u64) {
        self.u64_at(offset).store(value, Ordering::Release)
    }

    /// Reads field `f` of queue `q` (`q < MAX_QUEUES`).
    pub fn queue_get(&self, q: u32, f: usize) -> u32 {
        self.get(queue_offset(q.min(layout::MAX_QUEUES - 1), f))
    }

    /// Writes field `f` of queue `q` (`q < MAX_QUEUES`).
    pub fn queue_set(&self, q: u32, f: usize, value: u32) {
        self.set(queue_offset(q.min(layout::MAX_QUEUES - 1), f), value)
    }

    /// Reads u64 field `f` of queue `q`.
    pub fn queue_get64(&self, q: u32, f: usize) -> u64 {
        self.get64(queue_offset(q.min(layout::MAX_QUEUES - 1), f))
    }

    /// Writes u64 field `f` of queue `q`.
    pub fn queue_set64(&self, q: u32, f: usize, value: u64) {
        self.set64(queue_offset(q.min(layout::MAX_QUEUES - 1), f), value)
    }

    /// Compare-and-swap on a u32 field; returns the value found.
    pub fn compare_exchange(&self, offset: usize, current: u32, new: u32) -> Result<u32, u32> {
        self.u32_at(offset)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Adds 1 to a u32 field (wrapping) and returns the new value.
    pub fn bump(&self, offset: usize) -> u32 {
        self.u32_at(offset)
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1)
    }

    /// True when the magic and version say a live version-1 header is here.
    pub fn is_published(&self) -> bool {
        self.get64(field::MAGIC) == layout::MAGIC
            && self.get(field::VERSION) == layout::VERSION
            && self.get(field::HEADER_SIZE) == layout::HEADER_SIZE
    }

    /// Queue `q`'s set-up as the driver wrote it.
    pub fn queue_setup(&self, q: u32) -> layout::QueueSetup {
        layout::QueueSetup {
            size: self.queue_get(q, queue_field::SIZE),
            desc: self.queue_get64(q, queue_field::DESC),
            avail: self.queue_get64(q, queue_field::AVAIL),
            used: self.queue_get64(q, queue_field::USED),
        }
    }

    /// Copies `buf.len()` bytes of device configuration space from `offset` (bounded by
    /// CONFIG_MAX; bytes past it read as 0).
    pub fn read_config(&self, offset: usize, buf: &mut [u8]) {
        buf.fill(0);
        let end = offset.saturating_add(buf.len()).min(field::CONFIG_MAX);
        if offset < end {
            let _ = self
                .shm
                .read(self.base + field::CONFIG + offset, &mut buf[..end - offset]);
        }
    }

    /// Writes device configuration space (device side), truncated to CONFIG_MAX.
    pub fn write_config(&self, data: &[u8]) {
        let len = data.len().min(field::CONFIG_MAX);
        let _ = self.shm.write(self.base + field::CONFIG, &data[..len]);
        self.set(field::CONFIG_SIZE, len as u32);
    }
}
