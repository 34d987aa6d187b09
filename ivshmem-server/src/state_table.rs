//! The server's side of the opt-in state table (`--state-table OFFSET`, layout in
//! [`protocol::state_table`]) and the lifecycle doorbell (`--lifecycle-vector N`).
//!
//! The table is mapped once during set-up (the seccomp filter forbids `mmap` of files later)
//! and written with a seqlock: the sequence counter goes odd, the rows and header change, the
//! counter goes even. Every access is atomic, because peers read the same memory at the same
//! time. Without `--state-table` nothing is mapped and the memory is never touched.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use protocol::state_table::{
    header, row_offset, ABSENT, HEADER_SIZE, MAGIC, PRESENT, ROWS, ROW_SIZE, TABLE_SIZE, VERSION,
};

/// The mapped table.
#[derive(Debug)]
pub struct StateTable {
    map: NonNull<u8>,
    map_len: usize,
    /// Offset of the table within the mapping (the mapping starts on a page boundary).
    start: usize,
    generation: u64,
    peers: u32,
}

impl StateTable {
    /// Maps the table at `offset` of the memory behind `shm` (`size` bytes) and writes an empty
    /// table for `vectors` vectors per peer. Errors name what is wrong with the offset.
    pub fn map(
        shm: BorrowedFd<'_>,
        offset: u64,
        size: u64,
        vectors: u32,
    ) -> Result<StateTable, String> {
        if !offset.is_multiple_of(8) {
            return Err(format!(
                "--state-table {offset}: the offset must be a multiple of 8"
            ));
        }
        if offset
            .checked_add(TABLE_SIZE as u64)
            .is_none_or(|end| end > size)
        {
            return Err(format!(
                "--state-table {offset}: the table needs {TABLE_SIZE} bytes there, but the shared memory has {size}"
            ));
        }
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64);
        let map_offset = offset - offset % page;
        let start = (offset - map_offset) as usize;
        let map_len = start + TABLE_SIZE;
        let len = std::num::NonZeroUsize::new(map_len).expect("table is not empty");
        // SAFETY: a new shared mapping of the server's own memory fd; nothing else in this
        // process refers to the address range it returns.
        let map = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                shm,
                map_offset as i64,
            )
        }
        .map_err(|e| format!("--state-table {offset}: cannot map the table: {e}"))?;
        let mut table = StateTable {
            map: map.cast(),
            map_len,
            start,
            generation: 0,
            peers: 0,
        };
        // A table left by a predecessor (upgrade, restart, or an earlier run on the same -M
        // memory) keeps counting: readers never see the generation go back.
        if table.u32_at(header::MAGIC).load(Ordering::Relaxed) == MAGIC
            && table.u32_at(header::VERSION).load(Ordering::Relaxed) == VERSION
        {
            table.generation = table.u64_at(header::GENERATION).load(Ordering::Relaxed);
        }
        table.reset(vectors, std::iter::empty());
        Ok(table)
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at + 4 <= TABLE_SIZE && at.is_multiple_of(4));
        // SAFETY: in bounds of the live mapping (checked by the layout: every field is inside
        // TABLE_SIZE) and aligned (the table starts 8-aligned, fields are naturally aligned);
        // atomics are how memory shared with other processes is accessed.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(self.start + at).cast()) }
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at + 8 <= TABLE_SIZE && at.is_multiple_of(8));
        // SAFETY: as in u32_at, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(self.start + at).cast()) }
    }

    /// Runs `change` between the two halves of the seqlock.
    fn write(&mut self, change: impl FnOnce(&mut Self)) {
        let seq = self.u64_at(header::SEQUENCE);
        let s = seq.load(Ordering::Relaxed);
        let odd = s | 1;
        seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        change(self);
        self.generation += 1;
        self.u64_at(header::GENERATION)
            .store(self.generation, Ordering::Relaxed);
        self.u32_at(header::PEERS)
            .store(self.peers, Ordering::Relaxed);
        self.u64_at(header::SEQUENCE)
            .store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Rewrites the whole table: header, every row absent, then `peers` (id, vectors) present.
    /// Used at start and when a server takes over (upgrade, restart), so the table always
    /// matches the peer table of the server that serves.
    pub fn reset(&mut self, vectors: u32, peers: impl Iterator<Item = (u16, u32)>) {
        let peers: Vec<(u16, u32)> = peers.collect();
        self.write(|t| {
            t.u32_at(header::MAGIC).store(MAGIC, Ordering::Relaxed);
            t.u32_at(header::VERSION).store(VERSION, Ordering::Relaxed);
            t.u32_at(header::ROWS).store(ROWS as u32, Ordering::Relaxed);
            t.u32_at(header::ROW_SIZE)
                .store(ROW_SIZE as u32, Ordering::Relaxed);
            t.u32_at(header::VECTORS).store(vectors, Ordering::Relaxed);
            for at in (40..HEADER_SIZE).step_by(8) {
                t.u64_at(at).store(0, Ordering::Relaxed);
            }
            let g = t.generation + 1;
            for id in 0..ROWS {
                let row = row_offset(id as u16);
                t.u32_at(row).store(ABSENT, Ordering::Relaxed);
                t.u32_at(row + 4).store(0, Ordering::Relaxed);
                t.u64_at(row + 8).store(0, Ordering::Relaxed);
            }
            for &(id, v) in &peers {
                let row = row_offset(id);
                t.u32_at(row).store(PRESENT, Ordering::Relaxed);
                t.u32_at(row + 4).store(v, Ordering::Relaxed);
                t.u64_at(row + 8).store(g, Ordering::Relaxed);
            }
            t.peers = peers.len() as u32;
        });
    }

    /// Peer `id` joined with `vectors` vectors.
    pub fn join(&mut self, id: u16, vectors: u32) {
        self.write(|t| {
            let row = row_offset(id);
            let g = t.generation + 1;
            t.u32_at(row).store(PRESENT, Ordering::Relaxed);
            t.u32_at(row + 4).store(vectors, Ordering::Relaxed);
            t.u64_at(row + 8).store(g, Ordering::Relaxed);
            t.peers += 1;
        });
    }

    /// Peer `id` left.
    pub fn leave(&mut self, id: u16) {
        self.write(|t| {
            let row = row_offset(id);
            let g = t.generation + 1;
            t.u32_at(row).store(ABSENT, Ordering::Relaxed);
            t.u64_at(row + 8).store(g, Ordering::Relaxed);
            t.peers = t.peers.saturating_sub(1);
        });
    }
}

