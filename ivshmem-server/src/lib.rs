//! A QEMU-compatible ivshmem server (docs/protocol.md, "The server"): the same command line and the
//! same wire protocol, so QEMU's `ivshmem-doorbell` works against it unchanged, without the
//! reference server's limits (select's 1024 fds, 32-bit sizes, exiting on one bad client, stale
//! sockets).
//!
//! Modules: [`options`] (command line), [`shm`] (shared-memory creation), [`listener`] (the
//! socket file), [`peer`] (ids, per-peer state, bounded queues), [`event_loop`] (epoll broker),
//! [`process`] (daemon, PID file, signals), [`log_sink`] (stderr that never blocks the
//! loop), [`log_limit`] (join/leave storms logged once), [`seccomp`] (the filter once set up).
//! [`run`] wires them in QEMU's order: shared memory, socket, daemonize, PID file, log writer,
//! seccomp filter, loop.

pub mod event_loop;
pub mod listener;
pub mod log_limit;
pub mod log_sink;
pub mod options;
pub mod peer;
pub mod process;
pub mod seccomp;
pub mod shm;

use anyhow::Context;

use crate::event_loop::{LoopConfig, Server};
use crate::listener::Listener;
use crate::options::Options;
use crate::process::PidFile;
use crate::shm::{Access, SharedMemory};

/// Runs the server until a shutdown signal; returns an error for anything that prevents it from
/// starting (the caller prints it and exits 1).
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let size = opts.shm_size();
    if size != opts.requested_size {
        log::info!(
            "ivshmem-server: size {} is not a power of two, rounded up to {size}",
            opts.requested_size
        );
    }
    // Each peer costs 1 + vectors fds.
    match protocol::fd_limit::raise_fd_limit() {
        Ok(limit) => log::debug!("open-file limit: {limit}"),
        Err(e) => log::warn!("ivshmem-server: cannot raise the open-file limit: {e}"),
    }
    let signals = process::shutdown_signals().context("cannot set up signal handling")?;

    let gid = opts.group.as_ref().map(|g| g.gid);
    let access = Access {
        mode: opts.mode(),
        gid,
    };
    let shm = SharedMemory::create(&opts.shm, size, access)?;
    let listener = Listener::bind(&opts.socket_path, opts.mode(), gid)?;

    let mut pid_file = None;
    if !opts.foreground {
        let readiness = match process::daemonize() {
            Ok(r) => r,
            Err(e) => {
                listener.remove_file();
                return Err(e).context("cannot daemonize");
            }
        };
        match PidFile::write(&opts.pid_file) {
            Ok(p) => {
                pid_file = Some(p);
                readiness.notify(true);
            }
            Err(e) => {
                readiness.notify(false);
                listener.remove_file();
                return Err(e)
                    .with_context(|| format!("cannot write PID file {}", opts.pid_file.display()));
            }
        }
    }

    // Signals are blocked and we are the daemon (if any): the log writer thread may start.
    if let Err(e) = log_sink::start_writer() {
        listener.remove_file();
        return Err(e).context("cannot start the log writer thread");
    }
    log::info!(
        "ivshmem-server: listening on {} (shared memory: {}, {} bytes; {} vector{} per peer)",
        opts.socket_path.display(),
        shm.description,
        shm.size,
        opts.vectors,
        if opts.vectors == 1 { "" } else { "s" }
    );
    let config = LoopConfig {
        vectors: opts.vectors,
        queue_limit: opts.queue_limit,
    };
    let shm_fd = shm
        .fd
        .try_clone()
        .context("cannot duplicate the shared-memory fd")?;
    let result = Server::new(listener.socket.try_clone()?, signals, shm_fd, config).and_then(
        |mut server| {
            // Set-up is over: from here on the server only brokers.
            seccomp::enter(opts.seccomp).map_err(std::io::Error::other)?;
            server.run()
        },
    );

    listener.remove_file();
    if opts.unlink_shm {
        shm.unlink_name();
    }
    drop(pid_file);
    result.context("event loop failed")
}
