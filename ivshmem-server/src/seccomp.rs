//! The server's seccomp filter, entered once set-up is over (shared memory created, socket
//! bound, daemonized, PID file written, event loop built): from then on it only brokers. On by
//! default; `--seccomp=on|off|log` (see the `sandbox` crate for the modes). The list, from what
//! the event loop really calls (traced with `strace -f` over the test suite and the demo):
//!
//! - `sandbox::runtime()`: allocation, futex, signal masks, clocks, stderr log lines, closing
//!   fds, fcntl on fds it owns;
//! - `sandbox::thread_start()`: the filter is entered on all threads at once and may reach the
//!   log writer thread (`log_sink`) while it is still starting;
//! - brokering: `epoll_wait`/`epoll_ctl`, `accept4`, `getsockopt` (`SO_PEERCRED`), `eventfd2`
//!   (each new peer's vectors), `sendmmsg`/`sendmsg` (messages with fds),
//!   `recvfrom`/`recvmsg`/`read` (hang-ups, the signalfd), `ioctl(FIONBIO)` (non-blocking peer
//!   sockets), `shutdown`;
//! - shutdown: `statx`/`newfstatat` and `unlink` to remove the socket file (only if it is still
//!   a socket), the PID file and, with `--unlink-shm`, the `-M` object.
//!
//! Nothing may open files, create sockets or memory, fork or exec once it is on.
use sandbox::AllowList;

pub use sandbox::{Mode, SandboxError};

/// What the event loop and its shutdown call.
pub fn allow_list() -> AllowList {
    sandbox::runtime()
        .merge(&sandbox::thread_start())
        .allow(&[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_accept4,
            libc::SYS_getsockopt,
            libc::SYS_eventfd2,
            libc::SYS_sendmsg,
            libc::SYS_sendmmsg,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_read,
            libc::SYS_shutdown,
            libc::SYS_statx,
            libc::SYS_newfstatat,
            libc::SYS_fstat,
            libc::SYS_lstat,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
        ])
        .allow_ioctls(&[libc::FIONBIO])
}

/// Puts the server under its filter for `mode`: the event loop's thread and the log writer
/// (`log_sink`, started before), which only writes to stderr and waits on its queue.
pub fn enter(mode: Mode) -> Result<(), SandboxError> {
    let filter = allow_list().compile("ivshmem-server", mode)?;
    sandbox::enter_all_threads(filter.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_cannot_open_files_or_make_sockets() {
        let list = allow_list();
        for forbidden in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_memfd_create,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_ptrace,
        ] {
            assert!(!list.contains(forbidden), "{forbidden}");
        }
        assert!(list.contains(libc::SYS_accept4) && list.contains(libc::SYS_sendmsg));
    }
}
