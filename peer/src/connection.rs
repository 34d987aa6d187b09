//! [`Peer`]: one connection to an ivshmem server — the handshake, the mapped shared memory, our
//! own vectors (to wait on) and the other peers' vectors (to ring).
//!
//! Design decisions:
//! - The handshake has no end marker, so `connect` returns once it has the version, our id, the
//!   shared memory and our own vectors (at least one, or as many as the caller expects), plus
//!   whatever else is already queued. On a loaded machine the rest of the burst (more own
//!   vectors, other peers) can arrive later: the calls that need a vector or peer we do not know
//!   yet ([`Peer::wait_vector`], [`Peer::wait`], [`Peer::ring_within`], [`Peer::await_vector`])
//!   take in server messages within their timeout before saying it does not exist; events met on
//!   the way are kept for the next [`Peer::process_server_messages`].
//! - Everything after the handshake is processed only when the caller asks
//!   ([`Peer::process_server_messages`], [`Peer::poll_server`]), so the caller's own event loop
//!   stays in charge; the raw fds are available for epoll/async loops.
//! - A server that vanishes or misbehaves after the handshake does not take the peer down: the
//!   shared memory stays mapped and the eventfds of known peers keep working.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use protocol::{ClientEvent, ClientState};

use crate::error::{ConnectError, RingError, WaitError};
use crate::poller;
use crate::roster::{PeerInfo, Roster};
use crate::server_link::{Incoming, ServerLink};
use crate::shm::SharedMemory;

/// The default socket path, as in QEMU's ivshmem-server and ivshmem-client.
pub use protocol::DEFAULT_SOCKET_PATH;

/// How long [`Peer::connect`] waits for the handshake by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a wait re-reads a server socket that holds half a message.
const ANNOUNCE_RECHECK: Duration = Duration::from_millis(5);

/// How long a server may leave a message half-sent before we call it broken.
pub(crate) const PARTIAL_MESSAGE_LIMIT: Duration = Duration::from_secs(1);

/// Options for [`Peer::connect_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Vectors per peer we accept, and how many of our own we wait for before `connect` returns.
    /// Extra fds the server sends beyond this are closed (as QEMU's `vectors` property does).
    /// `None`: accept up to 1024 per peer and return once at least one own vector arrived.
    /// `Some(0)`: do not wait for own vectors (for a server started with `-n 0`).
    pub vectors: Option<u32>,
    /// How long the whole handshake may take.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            vectors: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// One pending notification on one of our own vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Our vector that fired.
    pub vector: u32,
    /// How many rings were counted since it was last drained (at least 1).
    pub count: u64,
}

/// A connected ivshmem peer. Dropping it unmaps the shared memory and closes the socket and every
/// eventfd.
#[derive(Debug)]
pub struct Peer {
    /// `None` once the server has gone away (or broke the protocol after the handshake).
    pub(crate) link: Option<ServerLink>,
    pub(crate) state: ClientState,
    pub(crate) id: u16,
    pub(crate) shm: SharedMemory,
    pub(crate) roster: Roster,
    /// Why the server connection ended, once it has.
    pub(crate) server_gone: Option<String>,
    /// Events found while finishing `connect`, delivered by the next `process_server_messages`.
    pub(crate) pending: Vec<crate::ServerEvent>,
    /// When the currently half-received message was first seen.
    pub(crate) partial_since: Option<Instant>,
}

/// The handshake's progress, for `connect` and its error messages.
struct Handshake {
    state: ClientState,
    shm: Option<SharedMemory>,
    roster: Roster,
    want_own: u32,
}

impl Handshake {
    fn done(&self) -> bool {
        self.shm.is_some() && self.roster.own.len() as u32 >= self.want_own
    }

    /// What we are still waiting for, in words.
    fn waiting_for(&self) -> String {
        if self.state.own_id().is_none() {
            // Version and id come back to back; one description covers both.
            "the protocol version and our peer id".to_string()
        } else if self.shm.is_none() {
            "the shared-memory fd".to_string()
        } else {
            format!(
                "our interrupt vectors (got {} of {}; if the server has fewer vectors per peer, \
                 pass that number as the expected vector count)",
                self.roster.own.len(),
                self.want_own
            )
        }
    }

