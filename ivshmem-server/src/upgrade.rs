//! Zero-downtime upgrade: on SIGUSR2 the server hands its state ([`crate::handover`]) to a new
//! server process — the binary it was started from, or `--upgrade-binary PATH` — and exits once
//! that process serves. Peers notice nothing: their sockets, eventfds and memory are the same
//! kernel objects, only the process holding the other end changes.
//!
//! Why a helper process: once set up, the server runs under a seccomp filter that forbids
//! fork, exec and opening files (see [`crate::seccomp`]), and a filter is inherited across exec.
//! So before the filter (and before any thread) the server forks a small helper that keeps
//! none of its fds and waits on a socket pair. On SIGUSR2 the server stops serving, sends the
//! helper the state blob and every fd it holds (`SCM_RIGHTS`, in batches), and waits. The helper
//! writes the blob to a memfd, clears CLOEXEC on the fds, starts the new binary with the same
//! arguments and [`crate::handover::STATE_FD_ENV`], and waits for the new server to write one
//! byte on a readiness pipe (it does so once it has adopted everything and is about to serve).
//!
//! Why fork + exec and not exec in place: until the new process says it serves, the old one
//! still holds everything and has changed nothing, so any failure — missing binary, a binary
//! that refuses the options or the state version, one that crashes or hangs — is reported to
//! the old server, which logs why and goes on serving. Exec in place would leave nobody to fall
//! back to. While the hand-over runs the old server does not serve: connections wait in the
//! listen backlog and doorbells (which never pass through the server) keep working.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use nix::unistd::{fork, ForkResult};

use crate::handover::{encode_blob, STATE_FD_ENV};

/// How long the new server may take from exec to serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the state per message to the helper.
const CHUNK: usize = 32 * 1024;
/// Fds per message to the helper (the kernel's SCM_MAX_FD is 253).
const FDS_PER_MESSAGE: usize = 250;

pub(crate) const TAG_BODY: u8 = b'B';
pub(crate) const TAG_FDS: u8 = b'F';
pub(crate) const TAG_END: u8 = b'E';
pub(crate) const TAG_OK: u8 = b'K';
pub(crate) const TAG_FAILED: u8 = b'X';
/// The environment variable naming a server's socket to its keeper ([`crate::keeper`]).
pub const KEEPER_FD_ENV: &str = "IVSHMEM_SERVER_KEEPER_FD";

/// The server's end of its upgrade helper.
#[derive(Debug)]
pub struct UpgradeHelper {
    sock: OwnedFd,
    binary: PathBuf,
}

/// What the helper starts on an upgrade.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The binary (`--upgrade-binary`, or the one running).
    pub binary: PathBuf,
    /// Its arguments: the server's own command line.
    pub args: Vec<OsString>,
}

