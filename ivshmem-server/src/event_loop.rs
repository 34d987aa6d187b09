//! The broker: one epoll loop over the listening socket, the shutdown signalfd and every peer
//! socket. New connections get an id, eventfds and the handshake; anything a peer sends (data
//! or EOF) makes it leave, as in QEMU; leaves are announced to the others.
//!
//! Join and leave lines go through a per-pid rate limit ([`crate::log_limit`]), so a client that
//! reconnects in a loop is logged once per window with a count, not once per cycle.
//!
//! Failure containment: everything that can go wrong with one connection (accept, id
//! allocation, eventfd creation, a send, an overflowing queue) costs that connection only.
//! Peers to drop are collected in a work list and processed one at a time, because announcing
//! one departure can make another peer's queue overflow.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{getsockopt, recv, sockopt::PeerCredentials, MsgFlags};
use protocol::server::{leave, new_peer_sequence, peer_vectors};

use crate::clock::unix_now;
use crate::control::{error_json, Control, Event as ControlEvent, Request, MAX_CONNECTIONS};
use crate::handover::{Counters, FdCollector, Inherited, PeerState, QueuedState, State};
use crate::log_limit::{RateLimiter, BURST, MAX_KEYS, WINDOW};
use crate::peer::{Flush, OutQueue, Peer, PeerTable};
use crate::systemd::Notifier;
use crate::upgrade::UpgradeHelper;

const LISTENER_TOKEN: u64 = 0;
const SIGNAL_TOKEN: u64 = 1;
// Peer tokens are connection numbers, which start at 1 and are offset by this.
const PEER_TOKEN_BASE: u64 = 2;
// The control socket and its connections take the top of the token space.
const CONTROL_TOKEN: u64 = u64::MAX;
const CONTROL_SLOT_BASE: u64 = u64::MAX - 1 - MAX_CONNECTIONS as u64;
/// How long shutdown waits for departure notices to drain.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Settings of the event loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Vectors (eventfds) the server creates for each peer (`-n`).
    pub vectors: u32,
    /// How many join/leave notices may wait for one peer before it is dropped (`--queue-limit`).
    pub queue_limit: usize,
}

/// The broker: one epoll loop over the listening socket, the shutdown signals and every
/// connected peer. It hands each peer the shared memory and the eventfds of the others, and
/// announces joins and leaves to everyone.
pub struct Server {
    epoll: Epoll,
    listener: std::os::unix::net::UnixListener,
    signals: SignalFd,
    shm: Rc<OwnedFd>,
    config: LoopConfig,
    peers: PeerTable,
    /// Peers to drop, with the reason, in order.
    doomed: Vec<(u16, Departure)>,
    doomed_set: crate::peer::IdSet,
    /// An fd kept in reserve so that accept can still take (and refuse) a connection when the
    /// fd table is full; otherwise the listener would stay readable and the loop would spin.
    reserve_fd: Option<File>,
    quitting: bool,
    /// Join and leave lines, rate-limited per (pid, what happened): reconnect storms.
    peer_log: RateLimiter<LineKey, PeerLine>,
    /// The shared memory's size and origin, for hand-overs and `--status`.
    shm_info: ShmInfo,
    /// Joins, leaves, drops, upgrades, start time.
    counters: Counters,
    /// Starts the successor on SIGUSR2; None when upgrades are not possible.
    helper: Option<UpgradeHelper>,
    /// A successor serves now: exit without a word to the peers.
    upgraded: bool,
    /// The server created the socket file (false: systemd's socket unit owns it).
    socket_file_ours: bool,
    /// systemd's notification socket, when run as a notify service.
    notifier: Option<Notifier>,
    /// `--status` and `--upgrade` ([`crate::control`]), when its socket could be made.
    control: Option<Control>,
    /// When this process started serving (seconds since the Unix epoch).
    process_started: u64,
    /// Where the listener and the control socket are bound; asked once during set-up
    /// (getsockname is not in the seccomp allow-list).
    socket_path: Option<std::path::PathBuf>,
    control_path: Option<std::path::PathBuf>,
    /// `helper` is a keeper ([`crate::keeper`]): tell it every join, leave and backlog.
    mirror: bool,
    /// Departures to announce once serving (peers gone while no server ran).
    pending_leaves: Vec<u16>,
    /// `--state-table`: the peer table in the shared memory.
    table: Option<crate::state_table::StateTable>,
    /// `--lifecycle-vector`: rung on every peer at each join and leave.
    lifecycle: Option<u32>,
    /// `epoll_wait`'s buffer, reused ([`Server::run_once`]).
    events: Vec<EpollEvent>,
}

/// What the shared memory is, for hand-overs and `--status`.
#[derive(Debug, Clone, Default)]
pub struct ShmInfo {
    /// Size in bytes.
    pub size: u64,
    /// Where it comes from (`/dev/shm/NAME`, `memfd`, ...).
    pub description: String,
}

