//! The `peer` library against a scripted fake server: the handshake, ringing and waiting, joins
//! and leaves, and every way a server can misbehave (bad handshake, garbage, stalls, vanishing).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::eventfd::{eventfd_count, ring_eventfd};
use harness::fake_server::{vectors, welcome, FakeServer, Step};
use harness::{wait_until, Scratch};
use peer::{ConnectError, ConnectOptions, Peer, PeerInfo, RingError, ServerEvent, ShmError};
use protocol::ProtocolError;

fn options(vectors: Option<u32>, timeout_ms: u64) -> ConnectOptions {
    ConnectOptions {
        vectors,
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// Connects to a server playing [`standard_handshake`], waiting for both of our vectors: a
/// plain `connect` returns after the first one plus whatever is already queued, so on a busy
/// machine the second could arrive later as an `OwnVectorsAdded` event.
fn connect_standard(server: &FakeServer) -> Peer {
    Peer::connect_with(&server.path, &options(Some(2), 5000)).expect("connect")
}

/// Handshake in QEMU order for us = 3 with one existing peer 1, two vectors each.
fn standard_handshake() -> Vec<Step> {
    let mut steps = welcome(3, 65536);
    steps.extend(vectors(1, 2));
    steps.extend(vectors(3, 2));
    steps
}

/// Polls the server until `count` events came in, or 5 s passed; returns them all.
fn poll_events(peer: &mut Peer, count: usize) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    wait_until(Duration::from_secs(5), || {
        events.extend(peer.poll_server(Some(Duration::from_millis(100))));
        events.len() >= count
    });
    events
}

#[test]
fn handshake_maps_memory_and_knows_peers() {
    let dir = Scratch::new("peer-hs");
    let server = FakeServer::start(&dir.join("sock"), standard_handshake());
    let peer = connect_standard(&server);
    assert_eq!(peer.id(), 3);
    assert_eq!(peer.shm().len(), 65536);
    assert_eq!(peer.own_vector_count(), 2);
    assert_eq!(peer.peers(), vec![PeerInfo { id: 1, vectors: 2 }]);
    assert_eq!(peer.peer_vector_count(3), Some(2));
    assert!(peer.server_connected());

    // The mapping is the server's memory: writes show up in its fd, and the other way round.
    let shm_fd = server.shm();
    let theirs = peer::SharedMemory::map(shm_fd).unwrap();
    peer.shm().write(100, b"from peer").unwrap();
    let mut buf = [0u8; 9];
    theirs.read(100, &mut buf).unwrap();
    assert_eq!(&buf, b"from peer");
    theirs
        .atomic_u64(4096)
        .unwrap()
        .store(77, Ordering::Release);
    assert_eq!(
        peer.shm().atomic_u64(4096).unwrap().load(Ordering::Acquire),
        77
    );
    server.finish();
}

#[test]
fn ring_hits_exactly_the_chosen_eventfd_and_wait_reports_our_vector() {
    let dir = Scratch::new("peer-ring");
    let server = FakeServer::start(&dir.join("sock"), standard_handshake());
    let mut peer = connect_standard(&server);
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    // sent[0..2] = peer 1's vectors, sent[2..4] = ours.
    peer.ring(1, 1).unwrap();
    assert_eq!(eventfd_count(&sent[0].fd), 0);
    assert_eq!(eventfd_count(&sent[1].fd), 1);

    assert!(matches!(peer.ring(9, 0), Err(RingError::UnknownPeer(9))));
    let err = peer.ring(1, 2).unwrap_err();
    assert!(matches!(
        err,
        RingError::UnknownVector {
            peer: 1,
            vector: 2,
            count: 2
        }
    ));
    assert!(err.to_string().contains("peer 1 has no vector 2"), "{err}");

    // Nothing pending: wait times out with an empty list, roughly on time.
    let start = Instant::now();
    assert!(peer
        .wait(Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    assert!(start.elapsed() >= Duration::from_millis(45));

    // Someone rings our vector 1 twice: wait reports vector 1 with count 2, and drains it.
    ring_eventfd(&sent[3].fd);
    ring_eventfd(&sent[3].fd);
    let fired = peer.wait(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].vector, fired[0].count), (1, 2));
    assert_eq!(peer.drain_vector(1).unwrap(), 0);

    // wait_vector ignores other vectors.
    ring_eventfd(&sent[2].fd);
    assert_eq!(
        peer.wait_vector(1, Some(Duration::from_millis(30)))
            .unwrap(),
        None
    );
    assert_eq!(
        peer.wait_vector(0, Some(Duration::from_millis(30)))
            .unwrap(),
        Some(1)
    );
    // Ringing ourselves works like the device's doorbell to its own id.
    peer.ring(3, 0).unwrap();
    assert_eq!(peer.drain_vector(0).unwrap(), 1);
    assert!(peer
        .wait_vector(5, Some(Duration::from_millis(50)))
        .is_err());
    server.finish();
}

#[test]
fn joins_and_leaves_are_followed() {
    let dir = Scratch::new("peer-join");
    let mut steps = standard_handshake();
    steps.push(Step::AwaitGo);
    steps.extend(vectors(5, 2)); // peer 5 joins
    steps.push(Step::Value(1)); // peer 1 leaves
    let server = FakeServer::start(&dir.join("sock"), steps);
    let mut peer = connect_standard(&server);
    assert!(peer.process_server_messages().is_empty());
    server.go();
    let events = poll_events(&mut peer, 2);
    assert_eq!(
        events,
        vec![
            ServerEvent::Joined {
                peer: 5,
                vectors: 2
            },
            ServerEvent::Left { peer: 1 }
        ]
    );
    assert_eq!(peer.peers(), vec![PeerInfo { id: 5, vectors: 2 }]);
    assert!(matches!(peer.ring(1, 0), Err(RingError::UnknownPeer(1))));
    peer.ring(5, 1).unwrap();
    server.finish();
}

#[test]
fn vanished_server_is_an_event_and_the_peer_keeps_working() {
    let dir = Scratch::new("peer-gone");
    let mut steps = standard_handshake();
    steps.push(Step::AwaitGo);
    steps.push(Step::Close);
    let server = FakeServer::start(&dir.join("sock"), steps);
    let mut peer = connect_standard(&server);
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    server.go();
    let events = peer.poll_server(Some(Duration::from_secs(5)));
    assert!(
        matches!(&events[..], [ServerEvent::ServerGone { reason }] if reason.contains("closed")),
        "{events:?}"
    );
    assert!(!peer.server_connected());
    assert!(peer.server_fd().is_none());
    assert!(peer.server_gone_reason().unwrap().contains("closed"));
    // Memory and known peers stay usable.
    peer.shm().write(0, b"still here").unwrap();
    assert_eq!(peer.peers(), vec![PeerInfo { id: 1, vectors: 2 }]);
    peer.ring(1, 0).unwrap();
    assert_eq!(eventfd_count(&sent[0].fd), 1);
    // Nothing more is reported, and polling a gone server returns at once.
    let start = Instant::now();
    assert!(peer.poll_server(Some(Duration::from_secs(5))).is_empty());
    assert!(start.elapsed() < Duration::from_secs(1));
    server.finish();
}

#[test]
fn garbage_after_the_handshake_is_reported_and_ignored() {
    let dir = Scratch::new("peer-garbage");
    let mut steps = standard_handshake();
    steps.push(Step::AwaitGo);
    steps.push(Step::Value(1 << 40)); // not a peer id
    steps.push(Step::Value(42)); // leave of an unknown peer
    steps.push(Step::Shm(-1, 4096)); // a second shared memory
    steps.push(Step::Value(3)); // "we" left
    steps.extend(vectors(6, 1)); // and then a proper join
    let server = FakeServer::start(&dir.join("sock"), steps);
    let mut peer = connect_standard(&server);
    server.go();
    let events = poll_events(&mut peer, 5);
    assert_eq!(
        events,
        vec![
            ServerEvent::ProtocolViolation(ProtocolError::InvalidValue(1 << 40)),
            ServerEvent::ProtocolViolation(ProtocolError::DisconnectUnknownPeer(42)),
            ServerEvent::ProtocolViolation(ProtocolError::UnexpectedShm),
            ServerEvent::ProtocolViolation(ProtocolError::DisconnectOwnId(3)),
            ServerEvent::Joined {
                peer: 6,
                vectors: 1
            },
        ]
    );
    assert!(peer.server_connected());
    assert_eq!(
        peer.shm().len(),
        65536,
        "the second shared memory is not mapped"
    );
    server.finish();
}

#[test]
fn a_half_sent_message_that_stalls_ends_the_server_link() {
    let dir = Scratch::new("peer-partial");
    let mut steps = standard_handshake();
    steps.push(Step::AwaitGo);
    steps.push(Step::Raw(vec![5, 0, 0, 0]));
    let server = FakeServer::start(&dir.join("sock"), steps);
    let mut peer = connect_standard(&server);
    server.go();
    let start = Instant::now();
    let events = poll_events(&mut peer, 1);
    assert!(
        matches!(&events[..], [ServerEvent::ServerGone { reason }] if reason.contains("part of a message")),
        "{events:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
    server.finish();
}

fn connect_error(steps: Vec<Step>, opts: ConnectOptions) -> ConnectError {
    let dir = Scratch::new("peer-bad");
    let server = FakeServer::start(&dir.join("sock"), steps);
    let err = Peer::connect_with(&server.path, &opts).expect_err("connect must fail");
    server.finish();
    err
}

#[test]
fn bad_handshakes_fail_with_a_clear_error() {
    let err = connect_error(vec![Step::Value(1)], options(None, 2000));
    assert!(matches!(
        err,
        ConnectError::Protocol(ProtocolError::BadVersion(1))
    ));
    assert!(err.to_string().contains("version 1"), "{err}");

    let err = connect_error(
        vec![Step::Value(0), Step::Value(70000)],
        options(None, 2000),
    );
    assert!(matches!(
        err,
        ConnectError::Protocol(ProtocolError::IdOutOfRange(70000))
    ));

    let err = connect_error(
        vec![Step::Value(0), Step::Value(1), Step::Value(-1)],
        options(None, 2000),
    );
    assert!(matches!(
        err,
        ConnectError::Protocol(ProtocolError::ShmWithoutFd)
    ));

    let err = connect_error(welcome(1, 0), options(None, 2000));
    assert!(matches!(
        err,
        ConnectError::SharedMemory(ShmError::ZeroSize)
    ));
    assert!(err.to_string().contains("size 0"), "{err}");

    let err = connect_error(
        vec![Step::Value(0), Step::Value(2), Step::Vector(2)],
        options(None, 2000),
    );
    assert!(matches!(
        err,
        ConnectError::Protocol(ProtocolError::OwnVectorBeforeShm(2))
    ));
}

#[test]
fn silent_stalling_or_closing_servers_fail_the_connect() {
    // A server that says nothing for longer than the connect timeout (the stall is the test).
    let err = connect_error(
        vec![Step::Sleep(Duration::from_secs(3))],
        options(None, 200),
    );
    assert!(
        matches!(&err, ConnectError::Timeout { waiting_for, .. } if waiting_for.contains("version")),
        "{err}"
    );

    let err = connect_error(
        vec![Step::Value(0), Step::Raw(vec![1, 0, 0])],
        options(None, 300),
    );
    assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");

    let mut steps = welcome(0, 4096);
    steps.push(Step::Close);
    let err = connect_error(steps, options(None, 2000));
    assert!(
        matches!(&err, ConnectError::Closed { waiting_for } if waiting_for.contains("interrupt vectors")),
        "{err}"
    );

    // We expect two vectors, the server gives one.
    let mut steps = welcome(0, 4096);
    steps.extend(vectors(0, 1));
    let err = connect_error(steps, options(Some(2), 300));
    assert!(err.to_string().contains("got 1 of 2"), "{err}");
}

#[test]
fn expected_vector_count_limits_and_waits() {
    let dir = Scratch::new("peer-vectors");
    let mut steps = welcome(0, 4096);
    steps.extend(vectors(0, 1));
    steps.push(Step::Sleep(Duration::from_millis(100))); // the rest comes late: under test
    steps.extend(vectors(0, 2));
    let server = FakeServer::start(&dir.join("sock"), steps);
    let peer = Peer::connect_with(&server.path, &options(Some(2), 3000)).expect("connect");
    assert_eq!(peer.own_vector_count(), 2, "waited for the second vector");
    server.finish();

    // Some(0): a server without vectors (-n 0) is fine.
    let dir = Scratch::new("peer-novectors");
    let server = FakeServer::start(&dir.join("sock"), welcome(4, 4096));
    let mut peer = Peer::connect_with(&server.path, &options(Some(0), 3000)).expect("connect");
    assert_eq!(peer.own_vector_count(), 0);
    assert!(peer.wait(Some(Duration::from_millis(1))).is_err());
    server.finish();
}

#[test]
fn no_server_is_a_connect_error_naming_the_path() {
    let dir = Scratch::new("peer-nosrv");
    let path = dir.join("nobody-listens");
    let err = Peer::connect(&path).expect_err("no server");
    assert!(matches!(err, ConnectError::Connect { .. }));
    assert!(err.to_string().contains("nobody-listens"), "{err}");
}

#[test]
fn a_server_that_never_accepts_times_out_instead_of_hanging() {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let dir = Scratch::new("peer-backlog");
    let path = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap(); // never accepts
    let addr = UnixAddr::new(&path).unwrap();
    let mut queued = Vec::new();
    let full = (0..5000).any(|_| {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let result = connect(fd.as_raw_fd(), &addr);
        queued.push(fd);
        result == Err(nix::errno::Errno::EAGAIN)
    });
    assert!(full, "could not fill the listen backlog");
    let start = Instant::now();
    let err = Peer::connect_with(&path, &options(None, 300)).expect_err("must time out");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, ConnectError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("backlog is full"), "{err}");
}
