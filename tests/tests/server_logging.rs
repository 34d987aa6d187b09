//! The server's log never stalls it: with stderr on a pipe nobody reads, peers still join
//! promptly and SIGTERM still shuts it down; what could not be written is counted and reported.
//! Identical join/leave lines from one pid (a reconnect storm) are rate-limited.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::raw_client::RawClient;
use harness::{bin, run_client_script, wait_until, Scratch, Server, TIMEOUT};

/// Bytes waiting in a pipe.
fn queued_bytes(fd: &OwnedFd) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a pointer to a live c_int.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::FIONREAD,
            &mut count,
        )
    };
    assert_eq!(rc, 0, "FIONREAD");
    count as usize
}

#[test]
fn server_keeps_working_when_stderr_blocks() {
    let dir = Scratch::new("srv-stderr");
    let sock = dir.join("sock");
    // CLOEXEC: no other child of this test process may hold the pipe open.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // The smallest pipe (one page) fills after a few dozen lines.
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    // -v: one debug line per connection besides the (rate-limited) join and leave lines, so the
    // 1024-line queue overflows too.
    let mut child = Command::new(bin("ivshmem-server"))
        .args(["-F", "-v", "--memfd", "-S"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end))
        .spawn()
        .expect("spawn ivshmem-server");
    assert!(
        wait_until(TIMEOUT, || UnixStream::connect(&sock).is_ok()),
        "server did not start"
    );

    const CYCLES: usize = 2000;
    let mut slowest = Duration::ZERO;
    for _ in 0..CYCLES {
        let start = Instant::now();
        drop(RawClient::connect_light(&sock, 1));
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        queued_bytes(&read_end) > 3000,
        "stderr pipe should be full by now"
    );
    // Still prompt: the handshake does not wait for the log.
    for _ in 0..3 {
        let start = Instant::now();
        let client = RawClient::connect(&sock, 1);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "handshake took {took:?}");
        drop(client);
    }
    eprintln!("slowest of {CYCLES} handshakes: {slowest:?}");

    // SIGTERM is handled although stderr is still blocked.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        wait_until(TIMEOUT, || !sock.exists()),
        "socket file not removed after SIGTERM"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server waits (a bounded time) for stderr to take the rest of its log"
    );

    // Once stderr drains, the server says how many lines it dropped, then exits 0.
    let mut pipe = std::fs::File::from(read_end);
    let mut text = String::new();
    pipe.read_to_string(&mut text).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(text.contains(" dropped: stderr was not writable"), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("log lines dropped in all"), "{last}");
}

/// The numbers N in "(N similar lines suppressed)" of lines containing `needle`.
fn suppressed_counts(log: &str, needle: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let (_, tail) = l.rsplit_once(" (")?;
            tail.split(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn server_rate_limits_a_reconnect_storm() {
    let dir = Scratch::new("srv-storm");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd"]);
    // Like QEMU's ivshmem-client refusing our vector count: connect, give up, reconnect.
    const CYCLES: u64 = 300;
    for _ in 0..CYCLES {
        drop(RawClient::connect_light(&sock, 1));
    }
    // Another pid is not affected.
    let out = run_client_script(&sock, "dump");
    assert!(out.status.success());
    let own_pid = std::process::id();
    assert!(
        wait_until(TIMEOUT, || server.log_text().lines().any(|l| l
            .contains(" joined (pid ")
            && !l.contains(&format!("(pid {own_pid},")))),
        "{}",
        server.log_text()
    );

    let log = server.log_text();
    let own = format!("(pid {own_pid}, 1 vector)");
    let joins = log
        .lines()
        .filter(|l| l.contains(&own) && !l.contains("suppressed"))
        .count() as u64;
    assert_eq!(joins, 10, "{log}");

    // Leaves are keyed by reason too ("disconnected" or "hung up", depending on timing).
    let leaves = format!(" left (pid {own_pid}): ");
    let leave_total = |log: &str| {
        let lines = log
            .lines()
            .filter(|l| l.contains(&leaves) && !l.contains("suppressed"))
            .count() as u64;
        lines + suppressed_counts(log, &leaves)
    };
    // The summaries of the open windows come at shutdown; the reader thread may trail.
    let log_lines = server.log.clone();
    let status = server.terminate();
    assert!(status.success());
    let text = || log_lines.lock().unwrap().join("\n");
    wait_until(TIMEOUT, || {
        let log = text();
        joins + suppressed_counts(&log, &own) == CYCLES && leave_total(&log) == CYCLES
    });
    let log = text();
    assert!(log.contains("similar lines suppressed)"), "{log}");
    assert_eq!(joins + suppressed_counts(&log, &own), CYCLES, "{log}");
    assert_eq!(leave_total(&log), CYCLES, "{log}");
    assert!(log.lines().count() < 60, "{log}");
}