impl Server {
    /// A server on a bound `listener`, stopping on `signals` (SIGINT, SIGTERM, SIGHUP), giving
    /// peers `shm`. Nothing happens until [`Server::run`].
    pub fn new(
        listener: std::os::unix::net::UnixListener,
        signals: SignalFd,
        shm: OwnedFd,
        config: LoopConfig,
    ) -> io::Result<Server> {
        Server::with_shared_memory(listener, signals, Rc::new(shm), config)
    }

    fn with_shared_memory(
        listener: std::os::unix::net::UnixListener,
        signals: SignalFd,
        shm: Rc<OwnedFd>,
        config: LoopConfig,
    ) -> io::Result<Server> {
        let socket_path = crate::systemd::listener_path(&listener);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            &listener,
            EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN),
        )?;
        epoll.add(&signals, EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN))?;
        Ok(Server {
            epoll,
            listener,
            signals,
            shm,
            config,
            peers: PeerTable::new(),
            doomed: Vec::new(),
            doomed_set: crate::peer::IdSet::default(),
            reserve_fd: File::open("/dev/null").ok(),
            quitting: false,
            peer_log: RateLimiter::new(BURST, WINDOW, MAX_KEYS),
            shm_info: ShmInfo::default(),
            counters: Counters {
                started: unix_now(),
                ..Counters::default()
            },
            helper: None,
            upgraded: false,
            socket_file_ours: true,
            notifier: None,
            control: None,
            process_started: unix_now(),
            socket_path,
            control_path: None,
            mirror: false,
            pending_leaves: Vec::new(),
            table: None,
            lifecycle: None,
            events: Vec::new(),
        })
    }

    /// The shared-memory fd the server hands out.
    pub fn shm_fd(&self) -> Rc<OwnedFd> {
        self.shm.clone()
    }

    /// Serves `--status` and `--upgrade` on `control`.
    pub fn set_control(&mut self, control: Control) -> io::Result<()> {
        self.epoll.add(
            &control.listener,
            EpollEvent::new(EpollFlags::EPOLLIN, CONTROL_TOKEN),
        )?;
        self.control_path = crate::systemd::listener_path(&control.listener);
        self.control = Some(control);
        Ok(())
    }

    /// The path of the control socket's file, if there is one.
    pub fn control_path(&self) -> Option<std::path::PathBuf> {
        self.control_path.clone()
    }

    /// What `--status` shows, now.
    pub fn report(&self) -> crate::status::Report {
        let peers = self
            .peers
            .ids_in_order()
            .into_iter()
            .filter_map(|id| self.peers.get(id))
            .map(|p| crate::status::PeerReport {
                id: p.id,
                pid: p.pid,
                uid: p.uid,
                vectors: p.vectors.len() as u32,
                since: p.since,
                queued: p.queue.len(),
            })
            .collect();
        crate::status::Report {
            pid: std::process::id(),
            socket: self
                .socket_path()
                .map_or_else(|| "?".into(), |p| p.display().to_string()),
            now: unix_now(),
            started: self.counters.started,
            process_started: self.process_started,
            memory_size: self.shm_info.size,
            memory_backing: self.shm_info.description.clone(),
            vectors: self.config.vectors,
            joins: self.counters.joins,
            leaves: self.counters.leaves,
            drops: self.counters.drops,
            upgrades: self.counters.upgrades,
            restarts: self.counters.restarts,
            log_lines_dropped: crate::log_sink::dropped_lines(),
            peers,
        }
    }

    fn control_accept(&mut self) {
        loop {
            let Some(control) = &mut self.control else {
                return;
            };
            let Some((slot, _evicted, socket)) = control.accept() else {
                return;
            };
            // An evicted connection was closed, which took it out of the epoll set.
            let interest = EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
                CONTROL_SLOT_BASE + slot as u64,
            );
            if let Err(e) = self.epoll.add(socket, interest) {
                log::debug!("control connection dropped: cannot watch it: {e}");
                let _ = control.answer(slot, String::new());
            }
        }
    }

    fn control_event(&mut self, slot: usize) {
        let Some(control) = &mut self.control else {
            return;
        };
        let mut event = control.on_event(slot);
        if let ControlEvent::Request(request) = event {
            let reply = self.control_reply(request);
            let Some(control) = &mut self.control else {
                return;
            };
            event = control.answer(slot, reply);
        }
        let Some(control) = &self.control else {
            return;
        };
        if event == ControlEvent::Nothing && control.wants_write(slot) {
            if let Some(socket) = control.socket(slot) {
                let mut out =
                    EpollEvent::new(EpollFlags::EPOLLOUT, CONTROL_SLOT_BASE + slot as u64);
                let _ = self.epoll.modify(socket, &mut out);
            }
        }
    }

    fn control_reply(&mut self, request: Request) -> String {
        match request {
            Request::Status => self.report().to_json(),
            Request::StatusText => self.report().to_text(),
            Request::Upgrade { allowed: false } => {
                error_json("only the server's own user or root may upgrade it")
            }
            Request::Upgrade { allowed: true } => match self.upgrade() {
                // Written by hand: serde_json's map sorts keys, and the documented reply (and
                // tests/server_status.rs) has "upgraded" first.
                Ok(pid) => format!("{{\"upgraded\":true,\"pid\":{pid}}}\n"),
                Err(why) => error_json(&format!("upgrade failed, still serving: {why}")),
            },
        }
    }

    /// Records whether the socket file is the server's to remove (for hand-overs).
    pub fn set_socket_file_ours(&mut self, ours: bool) {
        self.socket_file_ours = ours;
    }

    /// Sends watchdog keep-alives, the upgrade's new main pid and STOPPING=1 through `notifier`.
    pub fn set_notifier(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// The path of the listening socket's file, if it has one.
    pub fn socket_path(&self) -> Option<std::path::PathBuf> {
        self.socket_path.clone()
    }

    /// Records what the shared memory is (for hand-overs and `--status`).
    pub fn set_shm_info(&mut self, info: ShmInfo) {
        self.shm_info = info;
    }

    /// Hands upgrades to a keeper and keeps it informed of every peer ([`crate::keeper`]).
    pub fn set_keeper(&mut self, keeper: UpgradeHelper) {
        self.helper = Some(keeper);
        self.mirror = true;
        self.peers.for_each_mut(|p| p.socket_elsewhere = true);
    }

    /// Tells the keeper something; on failure it is forgotten (logged once): the server
    /// serves on without crash protection.
    fn tell_keeper(&mut self, tag: u8, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        if !self.mirror {
            return;
        }
        let sent = self.helper.as_ref().is_some_and(|k| k.tell(tag, data, fds));
        if !sent {
            log::warn!(
                "ivshmem-server: lost the keeper: serving on without crash protection or upgrades"
            );
            self.mirror = false;
            self.helper = None;
        }
    }

    /// Tells the keeper whether everything queued for `id` has been sent.
    fn tell_settled(&mut self, id: u16, settled: bool) {
        if let Some(seq) = self
            .mirror
            .then(|| self.peers.get(id).map(|p| p.seq))
            .flatten()
        {
            let tag = if settled {
                crate::keeper::TAG_SETTLED
            } else {
                crate::keeper::TAG_UNSETTLED
            };
            self.tell_keeper(tag, &seq.to_le_bytes(), &[]);
        }
    }

    /// Keeps `table` in step with the peers (`--state-table`), from the peers there are now.
    pub fn set_state_table(&mut self, mut table: crate::state_table::StateTable) {
        let peers: Vec<(u16, u32)> = self
            .peers
            .ids_in_order()
            .into_iter()
            .filter_map(|id| self.peers.get(id).map(|p| (id, p.vectors.len() as u32)))
            .collect();
        table.reset(self.config.vectors, peers.into_iter());
        self.table = Some(table);
    }

    /// Rings `vector` of every peer on each join and leave (`--lifecycle-vector`).
    pub fn set_lifecycle_vector(&mut self, vector: u32) {
        self.lifecycle = Some(vector);
    }

    /// The lifecycle doorbell: one ring on every connected peer's lifecycle vector.
    fn ring_lifecycle(&self) {
        let Some(vector) = self.lifecycle else {
            return;
        };
        for id in self.peers.ids_in_order() {
            if let Some(fd) = self
                .peers
                .get(id)
                .and_then(|p| p.vectors.get(vector as usize))
            {
                // A full counter (never read) refuses the write: the peer is rung already.
                let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
            }
        }
    }

    /// Makes SIGUSR2 upgrade through `helper` ([`crate::upgrade`]).
    pub fn set_upgrade_helper(&mut self, helper: UpgradeHelper) {
        self.helper = Some(helper);
    }

    /// True once a successor serves: the caller exits without removing the socket file, the
    /// PID file or the shared memory, which are the successor's now.
    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// A server resuming a predecessor's state ([`crate::handover`]): same listener, memory,
    /// peers (sockets, eventfds, queued messages), ids and counters. Nothing is sent to anyone
    /// until [`Server::resume_sending`], which the caller calls once it has told the
    /// predecessor it serves (until then the predecessor may still take everything back).
    pub fn adopt(
        inherited: &mut Inherited,
        signals: SignalFd,
        config: LoopConfig,
    ) -> io::Result<Server> {
        let state = &inherited.state;
        let fds = &mut inherited.fds;
        let listener = std::os::unix::net::UnixListener::from(fds.take(state.listener));
        check_socket(&listener, true, "listening socket")?;
        listener.set_nonblocking(true)?;
        let shm = fds.shared(state.shm);
        let mut server = Server::with_shared_memory(listener, signals, shm, config)?;
        server.shm_info = ShmInfo {
            size: state.shm_size,
            description: state.shm_description.clone(),
        };
        server.counters = state.counters;
        server.socket_file_ours = state.socket_file_ours;
        server.peers = PeerTable::resume(state.id_cursor, state.next_seq);
        server.pending_leaves = state.announce_leaves.clone();
        if let Some(i) = state.control {
            let listener = std::os::unix::net::UnixListener::from(fds.take(i));
            check_socket(&listener, true, "control socket")?;
            server.set_control(Control::new(listener, nix::unistd::geteuid().as_raw())?)?;
        }
        for p in &state.peers {
            let socket = UnixStream::from(fds.take(p.socket));
            check_socket(&socket, false, "peer socket")?;
            socket.set_nonblocking(true)?;
            let mut queue = OutQueue::new(config.queue_limit);
            for q in &p.queue {
                queue.push_adopted(
                    q.bytes,
                    usize::from(q.sent),
                    q.fd.map(|i| fds.shared(i)),
                    q.is_notice,
                );
            }
            server.epoll.add(
                &socket,
                EpollEvent::new(
                    EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
                    p.seq + PEER_TOKEN_BASE,
                ),
            )?;
            server.peers.insert(Peer {
                id: p.id,
                seq: p.seq,
                socket,
                pid: p.pid,
                uid: p.uid,
                since: p.since,
                vectors: p.vectors.iter().map(|&i| fds.shared(i)).collect(),
                queue,
                wants_write: false,
                // The predecessor (or the keeper) holds it too, for a while or for good.
                socket_elsewhere: true,
            });
        }
        Ok(server)
    }

    /// Sends what adopted peers had queued (see [`Server::adopt`]), then announces the
    /// departures of peers that left while no server ran.
    pub fn resume_sending(&mut self) {
        let had_pending = !self.pending_leaves.is_empty();
        for id in self.peers.ids_in_order() {
            self.flush(id);
        }
        for gone in std::mem::take(&mut self.pending_leaves) {
            self.log_peer(PeerLine::LeftInGap { id: gone });
            for other in self.peers.ids_in_order() {
                self.notify(other, &[leave(gone)]);
            }
        }
        if had_pending {
            self.ring_lifecycle();
        }
        self.drop_doomed();
    }

    /// The state a successor needs, and the fds it refers to by index.
    pub fn snapshot(&self) -> (State, FdCollector<'_>) {
        let mut fds = FdCollector::new();
        let listener = fds.add(self.listener.as_fd());
        let shm = fds.add(self.shm.as_fd());
        let (id_cursor, next_seq) = self.peers.counters();
        let mut peers = Vec::with_capacity(self.peers.len());
        for id in self.peers.ids_in_order() {
            let Some(p) = self.peers.get(id) else {
                continue;
            };
            let socket = fds.add(p.socket.as_fd());
            let vectors = p.vectors.iter().map(|v| fds.add(v.as_fd())).collect();
            let queue = p
                .queue
                .export()
                .into_iter()
                .map(|q| QueuedState {
                    bytes: q.bytes,
                    sent: q.sent as u8,
                    fd: q.fd.map(|f| fds.add(f.as_fd())),
                    is_notice: q.is_notice,
                })
                .collect();
            peers.push(PeerState {
                id,
                seq: p.seq,
                pid: p.pid,
                uid: p.uid,
                since: p.since,
                socket,
                vectors,
                queue,
            });
        }
        let state = State {
            listener,
            control: self.control.as_ref().map(|c| fds.add(c.listener.as_fd())),
            shm,
            shm_size: self.shm_info.size,
            shm_description: self.shm_info.description.clone(),
            vectors: self.config.vectors,
            socket_file_ours: self.socket_file_ours,
            id_cursor,
            next_seq,
            // The successor counts this upgrade.
            counters: Counters {
                upgrades: self.counters.upgrades + 1,
                ..self.counters
            },
            peers,
            announce_leaves: Vec::new(),
        };
        (state, fds)
    }

    /// SIGUSR2: hands everything to a new server process; on success this one stops, on
    /// failure it logs why and serves on, unchanged.
    fn upgrade(&mut self) -> Result<u32, String> {
        if self.helper.is_none() {
            let why = "upgrades are not available here (no upgrade helper)";
            log::warn!("ivshmem-server: upgrade asked for, but {why}; still serving");
            return Err(why.into());
        }
        // Doomed peers go first: their departure is announced by us, not lost in between.
        self.drop_doomed();
        // From here the helper and the new server hold copies of every peer's socket (for
        // good if it serves; a failed one has closed them by the time we hear of it, but a
        // helper that does not answer may still hold them).
        self.peers.for_each_mut(|p| p.socket_elsewhere = true);
        let (state, fds) = self.snapshot();
        let helper = self.helper.as_ref().expect("checked above");
        let body = state.encode_body();
        log::info!(
            "ivshmem-server: upgrading: handing {} peer{} over to {}",
            state.peers.len(),
            if state.peers.len() == 1 { "" } else { "s" },
            helper.binary().display()
        );
        let outcome = helper.hand_over(&body, fds.fds());
        drop(fds);
        match outcome {
            Ok(pid) => {
                log::info!(
                    "ivshmem-server: upgraded: pid {pid} serves now, this process (pid {}) exits",
                    std::process::id()
                );
                self.upgraded = true;
                self.quitting = true;
                if let Some(n) = &self.notifier {
                    n.notify(&format!(
                        "MAINPID={pid}\nSTATUS=upgraded, pid {pid} serves now"
                    ));
                }
                Ok(pid)
            }
            Err(why) => {
                log::warn!("ivshmem-server: upgrade failed, still serving: {why}");
                Err(why)
            }
        }
    }

    /// Runs until SIGINT/SIGTERM/SIGHUP, then announces departures and closes every peer.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.quitting {
            // Wake up when a rate-limit window ends, to log its summary, and when the
            // watchdog wants to hear from us.
            let watchdog = self.notifier.as_ref().and_then(|n| n.next_deadline());
            let timeout = match (self.peer_log.next_deadline(), watchdog) {
                (Some(a), Some(b)) => timeout_until(a.min(b)),
                (Some(at), None) | (None, Some(at)) => timeout_until(at),
                (None, None) => EpollTimeout::NONE,
            };
            self.run_once(timeout)?;
            if let Some(n) = &mut self.notifier {
                n.keepalive(Instant::now());
            }
        }
        if !self.upgraded {
            if let Some(n) = &self.notifier {
                n.notify("STOPPING=1");
            }
            self.shutdown();
        }
        Ok(())
    }

    /// One turn of the loop: waits up to `timeout` for events and handles them (accepts, peers
    /// leaving, queued sends). Returns whether a shutdown signal has been received. [`run`] is
    /// this in a loop; tests and the fuzzer call it directly to drive the server step by step.
    ///
    /// [`run`]: Server::run
    pub fn run_once(&mut self, timeout: EpollTimeout) -> io::Result<bool> {
        // Kept between calls: zeroing a fresh 256-event array was ~8% of the server's
        // instructions per join/leave cycle (callgrind).
        let mut events = std::mem::take(&mut self.events);
        if events.is_empty() {
            events = vec![EpollEvent::empty(); 256];
        }
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                self.events = events;
                return Err(e.into());
            }
        };
        // A new connection is taken after everything else in the batch: a peer that hung up
        // before it connected is gone from its handshake (not listed, then announced as
        // leaving), which saves both of them messages.
        let mut listener_ready = false;
        for event in &events[..n] {
            match event.data() {
                LISTENER_TOKEN => listener_ready = true,
                SIGNAL_TOKEN => self.read_signals(),
                CONTROL_TOKEN => self.control_accept(),
                token if token >= CONTROL_SLOT_BASE => {
                    self.control_event((token - CONTROL_SLOT_BASE) as usize)
                }
                token => self.peer_event(token - PEER_TOKEN_BASE, event.events()),
            }
            if self.upgraded {
                // A successor owns every socket now: this process must not touch them.
                break;
            }
            self.drop_doomed();
        }
        if listener_ready && !self.quitting {
            self.accept_one();
            self.drop_doomed();
        }
        for summary in self.peer_log.expire(Instant::now()) {
            log::info!("{summary}");
        }
        self.events = events;
        Ok(self.quitting)
    }

    fn read_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let name = nix::sys::signal::Signal::try_from(info.ssi_signo as i32)
                .map(|s| s.as_str())
                .unwrap_or("signal");
            if info.ssi_signo == libc::SIGUSR2 as u32 {
                let _ = self.upgrade();
                if self.quitting {
                    return;
                }
                continue;
            }
            log::info!("ivshmem-server: {name} received, shutting down");
            self.quitting = true;
        }
    }

    /// Accepts one connection. The listener is level-triggered: if more wait, the next
    /// `epoll_wait` reports it again at once, so no `accept4` is spent learning that the
    /// backlog is empty.
    fn accept_one(&mut self) {
        loop {
            match accept_nonblocking(&self.listener) {
                Ok(stream) => return self.add_peer(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Take the connection with the reserved fd and close it at once.
                    self.reserve_fd = None;
                    if let Ok(stream) = accept_nonblocking(&self.listener) {
                        log::warn!("refused a connection: out of file descriptors ({e})");
                        drop(stream);
                    }
                    self.reserve_fd = File::open("/dev/null").ok();
                    if self.reserve_fd.is_none() {
                        return; // try again on the next event
                    }
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_peer(&mut self, stream: UnixStream) {
        let creds = getsockopt(&stream, PeerCredentials).ok();
        let pid = creds.map(|c| c.pid());
        let uid = creds.map(|c| c.uid());
        let pid_text = PidText(pid);
        log::debug!(
            "new connection ({pid_text}), {} peers connected",
            self.peers.len()
        );
        let Some(id) = self.peers.allocate_id() else {
            log::warn!("refused a connection ({pid_text}): cannot allocate a peer id, all 65536 are in use");
            return;
        };
        let mut vectors = Vec::with_capacity(self.config.vectors as usize);
        for _ in 0..self.config.vectors {
            match EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC) {
                Ok(efd) => vectors.push(Rc::new(OwnedFd::from(efd))),
                Err(e) => {
                    log::warn!("refused a connection ({pid_text}): cannot create an eventfd: {e}");
                    return;
                }
            }
        }
        let seq = self.peers.next_seq();
        let interest = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            seq + PEER_TOKEN_BASE,
        );
        if let Err(e) = self.epoll.add(&stream, interest) {
            log::warn!("refused a connection ({pid_text}): cannot watch its socket: {e}");
            return;
        }

        // The keeper first: if we die from here on, it knows this peer (unsettled until its
        // handshake is out) and can announce its departure.
        let socket_elsewhere = self.mirror;
        if self.mirror {
            let payload = crate::keeper::join_payload(id, seq, pid, uid, unix_now());
            let split = vectors.len().min(crate::keeper::VECTORS_IN_JOIN);
            let first: Vec<_> = std::iter::once(stream.as_fd())
                .chain(vectors[..split].iter().map(|v| v.as_fd()))
                .collect();
            self.tell_keeper(crate::keeper::TAG_JOIN, &payload, &first);
            for chunk in vectors[split..].chunks(crate::keeper::VECTORS_IN_JOIN) {
                let more: Vec<_> = chunk.iter().map(|v| v.as_fd()).collect();
                self.tell_keeper(crate::keeper::TAG_MORE_VECTORS, &seq.to_le_bytes(), &more);
            }
        }

        // Step 4: tell every existing peer, in connect order, about the newcomer's vectors.
        let existing = self.peers.ids_in_order();
        let join = peer_vectors(id, &vectors);
        for &other in &existing {
            self.notify(other, &join);
        }

        // Steps 1-3, 5, 6 for the newcomer.
        let others: Vec<(u16, Vec<Rc<OwnedFd>>)> = existing
            .iter()
            .filter_map(|&other| self.peers.get(other).map(|p| (other, p.vectors.clone())))
            .collect();
        let sequence = new_peer_sequence(
            id,
            self.shm.clone(),
            &vectors,
            others.iter().map(|(other, v)| (*other, v.as_slice())),
        );
        let mut queue = OutQueue::new(self.config.queue_limit);
        queue.push_handshake(sequence);
        self.peers.insert(Peer {
            id,
            seq,
            socket: stream,
            pid,
            uid,
            since: unix_now(),
            vectors,
            queue,
            wants_write: false,
            socket_elsewhere,
        });
        self.counters.joins += 1;
        if let Some(t) = &mut self.table {
            t.join(id, self.config.vectors);
        }
        self.ring_lifecycle();
        self.log_peer(PeerLine::Joined {
            id,
            pid,
            vectors: self.config.vectors,
        });
        self.flush(id);
        if self.mirror && self.peers.get(id).is_some_and(|p| !p.wants_write) {
            self.tell_settled(id, true);
        }
    }

    /// Queues notices for a peer and sends what its socket takes; dooms it on overflow.
    fn notify(&mut self, id: u16, messages: &[crate::peer::SharedMessage]) {
        if self.doomed_set.contains(&id) {
            return;
        }
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        if peer.queue.push_notices(messages).is_err() {
            let queued = peer.queue.len();
            self.drop_peer(
                id,
                format!("not reading: outgoing queue full ({queued} messages)"),
            );
            return;
        }
        self.flush(id);
    }

    /// Sends what is queued for `id`, arming or disarming EPOLLOUT as needed.
    fn flush(&mut self, id: u16) {
        if self.doomed_set.contains(&id) {
            return;
        }
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let result = peer.queue.flush(peer.socket.as_fd());
        let want = match result {
            Flush::Done => false,
            Flush::Blocked => true,
            Flush::Failed(e) => {
                self.drop_peer(id, format!("send failed: {e}"));
                return;
            }
        };
        if want != peer.wants_write {
            log::debug!(
                "peer {id}: {}",
                if want {
                    format!("socket full, {} messages queued", peer.queue.len())
                } else {
                    "queue drained".to_string()
                }
            );
            let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if want {
                flags |= EpollFlags::EPOLLOUT;
            }
            let mut event = EpollEvent::new(flags, peer.seq + PEER_TOKEN_BASE);
            match self.epoll.modify(&peer.socket, &mut event) {
                Ok(()) => {
                    peer.wants_write = want;
                    self.tell_settled(id, !want);
                }
                Err(e) => self.drop_peer(id, format!("cannot watch its socket: {e}")),
            }
        }
    }

    fn peer_event(&mut self, seq: u64, flags: EpollFlags) {
        // A peer dropped earlier in this batch has no entry any more: stale event.
        let Some(id) = self.peers.id_of_seq(seq) else {
            return;
        };
        let readable = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLHUP
            | EpollFlags::EPOLLERR;
        if flags.intersects(readable) {
            self.doom(id, Departure::Socket(flags));
        } else if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(id);
        }
    }

    /// Why `peer` leaves, in words. A hang-up's reason is read from the epoll flags where
    /// they say it: readable while still connected is data sent (clients must not send). A
    /// hang-up may have left data unread (sent, then closed) and an error needs its errno:
    /// that takes a peek at the socket, one more syscall per departure, so for the usual
    /// hang-up it is only taken when the line will be logged. In a reconnect storm, once its
    /// line is being suppressed, a hang-up counts as "disconnected" in the summary.
    fn leave_reason(&self, peer: &Peer, departure: Departure) -> Cow<'static, str> {
        let flags = match departure {
            Departure::Dropped(why) => return Cow::Owned(why),
            Departure::Socket(flags) => flags,
        };
        let hung_up = flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP);
        if !flags.contains(EpollFlags::EPOLLERR) {
            if !hung_up {
                return Cow::Borrowed(SENT_DATA);
            }
            if !self
                .peer_log
                .would_admit(&(peer.pid, Cow::Borrowed(DISCONNECTED)))
            {
                return Cow::Borrowed(DISCONNECTED);
            }
        }
        let mut byte = [0u8; 1];
        match recv(
            std::os::fd::AsRawFd::as_raw_fd(&peer.socket),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => Cow::Borrowed(DISCONNECTED),
            Ok(_) => Cow::Borrowed(SENT_DATA),
            Err(Errno::EAGAIN) => Cow::Borrowed("hung up"),
            Err(e) => Cow::Owned(format!("connection error: {e}")),
        }
    }

    /// Dooms a peer for something the server could not do for it (counted as a drop).
    fn drop_peer(&mut self, id: u16, reason: String) {
        if !self.doomed_set.contains(&id) {
            self.counters.drops += 1;
        }
        self.doom(id, Departure::Dropped(reason));
    }

    fn doom(&mut self, id: u16, reason: Departure) {
        if self.doomed_set.insert(id) {
            self.doomed.push((id, reason));
        }
    }

    /// Removes doomed peers one at a time and tells the others, which may doom more.
    fn drop_doomed(&mut self) {
        let mut next = 0;
        while next < self.doomed.len() {
            let id = self.doomed[next].0;
            let departure =
                std::mem::replace(&mut self.doomed[next].1, Departure::Dropped(String::new()));
            next += 1;
            if let Some(peer) = self.peers.remove(id) {
                self.counters.leaves += 1;
                // Closing the last fd of a socket takes it out of the epoll set; a copy in
                // another process (keeper, predecessor, successor) would keep it there.
                if peer.socket_elsewhere {
                    let _ = self.epoll.delete(&peer.socket);
                }
                let reason = self.leave_reason(&peer, departure);
                self.log_peer(PeerLine::Left {
                    id,
                    pid: peer.pid,
                    reason,
                });
                let seq = peer.seq;
                drop(peer); // closes its socket; queued fds live on in other queues
                if let Some(t) = &mut self.table {
                    t.leave(id);
                }
                self.ring_lifecycle();
                let notice = [leave(id)];
                for other in self.peers.ids_in_order() {
                    self.notify(other, &notice);
                }
                // After the announcement: a crash before this repeats it rather than losing it.
                self.tell_keeper(crate::keeper::TAG_LEFT, &seq.to_le_bytes(), &[]);
            }
        }
        self.doomed.clear();
        self.doomed_set.clear();
    }

    /// Like QEMU: peers leave one by one in connect order and each departure is announced to
    /// those still there. Then the notices get a short time to drain, and every socket closes.
    fn shutdown(&mut self) {
        let order = self.peers.ids_in_order();
        // The peer at position k hears that peers 0..k left; sent as queued, so memory stays
        // bounded by the queue limit whatever the number of peers. Sent a batch (one
        // `sendmmsg`) at a time; a peer whose socket is full waits for the drain below.
        for (k, &recipient) in order.iter().enumerate() {
            for (i, &gone) in order[..k].iter().enumerate() {
                if self.doomed_set.contains(&recipient) {
                    break;
                }
                let Some(peer) = self.peers.get_mut(recipient) else {
                    break;
                };
                if peer.queue.push_notices(&[leave(gone)]).is_err() {
                    self.doomed_set.insert(recipient);
                    break;
                }
                let batch_full = peer.queue.len() >= crate::peer::SEND_BATCH || i + 1 == k;
                if batch_full && !peer.wants_write {
                    self.flush(recipient);
                }
            }
        }
        // Only the peers' sockets matter now.
        let _ = self.epoll.delete(&self.listener);
        let _ = self.epoll.delete(&self.signals);
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let mut pending = false;
            for id in self.peers.ids_in_order() {
                self.flush(id);
                if self.doomed_set.contains(&id) {
                    continue;
                }
                let Some(peer) = self.peers.get(id) else {
                    continue;
                };
                if peer.queue.is_empty() {
                    let _ = self.epoll.delete(&peer.socket);
                } else {
                    pending = true;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !pending || left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(ms))
                .unwrap_or(0);
            for event in &events[..n] {
                let hung_up = EpollFlags::EPOLLIN
                    | EpollFlags::EPOLLRDHUP
                    | EpollFlags::EPOLLHUP
                    | EpollFlags::EPOLLERR;
                if event.events().intersects(hung_up) {
                    // Gone or talking: nothing more to deliver to it.
                    if let Some(id) = self.peers.id_of_seq(event.data() - PEER_TOKEN_BASE) {
                        if let Some(peer) = self.peers.get(id) {
                            let _ = self.epoll.delete(&peer.socket);
                        }
                        self.doomed_set.insert(id);
                    }
                }
            }
        }
        for id in order {
            if let Some(peer) = self.peers.remove(id) {
                self.log_peer(PeerLine::Left {
                    id,
                    pid: peer.pid,
                    reason: Cow::Borrowed("server shutting down"),
                });
            }
        }
        for summary in self.peer_log.flush() {
            log::info!("{summary}");
        }
    }

    /// Logs a join or leave line unless the same kind of line from the same pid is storming.
    fn log_peer(&mut self, line: PeerLine) {
        if let Some(line) = self.peer_log.admit(line.key(), line, Instant::now()) {
            log::info!("{line}");
        }
    }

    /// How many peers are connected right now (fuzz/'s server_peers target checks it against
    /// the connections it holds open).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

