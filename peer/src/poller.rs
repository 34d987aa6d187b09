//! `poll(2)` with deadlines: wait until any of several fds is readable, retrying on EINTR with
//! the remaining time, so callers can state "at most this long" and mean it.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// What `poll` reported for one fd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Data (or EOF) can be read without blocking.
    pub readable: bool,
    /// Hang-up or error condition (POLLHUP/POLLERR/POLLNVAL).
    pub hangup: bool,
}

impl Readiness {
    /// True when a read would not block (data, EOF or an error to report).
    pub fn any(self) -> bool {
        self.readable || self.hangup
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None` = forever). Returns one entry
/// per fd; all entries are "not ready" on timeout.
pub fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<Readiness>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut pollfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        let poll_timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we don't spin on sub-millisecond remainders.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut pollfds, poll_timeout) {
            Ok(_) => {
                return Ok(pollfds
                    .iter()
                    .map(|p| {
                        let r = p.revents().unwrap_or(PollFlags::empty());
                        Readiness {
                            readable: r.contains(PollFlags::POLLIN),
                            hangup: r.intersects(
                                PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL,
                            ),
                        }
                    })
                    .collect())
            }
            Err(nix::errno::Errno::EINTR) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(vec![Readiness::default(); fds.len()]);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// True when `fd` can be read right now without blocking (zero-timeout poll).
pub fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(wait_readable(&[fd], Some(Duration::ZERO))?[0].any())
}