impl UpgradeHelper {
    /// Forks the helper. Call while the process is single-threaded and before the seccomp
    /// filter; the helper exits when the server closes its end (the server exited).
    pub fn spawn(launch: Launch) -> io::Result<UpgradeHelper> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // The server must never hang on its helper: bounded sends, and a reply within the
        // new server's start-up time plus a margin.
        setsockopt(&ours, sockopt::SendTimeout, &TimeVal::new(10, 0))?;
        let wait = READY_TIMEOUT.as_secs() as i64 + 5;
        setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(wait, 0))?;
        // SAFETY: the caller guarantees the process is single-threaded, so the child may run
        // ordinary Rust code; it never returns into the server's code (helper_main exits).
        match unsafe { fork() }? {
            ForkResult::Parent { .. } => {
                drop(theirs);
                Ok(UpgradeHelper {
                    sock: ours,
                    binary: launch.binary,
                })
            }
            ForkResult::Child => {
                drop(ours);
                helper_main(theirs, launch)
            }
        }
    }

    /// The end of a keeper's socket ([`crate::keeper`]): the keeper does what the helper does,
    /// and more.
    pub fn from_keeper(sock: OwnedFd, binary: PathBuf) -> io::Result<UpgradeHelper> {
        setsockopt(&sock, sockopt::SendTimeout, &TimeVal::new(10, 0))?;
        let wait = READY_TIMEOUT.as_secs() as i64 + 5;
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(wait, 0))?;
        Ok(UpgradeHelper { sock, binary })
    }

    /// Sends one message to a keeper; false when it could not be sent (the keeper is gone).
    pub fn tell(&self, tag: u8, data: &[u8], fds: &[BorrowedFd<'_>]) -> bool {
        let tag = [tag];
        let iov = [IoSlice::new(&tag), IoSlice::new(data)];
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
        loop {
            match sendmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                result => return result.is_ok(),
            }
        }
    }

    /// The binary an upgrade starts.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// Hands `body` and `fds` (indexed as the body refers to them) to the helper and waits for
    /// the outcome: the new server's pid once it serves, or why it does not.
    pub fn hand_over(&self, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<u32, String> {
        let send = |tag: u8, data: &[u8], fds: &[RawFd]| -> Result<(), String> {
            let tag = [tag];
            let iov = [IoSlice::new(&tag), IoSlice::new(data)];
            let cmsgs = [ControlMessage::ScmRights(fds)];
            let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsgs };
            sendmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map(|_| ())
            .map_err(|e| format!("cannot pass the state to the upgrade helper: {e}"))
        };
        for chunk in body.chunks(CHUNK) {
            send(TAG_BODY, chunk, &[])?;
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        for batch in raw.chunks(FDS_PER_MESSAGE) {
            send(TAG_FDS, &[], batch)?;
        }
        send(TAG_END, &[], &[])?;
        let mut reply = vec![0u8; 4096];
        let n = loop {
            match nix::sys::socket::recv(self.sock.as_raw_fd(), &mut reply, MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err("the upgrade helper did not answer in time".into())
                }
                Err(e) => return Err(format!("no answer from the upgrade helper: {e}")),
                Ok(n) => break n,
            }
        };
        match reply[..n].split_first() {
            Some((&TAG_OK, pid)) if pid.len() == 4 => {
                Ok(u32::from_le_bytes(pid.try_into().expect("4 bytes")))
            }
            Some((&TAG_FAILED, why)) => Err(String::from_utf8_lossy(why).into_owned()),
            None => Err("the upgrade helper is gone".into()),
            Some(_) => Err("the upgrade helper answered nonsense".into()),
        }
    }
}

/// The helper: receives hand-overs and launches new servers until one serves or the server
/// closes the socket. Never returns.
fn helper_main(sock: OwnedFd, launch: Launch) -> ! {
    // Keep only stdio and the socket: the helper must not hold the server's listener or memory.
    let sock = keep_only(sock);
    loop {
        let mut body = Vec::new();
        let mut fds: Vec<OwnedFd> = Vec::new();
        let complete = loop {
            match receive(sock.as_fd()) {
                Ok(Some((TAG_BODY, data, got))) => {
                    body.extend_from_slice(&data);
                    fds.extend(got);
                }
                Ok(Some((TAG_FDS, _, got))) => fds.extend(got),
                Ok(Some((TAG_END, _, got))) => {
                    fds.extend(got);
                    break true;
                }
                Ok(Some(_)) | Err(_) => break false,
                Ok(None) => exit_now(0), // the server is gone
            }
        };
        let reply = if complete {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            let result = launch_successor(&launch, &body, &borrowed, None);
            drop(fds);
            result.map(|(pid, _child)| pid)
        } else {
            Err("garbled hand-over".to_string())
        };
        let (message, done) = match reply {
            Ok(pid) => {
                let mut m = vec![TAG_OK];
                m.extend_from_slice(&pid.to_le_bytes());
                (m, true)
            }
            Err(why) => {
                let mut m = vec![TAG_FAILED];
                m.extend_from_slice(why.as_bytes());
                (m, false)
            }
        };
        let _ = nix::sys::socket::send(sock.as_raw_fd(), &message, MsgFlags::MSG_NOSIGNAL);
        if done {
            // The successor serves and has a helper of its own.
            exit_now(0);
        }
    }
}

/// One message from the server: tag, data, fds.
pub(crate) type Packet = (u8, Vec<u8>, Vec<OwnedFd>);

/// One packet (blocking unless the socket is non-blocking); None at EOF.
pub(crate) fn receive(sock: BorrowedFd<'_>) -> io::Result<Option<Packet>> {
    let mut tag = [0u8; 1];
    let mut data = vec![0u8; CHUNK];
    let mut cmsg = nix::cmsg_space!([RawFd; 253]);
    let (bytes, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut tag), IoSliceMut::new(&mut data)];
        let msg = loop {
            match recvmsg::<UnixAddr>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: fds the kernel just installed for us; nothing else owns them.
                fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_CTRUNC | MsgFlags::MSG_TRUNC);
        (msg.bytes, fds, truncated)
    };
    if bytes == 0 {
        return Ok(None);
    }
    if truncated {
        return Err(io::Error::other("truncated message"));
    }
    data.truncate(bytes - 1);
    Ok(Some((tag[0], data, fds)))
}

