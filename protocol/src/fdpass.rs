//! The I/O edge: one protocol message (8 bytes) plus at most one fd over a Unix stream socket.
//!
//! Sending: one `sendmsg` per message with `MSG_NOSIGNAL`, the fd as a single `SCM_RIGHTS`
//! control message, exactly like QEMU's server. On a non-blocking socket a send may take fewer
//! than 8 bytes; the fd travels with the first byte that goes out, so a caller resuming a partial
//! send must not attach it again ([`send_bytes`] with `None`).
//!
//! Receiving: never more than 8 bytes per `recvmsg` (QEMU's rule; docs/protocol.md, "Passing fds"):
//! with a larger buffer Linux may merge a message without an fd with the next one that has one, and
//! the fd's owner would become ambiguous. `MSG_CMSG_CLOEXEC` is always set; the first fd received
//! for a message is kept and every other one is closed at once. `recvmsg` is called through libc
//! directly so that control data truncated by the kernel (`MSG_CTRUNC`) still has its installed fds
//! found and closed instead of leaked.

use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

use crate::wire::{decode, encode, MESSAGE_LEN};

/// One received message.
#[derive(Debug)]
pub enum Received {
    /// A complete 8-byte message and the fd that came with it, if any.
    Message {
        /// The decoded little-endian value.
        value: i64,
        /// The fd from the `SCM_RIGHTS` control message, owned by the caller.
        fd: Option<OwnedFd>,
    },
    /// The peer closed the connection cleanly before the first byte of a message.
    Eof,
}

/// Sends one message (8 LE bytes, at most one fd) in one `sendmsg` with `MSG_NOSIGNAL`.
/// Returns how many data bytes went out: on a non-blocking socket this may be fewer than 8,
/// and `WouldBlock` is returned as an error when nothing (not even the fd) was sent.
pub fn send_message(
    sock: BorrowedFd<'_>,
    value: i64,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    send_bytes(sock, &encode(value), fd)
}

