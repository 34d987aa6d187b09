//! The opt-in state table (`ivshmem-server --state-table OFFSET`): who is connected, kept by the
//! server in the shared memory itself, so that guests (which see only the memory and their
//! doorbell) can know what host peers learn from the protocol. Layout version 1, every field
//! little-endian and naturally aligned, at a byte offset that is a multiple of 8
//! (docs/protocol.md, "The state table"):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic [`MAGIC`] (`IVST`) |
//! | 4 | 4 | layout version ([`VERSION`]) |
//! | 8 | 8 | sequence counter: odd while the server writes, even when consistent |
//! | 16 | 4 | rows ([`ROWS`], one per possible peer id) |
//! | 20 | 4 | row size ([`ROW_SIZE`]) |
//! | 24 | 4 | peers connected |
//! | 28 | 4 | vectors per peer (the server's `-n`) |
//! | 32 | 8 | generation: +1 on every join and leave |
//! | 40 | 24 | reserved, 0 |
//! | 64 + 16 × id | 16 | row of peer `id`: state `u32` ([`ABSENT`] / [`PRESENT`]), vectors `u32`, generation `u64` at its last change |
//!
//! Reading (seqlock): load the sequence (acquire); if odd, retry; copy what is needed with
//! relaxed loads; fence (acquire); load the sequence again: if it changed, retry.
//!
//! The reader ([`read_header`], [`read_row`], [`read_rows`]) is written against `core` only and
//! never trusts the memory: it works over any [`TableMemory`] (a byte slice, or [`SharedTable`]
//! over live shared memory), retries a bounded number of times, checks the magic, version,
//! geometry and every row it uses, and allocates nothing. The no_std guest runtime compiles
//! this very file (`guest/src/lib.rs`), so host tools, the Linux guest library and guest
//! programs read the table with one implementation.

/// `IVST`, little-endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"IVST");
/// The layout described here.
pub const VERSION: u32 = 1;
/// Bytes before the first row.
pub const HEADER_SIZE: usize = 64;
/// Bytes per row.
pub const ROW_SIZE: usize = 16;
/// One row per possible peer id.
pub const ROWS: usize = 1 << 16;
/// The whole table: 1 MiB + 64 bytes.
pub const TABLE_SIZE: usize = HEADER_SIZE + ROWS * ROW_SIZE;

/// Header field offsets.
pub mod header {
    /// [`super::MAGIC`].
    pub const MAGIC: usize = 0;
    /// [`super::VERSION`].
    pub const VERSION: usize = 4;
    /// The sequence counter.
    pub const SEQUENCE: usize = 8;
    /// Row count.
    pub const ROWS: usize = 16;
    /// Row size.
    pub const ROW_SIZE: usize = 20;
    /// Peers connected.
    pub const PEERS: usize = 24;
    /// Vectors per peer.
    pub const VECTORS: usize = 28;
    /// Generation.
    pub const GENERATION: usize = 32;
}

/// Row state: no peer with this id.
pub const ABSENT: u32 = 0;
/// Row state: a peer with this id is connected.
pub const PRESENT: u32 = 1;

/// Offset of row `id` from the start of the table.
pub const fn row_offset(id: u16) -> usize {
    HEADER_SIZE + id as usize * ROW_SIZE
}

// ---------------------------------------------------------------------------------------------
// The reader. `core` only: the no_std guest runtime compiles this file too (`#[path]` in
// `guest/src/lib.rs`), so the Linux guest library, host tools and guest programs share one
// reader. The memory is never trusted: another peer can write anything there at any time, so
// every loop is bounded, every field is checked and every failure is a named [`ReadError`].
// ---------------------------------------------------------------------------------------------

use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// How many times [`read_header`], [`read_row`] and [`read_rows`] retry by default when the
/// server is writing (odd sequence) or wrote while they read (the sequence moved).
pub const DEFAULT_ATTEMPTS: u32 = 1000;

/// Most vectors a row may claim: the Doorbell register's vector field has 16 bits.
pub const MAX_VECTORS: u32 = 1 << 16;

