//! systemd integration: socket activation (`LISTEN_FDS`) and readiness/status/watchdog
//! notifications (`NOTIFY_SOCKET`), both no-ops when systemd did not ask for them.
//!
//! Why not a crate: both protocols are a few environment variables and one datagram, and the
//! crates (`sd-notify`, `listenfd`, `libsystemd`) open a new socket for every notification,
//! which the server's seccomp filter forbids once it serves (no `socket` call). Here the
//! notification socket is opened once during set-up and only `sendto` is used afterwards.
//!
//! `NOTIFY_SOCKET` is left in the environment so that a successor started by an upgrade can
//! notify too (the unit needs `NotifyAccess=all`, docs/server-operations.md); the `LISTEN_*`
//! variables are removed, as sd_listen_fds(3) asks, so that no child mistakes them for its own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Why the sockets systemd passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS={0} is not a number of fds")]
    BadCount(String),
    /// More than one fd: the server listens on one socket.
    #[error(
        "LISTEN_FDS={0}: expected exactly 1 socket (the .socket unit must have one ListenStream=)"
    )]
    WrongCount(u32),
    /// fd 3 is not what the server needs.
    #[error("the socket systemd passed (fd 3) is not a listening UNIX stream socket: {0}")]
    NotAListener(String),
}

/// The socket systemd passed, if `LISTEN_PID` is this process and `LISTEN_FDS` is set.
/// The `LISTEN_*` variables are removed from the environment either way.
pub fn listen_socket() -> Result<Option<UnixListener>, ActivationError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // The process is single-threaded during set-up, when this runs.
        std::env::remove_var(var);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None); // meant for another process (our parent's)
    }
    let n: u32 = count
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadCount(count.clone()))?;
    match n {
        0 => return Ok(None),
        1 => {}
        n => return Err(ActivationError::WrongCount(n)),
    }
    let fd = LISTEN_FDS_START;
    // SAFETY: checked to be open before anything takes it; owned by nothing in this process
    // (systemd passed it for us alone, see sd_listen_fds(3)).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| ActivationError::NotAListener(format!("fd 3 is not open: {e}")))?;
    // SAFETY: open (checked above) and ours alone, as said above.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let listening = getsockopt(&owned, sockopt::AcceptConn)
        .map_err(|e| ActivationError::NotAListener(e.to_string()))?;
    let kind = getsockopt(&owned, sockopt::SockType)
        .map_err(|e| ActivationError::NotAListener(e.to_string()))?;
    let listener = UnixListener::from(owned);
    let is_unix = listener.local_addr().is_ok();
    if !listening || kind != nix::sys::socket::SockType::Stream || !is_unix {
        return Err(ActivationError::NotAListener(format!(
            "listening: {listening}, type: {kind:?}, UNIX: {is_unix}"
        )));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| ActivationError::NotAListener(e.to_string()))?;
    Ok(Some(listener))
}

/// The path of a listener's socket file, if it has one (not abstract or unnamed).
pub fn listener_path(listener: &UnixListener) -> Option<PathBuf> {
    listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(PathBuf::from))
}

/// Sends notifications to systemd (`NOTIFY_SOCKET`), and the watchdog keep-alive.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: SocketAddr,
    /// `WATCHDOG_USEC / 2` when systemd asked for keep-alives for this process.
    watchdog: Option<Duration>,
    next_keepalive: Option<Instant>,
}

impl Notifier {
    /// A notifier if `NOTIFY_SOCKET` names a socket; None otherwise (not under systemd). An
    /// unusable value is logged and ignored: notifications are a courtesy, never a reason to
    /// refuse to serve.
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str());
        let target = match bytes.first() {
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])
            }
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&value)),
            _ => Err(io::Error::other("not an absolute path or @abstract name")),
        };
        let made = target.and_then(|t| Ok((UnixDatagram::unbound()?, t)));
        match made {
            Ok((socket, target)) => {
                let _ = socket.set_nonblocking(true);
                let watchdog = watchdog_interval();
                Some(Notifier {
                    socket,
                    target,
                    watchdog,
                    next_keepalive: watchdog.map(|w| Instant::now() + w),
                })
            }
            Err(e) => {
                log::warn!(
                    "ivshmem-server: NOTIFY_SOCKET={value:?} unusable, not notifying systemd: {e}"
                );
                None
            }
        }
    }

    /// Sends one notification (`KEY=value` lines). Failures are logged at debug level only.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.target) {
            log::debug!("sd_notify {message:?} failed: {e}");
        }
    }

    /// When the next watchdog keep-alive is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_keepalive
    }

    /// Sends `WATCHDOG=1` if it is due.
    pub fn keepalive(&mut self, now: Instant) {
        if let (Some(at), Some(every)) = (self.next_keepalive, self.watchdog) {
            if now >= at {
                self.notify("WATCHDOG=1");
                self.next_keepalive = Some(now + every);
            }
        }
    }

    /// The fd, for diagnostics.
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Half of `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or this process.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ivshmem-sd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            target: SocketAddr::from_pathname(&path).unwrap(),
            watchdog: Some(Duration::from_millis(1)),
            next_keepalive: Some(Instant::now()),
        };
        n.notify("READY=1\nSTATUS=x");
        let mut buf = [0u8; 64];
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=x");
        let mut n = n;
        n.keepalive(Instant::now());
        let len = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
