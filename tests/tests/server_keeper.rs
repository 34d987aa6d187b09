//! Crash survival (`--keeper`, docs/server-operations.md): `kill -9` of the serving process
//! loses nothing; the keeper restarts it with every fd; departures during the gap are
//! announced; newcomers are told of everyone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::eventfd::{ring_eventfd, wait_rung};
use harness::raw_client::{silent_for, RawClient};
use harness::server::process_alive;
use harness::{bin, stays_idle, text, wait_until, Scratch, Server, TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The serving process's pid, from `--status --json` (None while nobody answers).
fn serving_pid(sock: &Path) -> Option<i32> {
    let out = Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(sock)
        .args(["--status", "--json"])
        .output()
        .ok()?;
    let json = text(&out.stdout);
    json.strip_prefix("{\"format\":1,\"pid\":")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// `ivshmem-server -F --memfd -n VECTORS --keeper -S SOCK`, once a server serves.
fn start_keeper(sock: &Path, vectors: u32) -> Server {
    let mut command = Command::new(bin("ivshmem-server"));
    command
        .args([
            "-F",
            "--memfd",
            "-n",
            &vectors.to_string(),
            "--keeper",
            "-S",
        ])
        .arg(sock);
    let keeper = Server::from_command(command, sock);
    assert!(keeper.wait_log("serves"), "{}", keeper.log_text());
    keeper
}

fn status_json(sock: &Path) -> String {
    let out = Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(sock)
        .args(["--status", "--json"])
        .output()
        .unwrap();
    text(&out.stdout)
}

#[test]
fn server_keeper_survives_kill_9() {
    let dir = Scratch::new("srv-keeper");
    let sock = dir.join("sock");
    let keeper = start_keeper(&sock, 2);
    let first = serving_pid(&sock).expect("the server answers --status");
    assert_ne!(
        first,
        keeper.pid() as i32,
        "the keeper is not the serving process"
    );

    let mut host = peer::Peer::connect(&sock).expect("host peer");
    let mut a = RawClient::connect(&sock, 2);
    let b = RawClient::connect(&sock, 2);
    assert_eq!((host.id(), a.id, b.id), (0, 1, 2));
    a.expect_join(2);
    assert!(host.await_peer(2, Some(TIMEOUT)));
    let _ = host.process_server_messages();
    // A barrier: once the server answers a status request, it has told the keeper that every
    // stream above is complete (killed earlier, a peer would rightly count as unsettled).
    assert_eq!(serving_pid(&sock), Some(first));

    // The keeper is held still so that B's departure falls in the gap with certainty.
    let keeper_pid = Pid::from_raw(keeper.pid() as i32);
    kill(keeper_pid, Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    assert!(wait_until(TIMEOUT, || !process_alive(first)));
    drop(b);
    let resumed = Instant::now();
    kill(keeper_pid, Signal::SIGCONT).unwrap();
    let mut second = None;
    assert!(
        wait_until(TIMEOUT, || {
            second = serving_pid(&sock).filter(|&p| p != first);
            second.is_some()
        }),
        "no new server:\n{}",
        keeper.log_text()
    );
    let recovery = resumed.elapsed();
    eprintln!("recovered in {recovery:?}");
    assert!(
        recovery < Duration::from_secs(3),
        "recovery took {recovery:?}"
    );
    // The log reader thread may trail the new server's first answer.
    assert!(
        keeper.wait_log("killed by SIGKILL"),
        "{}",
        keeper.log_text()
    );

    // B's departure during the gap is announced; nothing else is.
    a.expect_leave(2);
    assert!(silent_for(&a.sock, 50));
    assert!(wait_until(TIMEOUT, || {
        let _ = host.process_server_messages();
        host.peer_vector_count(2).is_none()
    }));

    // A newcomer gets the next id and hears of the peers from before the crash.
    let c = RawClient::connect(&sock, 2);
    assert_eq!(c.id, 3);
    assert_eq!(c.peer_ids(), vec![0, 1]);
    a.expect_join(3);
    assert!(host.await_peer(3, Some(TIMEOUT)));

    // Doorbells over the eventfds from before the crash.
    ring_eventfd(&a.vectors[&0][1]);
    assert_eq!(host.wait_vector(1, Some(TIMEOUT)).unwrap(), Some(1));
    host.ring(1, 0).unwrap();
    assert_eq!(wait_rung(&a.vectors[&1][0], 5000), Some(1));
    ring_eventfd(&c.vectors[&1][1]);
    assert_eq!(wait_rung(&a.vectors[&1][1], 5000), Some(1));

    let json = status_json(&sock);
    assert!(json.contains("\"restarts\":1,"), "{json}");
    assert!(json.contains("\"joins\":4,"), "{json}");

    // An upgrade under the keeper goes through it; then SIGTERM to the keeper stops everything.
    let out = Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(&sock)
        .arg("--upgrade")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        keeper.log_text()
    );
    let third = serving_pid(&sock).unwrap();
    assert!(third != second.unwrap() && third != first);
    assert!(silent_for(&a.sock, 50), "the upgrade was visible");
    let status = keeper.terminate();
    assert!(status.success(), "keeper exit: {status}");
    a.expect_leave(0);
    assert!(!sock.exists(), "socket file removed");
    assert!(!process_alive(third));
}

/// Under a keeper, which holds a copy of every peer's socket, a departed peer's socket must be
/// taken out of the server's epoll set explicitly (closing the server's fd does not do it): the
/// server stays idle after peers come and go.
#[test]
fn server_keeper_peers_leave_without_the_server_spinning() {
    let dir = Scratch::new("srv-keeper-idle");
    let sock = dir.join("sock");
    let keeper = start_keeper(&sock, 2);
    let serving = serving_pid(&sock).expect("the server answers --status");
    RawClient::connect(&sock, 2).watch_cycles(&sock, 20);
    assert!(
        stays_idle(serving as u32),
        "the server spins after peers left"
    );
    assert!(
        stays_idle(keeper.pid()),
        "the keeper spins after peers left"
    );
}

#[test]
fn server_keeper_gives_up_on_a_server_that_keeps_dying() {
    let dir = Scratch::new("srv-keeper-dies");
    let sock = dir.join("sock");
    // A server that cannot start: every restart fails at once, the keeper says why and exits 1.
    let mut command = Command::new(bin("ivshmem-server"));
    command
        .args([
            "-F",
            "--memfd",
            "--keeper",
            "--upgrade-binary",
            "/nonexistent/server",
            "-S",
        ])
        .arg(&sock);
    let mut keeper = Server::from_command(command, &sock);
    let status = keeper.wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        keeper.wait_log("cannot execute /nonexistent/server"),
        "{}",
        keeper.log_text()
    );
    assert!(!sock.exists(), "socket file removed");
}

/// A peer whose messages were not all sent at the crash (it stopped reading, its socket is
/// full) cannot be resumed mid-stream: the keeper's new server disconnects it and announces its
/// departure; the others lose nothing.
#[test]
fn server_keeper_disconnects_a_peer_with_messages_in_flight() {
    let dir = Scratch::new("srv-keeper-inflight");
    let sock = dir.join("sock");
    let keeper = start_keeper(&sock, 64);

    // P connects and never reads; joins and leaves pile up until its socket is full.
    let p = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let backlogged = wait_until(TIMEOUT, || {
        drop(RawClient::connect_light(&sock, 64));
        let json = status_json(&sock);
        json.contains("{\"id\":0,") && !json.contains(",\"queued\":0}")
    });
    assert!(backlogged, "{}", status_json(&sock));
    // Q joins afterwards and reads everything: settled.
    let mut q = RawClient::connect_light(&sock, 64);
    assert!(q.peer_ids().contains(&0));

    let first = serving_pid(&sock).unwrap();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    // Q is told that P left, and nothing else.
    q.expect_leave(0);
    assert!(silent_for(&q.sock, 50));
    assert!(keeper.wait_log("peer 0 had messages in flight at the crash: disconnected"));
    let json = status_json(&sock);
    assert!(!json.contains("{\"id\":0,"), "{json}");
    assert!(json.contains("\"restarts\":1,"), "{json}");
    // P's connection ends after what was queued in its socket.
    p.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut sink = Vec::new();
    let end = std::io::Read::read_to_end(&mut &p, &mut sink);
    assert!(end.is_ok(), "P's connection did not end: {end:?}");
    assert!(keeper.terminate().success());
}