/// Where the reader loads the table's fields from: offsets are from the table's start,
/// naturally aligned. Loads outside [`TableMemory::len`] must not fault (return anything);
/// the reader never makes them once [`TableMemory::len`] is at least [`TABLE_SIZE`].
pub trait TableMemory {
    /// Bytes readable from the table's start.
    fn len(&self) -> usize;
    /// True when nothing is readable.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `u32` at `at` (relaxed).
    fn load_u32(&self, at: usize) -> u32;
    /// The `u64` at `at` (relaxed).
    fn load_u64(&self, at: usize) -> u64;
}

/// A byte slice holding a copy of the table (tests, fuzzing, a table read from a file).
impl TableMemory for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn load_u32(&self, at: usize) -> u32 {
        match self.get(at..at.saturating_add(4)) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }
    fn load_u64(&self, at: usize) -> u64 {
        match self.get(at..at.saturating_add(8)) {
            Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => 0,
        }
    }
}

/// The table in live shared memory (a mapping of the server's memory, or a guest's BAR2),
/// read with atomic loads because the server and other peers write it concurrently.
#[derive(Debug, Clone, Copy)]
pub struct SharedTable {
    base: *const u8,
    len: usize,
}

impl SharedTable {
    /// The table at `base`, with `len` bytes readable from there (the rest of the memory).
    ///
    /// # Safety
    /// `base` is 8-aligned and `len` bytes from it stay mapped and readable while the value
    /// (or a copy) is used; other processes may write them at any time.
    pub unsafe fn new(base: *const u8, len: usize) -> SharedTable {
        SharedTable { base, len }
    }
}

impl TableMemory for SharedTable {
    fn len(&self) -> usize {
        self.len
    }
    fn load_u32(&self, at: usize) -> u32 {
        if at.checked_add(4).is_none_or(|end| end > self.len) || !at.is_multiple_of(4) {
            return 0;
        }
        // SAFETY: inside the readable range and 4-aligned (base is 8-aligned, checked above);
        // atomics are how memory that others write concurrently is read.
        unsafe { AtomicU32::from_ptr(self.base.add(at) as *mut u32).load(Ordering::Relaxed) }
    }
    fn load_u64(&self, at: usize) -> u64 {
        if at.checked_add(8).is_none_or(|end| end > self.len) || !at.is_multiple_of(8) {
            return 0;
        }
        // SAFETY: as in load_u32, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.base.add(at) as *mut u64).load(Ordering::Relaxed) }
    }
}

/// The table's header, read consistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The (even) sequence counter the read was consistent with.
    pub sequence: u64,
    /// Peers connected.
    pub peers: u32,
    /// Vectors per peer (the server's `-n`).
    pub vectors: u32,
    /// +1 on every join and leave: a change means someone joined or left.
    pub generation: u64,
}

/// One connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Row {
    /// Its id.
    pub id: u16,
    /// How many vectors it has.
    pub vectors: u32,
    /// The table generation at its join, or at the last rewrite of the whole table (a server
    /// starting, upgrading or restarting gives every row a new one): tell peers apart by id.
    pub generation: u64,
}