/// Sends `bytes` and the optional fd in one `sendmsg` (retrying on `EINTR`), for resuming a
/// partial send. Returns the number of bytes sent.
pub fn send_bytes(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let raw_fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw_fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw_fds)]
    };
    loop {
        match sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Sends one whole message, waiting (poll) whenever a non-blocking socket is full. For callers
/// that have nothing else to do meanwhile (clients, tests); the server queues instead.
pub fn send_message_all(
    sock: BorrowedFd<'_>,
    value: i64,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let bytes = encode(value);
    let mut sent = 0;
    let mut fd = fd;
    while sent < MESSAGE_LEN {
        match send_bytes(sock, &bytes[sent..], fd) {
            Ok(n) => {
                sent += n;
                fd = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(sock, libc::POLLOUT)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives exactly one message: at most 8 bytes per `recvmsg`, looping over short reads and
/// `EINTR`. The first fd that arrives with the message's bytes is kept, any other is closed.
///
/// * `Ok(Received::Eof)`: orderly EOF before the first byte.
/// * `Err(UnexpectedEof)`: EOF in the middle of a message.
/// * `Err(WouldBlock)`: non-blocking socket with nothing to read yet; once the first byte of a
///   message has arrived, the rest is waited for (poll) instead.
pub fn recv_message(sock: BorrowedFd<'_>) -> io::Result<Received> {
    let mut buf = [0u8; MESSAGE_LEN];
    let mut got = 0;
    let mut kept_fd: Option<OwnedFd> = None;
    while got < MESSAGE_LEN {
        match recv_chunk(sock, &mut buf[got..]) {
            Ok((0, fds)) => {
                drop(fds);
                if got == 0 && kept_fd.is_none() {
                    return Ok(Received::Eof);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {got} of {MESSAGE_LEN} bytes of a message"),
                ));
            }
            Ok((n, fds)) => {
                got += n;
                for fd in fds {
                    if kept_fd.is_none() {
                        kept_fd = Some(fd);
                    } // else: dropped here = closed (QEMU keeps only the first fd)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {
                wait_for(sock, libc::POLLIN)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Received::Message {
        value: decode(buf),
        fd: kept_fd,
    })
}

/// Space for the most fds Linux passes in one `SCM_RIGHTS` message (`SCM_MAX_FD` = 253), so
/// that truncation is not expected; it is handled anyway.
const MAX_FDS_PER_RECV: usize = 253;

/// One `recvmsg(MSG_CMSG_CLOEXEC)` into `buf`; returns the byte count and every fd received,
/// each owned (so dropping it closes it).
fn recv_chunk(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS_PER_RECV * mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * 8) as _;
    // SAFETY: msg points at a live iovec over `buf` and at the live `control` buffer, with their
    // true lengths; the kernel writes only within them.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/CMSG_NXTHDR walk only
    // within msg_controllen, which it set to what it wrote (also when MSG_CTRUNC is set).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let hdr = &*cmsg;
            if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let data_len = hdr.cmsg_len as usize - (data as usize - cmsg as usize);
                let count = data_len / mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    if raw >= 0 {
                        // The kernel just installed this fd in our table for us: we own it.
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, fds))
}

/// Waits until `sock` is ready for `events` (POLLIN/POLLOUT), retrying on EINTR.
fn wait_for(sock: BorrowedFd<'_>, events: libc::c_short) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    fn nonblocking_pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .unwrap()
    }

    fn eventfd() -> OwnedFd {
        OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap())
    }

    fn inode(fd: BorrowedFd<'_>) -> (u64, u64) {
        let st = nix::sys::stat::fstat(fd).unwrap();
        (st.st_dev as u64, st.st_ino as u64)
    }

    /// Raw sendmsg with several fds, which our own sender never does.
    fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) {
        let iov = [IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let n =
            sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        assert_eq!(n, bytes.len());
    }

    #[test]
    fn message_without_fd_round_trips() {
        let (a, b) = pair();
        assert_eq!(send_message(a.as_fd(), 3, None).unwrap(), 8);
        match recv_message(b.as_fd()).unwrap() {
            Received::Message { value, fd } => {
                assert_eq!(value, 3);
                assert!(fd.is_none());
            }
            Received::Eof => panic!("unexpected EOF"),
        }
    }

    #[test]
    fn bytes_on_the_wire_are_exact() {
        let (a, b) = pair();
        send_message(a.as_fd(), -1, None).unwrap();
        send_message(a.as_fd(), 0x0201, None).unwrap();
        let mut raw = [0u8; 16];
        let n = nix::unistd::read(b.as_fd(), &mut raw).unwrap();
        assert_eq!(n, 16);
        assert_eq!(raw[..8], [0xff; 8]);
        assert_eq!(raw[8..], [1, 2, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn fd_travels_with_its_message_and_is_cloexec() {
        let (a, b) = pair();
        let efd = eventfd();
        send_message(a.as_fd(), 5, Some(efd.as_fd())).unwrap();
        let Received::Message { value, fd } = recv_message(b.as_fd()).unwrap() else {
            panic!("EOF")
        };
        assert_eq!(value, 5);
        let fd = fd.expect("fd received");
        assert_eq!(inode(fd.as_fd()), inode(efd.as_fd()));
        // SAFETY: F_GETFD only queries the fd table.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fd lacks FD_CLOEXEC"
        );
    }

    #[test]
    fn fds_stay_with_their_own_messages() {
        // A message without an fd followed by one with an fd: reading 8 bytes at a time keeps
        // the fd with the second message.
        let (a, b) = pair();
        let efd = eventfd();
        send_message(a.as_fd(), 1, None).unwrap();
        send_message(a.as_fd(), 2, Some(efd.as_fd())).unwrap();
        send_message(a.as_fd(), 3, None).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let Received::Message { value, fd } = recv_message(b.as_fd()).unwrap() else {
                panic!("EOF")
            };
            got.push((value, fd.is_some()));
        }
        assert_eq!(got, [(1, false), (2, true), (3, false)]);
    }

    /// A pipe whose write end is handed out; `all_closed` on the read end tells (race-free, unlike
    /// scanning the process-wide fd table while other tests run) whether every copy of the
    /// write end is closed.
    fn tracked_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .unwrap();
        (r, w)
    }

    fn all_closed(read_end: &OwnedFd) -> bool {
        let mut b = [0u8; 1];
        matches!(nix::unistd::read(read_end.as_fd(), &mut b), Ok(0))
    }

    #[test]
    fn extra_fds_are_closed() {
        let (a, b) = pair();
        let e1 = eventfd();
        let (r2, w2) = tracked_pipe();
        let (r3, w3) = tracked_pipe();
        send_with_fds(
            a.as_fd(),
            &crate::wire::encode(9),
            &[e1.as_raw_fd(), w2.as_raw_fd(), w3.as_raw_fd()],
        );
        drop((w2, w3));
        assert!(
            !all_closed(&r2),
            "in flight, the socket still holds the write end"
        );
        let Received::Message { value, fd } = recv_message(b.as_fd()).unwrap() else {
            panic!("EOF")
        };
        assert_eq!(value, 9);
        let fd = fd.expect("first fd kept");
        assert_eq!(inode(fd.as_fd()), inode(e1.as_fd()));
        assert!(all_closed(&r2) && all_closed(&r3), "extra fds were closed");
    }

    #[test]
    fn partial_message_is_reassembled() {
        let (a, b) = pair();
        let efd = eventfd();
        let bytes = crate::wire::encode(0x1234);
        assert_eq!(
            send_bytes(a.as_fd(), &bytes[..3], Some(efd.as_fd())).unwrap(),
            3
        );
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(send_bytes(a.as_fd(), &bytes[3..], None).unwrap(), 5);
            a
        });
        let Received::Message { value, fd } = recv_message(b.as_fd()).unwrap() else {
            panic!("EOF")
        };
        assert_eq!(value, 0x1234);
        assert!(fd.is_some(), "fd sent with the first part is kept");
        drop(writer.join().unwrap());
    }

    #[test]
    fn nonblocking_partial_message_waits_for_the_rest() {
        let (a, b) = nonblocking_pair();
        let bytes = crate::wire::encode(77);
        send_bytes(a.as_fd(), &bytes[..1], None).unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            send_bytes(a.as_fd(), &bytes[1..], None).unwrap();
            a
        });
        let Received::Message { value, .. } = recv_message(b.as_fd()).unwrap() else {
            panic!("EOF")
        };
        assert_eq!(value, 77);
        drop(writer.join().unwrap());
    }

    #[test]
    fn nonblocking_empty_socket_would_block() {
        let (_a, b) = nonblocking_pair();
        let err = recv_message(b.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn eof_before_a_message_is_orderly() {
        let (a, b) = pair();
        drop(a);
        assert!(matches!(recv_message(b.as_fd()).unwrap(), Received::Eof));
    }

    #[test]
    fn eof_mid_message_is_an_error() {
        let (a, b) = pair();
        let (r, w) = tracked_pipe();
        send_bytes(a.as_fd(), &[1, 2, 3], Some(w.as_fd())).unwrap();
        drop((a, w));
        let err = recv_message(b.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("3 of 8"), "{err}");
        assert!(all_closed(&r), "fd of the broken message was closed");
    }

    #[test]
    fn send_to_closed_peer_fails_without_sigpipe() {
        let (a, b) = pair();
        drop(b);
        let err = send_message(a.as_fd(), 1, None).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn full_nonblocking_socket_would_block_and_send_all_waits() {
        let (a, b) = nonblocking_pair();
        let mut sent = 0usize;
        loop {
            match send_message(a.as_fd(), 1, None) {
                Ok(n) => sent += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert!(sent > 0);
        let reader = std::thread::spawn(move || {
            let mut total = 0usize;
            let mut buf = [0u8; 4096];
            while total < sent + 8 {
                match nix::unistd::read(b.as_fd(), &mut buf) {
                    Ok(n) => total += n,
                    Err(nix::errno::Errno::EAGAIN) => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            total
        });
        send_message_all(a.as_fd(), 2, None).unwrap();
        assert!(reader.join().unwrap() >= sent + 8);
    }
}