/// `pid 1234` or `pid ?`, written straight into a log line (no `String` of its own).
struct PidText(Option<i32>);

impl std::fmt::Display for PidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid ?"),
        }
    }
}

/// Why a doomed peer leaves.
#[derive(Debug)]
enum Departure {
    /// Its socket reported these events (hang-up, data, error): see [`Server::leave_reason`].
    Socket(EpollFlags),
    /// The server dropped it, for this reason.
    Dropped(String),
}

const DISCONNECTED: &str = "disconnected";
const SENT_DATA: &str = "sent data (clients must not send anything)";

/// What the join/leave log limit groups lines by: the pid, and "joined" or the leave reason.
type LineKey = (Option<i32>, Cow<'static, str>);

/// A join or leave line, formatted only when it is written (logged, or summed up when its
/// rate-limit window ends): in a reconnect storm the suppressed lines cost no formatting.
#[derive(Debug)]
enum PeerLine {
    Joined {
        id: u16,
        pid: Option<i32>,
        vectors: u32,
    },
    Left {
        id: u16,
        pid: Option<i32>,
        reason: Cow<'static, str>,
    },
    /// Gone while no server ran (announced by the server that resumed).
    LeftInGap { id: u16 },
}

impl PeerLine {
    fn key(&self) -> LineKey {
        match self {
            PeerLine::Joined { pid, .. } => (*pid, Cow::Borrowed("joined")),
            PeerLine::Left { pid, reason, .. } => (*pid, reason.clone()),
            PeerLine::LeftInGap { .. } => (None, Cow::Borrowed("gap")),
        }
    }
}

impl std::fmt::Display for PeerLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerLine::Joined { id, pid, vectors } => write!(
                f,
                "peer {id} joined ({}, {vectors} vector{})",
                PidText(*pid),
                if *vectors == 1 { "" } else { "s" }
            ),
            PeerLine::Left { id, pid, reason } => {
                write!(f, "peer {id} left ({}): {reason}", PidText(*pid))
            }
            PeerLine::LeftInGap { id } => {
                write!(f, "peer {id} left: disconnected while no server ran")
            }
        }
    }
}