/// Starts the new server with the state and fds (and, for a keeper, the server's end of its
/// socket); its pid and process once it reports ready.
pub(crate) fn launch_successor(
    launch: &Launch,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
    keeper: Option<BorrowedFd<'_>>,
) -> Result<(u32, std::process::Child), String> {
    let name = c"ivshmem-server-state";
    let memfd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| format!("cannot create the state memfd: {e}"))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create the readiness pipe: {e}"))?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let blob = encode_blob(Some(ready_w.as_raw_fd()), &raw, body);
    let mut file = std::fs::File::from(memfd);
    std::io::Write::write_all(&mut file, &blob)
        .map_err(|e| format!("cannot write the state memfd: {e}"))?;
    for fd in fds
        .iter()
        .copied()
        .chain([file.as_fd(), ready_w.as_fd()])
        .chain(keeper)
    {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| format!("cannot pass fd {}: {e}", fd.as_raw_fd()))?;
    }
    let mut command = Command::new(&launch.binary);
    command
        .arg0("ivshmem-server")
        .args(&launch.args)
        .env(STATE_FD_ENV, file.as_raw_fd().to_string());
    if let Some(k) = keeper {
        command.env(KEEPER_FD_ENV, k.as_raw_fd().to_string());
    }
    let spawned = command.spawn();
    // Close-on-exec again on what this process keeps (a keeper keeps the fds).
    for fd in fds.iter().copied().chain(keeper) {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    // The child has its copies (or there is no child): ours go now, so that the readiness pipe
    // reports EOF if the child dies.
    drop(ready_w);
    drop(file);
    let mut child =
        spawned.map_err(|e| format!("cannot execute {}: {e}", launch.binary.display()))?;
    let pid = child.id();
    match wait_ready(ready_r) {
        Ok(()) => Ok((pid, child)),
        Err(why) => {
            let _ = child.kill();
            let status = child.wait();
            Err(match status {
                Ok(s) if s.code().is_some() || s.signal_number().is_some() => {
                    format!("the new server (pid {pid}) {why}; it ended with {s}")
                }
                _ => format!("the new server (pid {pid}) {why}"),
            })
        }
    }
}

/// Exit status helpers for messages.
trait SignalNumber {
    fn signal_number(&self) -> Option<i32>;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

/// Waits for the one 0 byte, EOF (the child exited) or the timeout.
fn wait_ready(ready: OwnedFd) -> Result<(), String> {
    let mut pipe = std::fs::File::from(ready);
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "was not ready within {} s and was killed",
                READY_TIMEOUT.as_secs()
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            pipe.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
        let mut byte = [1u8];
        return match pipe.read(&mut byte) {
            Ok(1) if byte[0] == 0 => Ok(()),
            Ok(_) => Err("exited before it was ready (its log says why)".into()),
            Err(e) => Err(format!("could not be waited for: {e}")),
        };
    }
}

/// Moves `sock` to fd 3 and closes every other fd above the standard streams.
fn keep_only(sock: OwnedFd) -> OwnedFd {
    const TARGET: RawFd = 3;
    let raw = sock.as_raw_fd();
    let sock = if raw == TARGET {
        sock
    } else {
        // SAFETY: dup2 onto fd 3, which this process is about to close with the rest of its
        // inherited fds anyway; the result is owned here alone.
        let fd = unsafe { libc::dup2(raw, TARGET) };
        if fd != TARGET {
            exit_now(1);
        }
        drop(sock);
        // SAFETY: fd 3 is the duplicate just made, owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(TARGET) }
    };
    // SAFETY: close_range only closes fds; every fd above 3 belongs to the server, which keeps
    // its own copies (this is a forked child that owns no Rust object using them).
    let closed = unsafe { libc::syscall(libc::SYS_close_range, TARGET + 1, u32::MAX, 0) };
    if closed != 0 {
        close_others_slowly(TARGET);
    }
    let _ = nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    sock
}

/// close_range fallback for old kernels: closes what /proc/self/fd lists above `keep`.
fn close_others_slowly(keep: RawFd) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > keep)
        .collect();
    for fd in fds {
        // SAFETY: see keep_only; the read_dir fd is already closed, a stale number is harmless.
        unsafe { libc::close(fd) };
    }
}

pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the helper without running the server's destructors or atexit hooks.
    unsafe { libc::_exit(code) }
}
