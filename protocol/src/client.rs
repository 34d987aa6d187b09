//! The client side of the protocol as a sans-IO state machine: feed it each received message
//! (value and optional fd) and it returns what the message means, or a typed error naming what
//! was wrong. No sockets here, so every rule can be unit-tested (and fuzzed).
//!
//! Order enforced (docs/protocol.md, "Message sequence" and "What the client checks"): the version
//! (0, no fd), then the client's own id (0..=65535, no fd); then, as QEMU allows, other peers'
//! vectors and leaves may come before the shared memory, but the first `-1` must carry the fd;
//! after it, vectors (own and other peers') and leaves. Deliberately stricter than QEMU: own-id
//! vectors before the shared memory are refused (QEMU could touch unallocated MSI state there).
//!
//! Fatal errors (the handshake cannot continue; QEMU fails realize) put the state machine in a
//! failed state where every further message is refused. Other errors report a bad message, whose
//! fd has been closed, and the connection carries on, as QEMU's device does.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use crate::wire::{MAX_PEER_ID, MAX_VECTORS, PROTOCOL_VERSION, SHM_MESSAGE};

/// What one accepted message means.
#[derive(Debug)]
pub enum ClientEvent {
    /// The protocol version (0) arrived.
    Version,
    /// The server assigned us this id.
    OwnId(u16),
    /// The shared-memory fd.
    SharedMemory(OwnedFd),
    /// An eventfd for (peer, vector); `peer == own id` means one of our own interrupt vectors.
    PeerVector {
        /// The peer this eventfd rings (our own id for our interrupt vectors).
        peer: u16,
        /// The vector number: the order in which the server sent that peer's fds.
        vector: u32,
        /// The eventfd itself, now owned by the caller.
        fd: OwnedFd,
    },
    /// More fds than `max_vectors` for that peer; the fd has been closed.
    ExtraVector {
        /// The peer the surplus fd was for.
        peer: u16,
        /// The vector number it would have had (at least `max_vectors`).
        vector: u32,
    },
    /// That peer left; its vectors are gone.
    PeerLeft(u16),
}

/// A message the server should not have sent. Any fd it carried has been closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first message was not version 0: not a server we can talk to.
    #[error("server sent protocol version {0}, expecting 0")]
    BadVersion(i64),
    /// The version message carried an fd, which QEMU's protocol never does.
    #[error("server sent an fd with the version message")]
    VersionWithFd,
    /// Our id message carried an fd, which QEMU's protocol never does.
    #[error("server sent an fd with its id message (id {0})")]
    IdWithFd(i64),
    /// Our id does not fit the 16 bits the doorbell register gives a peer id.
    #[error("server sent id {0}, outside 0..=65535")]
    IdOutOfRange(i64),
    /// A -1 message arrived without the shared-memory fd that -1 announces.
    #[error("server sent the shared-memory message (-1) without an fd")]
    ShmWithoutFd,
    /// The shared memory was announced twice; the second fd is closed and ignored.
    #[error("server sent a second shared-memory message")]
    UnexpectedShm,
    /// A value that is neither -1 nor a peer id.
    #[error("server sent invalid message {0} (not -1 and not a peer id 0..=65535)")]
    InvalidValue(i64),
    /// One of our own vectors came before the shared memory, out of the handshake's order.
    #[error("server sent a vector for our own id {0} before the shared memory")]
    OwnVectorBeforeShm(u16),
    /// A disconnect message named our own id: the server thinks we left.
    #[error("server announced that our own id {0} left")]
    DisconnectOwnId(u16),
    /// A disconnect message for a peer we were never told about; ignored.
    #[error("server announced that unknown peer {0} left")]
    DisconnectUnknownPeer(u16),
    /// Anything that arrives after a fatal error: the connection is no longer trusted.
    #[error("server sent message {value} after the connection failed: {cause}")]
    MessageAfterFailure {
        /// The message that arrived after the failure.
        value: i64,
        /// The fatal error that ended the handshake first.
        cause: Box<ProtocolError>,
    },
}