impl Drop for StateTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, with its length; no reference into it outlives
        // `self` (the atomics borrow `self`).
        let _ = unsafe { munmap(self.map.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn table_follows_joins_and_leaves_and_checks_its_offset() {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let size = 4u64 << 20;
        nix::unistd::ftruncate(&fd, size as i64).unwrap();
        assert!(StateTable::map(fd.as_fd(), 3, size, 1)
            .unwrap_err()
            .contains("multiple of 8"));
        assert!(StateTable::map(fd.as_fd(), 3 << 20, size, 1)
            .unwrap_err()
            .contains("needs"));
        let mut t = StateTable::map(fd.as_fd(), 4096 + 8, size, 2).unwrap();
        t.join(5, 2);
        t.join(9, 2);
        t.leave(5);
        let seq = t.u64_at(header::SEQUENCE).load(Ordering::Acquire);
        assert_eq!(seq % 2, 0);
        assert_eq!(t.u32_at(header::MAGIC).load(Ordering::Relaxed), MAGIC);
        assert_eq!(t.u32_at(header::PEERS).load(Ordering::Relaxed), 1);
        assert_eq!(t.u64_at(header::GENERATION).load(Ordering::Relaxed), 4);
        assert_eq!(t.u32_at(row_offset(9)).load(Ordering::Relaxed), PRESENT);
        assert_eq!(t.u32_at(row_offset(5)).load(Ordering::Relaxed), ABSENT);
        assert_eq!(t.u64_at(row_offset(5) + 8).load(Ordering::Relaxed), 4);
        t.reset(2, [(1, 2)].into_iter());
        assert_eq!(t.u32_at(row_offset(9)).load(Ordering::Relaxed), ABSENT);
        assert_eq!(t.u32_at(row_offset(1)).load(Ordering::Relaxed), PRESENT);
    }
}