/// Checks that an fd handed over is the kind of socket the state says: a UNIX stream socket,
/// listening or not. A predecessor's state is checked like any outside input.
fn check_socket(fd: &impl AsFd, listening: bool, what: &str) -> io::Result<()> {
    use nix::sys::socket::{sockopt, AddressFamily, SockType};
    let bad = |why: String| io::Error::other(format!("the handed-over {what} {why}"));
    let kind =
        getsockopt(fd, sockopt::SockType).map_err(|e| bad(format!("is not a socket: {e}")))?;
    let family = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(
        std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()),
    )
    .map(|_| AddressFamily::Unix)
    .map_err(|e| bad(format!("is not a UNIX socket: {e}")))?;
    let accepting = getsockopt(fd, sockopt::AcceptConn).unwrap_or(false);
    if kind != SockType::Stream || family != AddressFamily::Unix || accepting != listening {
        return Err(bad(format!(
            "is a {kind:?} socket{}",
            if accepting { " that listens" } else { "" }
        )));
    }
    Ok(())
}

/// One `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, retried on EINTR: the socket comes
/// non-blocking, without the `ioctl(FIONBIO)` that `UnixListener::accept` would need after it.
fn accept_nonblocking(listener: &std::os::unix::net::UnixListener) -> io::Result<UnixStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let flags =
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC;
    loop {
        match nix::sys::socket::accept4(listener.as_raw_fd(), flags) {
            // SAFETY: accept4 just returned this fd, which nothing else owns.
            Ok(fd) => return Ok(unsafe { UnixStream::from_raw_fd(fd) }),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// An epoll timeout that ends at `at` (rounded up to whole milliseconds, at most u16::MAX ms).
fn timeout_until(at: Instant) -> EpollTimeout {
    let left = at.saturating_duration_since(Instant::now());
    let ms = left.as_micros().div_ceil(1000);
    EpollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handed_over_sockets_are_checked() {
        let dir = std::env::temp_dir().join(format!("ivshmem-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(check_socket(&listener, true, "listener").is_ok());
        assert!(check_socket(&a, false, "peer").is_ok());
        let e = check_socket(&a, true, "listener").unwrap_err();
        assert!(e.to_string().contains("handed-over listener"), "{e}");
        assert!(check_socket(&listener, false, "peer").is_err());
        let file = File::open("/dev/null").unwrap();
        assert!(check_socket(&file, false, "peer")
            .unwrap_err()
            .to_string()
            .contains("not a socket"));
        let (d1, _d2) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(check_socket(&d1, false, "peer").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
