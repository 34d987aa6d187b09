//! QEMU's ivshmem server→client wire protocol, version 0, byte for byte.
//!
//! * [`wire`] — the message format: one little-endian `i64` per message, constants.
//! * [`fdpass`] — the I/O edge: sending and receiving one message plus at most one fd over a
//!   Unix stream socket (`SCM_RIGHTS`), 8 bytes per `recvmsg` like QEMU.
//! * [`client`] — a sans-IO state machine that checks what a server sends (version → own id →
//!   shared memory → vectors → joins and leaves) and turns it into typed events or errors.
//! * [`server`] — the server side's message sequences (handshake order, join and leave notices)
//!   as data, so the server and the tests share one definition of the order.

pub mod client;
pub mod fdpass;
pub mod server;
pub mod wire;

pub use client::{ClientEvent, ClientState, ProtocolError};
pub use fdpass::{recv_message, send_bytes, send_message, send_message_all, Received};
pub use server::OutgoingMessage;
