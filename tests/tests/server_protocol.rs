//! The server speaks QEMU's protocol exactly: handshake order and bytes, id rules, shared memory
//! and eventfd routing, join and leave notices.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use harness::eventfd::{eventfd_count, ring_eventfd, wait_rung};
use harness::raw_client::{map_shm, shm_size, silent_for, RawClient};
use harness::{Scratch, Server, TIMEOUT};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// One raw 8-byte message (recvmsg, 8 bytes max) and the fds that came with it.
fn recv_raw_bytes(sock: &UnixStream) -> ([u8; 8], Vec<OwnedFd>) {
    use std::os::fd::FromRawFd;
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < 8 {
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf[got..])];
        let msg = recvmsg::<UnixAddr>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg");
        assert!(msg.bytes > 0, "EOF after {got} bytes");
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: fds just received, owned by us.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        got += msg.bytes;
    }
    (buf, fds)
}

fn le(v: i64) -> [u8; 8] {
    v.to_le_bytes()
}

#[test]
fn server_handshake_is_byte_exact() {
    let dir = Scratch::new("srv-bytes");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2"]);

    // First client: version 0, id 0, shm -1 + fd, then its own 2 vectors.
    let a = UnixStream::connect(&sock).unwrap();
    let (bytes, fds) = recv_raw_bytes(&a);
    assert_eq!((bytes, fds.len()), ([0; 8], 0), "version message");
    let (bytes, fds) = recv_raw_bytes(&a);
    assert_eq!((bytes, fds.len()), ([0; 8], 0), "id 0");
    let (bytes, fds) = recv_raw_bytes(&a);
    assert_eq!(bytes, [0xff; 8], "shared memory message");
    assert_eq!(fds.len(), 1, "shm message carries exactly one fd");
    assert_eq!(shm_size(&fds[0]), 4 << 20);
    let mut a_own = Vec::new();
    for _ in 0..2 {
        let (bytes, mut fds) = recv_raw_bytes(&a);
        assert_eq!((bytes, fds.len()), (le(0), 1), "own vector");
        a_own.push(fds.pop().unwrap());
    }
    assert!(silent_for(&a, 100), "nothing more for the first client");

    // Second client: existing peers are told first (id 1 twice with fds).
    let b = UnixStream::connect(&sock).unwrap();
    let mut a_copy_of_b = Vec::new();
    for _ in 0..2 {
        let (bytes, mut fds) = recv_raw_bytes(&a);
        assert_eq!((bytes, fds.len()), (le(1), 1), "join notice for peer 1");
        a_copy_of_b.push(fds.pop().unwrap());
    }
    let expected: [(i64, usize); 7] = [(0, 0), (1, 0), (-1, 1), (0, 1), (0, 1), (1, 1), (1, 1)];
    let mut b_fds = Vec::new();
    for (value, nfds) in expected {
        let (bytes, fds) = recv_raw_bytes(&b);
        assert_eq!(
            (bytes, fds.len()),
            (le(value), nfds),
            "second client, message {value}"
        );
        b_fds.push(fds);
    }
    assert!(silent_for(&b, 100));
    // B's copy of A's vector 1 reaches A's own vector 1 only.
    ring_eventfd(&b_fds[4][0]);
    assert_eq!(wait_rung(&a_own[1], 2000), Some(1));
    assert_eq!(eventfd_count(&a_own[0]), 0);
    // A's copy of B's vector 0 reaches B's own vector 0.
    ring_eventfd(&a_copy_of_b[0]);
    assert_eq!(wait_rung(&b_fds[5][0], 2000), Some(1));
    assert_eq!(eventfd_count(&b_fds[6][0]), 0);

    // B leaves: A gets id 1 without an fd.
    drop(b);
    let (bytes, fds) = recv_raw_bytes(&a);
    assert_eq!((bytes, fds.len()), (le(1), 0), "leave notice for peer 1");
    assert!(server.wait_log("peer 1 left"));
    let log = server.log_text();
    assert!(log.contains("peer 0 joined (pid "), "{log}");
    assert!(log.contains(", 2 vectors)"), "{log}");
}