impl ProtocolError {
    /// True when the handshake cannot continue (in QEMU: realize fails); the connection should
    /// be closed. False: the message was ignored and the connection is still usable.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ProtocolError::BadVersion(_)
                | ProtocolError::VersionWithFd
                | ProtocolError::IdWithFd(_)
                | ProtocolError::IdOutOfRange(_)
                | ProtocolError::ShmWithoutFd
                | ProtocolError::OwnVectorBeforeShm(_)
                | ProtocolError::MessageAfterFailure { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AwaitVersion,
    AwaitId,
    /// Own id known, waiting for the first `-1`.
    AwaitShm,
    Connected,
    Failed(ProtocolError),
}

/// The client's view of the connection: where it is in the handshake, its id, and how many
/// vectors each peer has sent so far.
#[derive(Debug)]
pub struct ClientState {
    phase: Phase,
    own_id: Option<u16>,
    max_vectors: u32,
    /// Vectors received per peer (own id included once it has any).
    vectors: BTreeMap<u16, u32>,
}

impl ClientState {
    /// `max_vectors`: how many vectors per peer this client accepts; fds beyond it are reported
    /// as [`ClientEvent::ExtraVector`] and closed. `None` = [`MAX_VECTORS`] (1024).
    pub fn new(max_vectors: Option<u32>) -> Self {
        ClientState {
            phase: Phase::AwaitVersion,
            own_id: None,
            max_vectors: max_vectors.unwrap_or(MAX_VECTORS),
            vectors: BTreeMap::new(),
        }
    }

    /// Our id, once received.
    pub fn own_id(&self) -> Option<u16> {
        self.own_id
    }

