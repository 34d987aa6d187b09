//! The server survives what QEMU's reference server does not: hundreds of peers, churn without
//! fd leaks, clients that misbehave (send, vanish, never read), signals, stale and live sockets.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::raw_client::{recv_raw, RawClient};
use harness::{bin, fd_count, stays_idle, wait_until, Scratch, Server};
use protocol::client::ClientEvent;
use protocol::fdpass::Received;

#[test]
fn server_handles_400_simultaneous_peers() {
    protocol::fd_limit::raise_fd_limit().expect("raise the open-file limit");
    let dir = Scratch::new("srv-many");
    let sock = dir.join("sock");
    // 2 vectors: the server holds 3 fds per peer, well past select()'s 1024.
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2"]);
    const N: usize = 420;
    let mut clients = Vec::with_capacity(N);
    for i in 0..N {
        let c = RawClient::connect_light(&sock, 2);
        assert_eq!(c.id as usize, i);
        assert_eq!(
            c.state.peers().len(),
            i,
            "client {i} hears about every earlier peer"
        );
        clients.push(c);
    }
    // Every client then hears about every later one.
    for (i, client) in clients.iter_mut().enumerate() {
        for j in i + 1..N {
            client.expect_join(j as u16);
        }
        assert_eq!(client.state.peers().len(), N - 1);
    }
    // All from this test's pid: the first 10 joins are logged, the rest summed up later
    // (rate limit, see server_logging.rs).
    assert!(server.log_text().contains("peer 9 joined"));
    assert!(fd_count(server.pid()) > 1024, "past FD_SETSIZE");
    // Everyone leaves; the last one hears every departure.
    let mut last = clients.pop().unwrap();
    for c in clients.drain(..) {
        let id = c.id;
        drop(c);
        last.expect_leave(id);
    }
    assert!(last.state.peers().is_empty());
}

#[test]
fn server_join_leave_cycles_leak_no_fds() {
    let dir = Scratch::new("srv-churn");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "4"]);
    let mut resident = RawClient::connect(&sock, 4);
    // The join line is logged once the server has set the resident up: its fds are the baseline.
    assert!(server.wait_log("peer 0 joined"), "{}", server.log_text());
    let before = fd_count(server.pid());
    resident.watch_cycles(&sock, 300);
    assert!(
        wait_until(Duration::from_secs(5), || fd_count(server.pid()) == before),
        "server fds: {before} before, {} after 300 cycles",
        fd_count(server.pid())
    );
    assert_eq!(resident.vectors.len(), 1, "only own vectors remain");
    // The departed sockets were closed without EPOLL_CTL_DEL (the server held their only fd,
    // so closing took them out of the epoll set): nothing is left to wake the loop.
    assert!(
        stays_idle(server.pid()),
        "the server spins after the cycles"
    );
}

#[test]
fn server_drops_a_client_that_sends_anything() {
    let dir = Scratch::new("srv-garbage");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd"]);
    let mut a = RawClient::connect(&sock, 1);
    let mut g = RawClient::connect(&sock, 1);
    a.expect_join(g.id);
    g.sock.write_all(b"garbage!\x00\x01").unwrap();
    a.expect_leave(g.id);
    assert!(server.wait_log("peer 1 left"));
    assert!(
        server.log_text().contains("sent data"),
        "{}",
        server.log_text()
    );
    // The dropped client sees EOF.
    loop {
        match recv_raw(&g.sock) {
            Ok(Received::Eof) | Err(_) => break,
            Ok(Received::Message { .. }) => {}
        }
    }
    let c = RawClient::connect(&sock, 1);
    a.expect_join(c.id);
}

/// The leave reason of a logged line is exact: a client that sent data and then closed is not
/// reported as merely disconnected, nor one that closed quietly as having sent data.
#[test]
fn server_logs_why_a_client_left() {
    let dir = Scratch::new("srv-why");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd"]);
    let mut a = RawClient::connect(&sock, 1);
    let mut g = RawClient::connect(&sock, 1);
    a.expect_join(g.id);
    g.sock.write_all(b"garbage!").unwrap();
    let gone = g.id;
    drop(g);
    a.expect_leave(gone);
    let q = RawClient::connect(&sock, 1);
    a.expect_join(q.id);
    let quiet = q.id;
    drop(q);
    a.expect_leave(quiet);
    let sent = format!("peer {gone} left (pid {}): sent data", std::process::id());
    let closed = format!(
        "peer {quiet} left (pid {}): disconnected",
        std::process::id()
    );
    assert!(
        server.wait_log(&sent) && server.wait_log(&closed),
        "{}",
        server.log_text()
    );
}

