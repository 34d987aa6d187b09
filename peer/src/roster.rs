//! Who we know: our own vectors and every other peer's vectors, as eventfds. Owns the fds, so
//! a peer that leaves has its eventfds closed when its entry is removed.

use std::collections::BTreeMap;

use protocol::ClientEvent;

use crate::vector::Vector;

/// A known peer and how many vectors we hold for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id (0..=65535).
    pub id: u16,
    /// How many of its vectors we can ring (vector numbers `0..vectors`).
    pub vectors: u32,
}

/// What applying one protocol event changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A vector fd for `peer` was added; `total` is its vector count now.
    Vector { peer: u16, total: u32 },
    /// That peer left.
    Left(u16),
    /// A vector beyond our limit arrived and was closed.
    Extra { peer: u16, vector: u32 },
    /// Nothing roster-related (version, id, shared memory).
    None,
}

/// Our own vectors and the other peers' vectors.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    pub(crate) own: Vec<Vector>,
    pub(crate) peers: BTreeMap<u16, Vec<Vector>>,
}

impl Roster {
    /// Records a vector, leave or extra-vector event. `own_id` tells own vectors apart.
    pub(crate) fn apply(&mut self, own_id: Option<u16>, event: ClientEvent) -> Change {
        match event {
            ClientEvent::PeerVector { peer, vector, fd } => {
                let list = if Some(peer) == own_id {
                    &mut self.own
                } else {
                    self.peers.entry(peer).or_default()
                };
                // The state machine numbers vectors 0,1,2,... per peer and restarts at 0 after a
                // leave, exactly like our list, so `vector` is the list index.
                debug_assert_eq!(vector as usize, list.len());
                list.push(Vector::new(fd));
                Change::Vector {
                    peer,
                    total: list.len() as u32,
                }
            }
            ClientEvent::PeerLeft(peer) => {
                self.peers.remove(&peer);
                Change::Left(peer)
            }
            ClientEvent::ExtraVector { peer, vector } => Change::Extra { peer, vector },
            ClientEvent::Version | ClientEvent::OwnId(_) | ClientEvent::SharedMemory(_) => {
                Change::None
            }
        }
    }

    /// Known other peers, ids ascending.
    pub(crate) fn peer_infos(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(&id, v)| PeerInfo {
                id,
                vectors: v.len() as u32,
            })
            .collect()
    }
}
