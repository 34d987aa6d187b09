//! The server's log never stalls it: with stderr on a pipe nobody reads, peers still join
//! promptly and SIGTERM still shuts it down; what could not be written is counted and reported.
//! Identical join/leave lines from one pid (a reconnect storm) are rate-limited.

mod server_support;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{bin, wait_until, Scratch};
use server_support::*;

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
    assert!(
        text.contains("log lines dropped: stderr was not writable"),
        "{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("log lines dropped in all"), "{last}");
}
