//! The `ivshmem-client` binary against a scripted fake server: commands, `-c` scripts, piped
//! stdin, and the exit codes scripts rely on (0 ok, 1 command failed, 2 cannot connect).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::eventfd::{eventfd_count, ring_eventfd};
use harness::fake_server::{vectors, welcome, FakeServer, Step};
use harness::{bin, run_client_script as client, text, Scratch};

/// Us = 3 with 2 vectors, peer 1 with 2 vectors.
fn handshake() -> Vec<Step> {
    let mut steps = welcome(3, 65536);
    steps.extend(vectors(1, 2));
    steps.extend(vectors(3, 2));
    steps
}

fn client_stdin(socket: &Path, input: &str) -> Output {
    let mut child = Command::new(bin("ivshmem-client"))
        .arg("-S")
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivshmem-client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait ivshmem-client")
}

#[test]
fn script_runs_qemu_and_memory_commands() {
    let dir = Scratch::new("cli-ok");
    let server = FakeServer::start(&dir.join("sock"), handshake());
    let out = client(
        &server.path,
        "write 0x10 hello\\x21; read 0x10 6; peers; dump; int 1 1; int 3 all; wait 0 2000",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.contains("00000010  68 65 6c 6c 6f 21 ") && stdout.contains("|hello!|"),
        "{stdout}"
    );
    assert!(stdout.contains("peer_id=1 vectors=2\n"), "{stdout}");
    assert!(stdout.contains("our_id = 3\n"), "{stdout}");
    assert!(
        stdout.contains("peer_id = 1\n  vector 0 is enabled (fd="),
        "{stdout}"
    );
    assert!(
        stdout.contains("receive notification from peer_id=3 vector=0"),
        "{stdout}"
    );
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    assert_eq!(
        eventfd_count(&sent[0].fd),
        0,
        "only vector 1 of peer 1 rang"
    );
    assert_eq!(eventfd_count(&sent[1].fd), 1);
    // `int 3 all` rang both of our own vectors; `wait 0` drained vector 0 only.
    assert_eq!(eventfd_count(&sent[2].fd), 0);
    assert_eq!(eventfd_count(&sent[3].fd), 1);
    server.finish();
}

#[test]
fn wait_reports_a_ring_that_came_before_it() {
    let dir = Scratch::new("cli-wait");
    let server = FakeServer::start(&dir.join("sock"), handshake());
    // The client's `sleep` is the gap under test: we ring while it sleeps, before `wait`.
    let mut child = Command::new(bin("ivshmem-client"))
        .arg("-S")
        .arg(&server.path)
        .arg("-c")
        .arg("wait-peer 1 5000; sleep 300; wait any 5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    // `wait-peer` printed its line: the client is connected and now sleeping.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "peer_id=1 vectors=2\n");
    ring_eventfd(&sent[3].fd);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = first + &rest;
    assert!(stdout.contains("peer_id=1 vectors=2\n"), "{stdout}");
    assert!(
        stdout.contains("receive notification from peer_id=3 vector=1\n"),
        "{stdout}"
    );
    server.finish();
}

#[test]
fn failing_commands_exit_1_and_name_the_problem() {
    let dir = Scratch::new("cli-fail");
    for (script, expected) in [
        ("int 7 0", "unknown peer 7"),
        ("int 1 5", "peer 1 has no vector 5"),
        ("read 65530 16", "outside the shared memory"),
        ("write 65535 ab", "outside the shared memory"),
        ("wait 0 100", "no notification on vector 0 within 100 ms"),
        ("wait 9 100", "no vector 9"),
        ("wait-peer 8 100", "peer 8 did not connect within 100 ms"),
    ] {
        let server = FakeServer::start(&dir.join("sock"), handshake());
        let out = client(&server.path, script);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(stderr.contains(expected), "{script}: {stderr}");
        server.finish();
    }
}

#[test]
fn bad_scripts_exit_1_without_connecting() {
    let dir = Scratch::new("cli-parse");
    for (script, expected) in [
        ("dump; bogus", "unknown command `bogus`"),
        ("int 1", "usage: `int PEER VECTOR [MS]`"),
        ("read 0x 4", "invalid offset `0x`"),
        ("int 65536 0", "peer id 65536 is out of range"),
        ("write 0 \\q", "unknown escape"),
    ] {
        // No server at all: the script is rejected before connecting.
        let out = client(&dir.join("none"), script);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(stderr.contains(expected), "{script}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = Command::new(bin("ivshmem-client"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(bin("ivshmem-client"))
        .arg("-h")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("int PEER VECTOR"));
}

#[test]
fn connection_problems_exit_2() {
    let dir = Scratch::new("cli-conn");
    let out = client(&dir.join("nobody"), "dump");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nobody") && stderr.contains("cannot connect"),
        "{stderr}"
    );

    let server = FakeServer::start(&dir.join("sock"), vec![Step::Value(7)]);
    let out = client(&server.path, "dump");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("protocol version 7"), "{stderr}");
    server.finish();

    let server = FakeServer::start(&dir.join("sock"), welcome(0, 0));
    let out = client(&server.path, "dump");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("size 0"), "{stderr}");
    server.finish();

    // A server that accepts and stays silent past the connect timeout (the stall is the test).
    let server = FakeServer::start(&dir.join("sock"), vec![Step::Sleep(Duration::from_secs(2))]);
    let out = Command::new(bin("ivshmem-client"))
        .args(["--connect-timeout", "200", "-c", "dump", "-S"])
        .arg(&server.path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    server.finish();
}

