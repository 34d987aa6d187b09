//! Following the ivshmem server while the VM runs: one thread per doorbell device owns the
//! connection ([`peer::Peer`]), and after every batch of server news reconciles the device with
//! what the connection knows: new vectors become ioeventfds on BAR0 (and MSI-X sources for our
//! own), departed peers lose theirs. A misbehaving server's messages are reported and ignored;
//! a vanished server is reported once, and the device keeps its memory and known peers.
//!
//! The thread is one of the VM's [`BackgroundThreads`]: it waits on the server socket and its
//! stop signal together, so shutting the VM down ends it (and closes the connection) at once.

use std::sync::Arc;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use peer::{Peer, ServerEvent};
use vmm_sys_util::eventfd::EventFd;

use super::registers::{doorbell_value, PeerTable, DOORBELL};
use super::{own_eventfd, IvshmemError};
use crate::background::{BackgroundThreads, StopSignal};
use crate::memory::{AddressSpace, MemoryRegion};
use crate::pci::Msix;

/// What a doorbell device's server news must update.
pub struct Wiring {
    /// The device's name, for logs.
    pub name: String,
    /// Every peer's vectors, which the doorbell register rings.
    pub peers: Arc<PeerTable>,
    /// BAR0, where the doorbell ioeventfds are registered.
    pub bar0: MemoryRegion,
    /// The memory address space, committed after ioeventfd changes.
    pub memory: AddressSpace,
    /// The device's MSI-X: our own vectors are its interrupt sources.
    pub msix: Msix,
    /// Our peer id (IVPosition).
    pub own_id: u16,
    /// The device's MSI-X vector count: own vectors beyond it never fire (as in QEMU).
    pub vectors: u32,
    /// Doorbells go through KVM ioeventfds (`ioeventfd=on`) rather than the VMM.
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

/// Follows `server` on a background thread until the server is gone or the VM shuts down
/// (`threads.shutdown()` stops and joins it, closing the connection).
pub fn follow(
    mut server: Peer,
    wiring: Wiring,
    threads: &BackgroundThreads,
) -> Result<(), IvshmemError> {
    let name = format!("{}-server", wiring.name);
    threads
        .spawn(&name, move |stop| {
            let mut violations = 0u64;
            loop {
                // News first: the handshake may have left some (a server already gone).
                // Applied before it is logged: a "peer N left" line means the device has
                // already let go of that peer's eventfds (scripts wait on these lines).
                let events = server.process_server_messages();
                if let Err(e) = wiring.sync_with(&server) {
                    log::warn!("{}: applying server news: {e}", wiring.name);
                }
                let mut gone = false;
                for event in &events {
                    gone |= report(&wiring.name, event, &mut violations);
                }
                if gone || !server.server_connected() {
                    break;
                }
                if !wait_for_news(&wiring.name, &server, &stop) {
                    break;
                }
            }
        })
        .map_err(IvshmemError::Thread)
}

/// Blocks until the server sends something (true) or the VM stops the thread (false).
fn wait_for_news(name: &str, server: &Peer, stop: &StopSignal) -> bool {
    let Some(server_fd) = server.server_fd() else {
        return false;
    };
    loop {
        let mut fds = [
            PollFd::new(stop.fd(), PollFlags::POLLIN),
            PollFd::new(server_fd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                return !ready(&fds[0]);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("{name}: waiting for the server: {e}; no more joins and leaves");
                return false;
            }
        }
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    use super::super::registers::Registers;
    use super::super::{bar0_region, IvshmemError};
    use super::*;
    use crate::interrupts::fake::FakeIrqBackend;
    use crate::interrupts::InterruptRouter;
    use crate::memory::SpaceKind;

    /// A one-peer ivshmem server: sends the handshake, then reports how the client's connection
    /// ended (Ok(0) = it hung up) within `deadline`.
    fn serve_one_peer(listener: UnixListener, deadline: Duration) -> std::io::Result<usize> {
        let (stream, _) = listener.accept()?;
        let shm: OwnedFd =
            nix::sys::memfd::memfd_create(c"link-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
        std::fs::File::from(shm.try_clone()?).set_len(4096)?;
        let vector = nix::sys::eventfd::EventFd::new()?;
        let messages = protocol::server::new_peer_sequence(
            0,
            shm.as_fd(),
            &[vector.as_fd()],
            std::iter::empty(),
        );
        for message in messages {
            protocol::fdpass::send_message_all(stream.as_fd(), message.value, message.fd)?;
        }
        stream.set_read_timeout(Some(deadline))?;
        (&stream).read(&mut [0u8; 8])
    }

    #[test]
    fn vm_shutdown_joins_the_server_thread_and_hangs_up() -> Result<(), IvshmemError> {
        let dir = std::env::temp_dir().join(format!("vmm-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("server.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || serve_one_peer(listener, Duration::from_secs(10)));

        let peer = Peer::connect(&socket).expect("handshake with the test server");
        let peers = Arc::new(PeerTable::default());
        let router = InterruptRouter::new(FakeIrqBackend::new());
        let wiring = Wiring {
            name: "ivshmem-test".into(),
            peers: peers.clone(),
            bar0: bar0_region("ivshmem-test", Arc::new(Registers::new(0, peers.clone()))),
            memory: AddressSpace::new(
                "memory",
                MemoryRegion::container("system", u64::MAX),
                SpaceKind::Memory,
            ),
            msix: Msix::new("ivshmem-test", 1, router)?,
            own_id: peer.id(),
            vectors: 1,
            ioeventfd: true,
        };
        wiring.sync_with(&peer)?;
        assert_eq!(peers.snapshot(), vec![(0, 1)], "own vector wired");

        let threads = BackgroundThreads::new();
        follow(peer, wiring, &threads)?;
        assert_eq!(threads.count(), 1);
        // The server is still there: only the VM's shutdown can end the thread.
        threads.shutdown();
        assert_eq!(threads.count(), 0);
        let ended = server.join().unwrap();
        assert_eq!(
            ended.expect("the connection closes before the deadline"),
            0,
            "the thread dropped its connection"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }
}
