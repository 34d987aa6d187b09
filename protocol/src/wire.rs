//! The message format: every message is exactly 8 bytes, a signed 64-bit little-endian integer,
//! optionally accompanied by one file descriptor (see [`crate::fdpass`]).
//!
//! Meaning of a value (docs/protocol.md, "Messages"): `0` first is the protocol version, then the
//! client's own id; `-1` is the shared-memory message; any other value is a peer id (with an fd:
//! that peer's next vector; without: that peer left).

/// `IVSHMEM_PROTOCOL_VERSION`, the first message a server sends.
pub const PROTOCOL_VERSION: i64 = 0;
/// The value of the shared-memory message (bytes `ff ff ff ff ff ff ff ff`), which carries the fd.
pub const SHM_MESSAGE: i64 = -1;
/// Highest peer id: the doorbell register has 16 bits for the peer.
pub const MAX_PEER_ID: u16 = u16::MAX;
/// Length of one message on the wire.
pub const MESSAGE_LEN: usize = 8;
/// Highest number of vectors per peer this implementation accepts (QEMU's server allows 64).
pub const MAX_VECTORS: u32 = 1024;

/// Encodes a message value as it goes on the wire (little-endian).
pub fn encode(value: i64) -> [u8; MESSAGE_LEN] {
    value.to_le_bytes()
}

/// Decodes 8 bytes received from the wire (little-endian).
pub fn decode(bytes: [u8; MESSAGE_LEN]) -> i64 {
    i64::from_le_bytes(bytes)
}

/// The value that announces peer `id` (its vectors with fds, its departure without).
pub fn peer_value(id: u16) -> i64 {
    i64::from(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_little_endian() {
        assert_eq!(encode(PROTOCOL_VERSION), [0; 8]);
        assert_eq!(encode(3), [3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(0x0102), [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(SHM_MESSAGE), [0xff; 8]);
        assert_eq!(
            encode(i64::from(MAX_PEER_ID)),
            [0xff, 0xff, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decode_inverts_encode() {
        for v in [0, 1, -1, -2, 65535, 65536, i64::MIN, i64::MAX] {
            assert_eq!(decode(encode(v)), v);
        }
        assert_eq!(peer_value(7), 7);
    }
}