/// Why the table could not be read. None of these is a panic: the memory is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Fewer than [`TABLE_SIZE`] bytes from the table's offset to the end of the memory.
    TooSmall {
        /// Bytes there are.
        have: usize,
    },
    /// No table there: the magic is not `IVST` (a server without `--state-table`, another
    /// offset, or the memory was overwritten).
    NoTable {
        /// What is there instead.
        magic: u32,
    },
    /// A table of a layout version this reader does not know.
    Version {
        /// The version found.
        version: u32,
    },
    /// The header's geometry is not layout 1's (rows, row size).
    Geometry {
        /// Rows found.
        rows: u32,
        /// Row size found.
        row_size: u32,
    },
    /// No consistent read within the attempts: the server kept writing, or a write never
    /// finished (a server killed in the middle, until its replacement rewrites the table).
    Busy {
        /// Attempts made.
        attempts: u32,
    },
    /// A row's state is neither absent nor present.
    BadRow {
        /// The row's id.
        id: u16,
        /// The state found.
        state: u32,
    },
    /// A present row claims more vectors than a doorbell can address ([`MAX_VECTORS`]).
    BadVectors {
        /// The row's id.
        id: u16,
        /// The vector count found.
        vectors: u32,
    },
    /// A row changed after the table's generation (impossible for the server's writes).
    BadGeneration {
        /// The row's id.
        id: u16,
        /// The row's generation.
        row: u64,
        /// The table's generation.
        table: u64,
    },
    /// The header's peer count disagrees with the rows present.
    BadCount {
        /// The header's count.
        header: u32,
        /// Present rows found.
        rows: u32,
    },
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ReadError::TooSmall { have } => write!(
                f,
                "the state table needs {TABLE_SIZE} bytes but only {have} follow its offset"
            ),
            ReadError::NoTable { magic } => write!(
                f,
                "no state table there (magic {magic:#010x}, not IVST): is the server running \
                 with --state-table at this offset?"
            ),
            ReadError::Version { version } => write!(
                f,
                "state table layout version {version}, this reader knows {VERSION}"
            ),
            ReadError::Geometry { rows, row_size } => write!(
                f,
                "state table geometry {rows} rows of {row_size} bytes, expected {ROWS} of {ROW_SIZE}"
            ),
            ReadError::Busy { attempts } => write!(
                f,
                "no consistent state table read in {attempts} attempts (the server is writing it, \
                 or died writing it)"
            ),
            ReadError::BadRow { id, state } => {
                write!(f, "state table row {id} has state {state} (not 0 or 1)")
            }
            ReadError::BadVectors { id, vectors } => write!(
                f,
                "state table row {id} claims {vectors} vectors (a doorbell addresses {MAX_VECTORS})"
            ),
            ReadError::BadGeneration { id, row, table } => write!(
                f,
                "state table row {id} has generation {row}, after the table's {table}"
            ),
            ReadError::BadCount { header, rows } => write!(
                f,
                "state table says {header} peer(s) but {rows} row(s) are present"
            ),
        }
    }
}

impl core::error::Error for ReadError {}

/// One pass of the seqlock: `None` when the server was writing or wrote meanwhile.
fn once<M: TableMemory + ?Sized, T>(
    mem: &M,
    read: &mut impl FnMut(&M) -> Result<T, ReadError>,
) -> Option<Result<(u64, T), ReadError>> {
    let before = mem.load_u64(header::SEQUENCE);
    fence(Ordering::Acquire);
    if !before.is_multiple_of(2) {
        return None;
    }
    let value = read(mem);
    fence(Ordering::Acquire);
    if mem.load_u64(header::SEQUENCE) != before {
        return None;
    }
    Some(value.map(|v| (before, v)))
}

/// Runs `read` under the seqlock until it sees a consistent table, at most `attempts` times.
/// Errors from `read` on an inconsistent pass are retried too (they may be torn reads);
/// errors on a consistent pass are returned.
fn consistent<M: TableMemory + ?Sized, T>(
    mem: &M,
    attempts: u32,
    mut read: impl FnMut(&M) -> Result<T, ReadError>,
) -> Result<(u64, T), ReadError> {
    if mem.len() < TABLE_SIZE {
        return Err(ReadError::TooSmall { have: mem.len() });
    }
    for _ in 0..attempts.max(1) {
        if let Some(result) = once(mem, &mut read) {
            return result;
        }
        core::hint::spin_loop();
    }
    Err(ReadError::Busy {
        attempts: attempts.max(1),
    })
}

/// The header fields, checked (magic, version, geometry); part of one consistent pass.
fn header_fields<M: TableMemory + ?Sized>(mem: &M) -> Result<Header, ReadError> {
    let magic = mem.load_u32(header::MAGIC);
    if magic != MAGIC {
        return Err(ReadError::NoTable { magic });
    }
    let version = mem.load_u32(header::VERSION);
    if version != VERSION {
        return Err(ReadError::Version { version });
    }
    let rows = mem.load_u32(header::ROWS);
    let row_size = mem.load_u32(header::ROW_SIZE);
    if rows as usize != ROWS || row_size as usize != ROW_SIZE {
        return Err(ReadError::Geometry { rows, row_size });
    }
    Ok(Header {
        sequence: 0,
        peers: mem.load_u32(header::PEERS),
        vectors: mem.load_u32(header::VECTORS),
        generation: mem.load_u64(header::GENERATION),
    })
}

