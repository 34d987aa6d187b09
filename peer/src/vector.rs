//! One interrupt vector: an eventfd the server created for a (peer, vector) pair.
//!
//! Ringing writes the 8-byte native-endian integer 1 (docs/protocol.md, "Eventfds"); receiving
//! reads the counter, which also resets it. The server may hand out blocking or non-blocking
//! eventfds, and the file status flags are shared with every other holder, so we never change them:
//! on a blocking eventfd, draining first polls with a zero timeout and reads only when the counter
//! is non-zero, which cannot block; on a non-blocking one (QEMU's and our server's) it just reads,
//! saving a syscall on the hot path.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::poller;

/// An eventfd for one interrupt vector of one peer.
#[derive(Debug)]
pub struct Vector {
    fd: OwnedFd,
    /// O_NONBLOCK was set when we got the fd (then a read can never block).
    nonblocking: bool,
}

impl Vector {
    /// Wraps an eventfd (received from the server, or made locally).
    pub fn new(fd: OwnedFd) -> Vector {
        let nonblocking = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
            .map(|flags| flags & libc::O_NONBLOCK != 0)
            .unwrap_or(false);
        Vector { fd, nonblocking }
    }

    /// Adds 1 to the eventfd counter, waking whoever waits on it.
    pub fn ring(&self) -> io::Result<()> {
        loop {
            match nix::unistd::write(&self.fd, &1u64.to_ne_bytes()) {
                Ok(8) => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("eventfd took {n} of 8 bytes"),
                    ))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads and resets the counter if it is non-zero; returns the count (0 when nothing was
    /// pending). Never blocks.
    pub fn drain(&self) -> io::Result<u64> {
        if !self.nonblocking && !poller::readable_now(self.fd.as_fd())? {
            return Ok(0);
        }
        let mut buf = [0u8; 8];
        loop {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(8) => return Ok(u64::from_ne_bytes(buf)),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("eventfd read returned {n} of 8 bytes"),
                    ))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // Someone else (another thread or process holding our own vector) drained it
                // between the poll and the read.
                Err(nix::errno::Errno::EAGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Vector {
    /// Waits until the counter is non-zero or `timeout` passes (`None` = forever), then drains
    /// it. Returns the count, or 0 on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<u64> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            poller::wait_readable(&[self.fd.as_fd()], left)?;
            let count = self.drain()?;
            if count > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(count);
            }
        }
    }
}

/// Drains each of `vectors` (vector number, eventfd) without waiting; those that had rings
/// pending, with their counts.
pub fn drain_each<'a>(
    vectors: impl IntoIterator<Item = (u32, &'a Vector)>,
) -> io::Result<Vec<crate::Notification>> {
    let mut fired = Vec::new();
    for (vector, v) in vectors {
        let count = v.drain()?;
        if count > 0 {
            fired.push(crate::Notification { vector, count });
        }
    }
    Ok(fired)
}

impl AsFd for Vector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Something whose own vectors can be waited on: a host [`Peer`](crate::Peer), or a Linux
/// guest's ivshmem device (`ivshmem-guest`). Front ends (`ivshmem-client`'s `wait`) are written
/// once over it.
pub trait OwnVectors {
    /// Why waiting failed.
    type Error;
    /// Waits for `vector` up to `timeout` (`None` = forever); whether it fired.
    fn wait_one(&mut self, vector: u32, timeout: Option<Duration>) -> Result<bool, Self::Error>;
    /// Waits for any vector up to `timeout`; the vectors that fired (empty on timeout).
    fn wait_any(&mut self, timeout: Option<Duration>) -> Result<Vec<u32>, Self::Error>;
}

impl OwnVectors for crate::Peer {
    type Error = crate::WaitError;

    fn wait_one(&mut self, vector: u32, timeout: Option<Duration>) -> Result<bool, Self::Error> {
        Ok(self.wait_vector(vector, timeout)?.is_some())
    }

    fn wait_any(&mut self, timeout: Option<Duration>) -> Result<Vec<u32>, Self::Error> {
        Ok(self.wait(timeout)?.into_iter().map(|n| n.vector).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    #[test]
    fn ring_drain_and_wait_on_blocking_and_nonblocking_eventfds() {
        for flags in [
            EfdFlags::EFD_CLOEXEC,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        ] {
            let fd: OwnedFd = EventFd::from_flags(flags).unwrap().into();
            let v = Vector::new(fd);
            assert_eq!(v.drain().unwrap(), 0, "empty drain must not block");
            v.ring().unwrap();
            v.ring().unwrap();
            assert_eq!(v.drain().unwrap(), 2);
            assert_eq!(v.drain().unwrap(), 0);
            assert_eq!(v.wait(Some(Duration::from_millis(10))).unwrap(), 0);
            v.ring().unwrap();
            assert_eq!(v.wait(Some(Duration::from_secs(1))).unwrap(), 1);
        }
    }

    #[test]
    fn drain_each_reports_only_vectors_with_rings() {
        let vectors: Vec<Vector> = (0..3)
            .map(|_| Vector::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap().into()))
            .collect();
        vectors[1].ring().unwrap();
        vectors[1].ring().unwrap();
        vectors[2].ring().unwrap();
        let numbered = || vectors.iter().enumerate().map(|(i, v)| (i as u32 + 10, v));
        let fired = drain_each(numbered()).unwrap();
        let got: Vec<(u32, u64)> = fired.iter().map(|n| (n.vector, n.count)).collect();
        assert_eq!(got, [(11, 2), (12, 1)]);
        assert!(drain_each(numbered()).unwrap().is_empty());
    }
}
