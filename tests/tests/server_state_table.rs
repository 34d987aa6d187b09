//! The opt-in state table (`--state-table OFFSET`) and lifecycle doorbell
//! (`--lifecycle-vector N`): the table agrees with the server's peer list through a join/leave
//! storm, read consistently with its sequence counter; without the option the server never
//! changes a byte of the memory.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{fence, Ordering};

use harness::raw_client::RawClient;
use harness::{bin, text, wait_until, Scratch, Server, TIMEOUT};
use protocol::state_table::{header, row_offset, MAGIC, PRESENT, ROWS, VERSION};

const OFFSET: usize = 2 << 20;

/// One consistent snapshot: (generation, peer count, present ids with their vectors).
fn snapshot(shm: &peer::SharedMemory) -> (u64, u32, Vec<(u16, u32)>) {
    let at = |o: usize| OFFSET + o;
    loop {
        let s1 = shm
            .atomic_u64(at(header::SEQUENCE))
            .unwrap()
            .load(Ordering::Acquire);
        if s1 % 2 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let generation = shm
            .atomic_u64(at(header::GENERATION))
            .unwrap()
            .load(Ordering::Relaxed);
        let count = shm
            .atomic_u32(at(header::PEERS))
            .unwrap()
            .load(Ordering::Relaxed);
        let mut present = Vec::new();
        for id in 0..ROWS {
            let row = at(row_offset(id as u16));
            if shm.atomic_u32(row).unwrap().load(Ordering::Relaxed) == PRESENT {
                present.push((
                    id as u16,
                    shm.atomic_u32(row + 4).unwrap().load(Ordering::Relaxed),
                ));
            }
        }
        fence(Ordering::Acquire);
        let s2 = shm
            .atomic_u64(at(header::SEQUENCE))
            .unwrap()
            .load(Ordering::Relaxed);
        if s1 == s2 {
            return (generation, count, present);
        }
    }
}

fn status_ids(sock: &Path) -> Vec<u16> {
    let out = Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(sock)
        .args(["--status", "--json"])
        .output()
        .unwrap();
    text(&out.stdout)
        .split("{\"id\":")
        .skip(1)
        .filter_map(|r| r.split(',').next()?.parse().ok())
        .collect()
}

#[test]
fn server_state_table_follows_a_join_leave_storm() {
    let dir = Scratch::new("srv-table");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(
        &sock,
        &[
            "--memfd",
            "-n",
            "2",
            "--state-table",
            "2M",
            "--lifecycle-vector",
            "1",
        ],
    );
    let options = peer::ConnectOptions {
        vectors: Some(2),
        ..Default::default()
    };
    let host = peer::Peer::connect_with(&sock, &options).unwrap();
    let shm = host.shm();
    assert_eq!(
        shm.atomic_u32(OFFSET + header::MAGIC)
            .unwrap()
            .load(Ordering::Relaxed),
        MAGIC
    );
    assert_eq!(
        shm.atomic_u32(OFFSET + header::VERSION)
            .unwrap()
            .load(Ordering::Relaxed),
        VERSION
    );
    assert_eq!(
        shm.atomic_u32(OFFSET + header::VECTORS)
            .unwrap()
            .load(Ordering::Relaxed),
        2
    );
    let (start, count, present) = snapshot(shm);
    assert_eq!((count, present), (1, vec![(0, 2)]));

    // A storm of 1,000 joins and leaves, with a consistent reader alongside.
    let storm = {
        let sock = sock.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for i in 0..1000 {
                let c = RawClient::connect_light(&sock, 2);
                if i % 100 == 0 {
                    kept.push(c); // a few stay
                }
            }
            kept
        })
    };
    let mut snapshots = 0;
    let mut last_generation = 0;
    while !storm.is_finished() {
        let (generation, count, present) = snapshot(shm);
        assert_eq!(count as usize, present.len(), "a torn read");
        assert!(generation >= last_generation);
        last_generation = generation;
        snapshots += 1;
    }
    let kept = storm.join().unwrap();
    assert!(snapshots > 0);
    // Settled: the table is the server's peer list.
    let want: Vec<u16> = std::iter::once(0)
        .chain(kept.iter().map(|c| c.id))
        .collect();
    assert!(wait_until(TIMEOUT, || {
        let (_, _, present) = snapshot(shm);
        present.iter().map(|&(id, _)| id).collect::<Vec<_>>() == want
    }));
    let mut listed = status_ids(&sock);
    listed.sort();
    assert_eq!(listed, want);
    let (generation, count, _) = snapshot(shm);
    assert_eq!(count as usize, want.len());
    assert_eq!(
        generation,
        start + 1000 + (1000 - kept.len() as u64),
        "one step per join and leave"
    );

    // The lifecycle doorbell rang our vector 1.
    assert!(host.drain_vector(1).unwrap() > 0);
    drop(kept);
    assert!(server.terminate().success());
}

#[test]
fn server_without_state_table_never_writes_the_memory() {
    let dir = Scratch::new("srv-table-off");
    let sock = dir.join("sock");
    let mut server = Server::start_without_probe(&sock, &["--memfd", "-n", "2"]);
    let host = peer::Peer::connect(&sock).unwrap();
    let len = host.shm().len();
    host.shm().fill(0, len, 0xa5).unwrap();
    for _ in 0..50 {
        drop(RawClient::connect_light(&sock, 2));
    }
    let successor = server.upgrade();
    for _ in 0..50 {
        drop(RawClient::connect_light(&sock, 2));
    }
    let mut all = vec![0u8; len];
    host.shm().read(0, &mut all).unwrap();
    assert!(
        all.iter().all(|&b| b == 0xa5),
        "the server changed the memory"
    );
    assert!(successor.terminate());
}

#[test]
fn server_state_table_offset_is_checked() {
    let dir = Scratch::new("srv-table-bad");
    let out = Command::new(bin("ivshmem-server"))
        .arg("-F")
        .arg("-S")
        .arg(dir.join("sock"))
        .args(["--memfd", "-l", "4M", "--state-table", "3.5M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the table needs 1048640 bytes"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("sock").exists());
    let out = Command::new(bin("ivshmem-server"))
        .args(["-F", "--memfd", "--state-table", "12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("multiple of 8"),
        "{}",
        text(&out.stderr)
    );
}
