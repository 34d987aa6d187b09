//! The server's hand-over blob (`ivshmem_server::handover`: what an upgrading server passes to
//! its successor, and the keeper to a restarted server) from arbitrary bytes: decoding never
//! panics nor allocates without bound, and whatever decodes re-encodes to the same state.
//!
//! Input: the blob bytes (format in docs/server-operations.md). Checked: no panic; every
//! error has a message; a decoded blob encoded again decodes to an equal state and fd table.
#![no_main]

use ivshmem_server::handover::{decode_blob, encode_blob, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_blob(data) {
        Ok(blob) => {
            let body = blob.state.encode_body();
            assert_eq!(
                State::decode_body(&body, blob.fds.len()).as_ref().ok(),
                Some(&blob.state)
            );
            let again = decode_blob(&encode_blob(blob.ready_fd, &blob.fds, &body))
                .expect("a re-encoded blob decodes");
            assert_eq!(again.state, blob.state);
            assert_eq!(again.fds, blob.fds);
            assert_eq!(again.ready_fd, blob.ready_fd);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // The body alone, against a few fd table sizes.
    for fds in [0, 3, 64] {
        if let Err(e) = State::decode_body(data, fds) {
            assert!(!e.to_string().is_empty());
        }
    }
});
