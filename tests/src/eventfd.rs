//! Eventfds the tests ring and read directly: a vector fd a server or fake server handed out.
//! The fds are non-blocking (the servers create them so), so reading never hangs a test.

use std::os::fd::{AsFd, AsRawFd};

/// Adds 1 to an eventfd (rings it).
pub fn ring_eventfd(fd: impl AsFd) {
    nix::unistd::write(fd, &1u64.to_ne_bytes()).expect("ring eventfd");
}

/// Reads and resets an eventfd's counter without blocking: 0 when it was not rung.
pub fn eventfd_count(fd: impl AsFd) -> u64 {
    let mut buf = [0u8; 8];
    match nix::unistd::read(fd, &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

/// Waits up to `ms` milliseconds for `fd` to become readable (`poll`); 0 checks without waiting.
pub fn poll_readable(fd: impl AsFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

/// Waits up to `ms` milliseconds for an eventfd to be rung, then reads its counter.
pub fn wait_rung(fd: impl AsFd, ms: i32) -> Option<u64> {
    let fd = fd.as_fd();
    poll_readable(fd, ms).then(|| eventfd_count(fd))
}