#[test]
fn server_survives_clients_vanishing_mid_handshake() {
    let dir = Scratch::new("srv-vanish");
    let sock = dir.join("sock");
    // Many vectors make the handshake long, so clients vanish in the middle of it.
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "512"]);
    let mut a = RawClient::connect(&sock, 512);
    for round in 0..40 {
        let s = UnixStream::connect(&sock).unwrap();
        if round % 2 == 1 {
            // Read a few messages first.
            for _ in 0..3 {
                recv_raw(&s).unwrap();
            }
        }
        drop(s);
        let mut joined = None;
        loop {
            match a.next_event() {
                ClientEvent::PeerVector { peer, .. } => joined = Some(peer),
                ClientEvent::PeerLeft(p) => {
                    assert_eq!(Some(p), joined);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let c = RawClient::connect(&sock, 512);
    a.expect_join(c.id);
    assert!(
        server.child.id() > 0 && fd_count(server.pid()) > 0,
        "server alive"
    );
}

#[test]
fn server_drops_a_client_that_never_reads() {
    let dir = Scratch::new("srv-stall");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "--queue-limit", "32"]);
    let mut a = RawClient::connect(&sock, 1);
    // The non-reader connects and never reads a byte.
    let stalled = UnixStream::connect(&sock).unwrap();
    a.expect_join(1);
    let start = Instant::now();
    let mut stalled_left = false;
    let mut cycles = 0;
    while !stalled_left {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "non-reader never dropped"
        );
        let c = RawClient::connect(&sock, 1);
        cycles += 1;
        let id = c.id;
        drop(c);
        // The reader keeps getting everything, in order, without delay.
        let mut joined = false;
        loop {
            match a.next_event() {
                ClientEvent::PeerVector { peer, .. } if peer == id => joined = true,
                ClientEvent::PeerLeft(1) => stalled_left = true,
                ClientEvent::PeerLeft(p) if p == id => {
                    assert!(joined);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(
        cycles > 10,
        "dropped only after its socket and queue filled ({cycles} cycles)"
    );
    // The log is collected by a reader thread: the line may trail the notice we just read.
    assert!(server.wait_log("not reading"), "{}", server.log_text());
    assert!(server.log_text().contains("peer 1 left"));
    drop(stalled);
    let c = RawClient::connect(&sock, 1);
    a.expect_join(c.id);
}

#[test]
fn server_sigterm_announces_departures_and_cleans_up() {
    let dir = Scratch::new("srv-term");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2", "--queue-limit", "8"]);
    let mut a = RawClient::connect(&sock, 2);
    let mut b = RawClient::connect(&sock, 2);
    a.expect_join(b.id);
    // A peer that never reads must not hold up the shutdown.
    let stalled = UnixStream::connect(&sock).unwrap();
    a.expect_join(2);
    b.expect_join(2);
    let mut c = RawClient::connect(&sock, 2);
    a.expect_join(c.id);
    b.expect_join(c.id);
    let log = server.log.clone();
    let start = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(!sock.exists(), "socket file removed");
    // Like QEMU: peers leave in connect order, each announced to those still connected.
    b.expect_leave(a.id);
    c.expect_leave(a.id);
    c.expect_leave(b.id);
    c.expect_leave(2);
    for client in [&a, &b, &c] {
        assert!(matches!(recv_raw(&client.sock).unwrap(), Received::Eof));
    }
    drop(stalled);
    // The reader thread may still be draining the exited server's stderr pipe.
    let text = || log.lock().unwrap().join("\n");
    let complete = wait_until(Duration::from_secs(10), || {
        let text = text();
        ["SIGTERM received", "peer 3 left", "server shutting down"]
            .iter()
            .all(|line| text.contains(line))
    });
    assert!(complete, "{}", text());
}

#[test]
fn server_sigint_exits_cleanly() {
    let dir = Scratch::new("srv-int");
    let sock = dir.join("sock");
    let mut server = Server::start_without_probe(&sock, &["--memfd"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success());
    assert!(!sock.exists());
}

#[test]
fn server_replaces_a_stale_socket() {
    let dir = Scratch::new("srv-stale");
    let sock = dir.join("sock");
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let server = Server::start_without_probe(&sock, &["--memfd"]);
    assert!(server.log_text().contains("removed stale socket"));
    let c = RawClient::connect(&sock, 1);
    assert_eq!(c.id, 0);
}

#[test]
fn server_refuses_a_live_socket() {
    let dir = Scratch::new("srv-live");
    let sock = dir.join("sock");
    let _first = Server::start_without_probe(&sock, &["--memfd"]);
    let out = Command::new(bin("ivshmem-server"))
        .args(["-F", "--memfd", "-S"])
        .arg(&sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    // The first server is untouched and still serves.
    assert!(sock.exists());
    let c = RawClient::connect(&sock, 1);
    drop(c);
    // A regular file is never replaced either.
    let file = dir.join("file");
    std::fs::write(&file, b"keep").unwrap();
    let out = Command::new(bin("ivshmem-server"))
        .args(["-F", "--memfd", "-S"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}
