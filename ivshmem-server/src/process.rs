//! Process-level concerns: daemonizing, the PID file, and turning SIGINT/SIGTERM
//! (and SIGHUP) into a readable signalfd for the event loop.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::unistd::{fork, pipe2, read, setsid, write, ForkResult};

/// Ignores SIGPIPE (sends use MSG_NOSIGNAL anyway) and blocks the shutdown signals, which are
/// then read from the returned signalfd. Call before creating anything that needs cleanup.
pub fn shutdown_signals() -> nix::Result<SignalFd> {
    // SAFETY: SIG_IGN installs no Rust code as a handler.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGHUP);
    // SIGUSR2: upgrade (crate::upgrade), read from the same signalfd.
    mask.add(Signal::SIGUSR2);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// The keeper's signals ([`crate::keeper`]): the shutdown and upgrade signals (already
/// blocked by [`shutdown_signals`]) and SIGCHLD, from a new signalfd.
pub fn keeper_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR2,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Detaches from the terminal like QEMU's `qemu_daemon(1, 1)` (keeps the working directory and
/// stdio), with a double fork so the daemon can never reacquire a controlling terminal. Only
/// the grandchild returns. Unlike QEMU, the original process waits until the daemon reports
/// through [`Readiness`] (PID file written) and exits 0, or 1 if the daemon failed, so a script
/// can use the PID file as soon as the command returns.
pub fn daemonize() -> nix::Result<Readiness> {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the process is single-threaded here; the parent only reads a pipe and exits.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut status = [1u8];
            let ok = matches!(read(read_end.as_fd(), &mut status), Ok(1)) && status[0] == 0;
            exit_now(if ok { 0 } else { 1 })
        }
        ForkResult::Child => drop(read_end),
    }
    setsid()?;
    // SAFETY: still single-threaded; the intermediate child only exits.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => exit_now(0),
        ForkResult::Child => Ok(Readiness(Some(write_end))),
    }
}

/// The daemon's line back to the process that started it.
#[derive(Debug)]
pub struct Readiness(Option<OwnedFd>);

impl Readiness {
    /// Tells the waiting parent whether startup succeeded; it exits with 0 or 1 accordingly.
    pub fn notify(mut self, ok: bool) {
        if let Some(fd) = self.0.take() {
            let _ = write(&fd, &[if ok { 0 } else { 1 }]);
        }
    }
}

/// Exits without running destructors or atexit handlers, which belong to the daemon.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process immediately; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// The PID file, removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes `"<pid>\n"`, like QEMU.
    pub fn write(path: &Path) -> std::io::Result<PidFile> {
        let mut f = std::fs::File::create(path)?;
        writeln!(f, "{}", std::process::id())?;
        Ok(PidFile { path: path.into() })
    }
}

impl PidFile {
    /// Leaves the file in place: a successor (upgrade) has written its own pid into it.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
