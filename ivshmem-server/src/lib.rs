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
//!
//! Operations (docs/server-operations.md): [`handover`] (the state a successor takes over) and
//! [`upgrade`] (SIGUSR2: a new process serves, peers notice nothing), [`keeper`] (`--keeper`:
//! crash survival), [`systemd`] (socket activation, notifications), [`control`] and [`status`]
//! (`--status`, `--upgrade` on `<socket>.ctl`), [`state_table`] (`--state-table`, the peer
//! table in the shared memory, and `--lifecycle-vector`).

pub mod clock;
pub mod control;
pub mod event_loop;
pub mod handover;
pub mod keeper;
pub mod listener;
pub mod log_limit;
pub mod log_sink;
pub mod options;
pub mod peer;
pub mod process;
pub mod seccomp;
pub mod shm;
pub mod state_table;
pub mod status;
pub mod systemd;
pub mod upgrade;

use anyhow::Context;

use crate::control::Control;
use crate::event_loop::{LoopConfig, Server, ShmInfo};
use crate::handover::Inherited;
use crate::listener::{Listener, SocketFile};
use crate::options::Options;
use crate::process::PidFile;
use crate::shm::{Access, SharedMemory};
use crate::upgrade::{Launch, UpgradeHelper};

/// Runs the server until a shutdown signal; returns an error for anything that prevents it from
/// starting (the caller prints it and exits 1). When this process is the new half of an upgrade
/// ([`handover::STATE_FD_ENV`] is set) it takes over instead of creating anything.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    if let Some(inherited) =
        handover::inherited().context("cannot take over from the previous server")?
    {
        return run_adopted(opts, inherited);
    }
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
    let activated = systemd::listen_socket().context("cannot use the socket systemd passed")?;

    let gid = opts.group.as_ref().map(|g| g.gid);
    let access = Access {
        mode: opts.mode(),
        gid,
    };
    let shm = SharedMemory::create(&opts.shm, size, access)?;
    // Checked (and written) before anything is bound: a bad offset is a start-up error.
    let table = map_state_table(opts, &shm.fd, shm.size)?;
    // Socket activation: systemd's socket unit owns the file (and its mode and group).
    let (socket, listener, socket_path) = match activated {
        Some(socket) => {
            let path = systemd::listener_path(&socket).unwrap_or_else(|| opts.socket_path.clone());
            (socket, SocketFile::not_ours(&path), path)
        }
        None => {
            let (socket, file) = Listener::bind(&opts.socket_path, opts.mode(), gid)?.into_parts();
            (socket, file, opts.socket_path.clone())
        }
    };
    let socket_file_ours = listener.is_ours();
    // The control socket (--status, --upgrade) is always ours, next to the main one, with its
    // permissions. Without it the server still serves.
    let control_path = control::control_path(&socket_path);
    let (control_socket, files) = match Listener::bind(&control_path, opts.mode(), gid) {
        Ok(l) => {
            let (socket, file) = l.into_parts();
            (Some(socket), vec![listener, file])
        }
        Err(e) => {
            log::warn!(
                "ivshmem-server: no control socket, --status and --upgrade will not work: {e}"
            );
            (None, vec![listener])
        }
    };
    let remove_files = || files.iter().for_each(SocketFile::remove_file);

    let mut pid_file = None;
    if !opts.foreground {
        let readiness = match process::daemonize() {
            Ok(r) => r,
            Err(e) => {
                remove_files();
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
                remove_files();
                return Err(e)
                    .with_context(|| format!("cannot write PID file {}", opts.pid_file.display()));
            }
        }
    }

    if opts.keeper {
        let result = run_keeper(opts, socket, control_socket, &shm, socket_file_ours);
        finish(false, &files, opts, &shm, pid_file);
        return result;
    }
    // Opened now: the seccomp filter forbids making sockets later.
    let notifier = systemd::Notifier::from_env();
    // Still single-threaded: the upgrade helper is forked now (it needs no filter and no thread).
    let helper = start_upgrade_helper(opts);
    // Signals are blocked and we are the daemon (if any): the log writer thread may start.
    if let Err(e) = log_sink::start_writer() {
        remove_files();
        return Err(e).context("cannot start the log writer thread");
    }
    log::info!(
        "ivshmem-server: listening on {}{} (shared memory: {}, {} bytes; {} vector{} per peer)",
        socket_path.display(),
        if socket_file_ours {
            ""
        } else {
            " (socket from systemd)"
        },
        shm.description,
        shm.size,
        opts.vectors,
        if opts.vectors == 1 { "" } else { "s" }
    );
    let config = LoopConfig {
        vectors: opts.vectors,
        queue_limit: opts.queue_limit,
    };
    let mut upgraded = false;
    let result = shm.fd.try_clone().and_then(|shm_fd| {
        let mut server = Server::new(socket, signals, shm_fd, config)?;
        server.set_shm_info(ShmInfo {
            size: shm.size,
            description: shm.description.clone(),
        });
        server.set_socket_file_ours(socket_file_ours);
        if let Some(t) = table {
            server.set_state_table(t);
        }
        if let Some(v) = opts.lifecycle_vector {
            server.set_lifecycle_vector(v);
        }
        if let Some(helper) = helper {
            server.set_upgrade_helper(helper);
        }
        if let Some(socket) = control_socket {
            server.set_control(Control::new(socket, nix::unistd::geteuid().as_raw())?)?;
        }
        // Set-up is over: from here on the server only brokers.
        seccomp::enter(opts.seccomp).map_err(std::io::Error::other)?;
        if let Some(notifier) = notifier {
            notifier.notify(&format!(
                "READY=1\nSTATUS=serving on {}\nMAINPID={}",
                socket_path.display(),
                std::process::id()
            ));
            server.set_notifier(notifier);
        }
        let result = server.run();
        upgraded = server.upgraded();
        result
    });

    finish(upgraded, &files, opts, &shm, pid_file);
    result.context("event loop failed")
}