/// Row `id`, checked against the header: `None` when absent.
fn row_fields<M: TableMemory + ?Sized>(
    mem: &M,
    header: &Header,
    id: u16,
) -> Result<Option<Row>, ReadError> {
    let at = row_offset(id);
    let state = mem.load_u32(at);
    let generation = mem.load_u64(at + 8);
    if generation > header.generation {
        return Err(ReadError::BadGeneration {
            id,
            row: generation,
            table: header.generation,
        });
    }
    match state {
        ABSENT => Ok(None),
        PRESENT => {
            let vectors = mem.load_u32(at + 4);
            if vectors > MAX_VECTORS {
                return Err(ReadError::BadVectors { id, vectors });
            }
            Ok(Some(Row {
                id,
                vectors,
                generation,
            }))
        }
        state => Err(ReadError::BadRow { id, state }),
    }
}

/// The header, consistent and checked. Cheap: use its `generation` to notice that someone
/// joined or left before reading rows again.
pub fn read_header<M: TableMemory + ?Sized>(mem: &M, attempts: u32) -> Result<Header, ReadError> {
    consistent(mem, attempts, |m| header_fields(m)).map(|(sequence, h)| Header { sequence, ..h })
}

/// The header and row `id` (`None`: no peer with that id), consistent with each other.
pub fn read_row<M: TableMemory + ?Sized>(
    mem: &M,
    id: u16,
    attempts: u32,
) -> Result<(Header, Option<Row>), ReadError> {
    consistent(mem, attempts, |m| {
        let h = header_fields(m)?;
        Ok((h, row_fields(m, &h, id)?))
    })
    .map(|(sequence, (h, row))| (Header { sequence, ..h }, row))
}

/// What [`read_rows`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The header the rows are consistent with.
    pub header: Header,
    /// Rows present (equal to `header.peers`); the first `min(present, out.len())` of them,
    /// by increasing id, are in the caller's buffer.
    pub present: usize,
}

