//! Interoperability with QEMU itself: a real `ivshmem-doorbell` device connects to our server
//! (QEMU does the handshake while creating the device, so no guest is needed), joins with its
//! vectors, has working eventfds, and is announced as leaving when it dies.
//!
//! Skips with a printed reason when `qemu-system-x86_64` is not on PATH, unless
//! `IVSHMEM_REQUIRE_QEMU=1` (scripts/test.sh installs Debian's qemu-system-x86).

use std::time::Duration;

use harness::eventfd::{poll_readable, ring_eventfd};
use harness::qemu::QemuDoorbell;
use harness::raw_client::RawClient;
use harness::{require_qemu, wait_until, Scratch, Server};
use protocol::client::ClientEvent;

/// Kills QEMU on drop.
#[test]
fn qemu_interop_doorbell_device_joins_rings_and_leaves() {
    require_qemu!();
    let dir = Scratch::new("qemu-interop");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2", "-l", "1M"]);
    let mut host = RawClient::connect(&sock, 2);

    let mut qemu = QemuDoorbell::spawn(&sock, 2);
    let qemu_pid = qemu.pid();

    // QEMU joins with 2 vectors (as peer 1).
    let mut qemu_id = None;
    for v in 0..2 {
        match host.next_event() {
            ClientEvent::PeerVector { peer, vector, fd } => {
                assert_eq!(vector, v);
                qemu_id.get_or_insert(peer);
                assert_eq!(Some(peer), qemu_id);
                host.vectors.entry(peer).or_default().push(fd);
            }
            other => panic!("expected QEMU's vectors, got {other:?}"),
        }
    }
    let qemu_id = qemu_id.unwrap();
    assert_eq!(qemu_id, 1);
    assert!(
        server.wait_log(&format!("peer 1 joined (pid {qemu_pid}, 2 vectors)")),
        "{}",
        server.log_text()
    );
    // Ringing QEMU's vectors works; without a guest QEMU's own handler consumes the event.
    // That QEMU's main loop consumes them also shows it is alive and paused (-S), past its
    // handshake; if it exits instead, say why.
    for fd in &host.vectors[&qemu_id] {
        ring_eventfd(fd);
        let mut exited = None;
        let consumed = wait_until(Duration::from_secs(5), || {
            exited = qemu.exited();
            exited.is_none() && !poll_readable(fd, 0)
        });
        if let Some((status, err)) = exited {
            panic!("QEMU exited early ({status}): {err}");
        }
        assert!(consumed, "QEMU did not consume the event on its vector");
    }

    // A second host peer sees QEMU among the existing peers.
    let late = RawClient::connect(&sock, 2);
    assert_eq!(late.peer_ids(), vec![0, qemu_id]);
    host.expect_join(late.id);

    // Killing QEMU (still running: paused, not exited) is announced as its departure.
    qemu.stop();
    host.expect_leave(qemu_id);
    assert!(server.wait_log(&format!("peer {qemu_id} left (pid {qemu_pid})")));
}
