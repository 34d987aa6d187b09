//! A server whose handshake trickles in (as on a loaded machine): `connect` returns after our
//! first vector, and what arrives later is taken in by the calls that need it, within their
//! timeout, in the library and in `ivshmem-client`.

use std::time::{Duration, Instant};

use harness::eventfd::{eventfd_count, ring_eventfd};
use harness::fake_server::{welcome, FakeServer, Step};
use harness::{run_client_script as client, Scratch};
use peer::{Peer, RingError, ServerEvent, WaitError};

/// How long the fake server pauses between messages: the slowness is what is under test.
const PAUSE: Duration = Duration::from_millis(300);

/// We are peer 1; our second vector comes late, then peer 0 joins slowly.
fn slow_handshake() -> Vec<Step> {
    let mut steps = welcome(1, 65536);
    steps.extend([
        Step::Vector(1),
        Step::Sleep(PAUSE),
        Step::Vector(1),
        Step::Sleep(PAUSE),
        Step::Vector(0),
        Step::Sleep(PAUSE),
        Step::Vector(0),
    ]);
    steps
}

#[test]
fn peer_takes_in_late_vectors_within_the_timeout() {
    let dir = Scratch::new("slow-lib");
    let server = FakeServer::start(&dir.join("sock"), slow_handshake());
    let mut peer = Peer::connect(&server.path).expect("connect");
    assert_eq!(peer.id(), 1);
    assert_eq!(
        peer.own_vector_count(),
        1,
        "connect returns after our first vector"
    );

    // Vector 1 is announced ~300 ms later: waiting for it is not an error.
    let start = Instant::now();
    assert_eq!(
        peer.wait_vector(1, Some(Duration::from_millis(1500)))
            .unwrap(),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(1400));
    assert_eq!(peer.own_vector_count(), 2);

    // Peer 0's vector 1 arrives last: ring_within waits for it.
    peer.ring_within(0, 1, Some(Duration::from_secs(5)))
        .expect("peer 0's vector 1 is announced in time");
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    assert_eq!(
        sent.iter().map(|v| v.peer).collect::<Vec<_>>(),
        vec![1, 1, 0, 0]
    );
    assert_eq!(eventfd_count(&sent[3].fd), 1, "peer 0's vector 1 was rung");

    // What was taken in on the way is still reported.
    let events = peer.process_server_messages();
    assert!(
        events.contains(&ServerEvent::OwnVectorsAdded { vectors: 2 }),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::Joined { peer: 0, .. })),
        "{events:?}"
    );

    // Never announced: a clear error once the timeout passes.
    let start = Instant::now();
    match peer.wait_vector(5, Some(Duration::from_millis(200))) {
        Err(WaitError::UnknownVector {
            vector: 5,
            count: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        peer.ring_within(7, 0, Some(Duration::from_millis(100))),
        Err(RingError::UnknownPeer(7))
    ));
}

#[test]
fn peer_wait_any_includes_vectors_announced_later() {
    let dir = Scratch::new("slow-any");
    let server = FakeServer::start(&dir.join("sock"), slow_handshake());
    let mut peer = Peer::connect(&server.path).expect("connect");
    assert_eq!(peer.own_vector_count(), 1);
    let own0 = server.next_vector();
    let own1 = server.next_vector(); // blocks until the fake server sent it
    ring_eventfd(&own1.fd);
    let fired = peer.wait(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].vector, 1);
    drop(own0);
}

#[test]
fn peer_client_commands_wait_for_late_announcements() {
    let dir = Scratch::new("slow-cli");
    let server = FakeServer::start(&dir.join("sock"), slow_handshake());
    // `int 1 1`: our own vector 1, not known at connect; `wait 1 3000` then sees the ring;
    // `int 0 1`: a peer that joins later, within int's default wait.
    let out = client(&server.path, "int 1 1; wait 1 3000; int 0 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("receive notification from peer_id=1 vector=1"),
        "{stdout}"
    );
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    assert_eq!(eventfd_count(&sent[3].fd), 1, "peer 0's vector 1 was rung");
}

#[test]
fn peer_client_says_when_a_vector_was_never_announced() {
    let dir = Scratch::new("slow-cli-missing");
    let server = FakeServer::start(&dir.join("sock"), slow_handshake());
    let start = Instant::now();
    let out = client(&server.path, "wait 3 800");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("we have no vector 3 (we have 2 vector(s)) (not announced within 800 ms)"),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(server);

    let server = FakeServer::start(&dir.join("sock2"), slow_handshake());
    let out = client(&server.path, "int 9 0 100");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("int: unknown peer 9 (not announced within 100 ms)"),
        "{stderr}"
    );
}
