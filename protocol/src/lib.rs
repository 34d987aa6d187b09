//! QEMU's ivshmem server→client wire protocol, version 0, byte for byte.
//!
//! * [`wire`] — the message format: one little-endian `i64` per message, constants.
//! * [`fdpass`] — the I/O edge: sending and receiving one message plus at most one fd over a
//!   Unix stream socket (`SCM_RIGHTS`), 8 bytes per `recvmsg` like QEMU.
//! * [`client`] — a sans-IO state machine that checks what a server sends (version → own id →
//!   shared memory → vectors → joins and leaves) and turns it into typed events or errors.
//! * [`server`] — the server side's message sequences (handshake order, join and leave notices)
//!   as data, so the server and the tests share one definition of the order.
//! * [`size`] — the one size syntax every command line here accepts (`4M`, `1.5G`, `0x1000`).
//! * [`state_table`] — the layout of the opt-in peer table a server keeps in the shared memory.
//! * [`fd_limit`] — raising the open-file limit (servers and load tests hold thousands of fds).
//!
//! [`DEFAULT_SOCKET_PATH`] is the socket QEMU's ivshmem-server and ivshmem-client default to.

pub mod client;
pub mod fd_limit;
pub mod fdpass;
pub mod server;
pub mod size;
pub mod state_table;
pub mod wire;

/// The socket path QEMU's ivshmem-server listens on and its ivshmem-client connects to by
/// default.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/ivshmem_socket";

pub use client::{ClientEvent, ClientState, ProtocolError};
pub use fdpass::{recv_message, send_bytes, send_message, send_message_all, Received};
pub use server::OutgoingMessage;
