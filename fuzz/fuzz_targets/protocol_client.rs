//! The client protocol state machine fed arbitrary message sequences.
//!
//! Input: byte 0 picks the vector limit (0: default, n: n - 1); then records of 9 bytes: a flag
//! byte (bit 0: the message carries an fd) and the message value as a little-endian i64.
//!
//! Checked: no panic; every error is typed and printable; after a fatal error everything is
//! refused; an fd is closed whenever the message is refused or the vector is surplus, and kept
//! (handed over in the event) otherwise; vectors are numbered 0, 1, ... per peer, from 0 again
//! after the peer left.
#![no_main]

use std::collections::BTreeMap;

use fuzz_support::{Input, TrackedFd};
use libfuzzer_sys::fuzz_target;
use protocol::{ClientEvent, ClientState};

/// Enough to reach the default limit of 1024 vectors, few enough to stay fast.
const MAX_MESSAGES: usize = 1200;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_vectors = match input.u8() {
        0 => None,
        n => Some(u32::from(n - 1)),
    };
    let mut state = ClientState::new(max_vectors);
    let mut failed = false;
    let mut vectors: BTreeMap<u16, u32> = BTreeMap::new();
    for _ in 0..MAX_MESSAGES {
        if input.is_empty() {
            break;
        }
        let with_fd = input.bool();
        let value = input.i64();
        let (tracker, fd) = if with_fd {
            let (tracker, fd) = TrackedFd::new();
            (Some(tracker), Some(fd))
        } else {
            (None, None)
        };
        let result = state.on_message(value, fd);
        let fd_closed = tracker.as_ref().map(TrackedFd::is_closed);
        match &result {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                if failed {
                    assert!(e.is_fatal(), "after a fatal error every message is fatal");
                }
                failed |= e.is_fatal();
                assert_ne!(fd_closed, Some(false), "a refused message's fd is closed");
            }
            Ok(event) => {
                assert!(!failed, "nothing is accepted after a fatal error");
                match event {
                    ClientEvent::SharedMemory(_) => {
                        assert_eq!(value, -1);
                        assert_eq!(fd_closed, Some(false));
                    }
                    ClientEvent::PeerVector { peer, vector, .. } => {
                        assert_eq!(fd_closed, Some(false), "an accepted vector's fd is kept");
                        let count = vectors.entry(*peer).or_insert(0);
                        assert_eq!(*vector, *count, "vectors are numbered in order");
                        *count += 1;
                        assert!(*vector < state.max_vectors());
                    }
                    ClientEvent::ExtraVector { peer, vector } => {
                        assert_eq!(fd_closed, Some(true), "a surplus vector's fd is closed");
                        assert!(*vector >= state.max_vectors());
                        *vectors.entry(*peer).or_insert(0) += 1;
                    }
                    ClientEvent::PeerLeft(peer) => {
                        assert_eq!(fd_closed, None);
                        assert_ne!(Some(*peer), state.own_id());
                        vectors.remove(peer);
                    }
                    ClientEvent::Version | ClientEvent::OwnId(_) => assert_eq!(fd_closed, None),
                }
            }
        }
        assert_eq!(state.has_failed(), failed);
        for (peer, count) in state.peers() {
            assert_ne!(Some(peer), state.own_id());
            assert!(count <= state.max_vectors());
        }
        drop(result);
        if let Some(tracker) = tracker {
            assert!(tracker.is_closed(), "no fd outlives its event");
        }
    }
});
