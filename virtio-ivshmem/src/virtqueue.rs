//! [`DriverQueue`]: the driver's half of one split virtqueue whose rings live in the shared
//! memory.
//!
//! The ring formats are virtio-queue's ([`Descriptor`]; a used element is its `VirtqUsedElem`) and every access goes
//! through vm-memory's bounds-checked, volatile views of the shared mapping (atomic with
//! explicit ordering for the indices), the same crates the vhost-user backends use on the other
//! side. Each operation looks a ring up in the `GuestMemory` once, as a [`VolatileSlice`] of the
//! whole ring, and reaches its fields through that slice (a bounds check against the slice, not
//! another search of the memory's regions per field). What is ours is the driver's bookkeeping: which descriptors are free, which
//! chains are out, and our own copies of the indices, so nothing the device writes is trusted:
//! a used element naming a descriptor that is not out, or a used index that moved further than
//! what is out, is an error, never a panic or a double free.
//!
//! Any number of chains may be out at once (up to the queue size, or more with indirect
//! tables). Two ring features are implemented when negotiated:
//!
//! * **VIRTIO_F_EVENT_IDX** (virtio 1.2 §2.7.10): the driver kicks only when its avail index
//!   crosses the device's `avail_event` ([`needs_kick`](DriverQueue::needs_kick)), and asks for a
//!   call only when it is about to sleep, by writing `used_event`
//!   ([`arm_call`](DriverQueue::arm_call)); while it is busy taking used chains the device does
//!   not call at all.
//! * **VIRTIO_F_INDIRECT_DESC** (§2.7.5.3): a chain of two or more buffers takes one descriptor of
//!   the ring, pointing at a table of its own in the shared memory (one table per ring
//!   descriptor, allocated with the queue), so a queue of N entries holds N requests whatever
//!   their length.

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::volatile_memory::{self, VolatileMemory, VolatileSlice};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap,
};

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
    /// A field access inside a ring failed (cannot happen for a ring of the queue's size).
    #[error("ring field access failed: {0}")]
    Field(#[from] volatile_memory::Error),
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

/// Where a queue's indirect descriptor tables are: `entries` descriptors (16 bytes each) for
/// every ring descriptor, table `i` at `base + i * entries * 16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndirectTables {
    /// Offset of table 0 in the shared memory (16-byte aligned).
    pub base: u64,
    /// Descriptors per table: the longest chain that goes indirect.
    pub entries: u16,
}

impl IndirectTables {
    /// Bytes the tables of a queue of `size` entries take.
    pub fn bytes(size: u32, entries: u16) -> u64 {
        16 * size as u64 * entries as u64
    }
}

/// Ring features a queue uses (what was negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingFeatures {
    /// VIRTIO_F_EVENT_IDX: `used_event` / `avail_event` instead of the flags.
    pub event_idx: bool,
    /// VIRTIO_F_INDIRECT_DESC, with the tables allocated for it.
    pub indirect: Option<IndirectTables>,
}

/// Counters of one queue, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Chains made available.
    pub added: u64,
    /// Of those, chains placed in an indirect table.
    pub indirect: u64,
    /// Times the driver asked whether to kick and the device wanted it.
    pub kicks: u64,
    /// Times the driver asked whether to kick and the device did not want it (suppressed by
    /// `avail_event` or VRING_USED_F_NO_NOTIFY).
    pub kicks_suppressed: u64,
    /// Calls received (the sum of the call eventfd's counts the driver read).
    pub calls: u64,
    /// Waits for a used chain that went to sleep (armed a call and blocked).
    pub sleeps: u64,
    /// Waits for a used chain that found it by busy polling, after a first look found none.
    pub polled: u64,
}

