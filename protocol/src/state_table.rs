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
