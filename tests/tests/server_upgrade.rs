//! Zero-downtime upgrade (SIGUSR2, docs/server-operations.md): a new server process takes over
//! every peer, the socket and the memory; peers see nothing; a failed upgrade leaves the old
//! server serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use harness::eventfd::{ring_eventfd, wait_rung};
use harness::raw_client::{silent_for, RawClient};
use harness::server::process_alive;
use harness::{bin, wait_until, Scratch, Server, TIMEOUT};
use nix::sys::signal::Signal;

/// Watches a path until stopped; true if it was ever missing.
fn watch_missing(path: std::path::PathBuf) -> (Arc<AtomicBool>, std::thread::JoinHandle<bool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut missing = false;
        while !flag.load(Ordering::Relaxed) {
            missing |= std::fs::symlink_metadata(&path).is_err();
            std::thread::yield_now();
        }
        missing
    });
    (stop, handle)
}

#[test]
fn server_upgrade_is_invisible_to_peers() {
    let dir = Scratch::new("srv-upgrade");
    let sock = dir.join("sock");
    let mut server = Server::start_without_probe(&sock, &["--memfd", "-n", "2"]);
    let old_pid = server.pid() as i32;

    // A host peer (the library) and a raw client, before the upgrade.
    let mut host = peer::Peer::connect(&sock).expect("host peer connects");
    assert_eq!(host.id(), 0);
    let mut raw = RawClient::connect(&sock, 2);
    assert_eq!(raw.id, 1);
    assert!(host.await_peer(1, Some(TIMEOUT)));
    host.shm().write(0, b"before").unwrap();
    let _ = host.process_server_messages(); // the join of peer 1, seen

    let (stop, watcher) = watch_missing(sock.clone());
    let successor = server.upgrade();
    stop.store(true, Ordering::Relaxed);
    assert!(
        !watcher.join().unwrap(),
        "the socket file was missing during the upgrade"
    );
    assert_ne!(successor.pid, old_pid);
    assert!(!process_alive(old_pid), "the old server is gone");
    assert!(successor.alive());
    assert!(
        server.wait_log("took over 2 peers"),
        "{}",
        server.log_text()
    );

    // Nobody was told anything.
    assert!(silent_for(&raw.sock, 100), "the raw client heard something");
    let heard = host.process_server_messages();
    assert!(heard.is_empty(), "the host peer heard {heard:?}");
    assert!(host.server_connected());

    // Doorbells across the old eventfds, both ways.
    ring_eventfd(&raw.vectors[&0][1]);
    assert_eq!(host.wait_vector(1, Some(TIMEOUT)).unwrap(), Some(1));
    host.ring(1, 0).unwrap();
    assert_eq!(wait_rung(&raw.vectors[&1][0], 5000), Some(1));

    // A newcomer gets the next id and hears of everyone; everyone hears of it.
    let newcomer = RawClient::connect(&sock, 2);
    assert_eq!(newcomer.id, 2, "ids keep increasing across the upgrade");
    assert_eq!(newcomer.peer_ids(), vec![0, 1]);
    raw.expect_join(2);
    assert!(host.await_peer(2, Some(TIMEOUT)));
    let mut shm = [0u8; 6];
    harness::raw_client::map_shm(newcomer.shm.as_ref().unwrap())
        .read(0, &mut shm)
        .unwrap();
    assert_eq!(&shm, b"before", "the same memory");
    ring_eventfd(&newcomer.vectors[&1][0]);
    assert_eq!(wait_rung(&raw.vectors[&1][0], 5000), Some(1));

    // And again: the successor upgrades too, then a departure is still announced.
    let (stop, watcher) = watch_missing(sock.clone());
    successor.signal(Signal::SIGUSR2);
    assert!(
        server.wait_log("took over 3 peers"),
        "{}",
        server.log_text()
    );
    stop.store(true, Ordering::Relaxed);
    assert!(!watcher.join().unwrap(), "the socket file went missing");
    assert!(wait_until(TIMEOUT, || !successor.alive()));
    drop(newcomer);
    raw.expect_leave(2);

    // The third server's pid is in its log line; it shuts down like any server.
    let log = server.log_text();
    let third: i32 = log
        .rsplit("upgraded: pid ")
        .next()
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("pid of the third server");
    let third = harness::server::Successor { pid: third };
    assert!(third.terminate());
    raw.expect_leave(0);
    assert!(
        wait_until(TIMEOUT, || !sock.exists()),
        "socket file removed at exit"
    );
    drop(host);
}

