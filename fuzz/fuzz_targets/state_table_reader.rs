//! The state-table reader (`protocol::state_table`, also compiled into the no_std guest
//! runtime) over memory anyone may have written: it must never panic, must end (bounded
//! retries, bounded scans) and must only return what is consistent.
//!
//! Input: up to 64 bytes overwrite a valid empty table's header (the sequence, bytes 8..16, is
//! made even unless bit 0 of byte 63, reserved, is set); then records of
//! (id `u16` LE, 16 row bytes) overwrite rows; a trailing partial record is ignored. The raw
//! input is also read as a (too small) table of its own.
//! Checked: no panic; `read_rows` Ok means the header's peer count matches the rows found,
//! sorted, each present, consistent with `read_header` and `read_row`; a torn-looking
//! sequence gives `Busy` after exactly the attempts given; every error has a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::state_table::{
    header, read_header, read_row, read_rows, row_offset, ReadError, Row, SharedTable, TableMemory,
    HEADER_SIZE, MAGIC, ROWS, ROW_SIZE, TABLE_SIZE, VERSION,
};

/// Memory whose sequence counter moves on every load: the seqlock never agrees.
struct Moving<'a>(&'a [u8], std::cell::Cell<u64>);

impl TableMemory for Moving<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load_u32(&self, at: usize) -> u32 {
        self.0.load_u32(at)
    }
    fn load_u64(&self, at: usize) -> u64 {
        if at == header::SEQUENCE {
            self.1.set(self.1.get() + 2);
            return self.1.get();
        }
        self.0.load_u64(at)
    }
}

fn check<M: TableMemory + ?Sized>(mem: &M) {
    let mut rows = vec![Row::default(); 8];
    match read_rows(mem, &mut rows, 3) {
        Ok(snapshot) => {
            assert_eq!(snapshot.present, snapshot.header.peers as usize);
            let stored = &rows[..snapshot.present.min(rows.len())];
            assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
            assert_eq!(read_header(mem, 3), Ok(snapshot.header));
            for row in stored {
                assert!(row.generation <= snapshot.header.generation);
                assert!(row.vectors <= protocol::state_table::MAX_VECTORS);
                assert_eq!(read_row(mem, row.id, 3).unwrap().1, Some(*row));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw input: always too small to be a table.
    assert!(matches!(
        read_header(data, 3),
        Err(ReadError::TooSmall { have }) if have == data.len()
    ));

    let mut table = vec![0u8; TABLE_SIZE];
    let put32 = |t: &mut [u8], at: usize, v: u32| t[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut table, header::MAGIC, MAGIC);
    put32(&mut table, header::VERSION, VERSION);
    put32(&mut table, header::ROWS, ROWS as u32);
    put32(&mut table, header::ROW_SIZE, ROW_SIZE as u32);
    let head = data.len().min(HEADER_SIZE);
    table[..head].copy_from_slice(&data[..head]);
    let odd_allowed = data.get(HEADER_SIZE - 1).is_some_and(|b| b & 1 == 1);
    if !odd_allowed {
        table[header::SEQUENCE] &= !1;
    }
    if let Some(rest) = data.get(HEADER_SIZE..) {
        for record in rest.chunks_exact(2 + ROW_SIZE) {
            let id = u16::from_le_bytes([record[0], record[1]]);
            let at = row_offset(id);
            table[at..at + ROW_SIZE].copy_from_slice(&record[2..]);
        }
    }

    check(&table[..]);
    let odd = u64::from_le_bytes(table[8..16].try_into().unwrap()) % 2 == 1;
    if odd {
        assert_eq!(
            read_header(&table[..], 3),
            Err(ReadError::Busy { attempts: 3 })
        );
    }

    // The same bytes through the live-memory reader (atomic loads, 8-aligned storage).
    let words: Vec<u64> = table
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // SAFETY: `words` is 8-aligned, TABLE_SIZE bytes long and outlives `shared`.
    let shared = unsafe { SharedTable::new(words.as_ptr().cast(), TABLE_SIZE) };
    assert_eq!(read_header(&shared, 3), read_header(&table[..], 3));
    check(&shared);

    // A sequence that never holds still: Busy, after exactly the attempts given.
    let moving = Moving(&table, std::cell::Cell::new(0));
    assert_eq!(
        read_rows(&moving, &mut [], 4),
        Err(ReadError::Busy { attempts: 4 })
    );
});
