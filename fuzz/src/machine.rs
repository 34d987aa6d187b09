//! A PCI bus with the VMM's real ivshmem-doorbell device on it, without `/dev/kvm`: the device
//! is created by `vmm::devices::ivshmem::add_doorbell` from a peer that joined a real
//! `ivshmem-server` event loop, in a `DeviceContext::without_kvm`, whose interrupt router records
//! routes and irqfds in vmm's fake KVM (`test-util`).
//!
//! The server (on a thread of its own) and two other peers, which the device can ring, are set
//! up once per process and shared by every run: a run only joins the device's own peer, which
//! keeps the fuzzer fast. Ids grow from run to run (the server wraps them), so runs read the
//! device's id rather than assume one.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ivshmem_server::event_loop::{LoopConfig, Server};
use nix::sys::epoll::EpollTimeout;
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use peer::{ConnectOptions, Peer};
use vmm::devices::ivshmem::{add_doorbell, Bar2Mapping, DoorbellOptions, IvshmemDevice};
use vmm::devices::DeviceContext;
use vmm::interrupts::fake::FakeIrqBackend;
use vmm::memory::AddressSpace;
use vmm::pci::{Bdf, Msix, PciBus};
use vmm_sys_util::eventfd::EventFd;

/// BAR2 size (the server's shared memory).
pub const BAR2_SIZE: u64 = 0x1_0000;
/// Vectors the server gives every peer. A device may have more MSI-X vectors than that (the rest
/// have no source, as with QEMU's device); few keep each join's fd passing, and so each run,
/// short.
pub const SERVER_VECTORS: usize = 8;

/// The server and the other peers, shared by every run of the process.
struct Fabric {
    server: ServerThread,
    others: Mutex<Vec<Peer>>,
}

fn fabric() -> &'static Fabric {
    static FABRIC: OnceLock<Fabric> = OnceLock::new();
    FABRIC.get_or_init(|| {
        let server = ServerThread::start(SERVER_VECTORS as u32);
        let others = (0..2).map(|_| server.join()).collect();
        Fabric {
            server,
            others: Mutex::new(others),
        }
    })
}