#[test]
fn server_failed_upgrade_keeps_serving() {
    let dir = Scratch::new("srv-upgrade-fail");
    let sock = dir.join("sock");
    // A binary that is not there.
    let server = Server::start_without_probe(
        &sock,
        &["--memfd", "--upgrade-binary", "/nonexistent/ivshmem-server"],
    );
    let mut a = RawClient::connect(&sock, 1);
    let fds_before = harness::fd_count(server.pid());
    server.signal(Signal::SIGUSR2);
    assert!(
        server
            .wait_log("upgrade failed, still serving: cannot execute /nonexistent/ivshmem-server"),
        "{}",
        server.log_text()
    );
    assert_eq!(
        harness::fd_count(server.pid()),
        fds_before,
        "a failed upgrade leaks no fd"
    );
    let b = RawClient::connect(&sock, 1);
    a.expect_join(b.id);
    assert_eq!(b.id, 1);

    // A binary that refuses the options (here: a wrapper adding a bad one), and one with
    // another state version are refused the same way: it exits before it is ready.
    let wrapper = dir.join("new-server");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\" --no-such-option\n",
            bin("ivshmem-server").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut server2 = Server::start_without_probe(
        &dir.join("sock2"),
        &["--memfd", "--upgrade-binary", wrapper.to_str().unwrap()],
    );
    let mut c = RawClient::connect(&dir.join("sock2"), 1);
    server2.signal(Signal::SIGUSR2);
    assert!(
        server2.wait_log("upgrade failed, still serving: the new server"),
        "{}",
        server2.log_text()
    );
    assert!(server2
        .log_text()
        .contains("unknown option '--no-such-option'"));
    let d = RawClient::connect(&dir.join("sock2"), 1);
    c.expect_join(d.id);
    assert!(silent_for(&c.sock, 50));
    // Still the same process, which shuts down normally.
    assert!(server2.child.try_wait().unwrap().is_none());
    drop(d);
    c.expect_leave(1);
    assert!(server.terminate().success());
    assert!(server2.terminate().success());
}

/// A daemon (no -F) upgrades too: the PID file names the new server, which removes it (and the
/// socket files) when it stops.
#[test]
fn server_upgrade_of_a_daemon_rewrites_its_pid_file() {
    let dir = Scratch::new("srv-upgrade-daemon");
    let sock = dir.join("sock");
    let pid_file = dir.join("pid");
    let out = std::process::Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(&sock)
        .arg("-p")
        .arg(&pid_file)
        .arg("--memfd")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    let read_pid = || -> i32 {
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let old = harness::server::Successor { pid: read_pid() };
    let mut a = RawClient::connect(&sock, 1);
    let answer = std::process::Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(&sock)
        .arg("--upgrade")
        .output()
        .unwrap();
    assert!(answer.status.success(), "{}", harness::text(&answer.stdout));
    assert!(wait_until(TIMEOUT, || !old.alive()), "the old daemon exits");
    let new = harness::server::Successor { pid: read_pid() };
    assert_ne!(new.pid, old.pid);
    assert!(new.alive());
    let b = RawClient::connect(&sock, 1);
    a.expect_join(b.id);
    assert!(new.terminate());
    assert!(wait_until(TIMEOUT, || !pid_file.exists() && !sock.exists()));
}

/// A peer that does not read has messages queued (and possibly one half sent) when the server
/// upgrades: the new server sends the rest, so its stream, read afterwards, is complete and
/// valid — every join with all its vectors, every leave, in order.
#[test]
fn server_upgrade_hands_over_queued_messages() {
    let dir = Scratch::new("srv-upgrade-queue");
    let sock = dir.join("sock");
    let mut server = Server::start_without_probe(&sock, &["--memfd", "-n", "64"]);
    let slow = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let status = || {
        let out = std::process::Command::new(bin("ivshmem-server"))
            .arg("-S")
            .arg(&sock)
            .args(["--status", "--json"])
            .output()
            .unwrap();
        harness::text(&out.stdout)
    };
    let mut cycles = Vec::new();
    let backlogged = wait_until(TIMEOUT, || {
        let c = RawClient::connect_light(&sock, 64);
        cycles.push(c.id);
        drop(c);
        !status().contains(",\"queued\":0}")
    });
    assert!(backlogged, "{}", status());
    let successor = server.upgrade();
    assert!(server.wait_log("took over 1 peer"), "{}", server.log_text());
    // Now read it all: a valid handshake, then each cycle's join (64 vectors) and leave.
    let mut slow = RawClient::handshake(slow, 64, false);
    assert_eq!(slow.id, 0);
    for &id in &cycles {
        slow.expect_join(id);
        slow.expect_leave(id);
    }
    assert!(silent_for(&slow.sock, 50));
    eprintln!("{} cycles queued across the upgrade", cycles.len());
    assert!(successor.terminate());
}
