//! Following the server after the handshake: joins, leaves, late vectors, and the server itself
//! going away or misbehaving — all turned into [`ServerEvent`]s, never into a dead peer.
//!
//! A join arrives as one message per vector; consecutive vector messages for the same peer are
//! merged into one event carrying the peer's vector count.

use std::time::{Duration, Instant};

use protocol::ProtocolError;

use crate::connection::{Peer, PARTIAL_MESSAGE_LIMIT};
use crate::poller;
use crate::roster::Change;
use crate::server_link::Incoming;

/// At most this many messages per call, so a flooding server cannot starve the caller.
const MAX_MESSAGES_PER_CALL: usize = 4096;

/// How long to wait for the rest of a join burst once one of its vector messages has arrived.
const BURST_GRACE: Duration = Duration::from_millis(5);

/// Something the server told us (or did) after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A new peer appeared with this many vectors.
    Joined {
        /// The new peer's id.
        peer: u16,
        /// Its vector count so far.
        vectors: u32,
    },
    /// A known peer got more vectors later (its join was split across reads); `vectors` is its
    /// total now.
    VectorsAdded {
        /// The peer.
        peer: u16,
        /// Its vector count now.
        vectors: u32,
    },
    /// More of our own vectors arrived after `connect` returned; `vectors` is our total now.
    OwnVectorsAdded {
        /// Our vector count now.
        vectors: u32,
    },
    /// A peer left; its vectors are closed and ringing it is an error now.
    Left {
        /// The peer that left.
        peer: u16,
    },
    /// The server sent more vectors for a peer than we accept; the fd was closed.
    ExtraVectorClosed {
        /// The peer.
        peer: u16,
        /// The vector number that was refused.
        vector: u32,
    },
    /// The server sent a message that breaks the protocol; it was ignored.
    ProtocolViolation(ProtocolError),
    /// The connection to the server ended (closed, broken or unusable). We keep the shared
    /// memory and the peers we know; no further joins or leaves will be reported.
    ServerGone {
        /// What happened, in words.
        reason: String,
    },
}

/// Merges a run of vector messages for the same peer into one event.
struct VectorRun {
    peer: u16,
    /// The peer's vector count before the run (0 = it is new).
    before: u32,
    total: u32,
}

impl Peer {
    /// Processes every complete message the server has already sent, without blocking (except
    /// for up to a few milliseconds when a join's vector messages are still arriving, so that the
    /// join is reported with all its vectors), and returns what happened. Call it when [`server_fd`](Self::server_fd) is readable, or now
    /// and then. Returns nothing once the server is gone (after one `ServerGone` event).
    pub fn process_server_messages(&mut self) -> Vec<ServerEvent> {
        let mut events = std::mem::take(&mut self.pending);
        let mut run: Option<VectorRun> = None;
        for _ in 0..MAX_MESSAGES_PER_CALL {
            let Some(link) = &self.link else { break };
            let incoming = match link.try_recv() {
                Ok(incoming) => incoming,
                Err(e) => {
                    self.flush_run(&mut run, &mut events);
                    self.lose_server(format!("reading from the server failed: {e}"), &mut events);
                    break;
                }
            };
            match incoming {
                Incoming::Message { value, fd } => {
                    self.partial_since = None;
                    self.handle_message(value, fd, &mut run, &mut events);
                }
                Incoming::Nothing => {
                    // A join is one message per vector, sent back to back; give the rest of
                    // the burst a moment so the join is reported with all its vectors (unless
                    // the peer already has as many as we accept: the rest would be closed).
                    let open = run
                        .as_ref()
                        .is_some_and(|r| r.total < self.state.max_vectors());
                    if open && self.more_arrives_soon() {
                        continue;
                    }
                    break;
                }
                Incoming::Partial => {
                    let since = *self.partial_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= PARTIAL_MESSAGE_LIMIT {
                        self.flush_run(&mut run, &mut events);
                        self.lose_server(
                            format!(
                                "the server sent part of a message and stalled for {PARTIAL_MESSAGE_LIMIT:?}"
                            ),
                            &mut events,
                        );
                    }
                    break;
                }
                Incoming::Eof => {
                    self.flush_run(&mut run, &mut events);
                    self.lose_server("the server closed the connection".to_string(), &mut events);
                }
            }
        }
        self.flush_run(&mut run, &mut events);
        events
    }

