//! systemd integration without systemd as PID 1: socket activation through Debian's
//! `systemd-socket-activate`, and the notifications (READY, MAINPID on upgrade, WATCHDOG,
//! STOPPING) read from a datagram socket standing in for systemd's NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use harness::raw_client::RawClient;
use harness::{bin, Scratch, Server, TIMEOUT};

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// Notifications received within the timeout until one contains `needle`; all of them.
fn notifications_until(sock: &UnixDatagram, needle: &str) -> Vec<String> {
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = text.contains(needle);
        seen.push(text);
        if done {
            break;
        }
    }
    seen
}

fn activated_server(sock: &Path, notify: &Path, extra_env: &[&str], args: &[&str]) -> Server {
    let mut command = Command::new(ACTIVATE);
    command.arg("-l").arg(sock);
    command
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify.display()));
    for e in extra_env {
        command.arg("-E").arg(e);
    }
    command.arg(bin("ivshmem-server")).arg("-F").args(args);
    Server::from_command(command, sock)
}

#[test]
fn server_socket_activation_and_notifications() {
    if !Path::new(ACTIVATE).exists() {
        eprintln!("skipped: {ACTIVATE} is not installed");
        return;
    }
    let dir = Scratch::new("srv-systemd");
    let sock = dir.join("sock");
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let server = activated_server(&sock, &notify_path, &["WATCHDOG_USEC=200000"], &["--memfd"]);
    assert!(harness::wait_until(TIMEOUT, || sock.exists()));

    // systemd-socket-activate starts the server on the first connection, which it passes on.
    // (Its socket file appears at bind, a moment before it listens: retry until it does.)
    let mut first = None;
    assert!(harness::wait_until(TIMEOUT, || {
        first = std::os::unix::net::UnixStream::connect(&sock).ok();
        first.is_some()
    }));
    let mut a = RawClient::handshake(first.unwrap(), 1, true);
    assert_eq!(a.id, 0);
    assert!(
        server.wait_log("(socket from systemd)"),
        "{}",
        server.log_text()
    );
    let seen = notifications_until(&notify, "READY=1");
    let ready = seen.last().expect("a notification");
    assert!(ready.contains("READY=1"), "{seen:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", server.pid())),
        "{ready}"
    );
    // The watchdog asked for keep-alives every 100 ms.
    let seen = notifications_until(&notify, "WATCHDOG=1");
    assert!(seen.iter().any(|n| n == "WATCHDOG=1"), "{seen:?}");

    let b = RawClient::connect(&sock, 1);
    a.expect_join(b.id);

    // An upgrade tells systemd the new main pid; the new server is ready in its own right.
    let mut server = server;
    let successor = server.upgrade();
    // Both, in either order: the old server's MAINPID= and the new one's READY=1.
    let mut seen = notifications_until(&notify, "took over");
    if !seen
        .iter()
        .any(|n| n.starts_with(&format!("MAINPID={}", successor.pid)))
    {
        seen.extend(notifications_until(&notify, "STATUS=upgraded"));
    }
    assert!(
        seen.iter()
            .any(|n| n.contains("READY=1") && n.contains("took over")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|n| n.starts_with(&format!("MAINPID={}\nSTATUS=upgraded", successor.pid))),
        "{seen:?}"
    );

    // The socket file is systemd's: the server leaves it when it stops.
    drop(b);
    a.expect_leave(1);
    assert!(successor.terminate());
    let seen = notifications_until(&notify, "STOPPING=1");
    assert!(seen.iter().any(|n| n.contains("STOPPING=1")), "{seen:?}");
    assert!(sock.exists(), "the server removed systemd's socket file");
}

#[test]
fn server_socket_activation_refuses_a_wrong_socket() {
    if !Path::new(ACTIVATE).exists() {
        eprintln!("skipped: {ACTIVATE} is not installed");
        return;
    }
    let dir = Scratch::new("srv-systemd-bad");
    let sock = dir.join("sock");
    // A datagram socket is not something peers can connect to.
    let mut command = Command::new(ACTIVATE);
    command
        .arg("--datagram")
        .arg("-l")
        .arg(&sock)
        .arg(bin("ivshmem-server"))
        .arg("-F")
        .arg("--memfd");
    let mut server = Server::from_command(command, &sock);
    assert!(harness::wait_until(TIMEOUT, || sock.exists()));
    // The datagram socket "activates" on the first datagram.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"x", &sock)
        .unwrap();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        server.wait_log("is not a listening UNIX stream socket"),
        "{}",
        server.log_text()
    );
}

/// The unit files in contrib/systemd are valid units (systemd-analyze needs no running
/// systemd for this); ExecStart points at the binary under test.
#[test]
fn server_systemd_units_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = Scratch::new("srv-units");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd");
    for unit in ["ivshmem-server.socket", "ivshmem-server.service"] {
        let text = std::fs::read_to_string(contrib.join(unit)).unwrap();
        let text = text.replace(
            "/usr/local/bin/ivshmem-server",
            bin("ivshmem-server").to_str().unwrap(),
        );
        std::fs::write(dir.join(unit), text).unwrap();
    }
    let out = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .arg(dir.join("ivshmem-server.socket"))
        .arg(dir.join("ivshmem-server.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The unit's set-up: socket activation with `--keeper`. The keeper is the service: it says
/// READY and sends the watchdog keep-alives; a server killed under it is replaced.
#[test]
fn server_socket_activation_with_keeper() {
    if !Path::new(ACTIVATE).exists() {
        eprintln!("skipped: {ACTIVATE} is not installed");
        return;
    }
    let dir = Scratch::new("srv-systemd-keeper");
    let sock = dir.join("sock");
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let keeper = activated_server(
        &sock,
        &notify_path,
        &["WATCHDOG_USEC=200000"],
        &["--memfd", "--keeper"],
    );
    let mut first = None;
    assert!(harness::wait_until(TIMEOUT, || {
        first = std::os::unix::net::UnixStream::connect(&sock).ok();
        first.is_some()
    }));
    let mut a = RawClient::handshake(first.unwrap(), 1, true);
    let seen = notifications_until(&notify, "READY=1");
    assert!(
        seen.iter()
            .any(|n| n.contains(&format!("keeper pid {}", keeper.pid()))),
        "{seen:?}"
    );
    assert!(keeper.wait_log("server pid"), "{}", keeper.log_text());
    let log = keeper.log_text();
    let server_pid: i32 = log
        .split("server pid ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("server pid in the log");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        keeper.wait_log("restarting it with 1 peer"),
        "{}",
        keeper.log_text()
    );
    // Keep-alives keep coming from the keeper, and a newcomer joins the same fabric.
    let seen = notifications_until(&notify, "WATCHDOG=1");
    assert!(seen.iter().any(|n| n == "WATCHDOG=1"), "{seen:?}");
    let b = RawClient::connect(&sock, 1);
    assert_eq!(b.id, 1);
    a.expect_join(1);
    assert!(keeper.terminate().success());
    assert!(sock.exists(), "systemd's socket file stays");
}
