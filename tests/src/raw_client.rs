//! Raw protocol clients for the server tests: they speak the wire protocol through the
//! `protocol` crate only (no `peer` library), so the tests see exactly what the server sends.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use protocol::client::{ClientEvent, ClientState};
use protocol::fdpass::{recv_message, Received};

use crate::eventfd::poll_readable;
use crate::TIMEOUT;

/// Receives one raw message with a timeout.
pub fn recv_raw(sock: &UnixStream) -> io::Result<Received> {
    sock.set_read_timeout(Some(TIMEOUT))?;
    recv_message(sock.as_fd())
}

/// True when nothing arrives on `sock` within `ms` milliseconds.
pub fn silent_for(sock: &UnixStream, ms: i32) -> bool {
    !poll_readable(sock, ms)
}

/// Size of a shared-memory fd (`fstat`).
pub fn shm_size(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat the shm fd").st_size as u64
}

/// Maps a client's shared-memory fd (whole object) read-write and shared, with the `peer`
/// library's bounds-checked mapping.
pub fn map_shm(fd: &OwnedFd) -> peer::SharedMemory {
    peer::SharedMemory::map(fd.try_clone().expect("dup the shm fd")).expect("map the shm fd")
}

/// A connected client that checked its handshake with the protocol's state machine.
pub struct RawClient {
    /// The connection to the server (the test may write garbage to it or close it).
    pub sock: UnixStream,
    /// The protocol state machine that checked every message so far.
    pub state: ClientState,
    /// The id the server assigned.
    pub id: u16,
    /// The shared memory (None for light clients).
    pub shm: Option<OwnedFd>,
    /// Eventfds per peer id (own id included), vector order.
    pub vectors: BTreeMap<u16, Vec<OwnedFd>>,
    /// How many vectors per peer it expects (the server's `-n`).
    pub n_vectors: u32,
    /// Keep other peers' vector fds (false: close them on arrival).
    pub keep: bool,
}

impl RawClient {
    /// Connects and reads the handshake up to its own last vector.
    pub fn connect(path: &Path, n_vectors: u32) -> RawClient {
        let sock = UnixStream::connect(path).expect("connect to server");
        Self::handshake(sock, n_vectors, true)
    }

    /// Like `connect`, but other peers' vector fds are closed as they arrive (only counted),
    /// and so is the shared memory: for tests with hundreds of clients in one process.
    pub fn connect_light(path: &Path, n_vectors: u32) -> RawClient {
        let sock = UnixStream::connect(path).expect("connect to server");
        Self::handshake(sock, n_vectors, false)
    }

    /// Reads the handshake on an already connected socket; `keep` as in `connect`/`connect_light`.
    pub fn handshake(sock: UnixStream, n_vectors: u32, keep: bool) -> RawClient {
        let mut state = ClientState::new(Some(n_vectors));
        let mut id = None;
        let mut shm = None;
        let mut vectors: BTreeMap<u16, Vec<OwnedFd>> = BTreeMap::new();
        loop {
            if let (Some(id), Some(_)) = (id, shm.as_ref()) {
                if state.vector_count(id) == n_vectors {
                    break;
                }
            }
            let (value, fd) = match recv_raw(&sock).expect("handshake message") {
                Received::Message { value, fd } => (value, fd),
                Received::Eof => panic!("server closed the connection during the handshake"),
            };
            match state.on_message(value, fd).expect("valid handshake") {
                ClientEvent::Version => {}
                ClientEvent::OwnId(i) => id = Some(i),
                ClientEvent::SharedMemory(fd) => shm = Some(fd),
                ClientEvent::PeerVector { peer, fd, .. } => {
                    if keep || Some(peer) == id {
                        vectors.entry(peer).or_default().push(fd)
                    }
                }
                other => panic!("unexpected during handshake: {other:?}"),
            }
        }
        let shm = shm.filter(|_| keep);
        RawClient {
            sock,
            state,
            id: id.unwrap(),
            shm,
            vectors,
            n_vectors,
            keep,
        }
    }

    /// Next event (panics on timeout, EOF or a protocol error).
    pub fn next_event(&mut self) -> ClientEvent {
        match recv_raw(&self.sock).expect("message from server") {
            Received::Message { value, fd } => {
                self.state.on_message(value, fd).expect("valid message")
            }
            Received::Eof => panic!("server closed the connection"),
        }
    }

    /// Expects peer `id` to join: its N vectors.
    pub fn expect_join(&mut self, id: u16) {
        for v in 0..self.n_vectors {
            match self.next_event() {
                ClientEvent::PeerVector { peer, vector, fd } => {
                    assert_eq!((peer, vector), (id, v), "join of peer {id}");
                    if self.keep {
                        self.vectors.entry(peer).or_default().push(fd);
                    }
                }
                other => panic!("expected vector {v} of peer {id}, got {other:?}"),
            }
        }
    }

    /// Expects peer `id` to leave.
    pub fn expect_leave(&mut self, id: u16) {
        match self.next_event() {
            ClientEvent::PeerLeft(p) => assert_eq!(p, id),
            other => panic!("expected peer {id} to leave, got {other:?}"),
        }
        self.vectors.remove(&id);
    }

    /// `cycles` times: another client with as many vectors connects (this one hears it join)
    /// and closes (this one hears it leave).
    pub fn watch_cycles(&mut self, path: &Path, cycles: usize) {
        for _ in 0..cycles {
            let c = RawClient::connect(path, self.n_vectors);
            self.expect_join(c.id);
            let id = c.id;
            drop(c);
            self.expect_leave(id);
        }
    }

    /// Ids of the other peers the server announced (and not announced as left).
    pub fn peer_ids(&self) -> Vec<u16> {
        self.state.peers().into_iter().map(|(id, _)| id).collect()
    }
}
