//! Introspection: `ivshmem-server --status [--json]` and `--upgrade` through the control socket
//! `<socket>.ctl`; what it reports, and that nothing sent to it can stop the server.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};

use harness::raw_client::RawClient;
use harness::{bin, text, wait_until, Scratch, Server, TIMEOUT};

fn ask(sock: &Path, args: &[&str]) -> Output {
    Command::new(bin("ivshmem-server"))
        .arg("-S")
        .arg(sock)
        .args(args)
        .output()
        .expect("run ivshmem-server --status")
}

fn ctl(sock: &Path) -> std::path::PathBuf {
    let mut p = sock.as_os_str().to_owned();
    p.push(".ctl");
    p.into()
}

/// Sends raw bytes to the control socket and returns the answer.
fn raw_request(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(ctl(sock)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn server_status_reports_peers_memory_and_counters() {
    let dir = Scratch::new("srv-status");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-n", "2"]);
    let mut a = RawClient::connect(&sock, 2);
    let b = RawClient::connect(&sock, 2);
    a.expect_join(1);
    drop(b);
    a.expect_leave(1);
    let _c = RawClient::connect(&sock, 2);
    a.expect_join(2);

    let out = ask(&sock, &["--status", "--json"]);
    let json = text(&out.stdout);
    assert!(out.status.success(), "{json}{}", text(&out.stderr));
    let me = std::process::id();
    let uid = nix::unistd::getuid().as_raw();
    assert!(
        json.starts_with(&format!("{{\"format\":1,\"pid\":{},", server.pid())),
        "{json}"
    );
    assert!(
        json.contains("\"memory\":{\"size\":4194304,\"backing\":\"memfd\"}"),
        "{json}"
    );
    assert!(json.contains("\"vectors\":2,"), "{json}");
    assert!(
        json.contains("\"counters\":{\"joins\":3,\"leaves\":1,\"drops\":0,\"upgrades\":0,"),
        "{json}"
    );
    assert!(
        json.contains(&format!(
            "{{\"id\":0,\"pid\":{me},\"uid\":{uid},\"vectors\":2,"
        )),
        "{json}"
    );
    assert!(json.contains("{\"id\":2,"), "{json}");
    assert!(!json.contains("{\"id\":1,"), "{json}");
    assert_eq!(json.lines().count(), 1);

    let out = ask(&sock, &["--status"]);
    let human = text(&out.stdout);
    assert!(out.status.success());
    assert!(
        human.contains("peers: 2 connected; 3 joined, 1 left (0 dropped)"),
        "{human}"
    );
    assert!(
        human.contains("memory: 4194304 bytes (memfd), 2 vectors per peer"),
        "{human}"
    );

    // --upgrade answers with the new pid; the new server reports the same peers.
    let out = ask(&sock, &["--upgrade"]);
    let answer = text(&out.stdout);
    assert!(out.status.success(), "{answer}{}", text(&out.stderr));
    let new_pid: i32 = answer
        .trim()
        .strip_prefix("{\"upgraded\":true,\"pid\":")
        .and_then(|r| r.strip_suffix('}'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"));
    let successor = harness::server::Successor { pid: new_pid };
    let json = text(&ask(&sock, &["--status", "--json"]).stdout);
    assert!(
        json.starts_with(&format!("{{\"format\":1,\"pid\":{new_pid},")),
        "{json}"
    );
    assert!(json.contains("\"upgrades\":1,"), "{json}");
    assert!(
        json.contains("{\"id\":0,") && json.contains("{\"id\":2,"),
        "{json}"
    );
    assert!(successor.terminate());
    assert!(
        wait_until(TIMEOUT, || !ctl(&sock).exists()),
        "control socket removed"
    );
    drop(server);

    // No server: a clear error, exit 1.
    let out = ask(&sock, &["--status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot ask the server"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn server_control_socket_survives_garbage() {
    let dir = Scratch::new("srv-ctl-garbage");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd"]);
    let mut a = RawClient::connect(&sock, 1);

    let long = raw_request(&sock, &[b'x'; 5000]);
    assert!(long.contains("request longer than 128 bytes"), "{long}");
    let bad = raw_request(&sock, b"\xff\xfe\n");
    assert!(bad.contains("not UTF-8"), "{bad}");
    let unknown = raw_request(&sock, b"shutdown\n");
    assert!(unknown.contains("unknown request"), "{unknown}");
    // EOF without a newline is a request too (empty: status).
    let empty = raw_request(&sock, b"");
    assert!(empty.starts_with("{\"format\":1,"), "{empty}");
    // Clients that connect and never send or read take a slot each; newer ones evict them.
    let idle: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(ctl(&sock)).unwrap())
        .collect();
    // A client that sends a request and never reads, with a tiny receive buffer.
    for _ in 0..4 {
        let s = UnixStream::connect(ctl(&sock)).unwrap();
        s.shutdown(std::net::Shutdown::Read).unwrap();
        (&s).write_all(b"status text\n").unwrap();
    }
    let status = ask(&sock, &["--status", "--json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    drop(idle);

    // The broker never noticed.
    let b = RawClient::connect(&sock, 1);
    a.expect_join(b.id);
    assert!(harness::raw_client::silent_for(&a.sock, 50));
    assert!(server.terminate().success());
    assert!(!ctl(&sock).exists(), "control socket removed at exit");
}

/// Who may ask: the control socket has the main socket's permissions (owner only by default),
/// and even where others may connect (`--mode 0666`) only the server's user or root may
/// upgrade it. Needs root to run the client as another user; skipped otherwise.
#[test]
fn server_control_socket_access_is_limited() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if !nix::unistd::geteuid().is_root() || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let as_nobody = |sock: &Path, args: &[&str]| {
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("ivshmem-server"))
            .arg("-S")
            .arg(sock)
            .args(args)
            .output()
            .unwrap()
    };
    let dir = Scratch::new("srv-ctl-access");
    // The scratch directory must be reachable for another user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = dir.join("private");
    let server = Server::start_without_probe(&private, &["--memfd"]);
    let out = as_nobody(&private, &["--status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );

    let open = dir.join("open");
    let server2 = Server::start_without_probe(&open, &["--memfd", "--mode", "0666"]);
    let out = as_nobody(&open, &["--status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = as_nobody(&open, &["--upgrade"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("only the server's own user or root may upgrade it"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !server2.log_text().contains("upgrading"),
        "{}",
        server2.log_text()
    );
    assert!(server.terminate().success());
    assert!(server2.terminate().success());
}