/// Cleans up after the loop: the socket file, the `-M` object and the PID file, unless a
/// successor serves (upgrade), to which they all belong now.
fn finish(
    upgraded: bool,
    files: &[SocketFile],
    opts: &Options,
    shm: &SharedMemory,
    pid_file: Option<PidFile>,
) {
    if upgraded {
        if let Some(p) = pid_file {
            p.keep();
        }
        return;
    }
    files.iter().for_each(SocketFile::remove_file);
    if opts.unlink_shm {
        shm.unlink_name();
    }
    drop(pid_file);
}

/// `--keeper`: this process keeps the fds and runs servers as its children
/// ([`keeper`]); it has no seccomp filter, since it must be able to start them.
fn run_keeper(
    opts: &Options,
    socket: std::os::unix::net::UnixListener,
    control: Option<std::os::unix::net::UnixListener>,
    shm: &SharedMemory,
    socket_file_ours: bool,
) -> anyhow::Result<()> {
    let launch = launch_spec(opts)?;
    let signals = process::keeper_signals().context("cannot set up the keeper's signals")?;
    // The servers must not answer systemd in the keeper's place: the keeper is the service.
    let notifier = systemd::Notifier::from_env();
    std::env::remove_var("NOTIFY_SOCKET");
    log_sink::start_writer().context("cannot start the log writer thread")?;
    log::info!(
        "ivshmem-server: keeper for {} (shared memory: {}, {} bytes; {} vector{} per peer)",
        opts.socket_path.display(),
        shm.description,
        shm.size,
        opts.vectors,
        if opts.vectors == 1 { "" } else { "s" }
    );
    let setup = keeper::Setup {
        listener: socket.into(),
        control: control.map(Into::into),
        shm: shm
            .fd
            .try_clone()
            .context("cannot duplicate the shared-memory fd")?,
        shm_size: shm.size,
        shm_description: shm.description.clone(),
        vectors: opts.vectors,
        socket_file_ours,
        launch,
    };
    keeper::run(setup, signals, notifier)
}

/// What an upgrade or a keeper starts: `--upgrade-binary`, or the binary running, with this
/// process's arguments.
fn launch_spec(opts: &Options) -> anyhow::Result<Launch> {
    let binary = match &opts.upgrade_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot tell which binary runs")?,
    };
    Ok(Launch {
        binary,
        args: std::env::args_os().skip(1).collect(),
    })
}

/// The helper that starts a successor on SIGUSR2, or None (logged) when it cannot be made.
fn start_upgrade_helper(opts: &Options) -> Option<UpgradeHelper> {
    let launch = match launch_spec(opts) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("ivshmem-server: upgrades disabled: {e:#}");
            return None;
        }
    };
    match UpgradeHelper::spawn(launch) {
        Ok(helper) => Some(helper),
        Err(e) => {
            log::warn!("ivshmem-server: upgrades disabled: cannot start the upgrade helper: {e}");
            None
        }
    }
}

