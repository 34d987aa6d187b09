//! The state-table reader every guest uses (`protocol::state_table::read_rows` and friends,
//! compiled into the guest runtime too) against the real server writing concurrently: through
//! a join/leave storm every read is consistent (the peer count matches the rows, ids in order,
//! the generation never goes back) or `Busy`, never wrong; settled, it is the server's list.
//! And a reader over memory that a peer scribbled on names the problem instead of panicking.

use std::sync::atomic::Ordering;

use harness::raw_client::RawClient;
use harness::{wait_until, Scratch, Server, TIMEOUT};
use protocol::state_table::{
    header, read_header, read_row, read_rows, ReadError, Row, SharedTable, DEFAULT_ATTEMPTS,
    TABLE_SIZE,
};

const OFFSET: usize = 2 << 20;

fn table(shm: &peer::SharedMemory) -> SharedTable {
    shm.check_range(OFFSET, TABLE_SIZE).unwrap();
    // SAFETY: the range is inside the peer's mapping (checked), which outlives every use below
    // (`shm` is borrowed from the peer for the whole test); the mapping is page-aligned and
    // OFFSET a multiple of 8.
    unsafe { SharedTable::new(shm.as_ptr().add(OFFSET), TABLE_SIZE) }
}

#[test]
fn reader_is_consistent_through_a_join_leave_storm() {
    let dir = Scratch::new("table-reader");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2", "--state-table", "2M"]);
    let host = peer::Peer::connect(&sock).unwrap();
    let t = table(host.shm());
    let start = read_header(&t, DEFAULT_ATTEMPTS).unwrap();
    assert_eq!((start.peers, start.vectors), (1, 2));

    let storm = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for i in 0..500 {
                let c = RawClient::connect_light(&sock, 2);
                if i % 50 == 0 {
                    kept.push(c);
                }
            }
            kept
        })
    };
    let mut rows = vec![Row::default(); 64];
    let (mut reads, mut busy, mut last) = (0u32, 0u32, start.generation);
    while !storm.is_finished() {
        match read_rows(&t, &mut rows, DEFAULT_ATTEMPTS) {
            Ok(s) => {
                assert_eq!(s.present, s.header.peers as usize);
                let got = &rows[..s.present.min(rows.len())];
                assert!(got.windows(2).all(|w| w[0].id < w[1].id));
                assert!(got.iter().all(|r| r.vectors == 2));
                assert!(s.header.generation >= last, "the generation went back");
                last = s.header.generation;
                reads += 1;
            }
            Err(ReadError::Busy { .. }) => busy += 1,
            Err(e) => panic!("a bad read of the server's own table: {e}"),
        }
    }
    let kept = storm.join().unwrap();
    assert!(
        reads > 0,
        "no consistent read during the storm ({busy} busy)"
    );

    // Settled: the reader sees the server's list.
    let mut want: Vec<u16> = std::iter::once(host.id())
        .chain(kept.iter().map(|c| c.id))
        .collect();
    want.sort();
    assert!(wait_until(TIMEOUT, || {
        read_rows(&t, &mut rows, DEFAULT_ATTEMPTS).is_ok_and(|s| {
            s.present == want.len() && rows[..s.present].iter().map(|r| r.id).eq(want.clone())
        })
    }));
    let (_, me) = read_row(&t, host.id(), DEFAULT_ATTEMPTS).unwrap();
    assert_eq!(me.map(|r| r.vectors), Some(2));

    // A peer scribbles on the table: named errors, no panic (the server rewrites it only on
    // its next change).
    let shm = host.shm();
    shm.atomic_u32(OFFSET + header::PEERS)
        .unwrap()
        .store(70_000, Ordering::Relaxed);
    assert!(matches!(
        read_rows(&t, &mut rows, DEFAULT_ATTEMPTS),
        Err(ReadError::BadCount { header: 70_000, .. })
    ));
    shm.atomic_u64(OFFSET + header::SEQUENCE)
        .unwrap()
        .fetch_or(1, Ordering::Relaxed);
    assert_eq!(read_header(&t, 10), Err(ReadError::Busy { attempts: 10 }));
    shm.atomic_u32(OFFSET + header::MAGIC)
        .unwrap()
        .store(0, Ordering::Relaxed);
    shm.atomic_u64(OFFSET + header::SEQUENCE)
        .unwrap()
        .fetch_add(1, Ordering::Relaxed);
    assert_eq!(read_header(&t, 10), Err(ReadError::NoTable { magic: 0 }));
    // (A join or leave rewrites only its row and the header's count and generation: the magic
    // stays broken until a server start, upgrade or restart rewrites the whole table.)
    drop(kept);
    assert!(server.terminate().success());
}
