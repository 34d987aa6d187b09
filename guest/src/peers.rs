//! Who is connected, for guest programs: the server's peer state table in the shared memory
//! (`ivshmem-server --state-table OFFSET`, layout and reader in [`crate::state_table`]) and its
//! lifecycle doorbell (`--lifecycle-vector N`: the server rings vector N of every peer after
//! each join and leave) — what host peers learn from the protocol.
//!
//! The program is told the table's offset (and the lifecycle vector, if any) by its arguments;
//! the memory is never trusted: every read is bounded and a bad table is a [`ReadError`].
//! Without a lifecycle vector, waits re-read the table at every timer tick instead of sleeping
//! until the doorbell.
use crate::ivshmem::{Deadline, Ivshmem};
use crate::state_table::{self, SharedTable, TableMemory, DEFAULT_ATTEMPTS, TABLE_SIZE};
pub use crate::state_table::{Header, ReadError, Row, Snapshot};

/// The state table of one device.
#[derive(Clone, Copy, Debug)]
pub struct Peers {
    table: SharedTable,
    /// Our own MSI-X vector the server rings on joins and leaves, if configured.
    lifecycle: Option<u16>,
}

/// What a wait ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The condition holds: the peer is there (or gone, for a leave), with the header read.
    Done(Header),
    /// The timeout passed first.
    Timeout,
}

impl Peers {
    /// The table at byte `offset` of `dev`'s shared memory, woken by our `lifecycle` vector if
    /// given. `None` when the offset is not 8-aligned or the table does not fit: say so.
    pub fn new(dev: &Ivshmem, offset: u64, lifecycle: Option<u16>) -> Option<Peers> {
        if !offset.is_multiple_of(8) || offset.checked_add(TABLE_SIZE as u64)? > dev.shm_size {
            return None;
        }
        if lifecycle.is_some_and(|v| v >= dev.vectors) {
            return None;
        }
        let base = dev.shm + offset;
        // SAFETY: BAR2 is identity-mapped user memory for the program's life (the runtime never
        // unmaps it); `base` is 8-aligned (BAR2 is page-aligned and `offset` a multiple of 8)
        // and TABLE_SIZE bytes from it lie inside BAR2 (checked above).
        let table = unsafe { SharedTable::new(base as *const u8, TABLE_SIZE) };
        Some(Peers { table, lifecycle })
    }

    /// The lifecycle vector we wait on, if any.
    pub fn lifecycle(&self) -> Option<u16> {
        self.lifecycle
    }

    /// The header (peer count, generation): a cheap check that the table is there.
    pub fn header(&self) -> Result<Header, ReadError> {
        state_table::read_header(&self.table, DEFAULT_ATTEMPTS)
    }

    /// Every connected peer, by increasing id, into `out` (see [`state_table::read_rows`]).
    pub fn list(&self, out: &mut [Row]) -> Result<Snapshot, ReadError> {
        state_table::read_rows(&self.table, out, DEFAULT_ATTEMPTS)
    }

    /// Peer `id`'s row, if connected.
    pub fn get(&self, id: u16) -> Result<Option<Row>, ReadError> {
        state_table::read_row(&self.table, id, DEFAULT_ATTEMPTS).map(|(_, row)| row)
    }

    /// The first connected peer other than `own` (lowest id), if any.
    pub fn any_other(&self, own: u16) -> Result<Option<Row>, ReadError> {
        let mut rows = [Row::default(); 2];
        let snapshot = self.list(&mut rows)?;
        Ok(rows[..snapshot.present.min(2)]
            .iter()
            .copied()
            .find(|r| r.id != own))
    }

    /// Waits until `condition` (given a fresh table read) returns `Some`, or about
    /// `timeout_ns`. Sleeps until the lifecycle doorbell when there is one, otherwise re-reads
    /// at each timer tick. A read error ends the wait with that error.
    pub fn wait_for<T>(
        &self,
        dev: &Ivshmem,
        timeout_ns: u64,
        mut condition: impl FnMut(&Self) -> Result<Option<T>, ReadError>,
    ) -> Result<Option<T>, ReadError> {
        let deadline = Deadline::start(timeout_ns);
        loop {
            // Counter first, table second: a ring after our read moves the counter, so the
            // halt below cannot miss it.
            let seen = self.lifecycle.map(|v| dev.received(v));
            if let Some(found) = condition(self)? {
                return Ok(Some(found));
            }
            match (self.lifecycle, seen) {
                (Some(v), Some(seen)) => {
                    // Any interrupt ends a halt (the tick included): the table is read again
                    // only when the doorbell rang.
                    while dev.received(v) == seen {
                        if deadline.passed() {
                            return Ok(None);
                        }
                        crate::interrupts::halt_until_changed(dev.cpu_vector(v), seen);
                    }
                }
                _ => {
                    if deadline.passed() {
                        return Ok(None);
                    }
                    let tick = crate::interrupts::count(crate::layout::VECTOR_TIMER);
                    crate::interrupts::halt_until_changed(crate::layout::VECTOR_TIMER, tick);
                }
            }
        }
    }

    /// Waits until peer `id` is connected; its row, or `None` on timeout.
    pub fn wait_join(
        &self,
        dev: &Ivshmem,
        id: u16,
        timeout_ns: u64,
    ) -> Result<Option<Row>, ReadError> {
        self.wait_for(dev, timeout_ns, |p| p.get(id))
    }

    /// Waits until a peer other than `own` is connected; its row, or `None` on timeout.
    pub fn wait_any(
        &self,
        dev: &Ivshmem,
        own: u16,
        timeout_ns: u64,
    ) -> Result<Option<Row>, ReadError> {
        self.wait_for(dev, timeout_ns, |p| p.any_other(own))
    }

    /// Waits until peer `id` is gone; true when it is, false on timeout.
    pub fn wait_leave(&self, dev: &Ivshmem, id: u16, timeout_ns: u64) -> Result<bool, ReadError> {
        self.wait_for(dev, timeout_ns, |p| {
            Ok(match p.get(id)? {
                Some(_) => None,
                None => Some(()),
            })
        })
        .map(|done| done.is_some())
    }

    /// The table's memory, for programs that read it with [`state_table`] directly.
    pub fn memory(&self) -> &impl TableMemory {
        &self.table
    }
}