    /// True once the shared-memory fd has arrived.
    pub fn has_shm(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// True after a fatal error: the connection is unusable.
    pub fn has_failed(&self) -> bool {
        matches!(self.phase, Phase::Failed(_))
    }

    /// The vector limit per peer this state machine applies.
    pub fn max_vectors(&self) -> u32 {
        self.max_vectors
    }

    /// Vectors received so far for a peer (own id included), capped at `max_vectors`.
    pub fn vector_count(&self, peer: u16) -> u32 {
        self.vectors
            .get(&peer)
            .copied()
            .unwrap_or(0)
            .min(self.max_vectors)
    }

    /// Known other peers (ids ascending) with their vector counts.
    pub fn peers(&self) -> Vec<(u16, u32)> {
        self.vectors
            .iter()
            .filter(|(&id, _)| Some(id) != self.own_id)
            .map(|(&id, &n)| (id, n.min(self.max_vectors)))
            .collect()
    }

    /// Feeds one received message. On error, `fd` has been closed (dropped).
    pub fn on_message(
        &mut self,
        value: i64,
        fd: Option<OwnedFd>,
    ) -> Result<ClientEvent, ProtocolError> {
        let result = self.step(value, fd);
        if let Err(e) = &result {
            if e.is_fatal() && !self.has_failed() {
                self.phase = Phase::Failed(e.clone());
            }
        }
        result
    }

    fn step(&mut self, value: i64, fd: Option<OwnedFd>) -> Result<ClientEvent, ProtocolError> {
        match &self.phase {
            Phase::Failed(cause) => Err(ProtocolError::MessageAfterFailure {
                value,
                cause: Box::new(cause.clone()),
            }),
            Phase::AwaitVersion => {
                if value != PROTOCOL_VERSION {
                    return Err(ProtocolError::BadVersion(value));
                }
                if fd.is_some() {
                    return Err(ProtocolError::VersionWithFd);
                }
                self.phase = Phase::AwaitId;
                Ok(ClientEvent::Version)
            }
            Phase::AwaitId => {
                if fd.is_some() {
                    return Err(ProtocolError::IdWithFd(value));
                }
                let id = peer_id(value).ok_or(ProtocolError::IdOutOfRange(value))?;
                self.own_id = Some(id);
                self.phase = Phase::AwaitShm;
                Ok(ClientEvent::OwnId(id))
            }
            Phase::AwaitShm if value == SHM_MESSAGE => match fd {
                Some(fd) => {
                    self.phase = Phase::Connected;
                    Ok(ClientEvent::SharedMemory(fd))
                }
                None => Err(ProtocolError::ShmWithoutFd),
            },
            Phase::Connected if value == SHM_MESSAGE => Err(ProtocolError::UnexpectedShm),
            Phase::AwaitShm | Phase::Connected => {
                let peer = peer_id(value).ok_or(ProtocolError::InvalidValue(value))?;
                let own = self.own_id == Some(peer);
                match fd {
                    Some(fd) => {
                        if own && !self.has_shm() {
                            return Err(ProtocolError::OwnVectorBeforeShm(peer));
                        }
                        let count = self.vectors.entry(peer).or_insert(0);
                        let vector = *count;
                        *count = count.saturating_add(1);
                        if vector >= self.max_vectors {
                            drop(fd);
                            Ok(ClientEvent::ExtraVector { peer, vector })
                        } else {
                            Ok(ClientEvent::PeerVector { peer, vector, fd })
                        }
                    }
                    None if own => Err(ProtocolError::DisconnectOwnId(peer)),
                    None => match self.vectors.remove(&peer) {
                        Some(_) => Ok(ClientEvent::PeerLeft(peer)),
                        None => Err(ProtocolError::DisconnectUnknownPeer(peer)),
                    },
                }
            }
        }
    }
}

/// A peer id if `value` is in 0..=65535.
fn peer_id(value: i64) -> Option<u16> {
    if (0..=i64::from(MAX_PEER_ID)).contains(&value) {
        Some(value as u16)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    fn fd() -> OwnedFd {
        // SAFETY: eventfd returns a new fd that we own (or -1, checked).
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: raw is a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    /// A pipe: the write end is fed to the state machine, the read end tells (race-free) when
    /// the write end was closed.
    fn tracked() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes; they are fresh and ours.
        let status = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(status, 0);
        // SAFETY: both fds are fresh and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn closed(read_end: &OwnedFd) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a live buffer.
        unsafe { libc::read(read_end.as_raw_fd(), b.as_mut_ptr().cast(), 1) == 0 }
    }

    /// Version, id 3, shm.
    fn connected(max: Option<u32>) -> ClientState {
        let mut s = ClientState::new(max);
        assert!(matches!(s.on_message(0, None), Ok(ClientEvent::Version)));
        assert!(matches!(s.on_message(3, None), Ok(ClientEvent::OwnId(3))));
        assert!(matches!(
            s.on_message(-1, Some(fd())),
            Ok(ClientEvent::SharedMemory(_))
        ));
        s
    }

    #[test]
    fn full_handshake_in_qemu_order() {
        let mut s = ClientState::new(Some(2));
        assert!(!s.has_shm());
        assert!(matches!(s.on_message(0, None), Ok(ClientEvent::Version)));
        assert_eq!(s.own_id(), None);
        assert!(matches!(s.on_message(2, None), Ok(ClientEvent::OwnId(2))));
        assert_eq!(s.own_id(), Some(2));
        assert!(matches!(
            s.on_message(-1, Some(fd())),
            Ok(ClientEvent::SharedMemory(_))
        ));
        assert!(s.has_shm());
        for peer in [0u16, 1, 2] {
            for v in 0..2 {
                match s.on_message(i64::from(peer), Some(fd())) {
                    Ok(ClientEvent::PeerVector {
                        peer: p, vector, ..
                    }) => {
                        assert_eq!((p, vector), (peer, v));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(s.peers(), vec![(0, 2), (1, 2)]);
        assert_eq!(s.vector_count(2), 2);
        // a live join
        assert!(matches!(
            s.on_message(7, Some(fd())),
            Ok(ClientEvent::PeerVector {
                peer: 7,
                vector: 0,
                ..
            })
        ));
        assert!(matches!(
            s.on_message(1, None),
            Ok(ClientEvent::PeerLeft(1))
        ));
        assert_eq!(s.peers(), vec![(0, 2), (7, 1)]);
        assert_eq!(s.vector_count(1), 0);
    }

    #[test]
    fn bad_version_is_fatal() {
        let mut s = ClientState::new(None);
        let e = s.on_message(1, None).unwrap_err();
        assert_eq!(e, ProtocolError::BadVersion(1));
        assert!(e.is_fatal());
        assert!(e.to_string().contains("version 1"));
        assert!(s.has_failed());
    }

    #[test]
    fn version_with_fd_is_fatal_and_closes_fd() {
        let mut s = ClientState::new(None);
        let (r, f) = tracked();
        let e = s.on_message(0, Some(f)).unwrap_err();
        assert_eq!(e, ProtocolError::VersionWithFd);
        assert!(e.is_fatal());
        assert!(closed(&r));
    }

    #[test]
    fn id_with_fd_or_out_of_range_is_fatal() {
        let mut s = ClientState::new(None);
        s.on_message(0, None).unwrap();
        assert_eq!(
            s.on_message(4, Some(fd())).unwrap_err(),
            ProtocolError::IdWithFd(4)
        );
        for bad in [-1i64, -2, 65536, i64::MAX] {
            let mut s = ClientState::new(None);
            s.on_message(0, None).unwrap();
            let e = s.on_message(bad, None).unwrap_err();
            assert_eq!(e, ProtocolError::IdOutOfRange(bad));
            assert!(e.is_fatal());
        }
        let mut s = ClientState::new(None);
        s.on_message(0, None).unwrap();
        assert!(matches!(
            s.on_message(65535, None),
            Ok(ClientEvent::OwnId(65535))
        ));
    }

    #[test]
    fn shm_without_fd_is_fatal() {
        let mut s = ClientState::new(None);
        s.on_message(0, None).unwrap();
        s.on_message(0, None).unwrap();
        let e = s.on_message(-1, None).unwrap_err();
        assert_eq!(e, ProtocolError::ShmWithoutFd);
        assert!(e.is_fatal());
        // every later message is refused, naming the first failure
        let e = s.on_message(-1, Some(fd())).unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("without an fd"), "{e}");
        assert!(!s.has_shm());
    }

    #[test]
    fn other_peers_may_come_before_shm() {
        let mut s = ClientState::new(None);
        s.on_message(0, None).unwrap();
        s.on_message(5, None).unwrap();
        assert!(matches!(
            s.on_message(1, Some(fd())),
            Ok(ClientEvent::PeerVector {
                peer: 1,
                vector: 0,
                ..
            })
        ));
        assert!(matches!(
            s.on_message(1, None),
            Ok(ClientEvent::PeerLeft(1))
        ));
        assert_eq!(
            s.on_message(9, None).unwrap_err(),
            ProtocolError::DisconnectUnknownPeer(9)
        );
        assert!(matches!(
            s.on_message(-1, Some(fd())),
            Ok(ClientEvent::SharedMemory(_))
        ));
    }

    #[test]
    fn own_vector_before_shm_is_refused() {
        let mut s = ClientState::new(None);
        s.on_message(0, None).unwrap();
        s.on_message(5, None).unwrap();
        let (r, f) = tracked();
        let e = s.on_message(5, Some(f)).unwrap_err();
        assert_eq!(e, ProtocolError::OwnVectorBeforeShm(5));
        assert!(e.is_fatal());
        assert!(closed(&r));
    }

    #[test]
    fn second_shm_is_rejected_but_not_fatal() {
        let mut s = connected(None);
        let (r, f) = tracked();
        let e = s.on_message(-1, Some(f)).unwrap_err();
        assert_eq!(e, ProtocolError::UnexpectedShm);
        assert!(!e.is_fatal());
        assert!(closed(&r));
        assert_eq!(
            s.on_message(-1, None).unwrap_err(),
            ProtocolError::UnexpectedShm
        );
        assert!(matches!(
            s.on_message(0, Some(fd())),
            Ok(ClientEvent::PeerVector { .. })
        ));
    }

    #[test]
    fn invalid_values_are_rejected_and_fd_closed() {
        let mut s = connected(None);
        for bad in [-2i64, 65536, i64::MIN, i64::MAX] {
            let (r, f) = tracked();
            let e = s.on_message(bad, Some(f)).unwrap_err();
            assert_eq!(e, ProtocolError::InvalidValue(bad));
            assert!(!e.is_fatal());
            assert!(closed(&r));
            assert!(e.to_string().contains(&bad.to_string()));
        }
        assert!(s.has_shm());
    }

    #[test]
    fn extra_vectors_are_reported_and_closed() {
        let mut s = connected(Some(1));
        assert!(matches!(
            s.on_message(4, Some(fd())),
            Ok(ClientEvent::PeerVector {
                peer: 4,
                vector: 0,
                ..
            })
        ));
        let (r, f) = tracked();
        assert!(matches!(
            s.on_message(4, Some(f)),
            Ok(ClientEvent::ExtraVector { peer: 4, vector: 1 })
        ));
        assert!(closed(&r));
        assert_eq!(s.vector_count(4), 1);
        assert_eq!(s.peers(), vec![(4, 1)]);
    }

    #[test]
    fn default_limit_is_1024_vectors() {
        let mut s = connected(None);
        assert_eq!(s.max_vectors(), 1024);
        for v in 0..1024 {
            assert!(
                matches!(s.on_message(1, Some(fd())), Ok(ClientEvent::PeerVector { vector, .. }) if vector == v)
            );
        }
        assert!(matches!(
            s.on_message(1, Some(fd())),
            Ok(ClientEvent::ExtraVector { vector: 1024, .. })
        ));
    }

    #[test]
    fn leave_of_own_or_unknown_id_is_rejected() {
        let mut s = connected(None);
        let e = s.on_message(3, None).unwrap_err();
        assert_eq!(e, ProtocolError::DisconnectOwnId(3));
        assert!(!e.is_fatal());
        let e = s.on_message(8, None).unwrap_err();
        assert_eq!(e, ProtocolError::DisconnectUnknownPeer(8));
        assert!(!e.is_fatal());
        assert!(e.to_string().contains('8'));
        // a peer that left is unknown afterwards
        s.on_message(8, Some(fd())).unwrap();
        assert!(matches!(
            s.on_message(8, None),
            Ok(ClientEvent::PeerLeft(8))
        ));
        assert_eq!(
            s.on_message(8, None).unwrap_err(),
            ProtocolError::DisconnectUnknownPeer(8)
        );
    }

    #[test]
    fn own_vectors_after_shm_are_counted() {
        let mut s = connected(Some(2));
        assert!(matches!(
            s.on_message(3, Some(fd())),
            Ok(ClientEvent::PeerVector {
                peer: 3,
                vector: 0,
                ..
            })
        ));
        assert!(matches!(
            s.on_message(3, Some(fd())),
            Ok(ClientEvent::PeerVector {
                peer: 3,
                vector: 1,
                ..
            })
        ));
        assert_eq!(s.vector_count(3), 2);
        assert!(s.peers().is_empty(), "own id is not listed among peers");
    }

    #[test]
    fn rejoined_peer_counts_vectors_from_zero() {
        let mut s = connected(None);
        s.on_message(1, Some(fd())).unwrap();
        s.on_message(1, None).unwrap();
        assert!(matches!(
            s.on_message(1, Some(fd())),
            Ok(ClientEvent::PeerVector {
                peer: 1,
                vector: 0,
                ..
            })
        ));
    }

    #[test]
    fn random_sequences_never_panic_and_keep_invariants() {
        // A small deterministic generator (xorshift), so failures reproduce.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let values = [-3i64, -2, -1, 0, 1, 2, 3, 65535, 65536, i64::MIN, i64::MAX];
        for _ in 0..300 {
            let mut s = ClientState::new(Some((next() % 4) as u32));
            let mut failed = false;
            for _ in 0..40 {
                let value = values[(next() % values.len() as u64) as usize];
                let with_fd = next() % 2 == 0;
                let result = s.on_message(value, with_fd.then(fd));
                if failed {
                    assert!(result.as_ref().is_err_and(|e| e.is_fatal()));
                }
                if let Err(e) = &result {
                    assert!(!e.to_string().is_empty());
                    failed |= e.is_fatal();
                }
                assert_eq!(s.has_failed(), failed);
                for (peer, count) in s.peers() {
                    assert!(count <= s.max_vectors());
                    assert_ne!(Some(peer), s.own_id());
                }
            }
        }
    }
}