#[test]
fn piped_stdin_is_a_script_that_stops_at_the_first_failure() {
    let dir = Scratch::new("cli-stdin");
    let server = FakeServer::start(&dir.join("sock"), handshake());
    let out = client_stdin(
        &server.path,
        "write 0 abc\nread 0 3; peers\r\nint 9 0\nwrite 0 zzz\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("|abc|"), "{stdout}");
    assert!(
        !stdout.contains("cmd>"),
        "no prompt when stdin is not a terminal"
    );
    assert!(text(&out.stderr).contains("unknown peer 9"));
    let shm = peer::SharedMemory::map(server.shm()).unwrap();
    let mut buf = [0u8; 3];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"abc", "the command after the failure did not run");
    server.finish();

    // EOF without a final newline still runs the last command; `quit` ends early.
    let server = FakeServer::start(&dir.join("sock"), handshake());
    let out = client_stdin(&server.path, "write 0 tail");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    server.finish();
    let server = FakeServer::start(&dir.join("sock"), handshake());
    let out = client_stdin(&server.path, "quit\nint 9 0\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    server.finish();
}

#[test]
fn a_vanishing_server_is_reported_and_commands_keep_working() {
    let dir = Scratch::new("cli-gone");
    let mut steps = handshake();
    steps.push(Step::AwaitGo);
    steps.push(Step::Close);
    let mut server = FakeServer::start(&dir.join("sock"), steps);
    // The client waits on its vector 0, which we ring once the server has closed.
    let child = Command::new(bin("ivshmem-client"))
        .arg("-S")
        .arg(&server.path)
        .arg("-c")
        .arg("wait 0 10000; write 0 ok; read 0 2; int 1 0; wait-peer 5 100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent: Vec<_> = (0..4).map(|_| server.next_vector()).collect();
    server.go();
    server.wait_closed();
    ring_eventfd(&sent[2].fd);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    // wait-peer fails because the server is gone; everything before it worked.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("server closed the connection"), "{stderr}");
    assert!(stderr.contains("server is gone"), "{stderr}");
    assert!(text(&out.stdout).contains("|ok|"));
    server.finish();

    // Garbage after the handshake is reported, not fatal: the join that follows it is taken
    // in after it, so once `wait-peer` sees peer 5 the garbage was handled.
    let mut steps = handshake();
    steps.push(Step::Value(-5));
    steps.extend(vectors(5, 1));
    let server = FakeServer::start(&dir.join("sock"), steps);
    let out = client(&server.path, "wait-peer 5 10000; peers");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("invalid message -5"), "{stderr}");
    server.finish();
}