/// Whether moving an index from `old` to `new` crossed `event` (vring_need_event, virtio 1.2
/// §2.7.10: the event index is the last one that does not need a notification).
pub fn event_crossed(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The shared memory view of one ring (or table), looked up once per operation.
type Ring<'a> = VolatileSlice<'a, ()>;

/// Stores `value` at `offset` of `ring` (a volatile, unaligned-safe store).
fn put<T: ByteValued>(ring: &Ring, offset: usize, value: T) -> Result<(), QueueError> {
    ring.get_ref::<T>(offset)?.store(value);
    Ok(())
}

/// Writes a chain of `readable` then `writable` buffers as descriptors of the table `table`;
/// `slot(i)` is the index in that table of the chain's `i`th descriptor. `written` is our copy
/// of what the table holds: a descriptor that would not change is not stored again, so a
/// request that reuses the descriptors and buffers of an earlier one leaves those cache lines
/// shared with the device's CPU instead of taking them back.
fn write_chain(
    table: &Ring,
    written: &mut [Descriptor],
    readable: &[Buffer],
    writable: &[Buffer],
    slot: impl Fn(usize) -> u16,
) -> Result<(), QueueError> {
    let count = readable.len() + writable.len();
    let buffers = readable
        .iter()
        .map(|b| (b, 0))
        .chain(writable.iter().map(|b| (b, VRING_DESC_F_WRITE as u16)));
    for (i, (buffer, write_flag)) in buffers.enumerate() {
        let (flags, next) = if i + 1 < count {
            (write_flag | VRING_DESC_F_NEXT as u16, slot(i + 1))
        } else {
            (write_flag, 0)
        };
        let desc = Descriptor::new(buffer.offset, buffer.len, flags, next);
        let at = slot(i) as usize;
        store_changed(table, &mut written[at], at, desc)?;
    }
    Ok(())
}

/// Stores descriptor `desc` at index `at` of `table` unless `copy`, our copy of that
/// descriptor, says it is there already.
fn store_changed(
    table: &Ring,
    copy: &mut Descriptor,
    at: usize,
    desc: Descriptor,
) -> Result<(), QueueError> {
    if copy.as_slice() != desc.as_slice() {
        put(table, 16 * at, desc)?;
        *copy = desc;
    }
    Ok(())
}

/// The driver side of one split virtqueue.
#[derive(Debug)]
pub struct DriverQueue {
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    features: RingFeatures,
    /// Chains of at least this many buffers go into an indirect table (when there are tables).
    indirect_min: usize,
    /// The avail index when the driver last decided whether to kick.
    kicked_avail: u16,
    stats: QueueStats,
    /// Free descriptor indices (a stack).
    free: Vec<u16>,
    /// What we last stored in each ring descriptor (the ring starts zeroed).
    ring_written: Vec<Descriptor>,
    /// What we last stored in each indirect table's descriptors, table after table.
    table_written: Vec<Descriptor>,
    /// For each head that is out: how many ring descriptors its chain took; 0 otherwise.
    chain_len: Vec<u16>,
    /// Our own copy of each ring descriptor's `next` (the shared copy may be scribbled on), so
    /// a returned chain is freed without reading the shared memory. Fixed arrays: adding and
    /// taking chains allocates nothing.
    next: Vec<u16>,
    outstanding: usize,
    /// Our avail index (the copy in memory is only ever written by us).
    next_avail: u16,
    /// The used index up to which we have taken elements.
    last_used: u16,
    /// The device's used index when we last read it (`last_used..used_seen` are announced and
    /// not yet taken).
    used_seen: u16,
}

impl DriverQueue {
    /// Takes over the rings described by `setup` (already validated) and zeroes them, using the
    /// negotiated ring `features` (indirect tables, if any, already allocated).
    pub fn new(
        mem: &GuestMemoryMmap,
        setup: QueueSetup,
        features: RingFeatures,
    ) -> Result<DriverQueue, QueueError> {
        let size = setup.size as u16;
        let zero = |addr: u64, len: u64| -> Result<(), GuestMemoryError> {
            mem.write_slice(&vec![0u8; len as usize], GuestAddress(addr))
        };
        zero(setup.desc, crate::layout::ring_size::desc(setup.size))?;
        zero(setup.avail, crate::layout::ring_size::avail(setup.size))?;
        zero(setup.used, crate::layout::ring_size::used(setup.size))?;
        let indirect = features.indirect.filter(|t| t.entries >= 2);
        // Zeroed like the ring, so that our copies of the tables start out true.
        let mut table_written = Vec::new();
        if let Some(t) = indirect {
            zero(t.base, IndirectTables::bytes(setup.size, t.entries))?;
            table_written = vec![Descriptor::default(); size as usize * t.entries as usize];
        }
        Ok(DriverQueue {
            size,
            desc: GuestAddress(setup.desc),
            avail: GuestAddress(setup.avail),
            used: GuestAddress(setup.used),
            features: RingFeatures {
                indirect,
                ..features
            },
            indirect_min: 2,
            kicked_avail: 0,
            stats: QueueStats::default(),
            free: (0..size).rev().collect(),
            ring_written: vec![Descriptor::default(); size as usize],
            table_written,
            chain_len: vec![0; size as usize],
            next: vec![0; size as usize],
            outstanding: 0,
            next_avail: 0,
            last_used: 0,
            used_seen: 0,
        })
    }

    /// Entries in the queue.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The descriptor ring.
    fn desc_ring<'m>(&self, mem: &'m GuestMemoryMmap) -> Result<Ring<'m>, QueueError> {
        let len = crate::layout::ring_size::desc(self.size as u32);
        Ok(mem.get_slice(self.desc, len as usize)?)
    }

    /// The avail ring, `used_event` included.
    fn avail_ring<'m>(&self, mem: &'m GuestMemoryMmap) -> Result<Ring<'m>, QueueError> {
        let len = crate::layout::ring_size::avail(self.size as u32);
        Ok(mem.get_slice(self.avail, len as usize)?)
    }

    /// The used ring, `avail_event` included.
    fn used_ring<'m>(&self, mem: &'m GuestMemoryMmap) -> Result<Ring<'m>, QueueError> {
        let len = crate::layout::ring_size::used(self.size as u32);
        Ok(mem.get_slice(self.used, len as usize)?)
    }

    /// Offset of `used_event` (written by us) in the avail ring.
    fn used_event_offset(&self) -> usize {
        4 + 2 * self.size as usize
    }

    /// Offset of `avail_event` (written by the device) in the used ring.
    fn avail_event_offset(&self) -> usize {
        4 + 8 * self.size as usize
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
        let buffers = readable.len() + writable.len();
        if buffers == 0 {
            return Err(QueueError::EmptyChain);
        }
        let table = self
            .features
            .indirect
            .filter(|t| buffers >= self.indirect_min && buffers <= t.entries as usize);
        let needed = if table.is_some() { 1 } else { buffers };
        if needed > self.free.len() {
            return Err(QueueError::Full {
                free: self.free.len(),
                needed,
            });
        }
        // The chain's descriptors are the top `needed` of the free stack, top first; they leave
        // the stack only once everything is written.
        let top = self.free.len() - 1;
        let id = |i: usize| self.free[top - i];
        let head = id(0);
        let desc_ring = self.desc_ring(mem)?;
        match table {
            // One ring descriptor pointing at this head's own table, which holds the chain
            // (indices into the table).
            Some(t) => {
                let at = t.base + 16 * t.entries as u64 * head as u64;
                let table = mem.get_slice(GuestAddress(at), 16 * buffers)?;
                // Our copies of this head's table (`new` made one per ring descriptor).
                let first = t.entries as usize * head as usize;
                let copy = &mut self.table_written[first..first + buffers];
                write_chain(&table, copy, readable, writable, |i| i as u16)?;
                let desc =
                    Descriptor::new(at, 16 * buffers as u32, VRING_DESC_F_INDIRECT as u16, 0);
                let copy = &mut self.ring_written[head as usize];
                store_changed(&desc_ring, copy, head as usize, desc)?;
            }
            None => write_chain(&desc_ring, &mut self.ring_written, readable, writable, id)?,
        }
        let avail_ring = self.avail_ring(mem)?;
        put(
            &avail_ring,
            4 + 2 * (self.next_avail % self.size) as usize,
            head,
        )?;
        for i in 0..needed - 1 {
            self.next[id(i) as usize] = id(i + 1);
        }
        self.free.truncate(self.free.len() - needed);
        self.chain_len[head as usize] = needed as u16;
        self.outstanding += 1;
        self.stats.added += 1;
        self.stats.indirect += u64::from(table.is_some());
        self.next_avail = self.next_avail.wrapping_add(1);
        // The descriptors and the ring slot must be visible before the index that publishes them.
        // Published at once: a device busy on large requests would otherwise wait for the next
        // chain until the driver has taken all the used ones it knows of.
        avail_ring.store(self.next_avail, 2, Ordering::Release)?;
        Ok(head)
    }

    /// Whether the device wants a kick for what was added since the last time this was asked:
    /// with EVENT_IDX, whether the avail index crossed the device's `avail_event`; otherwise,
    /// whether it has not set VRING_USED_F_NO_NOTIFY. Counted in [`stats`](Self::stats).
    pub fn needs_kick(&mut self, mem: &GuestMemoryMmap) -> bool {
        // Order our avail index store before reading the device's side (virtio 1.2 §2.7.13.3.1).
        fence(Ordering::SeqCst);
        let new = self.next_avail;
        let old = std::mem::replace(&mut self.kicked_avail, new);
        let used_ring = self.used_ring(mem);
        let kick = if self.features.event_idx {
            used_ring
                .and_then(|r| Ok(r.load::<u16>(self.avail_event_offset(), Ordering::Acquire)?))
                .map_or(true, |event| event_crossed(event, new, old))
        } else {
            new != old
                && used_ring
                    .and_then(|r| Ok(r.load::<u16>(0, Ordering::Acquire)?))
                    .map_or(true, |flags| flags & VRING_USED_F_NO_NOTIFY as u16 == 0)
        };
        if kick {
            self.stats.kicks += 1;
        } else if new != old {
            self.stats.kicks_suppressed += 1;
        }
        kick
    }

    /// Before sleeping for a call: with EVENT_IDX, asks the device to call once the used index
    /// moves past the next `count - 1` chains (`used_event`; 1 = the next chain). Then the caller
    /// must look at the used ring again before sleeping (a chain used before the device saw
    /// `used_event` brings no call). Without EVENT_IDX the device calls after every batch and
    /// this does nothing.
    pub fn arm_call(&mut self, mem: &GuestMemoryMmap, count: u16) -> Result<(), QueueError> {
        if self.features.event_idx {
            let event = self.last_used.wrapping_add(count.max(1) - 1);
            let at = self.used_event_offset();
            self.avail_ring(mem)?.store(event, at, Ordering::Release)?;
            // Our used_event store before the caller's next look at the used index.
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    /// Chains of at least `buffers` buffers (default 2) go into an indirect table when the
    /// queue has tables; 1 sends every chain through one (a single-buffer chain gains nothing
    /// from it, but it shows whether a backend follows tables).
    pub fn set_indirect_min(&mut self, buffers: usize) {
        self.indirect_min = buffers.max(1);
    }

    /// Counts `n` calls received.
    pub fn count_calls(&mut self, n: u64) {
        self.stats.calls += n;
    }

    /// Counts a wait that went to sleep.
    pub fn count_sleep(&mut self) {
        self.stats.sleeps += 1;
    }

    /// Counts a wait that busy polling satisfied.
    pub fn count_polled(&mut self) {
        self.stats.polled += 1;
    }

    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// The ring features in use.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Takes the next chain the device has used, if any.
    pub fn pop_used(&mut self, mem: &GuestMemoryMmap) -> Result<Option<Used>, QueueError> {
        let used_ring = self.used_ring(mem)?;
        // The device's used index is read again only once the elements it announced last time
        // are taken: a batch of used chains costs one load of the line the device keeps writing.
        if self.used_seen == self.last_used {
            let used_idx: u16 = used_ring.load(2, Ordering::Acquire)?;
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
            self.used_seen = used_idx;
        }
        let at = 4 + 8 * (self.last_used % self.size) as usize;
        // A used element is (id: le32, len: le32), virtio-queue's `VirtqUsedElem`: one load.
        let [id, len] = used_ring.get_ref::<[u32; 2]>(at)?.load().map(u32::from_le);
        let chain = usize::try_from(id)
            .ok()
            .and_then(|i| self.chain_len.get_mut(i))
            .map(std::mem::take)
            .filter(|&n| n != 0)
            .ok_or(QueueError::BadUsedId { id })?;
        // Back on the free stack with the head on top, so that the next chain of the same
        // length takes the same descriptors in the same order (and, when its buffers are the
        // same too, stores nothing: see write_chain).
        let first = self.free.len();
        let mut desc = id as u16;
        for _ in 0..chain {
            self.free.push(desc);
            desc = self.next[desc as usize];
        }
        self.free[first..].reverse();
        self.outstanding -= 1;
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some(Used {
            token: id as u16,
            len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Address, Le32};

    const SIZE: u32 = 8;

    fn setup() -> (GuestMemoryMmap, QueueSetup) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let setup = QueueSetup {
            size: SIZE,
            desc: 0x1000,
            avail: 0x2000,
            used: 0x3000,
        };
        (mem, setup)
    }

    /// Plays the device: returns chain `id` as used.
    fn use_chain(mem: &GuestMemoryMmap, q: &QueueSetup, used_idx: &mut u16, id: u16) {
        let at = GuestAddress(q.used + 4 + 8 * (*used_idx % SIZE as u16) as u64);
        mem.write_obj(Le32::from(id as u32), at).unwrap();
        mem.write_obj(Le32::from(7u32), at.unchecked_add(4))
            .unwrap();
        *used_idx = used_idx.wrapping_add(1);
        mem.store(*used_idx, GuestAddress(q.used + 2), Ordering::Release)
            .unwrap();
    }

    fn buf(offset: u64) -> Buffer {
        Buffer { offset, len: 16 }
    }

    #[test]
    fn event_index_crossing_follows_the_spec() {
        // The event index is the last index that does not need a notification.
        assert!(event_crossed(0, 1, 0));
        assert!(!event_crossed(1, 1, 0));
        assert!(event_crossed(4, 10, 3));
        assert!(!event_crossed(12, 10, 3));
        assert!(event_crossed(u16::MAX, 2, u16::MAX - 1)); // across the wrap
    }

    #[test]
    fn chains_direct_and_indirect_come_back_to_the_free_list() {
        let (mem, q) = setup();
        let tables = IndirectTables {
            base: 0x4000,
            entries: 4,
        };
        let features = RingFeatures {
            event_idx: true,
            indirect: Some(tables),
        };
        let mut ring = DriverQueue::new(&mem, q, features).unwrap();
        // Four 3-buffer chains in indirect tables take four ring descriptors.
        let mut heads = Vec::new();
        for i in 0..4 {
            heads.push(
                ring.add(&mem, &[buf(0x8000 + i)], &[buf(0x9000), buf(0xA000)])
                    .unwrap(),
            );
        }
        assert_eq!(ring.free_descriptors(), 4);
        let d: Descriptor = mem
            .read_obj(GuestAddress(q.desc + 16 * heads[0] as u64))
            .unwrap();
        assert_eq!(d.flags(), VRING_DESC_F_INDIRECT as u16);
        assert_eq!(d.len(), 48);
        // A 5-buffer chain does not fit a table: it takes 5 descriptors, of which 4 are free.
        let five = [buf(0), buf(0), buf(0), buf(0), buf(0)];
        assert!(matches!(
            ring.add(&mem, &five, &[]),
            Err(QueueError::Full { free: 4, needed: 5 })
        ));
        // With tables from 3 buffers on, a 2-buffer chain is direct.
        ring.set_indirect_min(3);
        let direct = ring.add(&mem, &[buf(1)], &[buf(2)]).unwrap();
        assert_eq!(ring.free_descriptors(), 2);
        let d: Descriptor = mem
            .read_obj(GuestAddress(q.desc + 16 * direct as u64))
            .unwrap();
        assert_eq!(d.flags(), VRING_DESC_F_NEXT as u16);
        // Returned out of order; a second return of the same chain is an error.
        let mut used_idx = 0;
        for &id in [direct, heads[2], heads[0], heads[3], heads[1]].iter() {
            use_chain(&mem, &q, &mut used_idx, id);
            assert_eq!(ring.pop_used(&mem).unwrap().map(|u| u.token), Some(id));
        }
        assert_eq!((ring.free_descriptors(), ring.outstanding()), (8, 0));
        let again = ring.add(&mem, &[buf(1)], &[]).unwrap();
        use_chain(&mem, &q, &mut used_idx, heads[1]);
        if heads[1] != again {
            assert!(matches!(
                ring.pop_used(&mem),
                Err(QueueError::BadUsedId { .. })
            ));
        }
        let stats = ring.stats();
        assert_eq!((stats.added, stats.indirect), (6, 4));
    }

    #[test]
    fn the_used_index_is_read_once_per_batch() {
        let (mem, q) = setup();
        let mut ring = DriverQueue::new(&mem, q, RingFeatures::default()).unwrap();
        let heads: Vec<u16> = (0..3)
            .map(|_| ring.add(&mem, &[buf(0)], &[]).unwrap())
            .collect();
        let mut used_idx = 0;
        use_chain(&mem, &q, &mut used_idx, heads[0]);
        use_chain(&mem, &q, &mut used_idx, heads[1]);
        assert_eq!(
            ring.pop_used(&mem).unwrap().map(|u| u.token),
            Some(heads[0])
        );
        // The device's index now goes back to 1 (a device can write anything): the element
        // announced with the first is still taken, from what was read then.
        mem.store(1u16, GuestAddress(q.used + 2), Ordering::Release)
            .unwrap();
        assert_eq!(
            ring.pop_used(&mem).unwrap().map(|u| u.token),
            Some(heads[1])
        );
        // The next look reads the index again and finds the device's step back.
        assert!(matches!(
            ring.pop_used(&mem),
            Err(QueueError::BadUsedIndex { .. })
        ));
    }

    #[test]
    fn a_chain_that_reuses_descriptors_and_buffers_stores_nothing() {
        let (mem, q) = setup();
        let mut ring = DriverQueue::new(&mem, q, RingFeatures::default()).unwrap();
        let desc = |mem: &GuestMemoryMmap, i: u16| -> Descriptor {
            mem.read_obj(GuestAddress(q.desc + 16 * i as u64)).unwrap()
        };
        let head = ring.add(&mem, &[buf(0x100)], &[buf(0x200)]).unwrap();
        let second = ring.next[head as usize];
        ring.needs_kick(&mem);
        let mut used_idx = 0;
        use_chain(&mem, &q, &mut used_idx, head);
        assert!(ring.pop_used(&mem).unwrap().is_some());
        // Freed with its head on top: the same chain takes the same descriptors, and since they
        // already hold it, they are not written (a mark left in one stays).
        mem.write_obj(0xDEADu32, GuestAddress(q.desc + 16 * second as u64 + 8))
            .unwrap();
        assert_eq!(ring.add(&mem, &[buf(0x100)], &[buf(0x200)]).unwrap(), head);
        assert_eq!(desc(&mem, second).len(), 0xDEAD);
        assert_eq!(desc(&mem, head).addr().0, 0x100);
        // Different buffers are written.
        ring.needs_kick(&mem);
        use_chain(&mem, &q, &mut used_idx, head);
        assert!(ring.pop_used(&mem).unwrap().is_some());
        ring.add(&mem, &[buf(0x100)], &[buf(0x300)]).unwrap();
        assert_eq!(
            (desc(&mem, second).addr().0, desc(&mem, second).len()),
            (0x300, 16)
        );
    }

    #[test]
    fn event_idx_kicks_only_when_the_device_asked() {
        let (mem, q) = setup();
        let features = RingFeatures {
            event_idx: true,
            indirect: None,
        };
        let mut ring = DriverQueue::new(&mem, q, features).unwrap();
        let avail_event = GuestAddress(q.used + 4 + 8 * SIZE as u64);
        // avail_event 0: the first chain needs a kick, the next ones do not.
        ring.add(&mem, &[buf(0)], &[]).unwrap();
        assert!(ring.needs_kick(&mem));
        ring.add(&mem, &[buf(0)], &[]).unwrap();
        assert!(!ring.needs_kick(&mem));
        // The device went back to sleep at index 2: the third chain kicks.
        mem.store(2u16, avail_event, Ordering::Release).unwrap();
        ring.add(&mem, &[buf(0)], &[]).unwrap();
        assert!(ring.needs_kick(&mem));
        assert_eq!((ring.stats().kicks, ring.stats().kicks_suppressed), (2, 1));
        // used_event: a call after `count` more chains.
        ring.arm_call(&mem, 3).unwrap();
        let used_event: u16 = mem
            .load(
                GuestAddress(q.avail + 4 + 2 * SIZE as u64),
                Ordering::Acquire,
            )
            .unwrap();
        assert_eq!(used_event, 2);
    }
}
