//! The socket to the server, read without ever blocking on a misbehaving server.
//!
//! `protocol::recv_message` finishes a started message by waiting, which would hang us forever on
//! a server that sends half a message and stalls. So we only call it once the whole 8 bytes are
//! queued (`FIONREAD` counts every byte in a Unix stream socket's receive queue); a partial message
//! is reported as [`Incoming::Partial`] and the caller decides how long to tolerate it.
//!
//! Connecting is non-blocking too: a server that stopped accepting (full backlog) makes a plain
//! `connect` block forever, so we retry a non-blocking one until the caller's deadline.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use protocol::wire::MESSAGE_LEN;
use protocol::Received;

use crate::poller;

/// What the socket has for us right now.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A whole message.
    Message { value: i64, fd: Option<OwnedFd> },
    /// Nothing to read yet.
    Nothing,
    /// Some but not all bytes of the next message have arrived.
    Partial,
    /// The server closed the connection at a message boundary.
    Eof,
}

/// Our connected socket to the server.
#[derive(Debug)]
pub(crate) struct ServerLink {
    sock: UnixStream,
}

impl ServerLink {
    /// Connects to the server socket at `path`, retrying while its backlog is full until
    /// `deadline`. The returned socket is blocking (reads only happen once data is queued).
    pub(crate) fn connect(path: &Path, deadline: Instant) -> io::Result<ServerLink> {
        let addr = UnixAddr::new(path)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(Errno::EINTR) => continue,
                // Unix sockets say EAGAIN when the listener's backlog is full.
                Err(Errno::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the server does not accept connections (its backlog is full)",
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
        Ok(ServerLink {
            sock: UnixStream::from(fd),
        })
    }

    /// Reads one message if a whole one is available; never blocks.
    pub(crate) fn try_recv(&self) -> io::Result<Incoming> {
        let fd = self.sock.as_fd();
        if !poller::readable_now(fd)? {
            return Ok(Incoming::Nothing);
        }
        let queued = queued_bytes(fd)?;
        if queued > 0 && queued < MESSAGE_LEN {
            return Ok(Incoming::Partial);
        }
        // Either a whole message is queued, or nothing is but the socket is readable, which
        // means EOF or a pending error: recv_message returns at once in all these cases.
        match protocol::recv_message(fd)? {
            Received::Message { value, fd } => Ok(Incoming::Message { value, fd }),
            Received::Eof => Ok(Incoming::Eof),
        }
    }
}

impl AsFd for ServerLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Bytes waiting in the socket's receive queue.
fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at a live c_int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut count) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(count).unwrap_or(0))
}