    /// Waits up to `timeout` (`None` = forever) for the server to send something, then processes
    /// it like [`process_server_messages`](Self::process_server_messages). Returns at once (with
    /// no events) when the server is already gone.
    pub fn poll_server(&mut self, timeout: Option<Duration>) -> Vec<ServerEvent> {
        if !self.pending.is_empty() {
            return self.process_server_messages();
        }
        let Some(link) = &self.link else {
            return Vec::new();
        };
        let fd = std::os::fd::AsFd::as_fd(link);
        match poller::wait_readable(&[fd], timeout) {
            Ok(_) => self.process_server_messages(),
            Err(e) => {
                let mut events = Vec::new();
                self.lose_server(format!("waiting for the server failed: {e}"), &mut events);
                events
            }
        }
    }

    /// True when the server socket becomes readable within [`BURST_GRACE`].
    fn more_arrives_soon(&self) -> bool {
        let Some(link) = &self.link else { return false };
        let fd = std::os::fd::AsFd::as_fd(link);
        poller::wait_readable(&[fd], Some(BURST_GRACE)).is_ok_and(|r| r[0].any())
    }

    fn handle_message(
        &mut self,
        value: i64,
        fd: Option<std::os::fd::OwnedFd>,
        run: &mut Option<VectorRun>,
        events: &mut Vec<ServerEvent>,
    ) {
        let event = match self.state.on_message(value, fd) {
            Ok(event) => event,
            Err(e) => {
                self.flush_run(run, events);
                let fatal = e.is_fatal();
                events.push(ServerEvent::ProtocolViolation(e));
                if fatal {
                    self.lose_server(
                        "the server broke the protocol beyond repair".to_string(),
                        events,
                    );
                }
                return;
            }
        };
        let before = |peer: u16, this: &Peer| this.peer_vector_count(peer).unwrap_or(0);
        let peer_of_vector = match &event {
            protocol::ClientEvent::PeerVector { peer, .. } => Some(*peer),
            _ => None,
        };
        if let Some(peer) = peer_of_vector {
            if run.as_ref().is_some_and(|r| r.peer != peer) {
                self.flush_run(run, events);
            }
            if run.is_none() {
                *run = Some(VectorRun {
                    peer,
                    before: before(peer, self),
                    total: 0,
                });
            }
        } else {
            self.flush_run(run, events);
        }
        match self.roster.apply(Some(self.id), event) {
            Change::Vector { peer, total } => {
                if let Some(r) = run.as_mut().filter(|r| r.peer == peer) {
                    r.total = total;
                }
            }
            Change::Left(peer) => events.push(ServerEvent::Left { peer }),
            Change::Extra { peer, vector } => {
                events.push(ServerEvent::ExtraVectorClosed { peer, vector })
            }
            Change::None => {}
        }
    }

    fn flush_run(&self, run: &mut Option<VectorRun>, events: &mut Vec<ServerEvent>) {
        let Some(r) = run.take() else { return };
        events.push(if r.peer == self.id {
            ServerEvent::OwnVectorsAdded { vectors: r.total }
        } else if r.before == 0 {
            ServerEvent::Joined {
                peer: r.peer,
                vectors: r.total,
            }
        } else {
            ServerEvent::VectorsAdded {
                peer: r.peer,
                vectors: r.total,
            }
        });
    }

    /// Closes the server socket and records why; known peers and memory stay.
    fn lose_server(&mut self, reason: String, events: &mut Vec<ServerEvent>) {
        if self.link.take().is_some() {
            log::warn!("{reason}; keeping the shared memory and the known peers");
            self.server_gone = Some(reason.clone());
            events.push(ServerEvent::ServerGone { reason });
        }
    }
}
