//! The server's event loop driven in-process by clients on real sockets that connect, read,
//! send bytes, half-close and hang up in any order.
//!
//! Input: byte 0: vectors per peer (mod 5), byte 1: the per-peer queue limit (mod 16, + 1); then
//! operations, an opcode byte each:
//! 0 connect; 1 one turn of the server loop; 2 `c`: client c reads what is waiting;
//! 3 `c n bytes..`: client c sends n (mod 16) bytes; 4 `c`: client c hangs up;
//! 5 `c`: client c shuts down its writing side.
//!
//! Checked: no panic; every client, reading through the protocol state machine, sees a valid
//! message sequence; once both sides are idle, every client still connected knows exactly the
//! other connected clients with the configured number of vectors each; no fd leaks.
#![no_main]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};

use fuzz_support::{bytes_waiting, open_fd_count, Input};
use ivshmem_server::event_loop::{LoopConfig, Server};
use libfuzzer_sys::fuzz_target;
use nix::sys::epoll::EpollTimeout;
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use protocol::{recv_message, ClientEvent, ClientState, ProtocolError, Received};

const MAX_CLIENTS: usize = 12;
const MAX_OPS: usize = 256;

struct Client {
    stream: Option<UnixStream>,
    state: ClientState,
    /// Other peers' vector counts as this client learned them.
    peers: BTreeMap<u16, u32>,
    /// The client wrote something or half-closed: the server must drop it.
    misbehaved: bool,
    /// The server closed the connection.
    eof: bool,
    /// The server gives peers no vectors.
    no_vectors: bool,
}

impl Client {
    /// Reads every complete message waiting; true if any was read.
    fn read_available(&mut self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        let mut progressed = false;
        while !self.eof {
            // Only whole messages: a partial one would make recv_message wait for the rest,
            // which this single-threaded test cannot send.
            if !bytes_waiting(stream, 8) {
                // EOF shows as a zero-length read.
                let mut byte = [0u8; 1];
                if let Ok(0) = nix::sys::socket::recv(
                    std::os::fd::AsRawFd::as_raw_fd(stream),
                    &mut byte,
                    nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ) {
                    self.eof = true;
                    progressed = true;
                }
                break;
            }
            match recv_message(stream.as_fd()) {
                Ok(Received::Message { value, fd }) => {
                    progressed = true;
                    match self.state.on_message(value, fd) {
                        Ok(ClientEvent::PeerVector { peer, .. })
                            if Some(peer) != self.state.own_id() =>
                        {
                            *self.peers.entry(peer).or_insert(0) += 1;
                        }
                        Ok(ClientEvent::PeerLeft(peer)) => {
                            self.peers.remove(&peer);
                        }
                        Ok(_) => {}
                        // With 0 vectors per peer a join is invisible (nothing to send), so
                        // its leave names a peer the others never heard of, as with QEMU.
                        Err(ProtocolError::DisconnectUnknownPeer(_)) if self.no_vectors => {}
                        Err(e) => panic!("the server broke the protocol: {e}"),
                    }
                }
                Ok(Received::Eof) => {
                    self.eof = true;
                    progressed = true;
                }
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
        progressed
    }

    fn connected(&self) -> bool {
        self.stream.is_some() && !self.eof
    }
}

fn unique_address() -> SocketAddr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "ivshmem-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address")
}

fn new_server(vectors: u32, queue_limit: usize) -> (Server, SocketAddr) {
    let address = unique_address();
    let listener = UnixListener::bind_addr(&address).expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let signals = SignalFd::with_flags(
        &SigSet::empty(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .expect("signalfd");
    let shm: OwnedFd =
        nix::sys::memfd::memfd_create("ivshmem-fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd");
    let config = LoopConfig {
        vectors,
        queue_limit,
    };
    let server = Server::new(listener, signals, shm, config).expect("server");
    (server, address)
}

fn turn(server: &mut Server) {
    let quit = server.run_once(EpollTimeout::ZERO).expect("event loop");
    assert!(!quit, "no signal was sent");
}

fuzz_target!(|data: &[u8]| {
    let fds_before = open_fd_count();
    let mut input = Input::new(data);
    let vectors = u32::from(input.u8() % 5);
    let queue_limit = usize::from(input.u8() % 16) + 1;
    let (mut server, address) = new_server(vectors, queue_limit);
    let mut clients: Vec<Client> = Vec::new();

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 6;
        if op == 0 {
            if clients.len() < MAX_CLIENTS {
                let stream = UnixStream::connect_addr(&address).expect("connect");
                stream.set_nonblocking(true).expect("non-blocking");
                clients.push(Client {
                    stream: Some(stream),
                    state: ClientState::new(None),
                    peers: BTreeMap::new(),
                    misbehaved: false,
                    eof: false,
                    no_vectors: vectors == 0,
                });
            }
            continue;
        }
        if op == 1 {
            turn(&mut server);
            continue;
        }
        let index = usize::from(input.u8());
        let len = clients.len();
        let Some(client) = clients.get_mut(index % len.max(1)) else {
            continue;
        };
        match op {
            2 => {
                client.read_available();
            }
            3 => {
                let n = usize::from(input.u8() % 16);
                let bytes = input.bytes(n);
                if let Some(stream) = &mut client.stream {
                    if !bytes.is_empty() && (&*stream).write(bytes).is_ok_and(|w| w > 0) {
                        client.misbehaved = true;
                    }
                }
            }
            4 => client.stream = None,
            _ => {
                if let Some(stream) = &client.stream {
                    if stream.shutdown(Shutdown::Write).is_ok() {
                        client.misbehaved = true;
                    }
                }
            }
        }
    }

    // Let both sides run until neither has anything left to do. The server accepts one
    // connection per turn, and taking one whose client has closed shows no progress here: up
    // to MAX_CLIENTS quiet turns can pass before the last waiting connection is taken.
    const IDLE_TURNS: usize = MAX_CLIENTS + 3;
    let mut idle_rounds = 0;
    for _ in 0..10_000 {
        turn(&mut server);
        let mut progressed = false;
        for client in &mut clients {
            progressed |= client.read_available();
        }
        idle_rounds = if progressed { 0 } else { idle_rounds + 1 };
        if idle_rounds == IDLE_TURNS {
            break;
        }
    }
    assert_eq!(
        idle_rounds, IDLE_TURNS,
        "server and clients never went idle"
    );

    let connected: BTreeMap<u16, usize> = clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.connected())
        .map(|(i, c)| {
            assert!(
                !c.misbehaved,
                "a client that sent data or half-closed was dropped"
            );
            assert!(
                c.state.has_shm(),
                "a connected client got the whole handshake"
            );
            (c.state.own_id().expect("handshake done"), i)
        })
        .collect();
    assert_eq!(connected.len(), server.peer_count());
    for (&id, &i) in &connected {
        let expected: BTreeMap<u16, u32> = connected
            .keys()
            .filter(|&&other| other != id)
            .map(|&other| (other, vectors))
            .filter(|&(_, n)| n > 0)
            .collect();
        assert_eq!(
            clients[i].peers, expected,
            "peer {id} knows every other connected peer with all its vectors"
        );
    }

    drop(clients);
    drop(server);
    assert_eq!(open_fd_count(), fds_before, "fds leaked");
});