/// The new half of an upgrade: takes over the predecessor's socket, memory and peers, tells it
/// (through the readiness pipe) that it serves, then serves. Any error before that leaves the
/// predecessor serving: nothing shared has been touched.
fn run_adopted(opts: &Options, mut inherited: Inherited) -> anyhow::Result<()> {
    let state = &inherited.state;
    if opts.vectors != state.vectors {
        anyhow::bail!(
            "cannot take over: -n {} differs from the running server's {} vector{} (an upgrade keeps the vectors of every peer)",
            opts.vectors,
            state.vectors,
            if state.vectors == 1 { "" } else { "s" }
        );
    }
    if let Err(e) = protocol::fd_limit::raise_fd_limit() {
        log::warn!("ivshmem-server: cannot raise the open-file limit: {e}");
    }
    let signals = process::shutdown_signals().context("cannot set up signal handling")?;
    // Under a keeper, the keeper does what the upgrade helper does (and more).
    let keeper = match std::env::var(upgrade::KEEPER_FD_ENV) {
        Ok(value) => {
            std::env::remove_var(upgrade::KEEPER_FD_ENV);
            Some(adopt_keeper_socket(&value, opts)?)
        }
        Err(_) => None,
    };
    let helper = if keeper.is_some() {
        None
    } else {
        start_upgrade_helper(opts)
    };
    log_sink::start_writer().context("cannot start the log writer thread")?;
    let config = LoopConfig {
        vectors: opts.vectors,
        queue_limit: opts.queue_limit,
    };
    let mut server = Server::adopt(&mut inherited, signals, config)
        .context("cannot take over the previous server's state")?;
    let socket_path = server
        .socket_path()
        .unwrap_or_else(|| opts.socket_path.clone());
    let socket_file = if inherited.state.socket_file_ours {
        SocketFile::adopted(&socket_path)
    } else {
        SocketFile::not_ours(&socket_path)
    };
    let control_file = server.control_path().map(|p| SocketFile::adopted(&p));
    let notifier = systemd::Notifier::from_env();
    let peers = inherited.state.peers.len();
    let shm_description = inherited.state.shm_description.clone();
    let how = {
        let c = inherited.state.counters;
        let s = |n: u64| if n == 1 { "" } else { "s" };
        format!(
            "{} upgrade{}, {} restart{}",
            c.upgrades,
            s(c.upgrades),
            c.restarts,
            s(c.restarts)
        )
    };
    // The fds the server did not take (none, normally) close here.
    drop(std::mem::replace(
        &mut inherited.fds,
        handover::FdTable::empty(),
    ));
    if let Some(helper) = helper {
        server.set_upgrade_helper(helper);
    }
    if let Some(t) = map_state_table(opts, &server.shm_fd(), inherited.state.shm_size)? {
        server.set_state_table(t);
    }
    if let Some(v) = opts.lifecycle_vector {
        server.set_lifecycle_vector(v);
    }
    let under_keeper = keeper.is_some();
    if let Some(keeper) = keeper {
        server.set_keeper(keeper);
    }
    // A keeper writes the PID file (its own pid: the one to signal).
    let pid_file = if opts.foreground || under_keeper {
        None
    } else {
        Some(
            PidFile::write(&opts.pid_file)
                .with_context(|| format!("cannot write PID file {}", opts.pid_file.display()))?,
        )
    };
    seccomp::enter(opts.seccomp).context("cannot enter the seccomp filter")?;
    inherited.report_ready();
    if let Some(notifier) = notifier {
        notifier.notify(&format!(
            "READY=1\nSTATUS=serving on {} (took over by an upgrade)\nMAINPID={}",
            socket_path.display(),
            std::process::id()
        ));
        server.set_notifier(notifier);
    }
    log::info!(
        "ivshmem-server: took over {peers} peer{} on {} (shared memory: {shm_description}; {how}), pid {}",
        if peers == 1 { "" } else { "s" },
        socket_path.display(),
        std::process::id()
    );
    server.resume_sending();
    let result = server.run();
    let upgraded = server.upgraded();
    if upgraded {
        if let Some(p) = pid_file {
            p.keep();
        }
    } else {
        socket_file.remove_file();
        if let Some(f) = &control_file {
            f.remove_file();
        }
        if opts.unlink_shm {
            if let options::ShmBacking::PosixName(name) = &opts.shm {
                let _ = nix::sys::mman::shm_unlink(format!("/{name}").as_str());
            }
        }
        drop(pid_file);
    }
    result.context("event loop failed")
}

/// The keeper's socket named by [`upgrade::KEEPER_FD_ENV`], checked and owned.
fn adopt_keeper_socket(value: &str, opts: &Options) -> anyhow::Result<UpgradeHelper> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    let fd: i32 = value
        .trim()
        .parse()
        .ok()
        .filter(|&fd| fd > 2)
        .with_context(|| format!("{}={value} is not an fd number", upgrade::KEEPER_FD_ENV))?;
    // SAFETY: borrowed for one fcntl(F_GETFD) to check the fd is open.
    let open = nix::fcntl::fcntl(
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    );
    open.with_context(|| format!("{}={fd}: not an open fd", upgrade::KEEPER_FD_ENV))?;
    // SAFETY: open (checked) and passed by the keeper for this process alone.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let binary = launch_spec(opts)?.binary;
    UpgradeHelper::from_keeper(owned, binary).context("cannot use the keeper's socket")
}

/// `--state-table`: the table mapped (and initialized) in the shared memory, or None.
fn map_state_table(
    opts: &Options,
    shm: &impl std::os::fd::AsFd,
    size: u64,
) -> anyhow::Result<Option<state_table::StateTable>> {
    let Some(offset) = opts.state_table else {
        return Ok(None);
    };
    state_table::StateTable::map(shm.as_fd(), offset, size, opts.vectors)
        .map(Some)
        .map_err(anyhow::Error::msg)
}