/// An `ivshmem-server` event loop on a thread, until dropped.
struct ServerThread {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    fn start(vectors: u32) -> ServerThread {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let socket = std::env::temp_dir().join(format!(
            "ivshmem-fuzz-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let signals = SignalFd::with_flags(
            &SigSet::empty(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .expect("signalfd");
        let shm =
            nix::sys::memfd::memfd_create("ivshmem-fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .expect("memfd");
        nix::unistd::ftruncate(shm.as_fd(), BAR2_SIZE as i64).expect("size the memfd");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let config = LoopConfig {
                vectors,
                queue_limit: 64,
            };
            let mut server = Server::new(listener, signals, shm, config).expect("server");
            let turn = EpollTimeout::try_from(Duration::from_millis(2)).expect("timeout");
            while !stopped.load(Ordering::Relaxed) {
                server.run_once(turn).expect("event loop");
            }
        });
        ServerThread {
            socket,
            stop,
            thread: Some(thread),
        }
    }

    fn join(&self) -> Peer {
        // All own vectors before `connect` returns: no burst left to wait for afterwards.
        let options = ConnectOptions {
            vectors: Some(SERVER_VECTORS as u32),
            timeout: Duration::from_secs(10),
        };
        Peer::connect_with(&self.socket, &options).expect("join the server")
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Memory and I/O spaces, bus 0 with the host bridge and the real ivshmem-doorbell device.
pub struct Machine {
    /// The memory address space (ECAM, BARs).
    pub memory: AddressSpace,
    /// The I/O address space (conf1).
    pub io: AddressSpace,
    /// PCI bus 0.
    pub bus: Arc<PciBus>,
    /// The fake KVM the MSI-X vectors are routed through.
    pub kvm: Arc<FakeIrqBackend>,
    /// The device.
    pub device: Arc<IvshmemDevice>,
    /// The device's MSI-X state.
    pub msix: Msix,
    /// The device's own peer id (IVPosition).
    pub own_id: u16,
    /// The device's own vectors (MSI-X sources of its first vectors), as the server gave them.
    pub own_vectors: Vec<Arc<EventFd>>,
    /// (peer, vector eventfds) of the other peers the doorbell can ring.
    pub other_peers: Vec<(u16, Vec<Arc<EventFd>>)>,
    /// Where the ivshmem function sits.
    pub bdf: Bdf,
    ctx: DeviceContext,
}

impl Machine {
    /// A device with `vectors` (1..=2048) MSI-X vectors; the first [`SERVER_VECTORS`] of them
    /// have the server's eventfds as their sources.
    pub fn new(vectors: usize) -> Machine {
        let fabric = fabric();
        let mut others = fabric.others.lock().unwrap_or_else(|e| e.into_inner());
        // The other peers hear of every run's device joining and leaving: take that in, so
        // their queues on the server stay short.
        for other in others.iter_mut() {
            other.process_server_messages();
        }
        let mut own = fabric.server.join();
        let own_id = own.id();
        // The handshake returns with the first own vector; the rest of the burst (own vectors,
        // the other peers') may still be on its way: take it in before the device is built.
        let last = SERVER_VECTORS as u32 - 1;
        for id in others.iter().map(Peer::id).chain([own_id]) {
            assert!(
                own.await_vector(id, last, Some(Duration::from_secs(10))),
                "the server announced peer {id}'s vectors"
            );
        }
        let (ctx, kvm) = DeviceContext::without_kvm(0x10_0000);
        let options = DoorbellOptions {
            vectors: vectors as u32,
            ioeventfd: true,
            mapping: Bar2Mapping::Slot,
        };
        let device = add_doorbell(&ctx, "ivshmem0", own, &options).expect("ivshmem-doorbell");
        let msix = device.msix().expect("a doorbell device has MSI-X").clone();
        let table = device.peers();
        let own_vectors = (0..vectors.min(SERVER_VECTORS) as u32)
            .map(|v| table.vector(own_id, v).expect("own vector"))
            .collect();
        let other_peers = others
            .iter()
            .map(|p| {
                let fds = (0..p.own_vector_count())
                    .map(|v| table.vector(p.id(), v).expect("the server announced it"))
                    .collect();
                (p.id(), fds)
            })
            .collect();
        Machine {
            memory: ctx.memory.clone(),
            io: ctx.io.clone(),
            bus: ctx.pci.clone(),
            kvm,
            msix,
            own_id,
            own_vectors,
            other_peers,
            bdf: device.bdf(),
            device,
            ctx,
        }
    }

    /// A guest read of `size` bytes (clamped to 1..=8) at `addr` in `space`.
    pub fn read(space: &AddressSpace, addr: u64, size: usize) -> u64 {
        let mut data = [0u8; 8];
        let size = size.clamp(1, 8);
        space.read(addr, &mut data[..size]);
        u64::from_le_bytes(data)
    }

    /// A guest write of `size` bytes (clamped to 1..=8) of `value` at `addr` in `space`.
    pub fn write(space: &AddressSpace, addr: u64, size: usize, value: u64) {
        let size = size.clamp(1, 8);
        space.write(addr, &value.to_le_bytes()[..size]);
    }

    /// Address of config register `offset` of `slot` in ECAM (where the VM has ECAM).
    pub fn ecam_addr(slot: u8, offset: u64) -> u64 {
        vmm::arch::x86_64::layout::PCI_ECAM_ADDR + (u64::from(slot) << 15) + offset
    }

    /// Where BAR `index` of the ivshmem function is mapped now.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bus
            .with_function(self.bdf, |f| f.bar_address(index))
            .flatten()
    }

    /// Lets the fake KVM consume every bound irqfd, as the kernel would at once.
    pub fn deliver_bound(&self) {
        for fd in &self.own_vectors {
            self.kvm.deliver_bound(fd);
        }
    }

    /// MSIs the fake KVM injected so far.
    pub fn injected(&self) -> usize {
        self.kvm.snapshot(|s| s.signalled.len())
    }

    /// Checks what must hold between the guest-visible MSI-X state and the KVM wiring.
    pub fn check_msix_wiring(&self) {
        let (routes, irqfds) = self.kvm.snapshot(|s| (s.msi_routes(), s.irqfds.clone()));
        let mut bound = 0;
        for (vector, fd) in self.own_vectors.iter().enumerate() {
            let masked = self.msix.is_masked(vector);
            let route = self.msix.route(vector);
            assert_eq!(
                route.is_some(),
                self.msix.is_enabled(),
                "vector {vector}: a vector with a source has a route exactly while enabled"
            );
            if let Some((gsi, message)) = route {
                assert_eq!(
                    routes.get(&gsi),
                    Some(&message),
                    "vector {vector}: KVM's table has the route's message"
                );
            }
            let is_bound = irqfds
                .iter()
                .any(|&(f, _)| f == std::os::fd::AsRawFd::as_raw_fd(fd.as_ref()));
            assert_eq!(is_bound, self.msix.is_irqfd_bound(vector));
            assert_eq!(
                is_bound, !masked,
                "vector {vector}: bound with irqfd exactly while unmasked"
            );
            if is_bound {
                let gsi = route.expect("bound vectors have a route").0;
                assert!(irqfds.contains(&(std::os::fd::AsRawFd::as_raw_fd(fd.as_ref()), gsi)));
                bound += 1;
            }
        }
        assert_eq!(irqfds.len(), bound, "no irqfd left bound behind");
        assert_eq!(
            routes.len(),
            if self.msix.is_enabled() {
                self.own_vectors.len()
            } else {
                0
            },
            "no MSI route left behind"
        );
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // The device's server link leaves the server (the next run joins anew).
        self.ctx.threads.shutdown();
    }
}
