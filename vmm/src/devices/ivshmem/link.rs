//! Following the ivshmem server while the VM runs: one thread per doorbell device owns the
//! connection ([`peer::Peer`]), and after every batch of server news reconciles the device with
//! what the connection knows: new vectors become ioeventfds on BAR0 (and MSI-X sources for our
//! own), departed peers lose theirs. A misbehaving server's messages are reported and ignored;
//! a vanished server is reported once, and the device keeps its memory and known peers.

use std::sync::Arc;

use peer::{Peer, ServerEvent};
use vmm_sys_util::eventfd::EventFd;

use super::registers::{doorbell_value, PeerTable, DOORBELL};
use super::{own_eventfd, IvshmemError};
use crate::memory::{AddressSpace, MemoryRegion};
use crate::pci::Msix;

/// What a doorbell device's server news must update.
pub struct Wiring {
    pub name: String,
    pub peers: Arc<PeerTable>,
    pub bar0: MemoryRegion,
    pub memory: AddressSpace,
    pub msix: Msix,
    pub own_id: u16,
    /// The device's MSI-X vector count: own vectors beyond it never fire (as in QEMU).
    pub vectors: u32,
    pub ioeventfd: bool,
}

impl Wiring {
    fn add_vector(&self, peer: u16, fd: Arc<EventFd>) -> Result<(), IvshmemError> {
        let vector = self.peers.add_vector(peer, fd.clone());
        if self.ioeventfd {
            let data = u64::from(doorbell_value(peer, vector));
            self.bar0.add_eventfd(DOORBELL, 4, Some(data), fd.clone());
        }
        if peer == self.own_id && vector < self.vectors {
            self.msix.set_vector_source(vector as usize, Some(fd))?;
        }
        Ok(())
    }

    fn remove_peer(&self, peer: u16) {
        for (vector, fd) in self.peers.remove(peer).into_iter().enumerate() {
            if self.ioeventfd {
                let data = u64::from(doorbell_value(peer, vector as u32));
                self.bar0.del_eventfd(DOORBELL, 4, Some(data), &fd);
            }
        }
    }

    /// Brings the peer table, the ioeventfds and the MSI-X sources in line with `server`.
    pub fn sync_with(&self, server: &Peer) -> Result<(), IvshmemError> {
        let known: std::collections::HashMap<u16, u32> =
            self.peers.snapshot().into_iter().collect();
        let own_have = known.get(&self.own_id).copied().unwrap_or(0);
        for vector in own_have..server.own_vector_count() {
            if let Some(fd) = server.own_vector_fd(vector) {
                self.add_vector(self.own_id, own_eventfd(fd)?)?;
            }
        }
        let current = server.peers();
        for (&id, _) in known.iter().filter(|(id, _)| **id != self.own_id) {
            if !current.iter().any(|p| p.id == id) {
                self.remove_peer(id);
            }
        }
        for info in &current {
            let have = known.get(&info.id).copied().unwrap_or(0);
            for vector in have..info.vectors {
                if let Some(fd) = server.peer_vector_fd(info.id, vector) {
                    self.add_vector(info.id, own_eventfd(fd)?)?;
                }
            }
        }
        self.memory.commit();
        Ok(())
    }
}

/// Follows `server` on a thread for as long as it is connected.
pub fn follow(mut server: Peer, wiring: Wiring) {
    let name = wiring.name.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || {
            let mut violations = 0u64;
            loop {
                let events = server.poll_server(None);
                let mut gone = false;
                for event in &events {
                    gone |= report(&wiring.name, event, &mut violations);
                }
                if let Err(e) = wiring.sync_with(&server) {
                    log::warn!("{}: applying server news: {e}", wiring.name);
                }
                if gone || (events.is_empty() && !server.server_connected()) {
                    break;
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("{name}: cannot start the server thread: {e}; joins and leaves won't be seen");
    }
}

/// Logs one piece of server news; returns true when the server is gone. Bad messages are
/// reported once and then only counted: a broken server must not flood the log.
fn report(name: &str, event: &ServerEvent, violations: &mut u64) -> bool {
    match event {
        ServerEvent::Joined { peer, vectors } => {
            log::info!("{name}: peer {peer} joined ({vectors} vectors)")
        }
        ServerEvent::Left { peer } => log::info!("{name}: peer {peer} left"),
        ServerEvent::ProtocolViolation(e) => {
            *violations += 1;
            if *violations == 1 {
                log::warn!(
                    "{name}: ignoring a bad message from the server: {e} (later ones are \
                     ignored and counted)"
                );
            } else {
                log::debug!("{name}: ignoring a bad message from the server: {e}");
            }
        }
        ServerEvent::ServerGone { reason } => {
            log::warn!(
                "{name}: server connection ended ({reason}; {violations} bad message(s) \
                 ignored); the device keeps its memory and known peers"
            );
            return true;
        }
        other => log::debug!("{name}: {other:?}"),
    }
    false
}
