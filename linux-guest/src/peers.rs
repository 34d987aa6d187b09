//! Who is connected, for a Linux guest: the server's peer state table in the shared memory
//! (`ivshmem-server --state-table OFFSET`, layout and reader in [`protocol::state_table`]) and
//! its lifecycle doorbell (`--lifecycle-vector N`), giving [`GuestDevice`] what
//! [`peer::Peer::peers`] and [`peer::Peer::await_peer`] give host peers.
//!
//! The device cannot tell where the table is: the application says so with
//! [`GuestDevice::set_state_table`]. The memory is never trusted (any peer can write it): reads
//! are bounded and a bad table is a [`ReadError`], never a panic.
//!
//! ```no_run
//! use std::time::Duration;
//! let mut dev = ivshmem_guest::GuestDevice::open(0)?;
//! dev.set_state_table(2 << 20, Some(1))?;        // --state-table 2M --lifecycle-vector 1
//! for p in dev.peers()? {
//!     println!("peer_id={} vectors={}", p.id, p.vectors);
//! }
//! if let Some(p) = dev.wait_peer(None, Some(Duration::from_secs(5)))? {
//!     println!("peer {} is there", p.id);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use peer::PeerInfo;
pub use protocol::state_table::ReadError;
use protocol::state_table::{self, Header, Row, SharedTable, DEFAULT_ATTEMPTS, TABLE_SIZE};

use crate::device::{GuestDevice, StateTableConfig};
use crate::error::WaitError;

/// How often a wait re-reads the table when no lifecycle vector wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Why the peer list is not available.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// No state table was configured (`set_state_table`, `--state-table` on the client).
    #[error(
        "no state table configured: the device does not tell which peers are connected \
         (give the server's --state-table OFFSET)"
    )]
    NotConfigured,
    /// The offset cannot hold a table in this device's memory.
    #[error(
        "a state table at {offset} does not fit: it needs {TABLE_SIZE} bytes at a multiple of 8, \
         the shared memory has {size}"
    )]
    Placement {
        /// The offset asked for.
        offset: usize,
        /// The shared memory's size.
        size: usize,
    },
    /// The lifecycle vector is not one of ours.
    #[error("lifecycle vector {vector}: we have {vectors} vector(s)")]
    Lifecycle {
        /// The vector asked for.
        vector: u32,
        /// Our vector count.
        vectors: u32,
    },
    /// The table could not be read (not there, another layout, torn, scribbled on).
    #[error("{0}")]
    Read(#[from] ReadError),
    /// Waiting on the lifecycle vector failed.
    #[error("{0}")]
    Wait(#[from] WaitError),
}

impl GuestDevice {
    /// Says where the server keeps its state table (`offset`) and which of our vectors it rings
    /// on joins and leaves (`lifecycle`; without one, waits re-read the table every
    /// [`POLL_INTERVAL`]). Checks that the table fits; not that it is there (the server may
    /// write it later): reads say so.
    pub fn set_state_table(
        &mut self,
        offset: usize,
        lifecycle: Option<u32>,
    ) -> Result<(), PeersError> {
        let size = self.shm().len();
        if !offset.is_multiple_of(8) || offset.checked_add(TABLE_SIZE).is_none_or(|e| e > size) {
            return Err(PeersError::Placement { offset, size });
        }
        if let Some(vector) = lifecycle {
            if vector >= self.own_vector_count() {
                return Err(PeersError::Lifecycle {
                    vector,
                    vectors: self.own_vector_count(),
                });
            }
        }
        self.table = Some(StateTableConfig { offset, lifecycle });
        Ok(())
    }

    /// The state table configuration, if any.
    pub fn state_table(&self) -> Option<StateTableConfig> {
        self.table
    }

    fn table_memory(&self) -> Result<(SharedTable, StateTableConfig), PeersError> {
        let config = self.table.ok_or(PeersError::NotConfigured)?;
        // SAFETY: the offset was checked to leave TABLE_SIZE bytes inside the mapping, which
        // lives as long as `self` (the borrow of the result cannot outlive it: it is used
        // within the methods below only); the mapping is page-aligned and the offset a
        // multiple of 8.
        let table = unsafe { SharedTable::new(self.shm().as_ptr().add(config.offset), TABLE_SIZE) };
        Ok((table, config))
    }

    /// The table's header: peer count, vectors per peer, generation (+1 on every join and
    /// leave).
    pub fn table_header(&self) -> Result<Header, PeersError> {
        let (table, _) = self.table_memory()?;
        Ok(state_table::read_header(&table, DEFAULT_ATTEMPTS)?)
    }

    /// Every other connected peer (not ourselves), by id, as [`peer::Peer::peers`]. On an
    /// ivshmem-plain device (no id of its own) every connected peer.
    pub fn peers(&self) -> Result<Vec<PeerInfo>, PeersError> {
        let (table, _) = self.table_memory()?;
        // Sized for a few peers, grown if more are there (they may join between two reads: the
        // last try has room for every possible row, so this ends).
        let mut len = 64;
        for attempt in 0..5 {
            if attempt == 4 {
                len = state_table::ROWS;
            }
            let mut rows = vec![Row::default(); len];
            let snapshot = state_table::read_rows(&table, &mut rows, DEFAULT_ATTEMPTS)?;
            if snapshot.present <= rows.len() {
                rows.truncate(snapshot.present);
                // A plain device (no vectors) is not a peer: its IVPosition 0 is nobody's id.
                let own = self.id().filter(|_| self.own_vector_count() > 0);
                return Ok(rows
                    .into_iter()
                    .filter(|r| Some(r.id) != own)
                    .map(|r| PeerInfo {
                        id: r.id,
                        vectors: r.vectors,
                    })
                    .collect());
            }
            len = (snapshot.present + 64).min(state_table::ROWS);
        }
        // Not reached: the last read has room for every row.
        Err(ReadError::Busy { attempts: 5 }.into())
    }

    /// Peer `id` if it is connected.
    pub fn peer(&self, id: u16) -> Result<Option<PeerInfo>, PeersError> {
        let (table, _) = self.table_memory()?;
        let (_, row) = state_table::read_row(&table, id, DEFAULT_ATTEMPTS)?;
        Ok(row.map(|r| PeerInfo {
            id: r.id,
            vectors: r.vectors,
        }))
    }

    /// Waits until `peer` (any other peer when `None`) is connected, or `timeout` passes
    /// (`None`: forever): its [`PeerInfo`], `None` on timeout. Sleeps on the lifecycle vector
    /// when there is one (draining it: its rings are not reported to [`GuestDevice::wait`]),
    /// otherwise re-reads the table every [`POLL_INTERVAL`].
    pub fn wait_peer(
        &self,
        peer: Option<u16>,
        timeout: Option<Duration>,
    ) -> Result<Option<PeerInfo>, PeersError> {
        let (_, config) = self.table_memory()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // Drain first, read second: a ring after our read is still pending below.
            if let Some(v) = config.lifecycle {
                self.drain_vector(v)?;
            }
            let found = match peer {
                Some(id) => self.peer(id)?,
                None => self.peers()?.into_iter().next(),
            };
            if found.is_some() {
                return Ok(found);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            match config.lifecycle {
                Some(v) => {
                    self.wait_vector(v, left)?;
                }
                None => std::thread::sleep(left.map_or(POLL_INTERVAL, |l| l.min(POLL_INTERVAL))),
            }
        }
    }
}
