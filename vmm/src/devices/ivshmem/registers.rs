//! BAR0 of the ivshmem device: 256 bytes of 32-bit registers, as QEMU's rev 1 device has them.
//!
//! | off  | register   | behaviour                                              |
//! |------|------------|--------------------------------------------------------|
//! | 0x00 | IntrMask   | plain storage                                          |
//! | 0x04 | IntrStatus | storage; a read returns the value and clears it        |
//! | 0x08 | IVPosition | own peer id (0 for plain); writes ignored              |
//! | 0x0C | Doorbell   | write `peer << 16 | vector` rings that peer; reads 0   |
//!
//! Doorbell writes normally never get here: each known (peer, vector) is a KVM ioeventfd with a
//! datamatch on BAR0+0x0C. A write that reaches us matched none of them, so, as QEMU does, it is
//! ignored when the peer or vector is unknown. Design note: the vector is bits 15..0 as QEMU's
//! ivshmem-spec.rst says (QEMU's slow path keeps only bits 7..0), so vectors above 255, which our
//! server allows, are not aliased onto lower ones (docs/protocol.md, "Differences from QEMU").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::memory::RegionOps;

// Offsets and the doorbell encoding are the guest ABI, shared with the guest runtime.
// `doorbell_value` is also the datamatch of each (peer, vector)'s ioeventfd.
pub use crate::guest_abi::ivshmem::reg::{DOORBELL, INTR_MASK, INTR_STATUS, IV_POSITION};
pub use crate::guest_abi::ivshmem::{doorbell_value, BAR0_SIZE};

/// The eventfds of every known peer (own id included), indexed by vector.
#[derive(Default)]
pub struct PeerTable {
    peers: Mutex<HashMap<u16, Vec<Arc<EventFd>>>>,
}

impl PeerTable {
    /// Records the next vector of `peer`; returns its vector number.
    pub fn add_vector(&self, peer: u16, fd: Arc<EventFd>) -> u32 {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let vectors = peers.entry(peer).or_default();
        vectors.push(fd);
        (vectors.len() - 1) as u32
    }

    /// Forgets a peer, returning its eventfds (for ioeventfd removal).
    pub fn remove(&self, peer: u16) -> Vec<Arc<EventFd>> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.remove(&peer).unwrap_or_default()
    }

    /// The eventfd of `vector` of `peer`, if the server announced it.
    pub fn vector(&self, peer: u16, vector: u32) -> Option<Arc<EventFd>> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&peer)?.get(vector as usize).cloned()
    }

    /// Known peers and their vector counts, ascending.
    pub fn snapshot(&self) -> Vec<(u16, u32)> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = peers.iter().map(|(p, v)| (*p, v.len() as u32)).collect();
        list.sort_unstable();
        list
    }
}

/// The register file behind BAR0.
pub struct Registers {
    intr_mask: AtomicU32,
    intr_status: AtomicU32,
    iv_position: AtomicU32,
    peers: Arc<PeerTable>,
    /// Doorbell writes that reached the VMM (matched no ioeventfd).
    slow_doorbells: AtomicU64,
}

impl Registers {
    /// Registers of a device that is peer `iv_position`, ringing the vectors in `peers`.
    pub fn new(iv_position: u16, peers: Arc<PeerTable>) -> Registers {
        Registers {
            intr_mask: AtomicU32::new(0),
            intr_status: AtomicU32::new(0),
            iv_position: AtomicU32::new(u32::from(iv_position)),
            peers,
            slow_doorbells: AtomicU64::new(0),
        }
    }

    /// Doorbell writes that reached the VMM because no ioeventfd matched (`--stats`).
    pub fn slow_doorbells(&self) -> u64 {
        self.slow_doorbells.load(Ordering::Relaxed)
    }

    fn ring(&self, value: u32) {
        self.slow_doorbells.fetch_add(1, Ordering::Relaxed);
        let peer = (value >> 16) as u16;
        let vector = value & 0xffff;
        match self.peers.vector(peer, vector) {
            Some(fd) => {
                if let Err(e) = fd.write(1) {
                    log::warn!("ivshmem: ringing peer {peer} vector {vector}: {e}");
                }
            }
            None => {
                log::debug!("ivshmem: doorbell for unknown peer {peer} vector {vector} ignored")
            }
        }
    }
}

impl RegionOps for Registers {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        let value = match offset & 0xfc {
            INTR_MASK => self.intr_mask.load(Ordering::Relaxed),
            INTR_STATUS => self.intr_status.swap(0, Ordering::Relaxed),
            IV_POSITION => self.iv_position.load(Ordering::Relaxed),
            _ => 0,
        };
        u64::from(value)
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        let value = value as u32;
        match offset & 0xfc {
            INTR_MASK => self.intr_mask.store(value, Ordering::Relaxed),
            INTR_STATUS => self.intr_status.store(value, Ordering::Relaxed),
            DOORBELL => self.ring(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers() -> (Registers, Arc<PeerTable>) {
        let peers = Arc::new(PeerTable::default());
        (Registers::new(7, peers.clone()), peers)
    }

    #[test]
    fn mask_is_storage_status_clears_on_read() {
        let (r, _) = registers();
        r.write(INTR_MASK, 4, 0xdead_beef);
        assert_eq!(r.read(INTR_MASK, 4), 0xdead_beef);
        assert_eq!(r.read(INTR_MASK, 4), 0xdead_beef);
        r.write(INTR_STATUS, 4, 5);
        assert_eq!(r.read(INTR_STATUS, 4), 5);
        assert_eq!(r.read(INTR_STATUS, 4), 0);
    }

    #[test]
    fn iv_position_is_read_only() {
        let (r, _) = registers();
        assert_eq!(r.read(IV_POSITION, 4), 7);
        r.write(IV_POSITION, 4, 99);
        assert_eq!(r.read(IV_POSITION, 4), 7);
    }

    #[test]
    fn doorbell_reads_zero_and_reserved_space_is_inert() {
        let (r, _) = registers();
        assert_eq!(r.read(DOORBELL, 4), 0);
        r.write(0x40, 4, 1);
        assert_eq!(r.read(0x40, 4), 0);
        assert_eq!(r.read(0xfc, 4), 0);
    }

    #[test]
    fn doorbell_rings_exactly_the_addressed_vector() {
        let (r, peers) = registers();
        let v0 = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let v1 = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        assert_eq!(peers.add_vector(3, v0.clone()), 0);
        assert_eq!(peers.add_vector(3, v1.clone()), 1);
        r.write(DOORBELL, 4, u64::from(doorbell_value(3, 1)));
        assert_eq!(v1.read().unwrap(), 1);
        assert!(v0.read().is_err(), "vector 0 must not fire");
        assert_eq!(r.slow_doorbells(), 1);
    }

    #[test]
    fn doorbell_to_unknown_peer_or_vector_is_ignored() {
        let (r, peers) = registers();
        let v0 = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        peers.add_vector(3, v0.clone());
        r.write(DOORBELL, 4, u64::from(doorbell_value(4, 0)));
        r.write(DOORBELL, 4, u64::from(doorbell_value(3, 1)));
        // Vector 256 must not alias onto vector 0 (QEMU's 8-bit slow path would).
        r.write(DOORBELL, 4, u64::from(doorbell_value(3, 256)));
        assert!(v0.read().is_err());
        peers.remove(3);
        r.write(DOORBELL, 4, u64::from(doorbell_value(3, 0)));
        assert!(v0.read().is_err());
    }
}
