//! Host peers through the real `ivshmem-server`: a library peer in this process and
//! `ivshmem-client` processes see each other's writes, ring exactly the vector they mean, and
//! follow joins, leaves and the server's shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{bin, run_client_script, wait_until, Scratch, Server};
use peer::{ConnectOptions, Peer, ServerEvent};

fn connect(server: &Server, vectors: u32) -> Peer {
    Peer::connect_with(
        &server.socket,
        &ConnectOptions {
            vectors: Some(vectors),
            timeout: Duration::from_secs(5),
        },
    )
    .expect("connect to ivshmem-server")
}

/// Polls the server until `pred` matches an event; returns that event.
fn expect_event(
    peer: &mut Peer,
    what: &str,
    mut pred: impl FnMut(&ServerEvent) -> bool,
) -> ServerEvent {
    let mut found = None;
    wait_until(Duration::from_secs(10), || {
        found = peer
            .poll_server(Some(Duration::from_millis(100)))
            .into_iter()
            .find(&mut pred);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {what} event within 10 s"))
}

#[test]
fn library_peer_and_client_process_share_memory_and_doorbells() {
    let dir = Scratch::new("peer-srv");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-l", "1M", "-n", "2"]);
    let mut a = connect(&server, 2);
    assert_eq!(a.shm().len(), 1 << 20);
    assert_eq!(a.own_vector_count(), 2);

    // B: waits for us, writes, rings our vector 1, then waits for our ring on its vector 0.
    let script = format!(
        "wait-peer {a} 5000; write 0x100 from-b; int {a} 1; wait 0 10000; read 0x200 7",
        a = a.id()
    );
    let b = Command::new(bin("ivshmem-client"))
        .arg("-S")
        .arg(&server.socket)
        .args(["--vectors", "2", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivshmem-client");

    let joined = expect_event(&mut a, "join", |e| matches!(e, ServerEvent::Joined { .. }));
    let ServerEvent::Joined {
        peer: b_id,
        vectors,
    } = joined
    else {
        unreachable!()
    };
    assert_eq!(vectors, 2);
    assert_ne!(b_id, a.id());

    // B's doorbell wakes exactly our vector 1.
    assert_eq!(
        a.wait_vector(1, Some(Duration::from_secs(10))).unwrap(),
        Some(1)
    );
    assert_eq!(a.drain_vector(0).unwrap(), 0, "vector 0 must not fire");
    let mut buf = [0u8; 6];
    a.shm().read(0x100, &mut buf).unwrap();
    assert_eq!(&buf, b"from-b");

    a.shm().write(0x200, b"from-a!").unwrap();
    a.ring(b_id, 0).unwrap();
    let out = b.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "receive notification from peer_id={b_id} vector=0"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("|from-a!|"), "{stdout}");

    let left = expect_event(&mut a, "leave", |e| matches!(e, ServerEvent::Left { .. }));
    assert_eq!(left, ServerEvent::Left { peer: b_id });
    assert!(a.peers().is_empty());
    assert!(matches!(
        a.ring(b_id, 0),
        Err(peer::RingError::UnknownPeer(_))
    ));
}

#[test]
fn two_client_processes_ping_pong() {
    let dir = Scratch::new("peer-srv2");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-n", "1"]);
    // A library peer only to learn the ids the processes get.
    let mut observer = connect(&server, 1);
    let spawn = |script: &str| {
        Command::new(bin("ivshmem-client"))
            .arg("-S")
            .arg(&server.socket)
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivshmem-client")
    };
    let x = spawn("wait 0 10000; read 0 4; write 4 pong; int all");
    let ServerEvent::Joined { peer: x_id, .. } = expect_event(&mut observer, "join", |e| {
        matches!(e, ServerEvent::Joined { .. })
    }) else {
        unreachable!()
    };
    let y = spawn(&format!(
        "write 0 ping; int {x_id} 0; wait 0 10000; read 4 4"
    ));
    let x_out = x.wait_with_output().unwrap();
    let y_out = y.wait_with_output().unwrap();
    let (xs, ys) = (
        String::from_utf8_lossy(&x_out.stdout),
        String::from_utf8_lossy(&y_out.stdout),
    );
    assert_eq!(
        x_out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&x_out.stderr)
    );
    assert_eq!(
        y_out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&y_out.stderr)
    );
    assert!(xs.contains("|ping|"), "{xs}");
    assert!(ys.contains("|pong|"), "{ys}");
    // The observer was rung by `int all` too.
    assert_eq!(
        observer
            .wait_vector(0, Some(Duration::from_secs(5)))
            .unwrap(),
        Some(1)
    );
}

#[test]
fn server_shutdown_is_reported_and_the_memory_stays() {
    let dir = Scratch::new("peer-srv3");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-n", "1"]);
    let mut a = connect(&server, 1);
    let mut b = connect(&server, 1);
    expect_event(&mut a, "join", |e| matches!(e, ServerEvent::Joined { .. }));
    a.shm().write(0, b"kept").unwrap();
    assert!(server.terminate().success());
    let gone = expect_event(&mut a, "server gone", |e| {
        matches!(e, ServerEvent::ServerGone { .. })
    });
    assert!(matches!(gone, ServerEvent::ServerGone { .. }));
    let mut buf = [0u8; 4];
    b.shm().read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"kept");
    // b heard about a leaving (the server announces departures on shutdown) or just the close.
    expect_event(&mut b, "server gone", |e| {
        matches!(e, ServerEvent::ServerGone { .. })
    });
}

#[test]
fn client_exit_codes_against_the_real_server() {
    let dir = Scratch::new("peer-srv4");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-l", "64K"]);
    let run = |script: &str| run_client_script(&server.socket, script);
    let ok = run("write 0 x; read 0 1; dump");
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("shared memory: 65536 bytes"));
    let bad = run("int 999 0");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown peer 999"));
    let oob = run("read 65535 2");
    assert_eq!(oob.status.code(), Some(1));
}

#[test]
fn ringing_a_peer_never_wakes_the_ringer() {
    let dir = Scratch::new("peer-srv5");
    let server = Server::start(&dir.join("sock"), &["--memfd", "-n", "2"]);
    let mut a = connect(&server, 2);
    let b = connect(&server, 2);
    wait_until(Duration::from_secs(5), || {
        a.poll_server(Some(Duration::from_millis(50)));
        a.peer_vector_count(b.id()) == Some(2)
    });
    for vector in 0..2 {
        a.ring(b.id(), vector).unwrap();
        assert_eq!(a.drain_all().unwrap(), vec![], "a's ring of b woke a");
        let fired = b.drain_all().unwrap();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].vector, vector);
        b.ring(a.id(), vector).unwrap();
        assert_eq!(b.drain_all().unwrap(), vec![], "b's ring of a woke b");
        assert_eq!(a.drain_vector(vector).unwrap(), 1);
    }
}
