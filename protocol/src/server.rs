//! The server side's message sequences as data (docs/protocol.md, "Message sequence"), so the
//! server and the tests share one definition of the order. Generic over the fd handle type `F`:
//! tests use [`BorrowedFd`], a server that queues messages can use a reference-counted owned fd.
//!
//! When peer P connects, with N vectors per peer:
//! 1. to P: version `0`; 2. to P: its id; 3. to P: `-1` with the shared-memory fd
//!    ([`welcome`]);
//! 4. to every existing peer, in connect order: P's id N times with P's eventfds
//!    ([`peer_vectors`], also the join notice);
//! 5. to P, for every existing peer in connect order: that peer's id N times with its eventfds;
//! 6. to P: its own id N times with its own eventfds.
//!
//! [`new_peer_sequence`] is steps 1–3, 5 and 6 in order (what P receives). A peer that leaves is
//! announced to everyone else with its id and no fd ([`leave`]).

use std::os::fd::BorrowedFd;

use crate::wire::{peer_value, PROTOCOL_VERSION, SHM_MESSAGE};

/// One message to send: a value and at most one fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<F> {
    /// The 8-byte value: the protocol version, a peer id or -1 (shared memory).
    pub value: i64,
    /// The fd sent with it by `SCM_RIGHTS`, if any.
    pub fd: Option<F>,
}

/// A message whose fd is borrowed from its owner for the time of sending.
pub type OutgoingMessage<'a> = Message<BorrowedFd<'a>>;

impl<F> Message<F> {
    /// A message with `value` and an optional fd.
    pub fn new(value: i64, fd: Option<F>) -> Self {
        Message { value, fd }
    }
}

/// Steps 1–3: version, the new peer's id, the shared memory.
pub fn welcome<F>(id: u16, shm: F) -> Vec<Message<F>> {
    vec![
        Message::new(PROTOCOL_VERSION, None),
        Message::new(peer_value(id), None),
        Message::new(SHM_MESSAGE, Some(shm)),
    ]
}

/// A peer's vectors, one message per eventfd in vector order. Sent to existing peers when `id`
/// joins (step 4), to a new peer about each existing one (step 5) and about itself (step 6).
pub fn peer_vectors<F: Clone>(id: u16, vectors: &[F]) -> Vec<Message<F>> {
    vectors
        .iter()
        .map(|fd| Message::new(peer_value(id), Some(fd.clone())))
        .collect()
}

/// The notice that `id` left: its id without an fd.
pub fn leave<F>(id: u16) -> Message<F> {
    Message::new(peer_value(id), None)
}

/// Everything the new peer `id` receives, in order: [`welcome`], then each existing peer's
/// vectors in connect order, then its own vectors.
pub fn new_peer_sequence<'v, F: Clone + 'v>(
    id: u16,
    shm: F,
    own_vectors: &[F],
    existing: impl IntoIterator<Item = (u16, &'v [F])>,
) -> Vec<Message<F>> {
    let mut out = welcome(id, shm);
    for (peer, vectors) in existing {
        out.extend(peer_vectors(peer, vectors));
    }
    out.extend(peer_vectors(id, own_vectors));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientEvent, ClientState};

    #[test]
    fn welcome_is_version_id_shm() {
        assert_eq!(
            welcome(4, 'S'),
            vec![
                Message::new(0, None),
                Message::new(4, None),
                Message::new(-1, Some('S'))
            ]
        );
    }

    #[test]
    fn sequence_follows_qemu_order() {
        let a = ['a', 'b'];
        let c = ['c', 'd'];
        let own = ['x', 'y'];
        let seq = new_peer_sequence(5, 'S', &own, [(1u16, &a[..]), (3u16, &c[..])]);
        let flat: Vec<(i64, Option<char>)> = seq.into_iter().map(|m| (m.value, m.fd)).collect();
        assert_eq!(
            flat,
            vec![
                (0, None),
                (5, None),
                (-1, Some('S')),
                (1, Some('a')),
                (1, Some('b')),
                (3, Some('c')),
                (3, Some('d')),
                (5, Some('x')),
                (5, Some('y')),
            ]
        );
        assert_eq!(leave::<char>(5), Message::new(5, None));
    }

    #[test]
    fn client_state_accepts_the_server_sequence() {
        use std::os::fd::{AsFd, FromRawFd, OwnedFd};
        let make = || {
            // SAFETY: fresh eventfd, owned here.
            unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) }
        };
        let shm = make();
        let peer0 = [make(), make()];
        let own = [make(), make()];
        let peer0b: Vec<_> = peer0.iter().map(|f| f.as_fd()).collect();
        let ownb: Vec<_> = own.iter().map(|f| f.as_fd()).collect();
        let seq = new_peer_sequence(1, shm.as_fd(), &ownb, [(0u16, &peer0b[..])]);
        let mut state = ClientState::new(Some(2));
        for m in seq {
            let fd = m.fd.map(|f| f.try_clone_to_owned().unwrap());
            let ev = state.on_message(m.value, fd).unwrap();
            assert!(!matches!(ev, ClientEvent::ExtraVector { .. }));
        }
        assert_eq!(state.own_id(), Some(1));
        assert_eq!(state.peers(), vec![(0, 2)]);
        assert_eq!(state.vector_count(1), 2);
    }
}