    fn feed(&mut self, value: i64, fd: Option<std::os::fd::OwnedFd>) -> Result<(), ConnectError> {
        match self.state.on_message(value, fd) {
            Ok(ClientEvent::SharedMemory(fd)) => {
                self.shm = Some(SharedMemory::map(fd)?);
            }
            Ok(ClientEvent::ExtraVector { peer, vector }) => {
                log::warn!(
                    "server sent vector {vector} for peer {peer}, more than we accept; closed it"
                );
            }
            Ok(event) => {
                log::debug!("handshake: {event:?}");
                self.roster.apply(self.state.own_id(), event);
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => log::warn!("ignoring a bad message from the server: {e}"),
        }
        Ok(())
    }
}

impl Peer {
    /// Connects to the server at `path` with default options (see [`ConnectOptions`]).
    pub fn connect(path: impl AsRef<Path>) -> Result<Peer, ConnectError> {
        Peer::connect_with(path, &ConnectOptions::default())
    }

    /// Connects to the server at `path` and runs the handshake: version, our id, the shared memory
    /// (mapped read/write, shared), the other peers' vectors and our own vectors.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: &ConnectOptions,
    ) -> Result<Peer, ConnectError> {
        let path = path.as_ref();
        let deadline = Instant::now() + options.timeout;
        let link = ServerLink::connect(path, deadline).map_err(|source| ConnectError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let mut hs = Handshake {
            state: ClientState::new(options.vectors),
            shm: None,
            roster: Roster::default(),
            want_own: options.vectors.unwrap_or(1),
        };
        let timeout_error = |hs: &Handshake| ConnectError::Timeout {
            timeout: options.timeout,
            waiting_for: hs.waiting_for(),
        };
        while !hs.done() {
            let incoming = link.try_recv().map_err(|source| ConnectError::Io {
                waiting_for: hs.waiting_for(),
                source,
            })?;
            match incoming {
                Incoming::Message { value, fd } => hs.feed(value, fd)?,
                Incoming::Nothing => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ready =
                        poller::wait_readable(&[link.as_fd()], Some(left)).map_err(|source| {
                            ConnectError::Io {
                                waiting_for: hs.waiting_for(),
                                source,
                            }
                        })?;
                    if !ready[0].any() {
                        return Err(timeout_error(&hs));
                    }
                }
                Incoming::Partial => {
                    if Instant::now() >= deadline {
                        return Err(timeout_error(&hs));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Incoming::Eof => {
                    return Err(ConnectError::Closed {
                        waiting_for: hs.waiting_for(),
                    })
                }
            }
        }
        let Handshake {
            state, shm, roster, ..
        } = hs;
        let (Some(id), Some(shm)) = (state.own_id(), shm) else {
            unreachable!("handshake done implies id and shared memory");
        };
        let mut peer = Peer {
            link: Some(link),
            state,
            id,
            shm,
            roster,
            server_gone: None,
            pending: Vec::new(),
            partial_since: None,
        };
        // The rest of the burst (more own vectors, peers) is normally already queued. It is part
        // of the initial state the caller sees through `peers()`, not news; only the server
        // going away (or breaking the protocol) is kept for the caller to hear about.
        for event in peer.process_server_messages() {
            match event {
                crate::ServerEvent::ServerGone { .. } => peer.pending.push(event),
                crate::ServerEvent::ProtocolViolation(e) => {
                    log::warn!("ignoring a bad message from the server: {e}")
                }
                other => log::debug!("handshake: {other:?}"),
            }
        }
        Ok(peer)
    }

    /// Our peer id, assigned by the server.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The mapped shared memory.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// How many interrupt vectors we have (vector numbers `0..n`).
    pub fn own_vector_count(&self) -> u32 {
        self.roster.own.len() as u32
    }

    /// The other peers we know, ids ascending, with their vector counts.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.roster.peer_infos()
    }

    /// How many vectors `peer` has; `None` if we don't know that peer. Our own id gives our own
    /// vector count.
    pub fn peer_vector_count(&self, peer: u16) -> Option<u32> {
        if peer == self.id {
            return Some(self.own_vector_count());
        }
        self.roster.peers.get(&peer).map(|v| v.len() as u32)
    }

    /// True while the connection to the server is up (we still hear about joins and leaves).
    pub fn server_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Why the server connection ended, if it has.
    pub fn server_gone_reason(&self) -> Option<&str> {
        self.server_gone.as_deref()
    }

    /// Rings `vector` of `peer` (writes 1 to its eventfd). Ringing our own id interrupts
    /// ourselves, as the device does.
    pub fn ring(&self, peer: u16, vector: u32) -> Result<(), RingError> {
        let vectors = if peer == self.id {
            &self.roster.own
        } else {
            self.roster
                .peers
                .get(&peer)
                .ok_or(RingError::UnknownPeer(peer))?
        };
        let target = vectors
            .get(vector as usize)
            .ok_or(RingError::UnknownVector {
                peer,
                vector,
                count: vectors.len() as u32,
            })?;
        target.ring().map_err(|source| RingError::Io {
            peer,
            vector,
            source,
        })
    }

    /// Rings every vector of `peer`; returns how many were rung.
    pub fn ring_all(&self, peer: u16) -> Result<u32, RingError> {
        let count = self
            .peer_vector_count(peer)
            .ok_or(RingError::UnknownPeer(peer))?;
        for vector in 0..count {
            self.ring(peer, vector)?;
        }
        Ok(count)
    }

    /// Waits until at least one of our vectors fires or `timeout` passes (`None` = forever).
    /// Returns the vectors that fired, with their counters, which are drained (reset); an empty
    /// list means the timeout passed. Own vectors announced meanwhile are waited on too; other
    /// server news met on the way is kept for [`process_server_messages`](Self::process_server_messages).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Notification>, WaitError> {
        if self.roster.own.is_empty() {
            return Err(WaitError::NoVectors);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // The server socket is watched for late own vectors, unless it holds half a message
            // (readable until the rest comes): then look again after a short pause.
            let watch_server = self.link.is_some() && self.partial_since.is_none();
            let poll_for = if self.link.is_some() && !watch_server {
                Some(left.map_or(ANNOUNCE_RECHECK, |l| l.min(ANNOUNCE_RECHECK)))
            } else {
                left
            };
            let ready = {
                let mut fds = self.own_vector_fds();
                if watch_server {
                    fds.extend(self.server_fd());
                }
                poller::wait_readable(&fds, poll_for)?
            };
            let own = self.roster.own.len();
            let mut fired = Vec::new();
            for (vector, r) in ready[..own].iter().enumerate() {
                if r.any() {
                    let count = self.roster.own[vector].drain()?;
                    if count > 0 {
                        fired.push(Notification {
                            vector: vector as u32,
                            count,
                        });
                    }
                }
            }
            if !watch_server || ready[own..].iter().any(|r| r.any()) {
                self.take_in_server_news();
            }
            // Empty although something looked ready: someone else drained it first; wait on.
            if !fired.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(fired);
            }
        }
    }

    /// Waits until our `vector` fires or `timeout` passes (`None` = forever). Returns the drained
    /// count, or `None` on timeout. Other vectors are left pending.
    ///
    /// A vector not announced yet is awaited first, within the same timeout (see the module
    /// docs); `UnknownVector` means it was not announced in time (with `None`, only once the
    /// server is gone).
    pub fn wait_vector(
        &mut self,
        vector: u32,
        timeout: Option<Duration>,
    ) -> Result<Option<u64>, WaitError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        if vector >= self.own_vector_count() {
            self.await_vector(self.id, vector, timeout);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let count = self.own_vector(vector)?.wait(left)?;
        Ok((count > 0).then_some(count))
    }

    /// Rings (`peer`, `vector`) like [`ring`](Self::ring), first waiting up to `timeout`
    /// (`None` = forever) for the server to announce it if we do not know it yet.
    pub fn ring_within(
        &mut self,
        peer: u16,
        vector: u32,
        timeout: Option<Duration>,
    ) -> Result<(), RingError> {
        self.await_vector(peer, vector, timeout);
        self.ring(peer, vector)
    }

    /// Takes in server messages until (`peer`, `vector`) is known (`peer` may be our own id),
    /// `timeout` passes (`None` = forever) or the server is gone; returns whether it is known.
    /// The events met on the way are kept for [`process_server_messages`](Self::process_server_messages).
    pub fn await_vector(&mut self, peer: u16, vector: u32, timeout: Option<Duration>) -> bool {
        self.await_roster(timeout, |p| {
            p.peer_vector_count(peer).is_some_and(|n| n > vector)
        })
    }

    /// Takes in server messages until `peer` is known (see [`await_vector`](Self::await_vector)).
    pub fn await_peer(&mut self, peer: u16, timeout: Option<Duration>) -> bool {
        self.await_roster(timeout, |p| p.peer_vector_count(peer).is_some())
    }

    fn await_roster(&mut self, timeout: Option<Duration>, known: impl Fn(&Peer) -> bool) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if known(self) {
                return true;
            }
            if self.link.is_none() {
                return false;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return false;
            }
            if self.partial_since.is_some() {
                // Half a message keeps the socket readable: pause instead of spinning.
                std::thread::sleep(left.map_or(ANNOUNCE_RECHECK, |l| l.min(ANNOUNCE_RECHECK)));
                self.take_in_server_news();
            } else if let Some(fd) = self.server_fd() {
                let ready = poller::wait_readable(&[fd], left).map(|r| r[0].any());
                if !matches!(ready, Ok(false)) {
                    self.take_in_server_news();
                }
            }
        }
    }

    /// Applies what the server sent and keeps the events for the caller's next
    /// [`process_server_messages`](Self::process_server_messages).
    fn take_in_server_news(&mut self) {
        let mut events = self.process_server_messages();
        self.pending.append(&mut events);
    }

    /// Drains our `vector` without waiting; returns how many rings were pending (0 if none).
    pub fn drain_vector(&self, vector: u32) -> Result<u64, WaitError> {
        Ok(self.own_vector(vector)?.drain()?)
    }

    /// Drains every own vector without waiting; returns those that had rings pending.
    pub fn drain_all(&self) -> Result<Vec<Notification>, WaitError> {
        let numbered = self.roster.own.iter().enumerate();
        Ok(crate::vector::drain_each(
            numbered.map(|(vector, v)| (vector as u32, v)),
        )?)
    }

    fn own_vector(&self, vector: u32) -> Result<&crate::vector::Vector, WaitError> {
        self.roster
            .own
            .get(vector as usize)
            .ok_or(WaitError::UnknownVector {
                vector,
                count: self.own_vector_count(),
            })
    }

    /// The eventfd of our own `vector`, to add to an epoll set or async reactor. It becomes
    /// readable when the vector fires; then call [`drain_vector`](Self::drain_vector).
    pub fn own_vector_fd(&self, vector: u32) -> Option<BorrowedFd<'_>> {
        self.roster.own.get(vector as usize).map(|v| v.as_fd())
    }

    /// The eventfds of all our vectors, index = vector number.
    pub fn own_vector_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.roster.own.iter().map(|v| v.as_fd()).collect()
    }

    /// The eventfd we ring for (`peer`, `vector`), e.g. for display or to hand to KVM as an
    /// ioeventfd. `peer` may be our own id.
    pub fn peer_vector_fd(&self, peer: u16, vector: u32) -> Option<BorrowedFd<'_>> {
        let vectors = if peer == self.id {
            &self.roster.own
        } else {
            self.roster.peers.get(&peer)?
        };
        vectors.get(vector as usize).map(|v| v.as_fd())
    }

    /// The server socket, to add to an epoll set; when it is readable call
    /// [`process_server_messages`](Self::process_server_messages). `None` once the server is gone.
    pub fn server_fd(&self) -> Option<BorrowedFd<'_>> {
        self.link.as_ref().map(|l| l.as_fd())
    }
}