/// Every present row, consistent with the header, into `out` by increasing id (as many as fit;
/// [`Snapshot::present`] says how many there are). Allocates nothing. The scan stops at the
/// header's peer count; a table whose rows disagree with that count is
/// [`ReadError::BadCount`]. Costs up to [`ROWS`] row reads per attempt.
pub fn read_rows<M: TableMemory + ?Sized>(
    mem: &M,
    out: &mut [Row],
    attempts: u32,
) -> Result<Snapshot, ReadError> {
    consistent(mem, attempts, |m| {
        let h = header_fields(m)?;
        if h.peers as usize > ROWS {
            return Err(ReadError::BadCount {
                header: h.peers,
                rows: 0,
            });
        }
        let mut present = 0usize;
        for id in 0..ROWS {
            if present == h.peers as usize {
                break;
            }
            if let Some(row) = row_fields(m, &h, id as u16)? {
                if let Some(slot) = out.get_mut(present) {
                    *slot = row;
                }
                present += 1;
            }
        }
        if present != h.peers as usize {
            return Err(ReadError::BadCount {
                header: h.peers,
                rows: present as u32,
            });
        }
        Ok((h, present))
    })
    .map(|(sequence, (h, present))| Snapshot {
        header: Header { sequence, ..h },
        present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consistent table with `peers` (id, vectors) present, in a byte vector.
    fn table(peers: &[(u16, u32)], generation: u64) -> Vec<u8> {
        let mut t = vec![0u8; TABLE_SIZE];
        let put32 =
            |t: &mut Vec<u8>, at: usize, v: u32| t[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |t: &mut Vec<u8>, at: usize, v: u64| t[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put32(&mut t, header::MAGIC, MAGIC);
        put32(&mut t, header::VERSION, VERSION);
        put64(&mut t, header::SEQUENCE, 6);
        put32(&mut t, header::ROWS, ROWS as u32);
        put32(&mut t, header::ROW_SIZE, ROW_SIZE as u32);
        put32(&mut t, header::PEERS, peers.len() as u32);
        put32(&mut t, header::VECTORS, 2);
        put64(&mut t, header::GENERATION, generation);
        for &(id, v) in peers {
            put32(&mut t, row_offset(id), PRESENT);
            put32(&mut t, row_offset(id) + 4, v);
            put64(&mut t, row_offset(id) + 8, generation);
        }
        t
    }

    #[test]
    fn reads_a_consistent_table() {
        let t = table(&[(3, 2), (70, 2), (65535, 1)], 9);
        let h = read_header(&t[..], 1).unwrap();
        assert_eq!((h.sequence, h.peers, h.vectors, h.generation), (6, 3, 2, 9));
        let mut rows = [Row::default(); 2];
        let s = read_rows(&t[..], &mut rows, 1).unwrap();
        assert_eq!(s.present, 3);
        assert_eq!(rows.map(|r| r.id), [3, 70]);
        assert_eq!(rows[0].vectors, 2);
        let (_, row) = read_row(&t[..], 65535, 1).unwrap();
        assert_eq!(row.unwrap().vectors, 1);
        assert_eq!(read_row(&t[..], 4, 1).unwrap().1, None);
        // The same through the shared-memory reader (u64-aligned storage).
        let words: Vec<u64> = t
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        // SAFETY: `words` is 8-aligned, TABLE_SIZE bytes, alive for the reads below.
        let shared = unsafe { SharedTable::new(words.as_ptr().cast(), TABLE_SIZE) };
        assert_eq!(read_header(&shared, 1).unwrap(), h);
        let mut all = [Row::default(); 4];
        assert_eq!(read_rows(&shared, &mut all, 1).unwrap().present, 3);
        assert_eq!(all[2].id, 65535);
    }

    #[test]
    fn names_what_is_wrong() {
        let good = table(&[(1, 2)], 4);
        assert_eq!(
            read_header(&good[..100], 5),
            Err(ReadError::TooSmall { have: 100 })
        );
        let zero = vec![0u8; TABLE_SIZE];
        assert_eq!(
            read_header(&zero[..], 5),
            Err(ReadError::NoTable { magic: 0 })
        );
        let mut t = good.clone();
        t[header::VERSION] = 2;
        assert_eq!(
            read_header(&t[..], 5),
            Err(ReadError::Version { version: 2 })
        );
        let mut t = good.clone();
        t[header::ROW_SIZE] = 32;
        assert!(matches!(
            read_header(&t[..], 5),
            Err(ReadError::Geometry { .. })
        ));
        let mut t = good.clone();
        t[header::SEQUENCE] = 7;
        assert_eq!(read_header(&t[..], 5), Err(ReadError::Busy { attempts: 5 }));
        let mut t = good.clone();
        t[row_offset(1)] = 9;
        assert_eq!(
            read_rows(&t[..], &mut [], 5),
            Err(ReadError::BadRow { id: 1, state: 9 })
        );
        let mut t = good.clone();
        t[row_offset(1) + 8] = 200;
        assert!(matches!(
            read_row(&t[..], 1, 5),
            Err(ReadError::BadGeneration {
                id: 1,
                row: 200,
                table: 4
            })
        ));
        let mut t = good.clone();
        t[row_offset(1) + 6] = 2; // 0x20002 vectors
        assert_eq!(
            read_row(&t[..], 1, 5).map(|(_, r)| r),
            Err(ReadError::BadVectors {
                id: 1,
                vectors: 0x20002
            })
        );
        let mut t = good.clone();
        t[header::PEERS] = 2;
        assert_eq!(
            read_rows(&t[..], &mut [], 5),
            Err(ReadError::BadCount { header: 2, rows: 1 })
        );
        let mut t = good;
        t[header::PEERS..header::PEERS + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_rows(&t[..], &mut [], 5),
            Err(ReadError::BadCount { .. })
        ));
        // Every error says something.
        assert!(ReadError::NoTable { magic: 0 }
            .to_string()
            .contains("--state-table"));
    }
}
