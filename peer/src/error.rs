//! Typed errors of the peer library; each message names what was wrong, with the values involved.

use std::path::PathBuf;
use std::time::Duration;

use protocol::ProtocolError;

use crate::shm::ShmError;

/// Why [`Peer::connect`](crate::Peer::connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be connected (no server listening, wrong path, permissions).
    #[error("cannot connect to the ivshmem server socket {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading from the server failed during the handshake.
    #[error("lost the connection to the server while waiting for {waiting_for}: {source}")]
    Io {
        /// What the handshake was waiting for.
        waiting_for: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection before the handshake was complete.
    #[error("the server closed the connection while we were waiting for {waiting_for}")]
    Closed {
        /// What the handshake was waiting for.
        waiting_for: String,
    },
    /// The server broke the protocol in a way the handshake cannot recover from.
    #[error("the server broke the ivshmem protocol during the handshake: {0}")]
    Protocol(#[from] ProtocolError),
    /// The shared memory could not be mapped.
    #[error("cannot use the server's shared memory: {0}")]
    SharedMemory(#[from] ShmError),
    /// The handshake did not complete in time.
    #[error("timed out after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// The connect timeout.
        timeout: Duration,
        /// What the handshake was still waiting for.
        waiting_for: String,
    },
}

/// Why [`Peer::ring`](crate::Peer::ring) failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// No peer with that id is connected (as far as the server told us).
    #[error("unknown peer {0}")]
    UnknownPeer(u16),
    /// The peer exists but has no such vector.
    #[error("peer {peer} has no vector {vector} (it has {count} vector(s))")]
    UnknownVector {
        /// Target peer.
        peer: u16,
        /// Requested vector.
        vector: u32,
        /// How many vectors that peer has.
        count: u32,
    },
    /// Writing the eventfd failed.
    #[error("cannot ring vector {vector} of peer {peer}: {source}")]
    Io {
        /// Target peer.
        peer: u16,
        /// Target vector.
        vector: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why waiting for or draining our own vectors failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// We have no such vector.
    #[error("we have no vector {vector} (we have {count} vector(s))")]
    UnknownVector {
        /// Requested vector.
        vector: u32,
        /// How many vectors we have.
        count: u32,
    },
    /// We have no vectors at all, so nothing can ever arrive.
    #[error("we have no interrupt vectors (the server gave us none)")]
    NoVectors,
    /// poll or read failed.
    #[error("waiting for our vectors failed: {0}")]
    Io(#[from] std::io::Error),
}
