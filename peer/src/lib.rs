//! Host-side ivshmem peer: connect to an ivshmem server (QEMU's or ours), map the shared memory,
//! ring other peers' interrupt vectors and wait for our own.
//!
//! ```no_run
//! use std::time::Duration;
//! use std::sync::atomic::Ordering;
//!
//! let mut peer = peer::Peer::connect("/tmp/ivshmem_socket")?;
//! println!("I am peer {} with {} vector(s)", peer.id(), peer.own_vector_count());
//! peer.shm().write(0, b"hello")?;
//! peer.shm().atomic_u64(64)?.store(1, Ordering::Release);
//! for other in peer.peers() {
//!     peer.ring(other.id, 0)?;
//! }
//! for n in peer.wait(Some(Duration::from_secs(1)))? {
//!     println!("vector {} fired {} time(s)", n.vector, n.count);
//! }
//! for event in peer.process_server_messages() {
//!     println!("{event:?}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules:
//! * [`connection`] — [`Peer`]: the handshake, ringing, waiting, fds for event loops.
//! * [`server_events`] — [`ServerEvent`]: joins, leaves and the server going away.
//! * [`shm`] — [`SharedMemory`]: the mapping, bounds-checked copies, atomic views.
//! * [`error`] — the typed errors.
//! * [`vector`] — one eventfd (ring, drain).

#![warn(missing_docs)]

pub mod connection;
pub mod error;
mod poller;
mod roster;
pub mod server_events;
mod server_link;
pub mod shm;
pub mod vector;

pub use connection::{
    ConnectOptions, Notification, Peer, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_PATH,
};
pub use error::{ConnectError, RingError, WaitError};
pub use roster::PeerInfo;
pub use server_events::ServerEvent;
pub use shm::{SharedMemory, ShmError};
