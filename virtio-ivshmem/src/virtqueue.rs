//! [`DriverQueue`]: the driver's half of one split virtqueue whose rings live in the shared
//! memory.
//!
//! The ring formats are virtio-queue's ([`Descriptor`]; a used element is its `VirtqUsedElem`) and every access goes
//! through vm-memory's bounds-checked, volatile `GuestMemory` over the shared mapping (atomic
//! with explicit ordering for the two indices), the same crates the vhost-user backends use on
//! the other side. What is ours is the driver's bookkeeping: which descriptors are free, which
//! chains are out, and our own copies of the indices, so nothing the device writes is trusted:
//! a used element naming a descriptor that is not out, or a used index that moved further than
//! what is out, is an error, never a panic or a double free.

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap, Le32};

use crate::layout::QueueSetup;
pub use crate::layout::{Buffer, Used};

/// What can go wrong on a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Not enough free descriptors for the chain.
    #[error("the queue has {free} free descriptors, the chain needs {needed}")]
    Full {
        /// Free descriptors.
        free: usize,
        /// Descriptors the chain needs.
        needed: usize,
    },
    /// A chain needs at least one buffer.
    #[error("a chain needs at least one buffer")]
    EmptyChain,
    /// A ring access failed (outside the shared memory).
    #[error("ring access failed: {0}")]
    Memory(#[from] GuestMemoryError),
    /// The device returned a chain that is not out.
    #[error("the device returned descriptor {id}, which is not an outstanding chain head")]
    BadUsedId {
        /// The id it wrote.
        id: u32,
    },
    /// The device's used index moved past what is out.
    #[error("the device's used index moved by {moved} with only {outstanding} chains out")]
    BadUsedIndex {
        /// How far it moved since we last looked.
        moved: u16,
        /// Chains out.
        outstanding: usize,
    },
}

/// The driver side of one split virtqueue.
#[derive(Debug)]
pub struct DriverQueue {
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    /// Free descriptor indices (a stack).
    free: Vec<u16>,
    /// For each head that is out: the descriptors of its chain.
    chains: Vec<Option<Vec<u16>>>,
    outstanding: usize,
    /// Our avail index (the copy in memory is only ever written by us).
    next_avail: u16,
    /// The used index up to which we have taken elements.
    last_used: u16,
}

impl DriverQueue {
    /// Takes over the rings described by `setup` (already validated) and zeroes them.
    pub fn new(mem: &GuestMemoryMmap, setup: QueueSetup) -> Result<DriverQueue, QueueError> {
        let size = setup.size as u16;
        let zero = |addr: u64, len: u64| -> Result<(), GuestMemoryError> {
            mem.write_slice(&vec![0u8; len as usize], GuestAddress(addr))
        };
        zero(setup.desc, crate::layout::ring_size::desc(setup.size))?;
        zero(setup.avail, crate::layout::ring_size::avail(setup.size))?;
        zero(setup.used, crate::layout::ring_size::used(setup.size))?;
        Ok(DriverQueue {
            size,
            desc: GuestAddress(setup.desc),
            avail: GuestAddress(setup.avail),
            used: GuestAddress(setup.used),
            free: (0..size).rev().collect(),
            chains: vec![None; size as usize],
            outstanding: 0,
            next_avail: 0,
            last_used: 0,
        })
    }

    /// Entries in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Chains handed to the device and not yet returned.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Makes a chain of `readable` buffers (device reads) followed by `writable` ones (device
    /// writes) available to the device. Returns its token. Call [`needs_kick`](Self::needs_kick)
    /// afterwards and ring the device if it says so.
    pub fn add(
        &mut self,
        mem: &GuestMemoryMmap,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> Result<u16, QueueError> {
        let needed = readable.len() + writable.len();
        if needed == 0 {
            return Err(QueueError::EmptyChain);
        }
        if needed > self.free.len() {
            return Err(QueueError::Full {
                free: self.free.len(),
                needed,
            });
        }
        let ids: Vec<u16> = (0..needed).map(|_| self.free.pop().unwrap_or(0)).collect();
        let buffers = readable
            .iter()
            .map(|b| (b, 0))
            .chain(writable.iter().map(|b| (b, VRING_DESC_F_WRITE as u16)));
        for (i, (buffer, write_flag)) in buffers.enumerate() {
            let (flags, next) = match ids.get(i + 1) {
                Some(&next) => (write_flag | VRING_DESC_F_NEXT as u16, next),
                None => (write_flag, 0),
            };
            let desc = Descriptor::new(buffer.offset, buffer.len, flags, next);
            let at = self.desc.unchecked_add(16 * ids[i] as u64);
            if let Err(e) = mem.write_obj(desc, at) {
                self.free.extend(ids.iter().rev());
                return Err(e.into());
            }
        }
        let head = ids[0];
        let slot = self
            .avail
            .unchecked_add(4 + 2 * (self.next_avail % self.size) as u64);
        if let Err(e) = mem.write_obj(head, slot) {
            self.free.extend(ids.iter().rev());
            return Err(e.into());
        }
        self.chains[head as usize] = Some(ids);
        self.outstanding += 1;
        self.next_avail = self.next_avail.wrapping_add(1);
        // The descriptors and the ring slot must be visible before the index that publishes them.
        mem.store(
            self.next_avail,
            self.avail.unchecked_add(2),
            Ordering::Release,
        )?;
        Ok(head)
    }

    /// Whether the device wants a kick for what was just added (it has not set
    /// VRING_USED_F_NO_NOTIFY).
    pub fn needs_kick(&self, mem: &GuestMemoryMmap) -> bool {
        // Order our avail index store before reading the device's flag (virtio 1.2 §2.7.13.3.1).
        fence(Ordering::SeqCst);
        mem.load::<u16>(self.used, Ordering::Acquire)
            .map_or(true, |flags| flags & VRING_USED_F_NO_NOTIFY as u16 == 0)
    }

    /// Takes the next chain the device has used, if any.
    pub fn pop_used(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Used>, QueueError> {
        let used_idx: u16 = mem.load(self.used.unchecked_add(2), Ordering::Acquire)?;
        let moved = used_idx.wrapping_sub(self.last_used);
        if moved == 0 {
            return Ok(None);
        }
        if moved as usize > self.outstanding {
            return Err(QueueError::BadUsedIndex {
                moved,
                outstanding: self.outstanding,
            });
        }
        let at = self
            .used
            .unchecked_add(4 + 8 * (self.last_used % self.size) as u64);
        // A used element is (id: le32, len: le32), virtio-queue's `VirtqUsedElem`.
        let id = u32::from(mem.read_obj::<Le32>(at)?);
        let len = u32::from(mem.read_obj::<Le32>(at.unchecked_add(4))?);
        let chain = usize::try_from(id)
            .ok()
            .and_then(|i| self.chains.get_mut(i))
            .and_then(Option::take)
            .ok_or(QueueError::BadUsedId { id })?;
        self.free.extend(chain.iter().rev());
        self.outstanding -= 1;
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some(Used {
            token: id as u16,
            len,
        }))
    }
}