#[test]
fn server_ids_are_monotonic() {
    let dir = Scratch::new("srv-ids");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd"]);
    let a = RawClient::connect(&sock, 1);
    let b = RawClient::connect(&sock, 1);
    let c = RawClient::connect(&sock, 1);
    assert_eq!((a.id, b.id, c.id), (0, 1, 2));
    assert_eq!(c.peer_ids(), vec![0, 1]);
    drop(b);
    assert!(server.wait_log("peer 1 left"));
    let d = RawClient::connect(&sock, 1);
    assert_eq!(d.id, 3, "ids are not reused right away");
    assert_eq!(d.peer_ids(), vec![0, 2]);
    drop((a, c, d));
    assert!(
        server.wait_log("peer 3 left")
            && server.wait_log("peer 0 left")
            && server.wait_log("peer 2 left")
    );
    let e = RawClient::connect(&sock, 1);
    assert_eq!(e.id, 4);
    assert!(e.peer_ids().is_empty());
}

#[test]
fn server_shared_memory_is_shared() {
    let dir = Scratch::new("srv-shm");
    let sock = dir.join("sock");
    let name = format!("ivshmem-test-shm-{}", std::process::id());
    let server = Server::start_without_probe(&sock, &["-M", &name, "--unlink-shm", "-l", "1M"]);
    let a = RawClient::connect(&sock, 1);
    let b = RawClient::connect(&sock, 1);
    let ma = map_shm(a.shm.as_ref().unwrap());
    let mb = map_shm(b.shm.as_ref().unwrap());
    assert_eq!((ma.len(), mb.len()), (1 << 20, 1 << 20));
    for i in (0..ma.len()).step_by(4096) {
        ma.write(i, &[(i / 4096) as u8 ^ 0x5a]).unwrap();
    }
    for i in (0..mb.len()).step_by(4096) {
        let mut byte = [0u8];
        mb.read(i, &mut byte).unwrap();
        assert_eq!(byte[0], (i / 4096) as u8 ^ 0x5a);
    }
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    assert!(server.terminate().success());
    assert!(
        !std::path::Path::new(&format!("/dev/shm/{name}")).exists(),
        "--unlink-shm removed it"
    );
}

#[test]
fn server_eventfds_wake_exactly_their_peer_and_vector() {
    let dir = Scratch::new("srv-ring");
    let sock = dir.join("sock");
    let _server = Server::start_without_probe(&sock, &["--memfd", "-n", "3"]);
    let mut clients: Vec<RawClient> = (0..3).map(|_| RawClient::connect(&sock, 3)).collect();
    for i in 0..3 {
        for j in i + 1..3 {
            let id = clients[j].id;
            clients[i].expect_join(id);
        }
    }
    for target in 0..3 {
        for vector in 0..3 {
            let sender = (target + 1) % 3;
            let tid = clients[target].id;
            ring_eventfd(&clients[sender].vectors[&tid][vector]);
            let own = &clients[target].vectors[&tid];
            assert_eq!(
                wait_rung(&own[vector], 2000),
                Some(1),
                "peer {tid} vector {vector}"
            );
            for (c, client) in clients.iter().enumerate() {
                for (v, fd) in client.vectors[&client.id].iter().enumerate() {
                    assert_eq!(
                        eventfd_count(fd),
                        0,
                        "client {c} vector {v} must stay quiet"
                    );
                }
            }
        }
    }
}

#[test]
fn server_announces_joins_and_leaves() {
    let dir = Scratch::new("srv-news");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2"]);
    let mut a = RawClient::connect(&sock, 2);
    let mut b = RawClient::connect(&sock, 2);
    a.expect_join(b.id);
    let c = RawClient::connect(&sock, 2);
    a.expect_join(c.id);
    b.expect_join(c.id);
    assert_eq!(a.peer_ids(), vec![1, 2]);
    let c_id = c.id;
    drop(c);
    a.expect_leave(c_id);
    b.expect_leave(c_id);
    assert!(server.wait_log(&format!("peer {c_id} left (pid ")));
    assert_eq!(a.peer_ids(), vec![1]);
    assert!(silent_for(&a.sock, 100) && silent_for(&b.sock, 100));
}
