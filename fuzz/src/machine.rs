//! A PCI bus with an ivshmem-doorbell function (BAR0 registers, BAR1 MSI-X, BAR2 RAM), built
//! from the VMM's public pieces without KVM: interrupts go to [`FakeKvm`], which records routes
//! and irqfds and delivers bound irqfds the way KVM would (by consuming the eventfd).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_irq_routing_entry, KVM_IRQ_ROUTING_MSI};
use vmm::devices::ivshmem::registers::{PeerTable, Registers, BAR0_SIZE};
use vmm::interrupts::{InterruptRouter, IrqBackend, MsiMessage};
use vmm::memory::{AccessSizes, AddressSpace, IoAccess, MemoryRegion, SpaceKind};
use vmm::pci::{self, config, Bar, Bdf, Msix, PciBus, PciFunction, PciIds};
use vmm_sys_util::eventfd::EventFd;

/// Where ECAM sits (the VMM's layout uses the same address).
pub const ECAM_BASE: u64 = 0xB000_0000;
/// The ivshmem function's slot (00:01.0).
pub const IVSHMEM_SLOT: u8 = 1;
/// Its IVPosition (own peer id).
pub const OWN_ID: u16 = 1;
/// BAR2 size.
pub const BAR2_SIZE: u64 = 0x1_0000;

/// ivshmem-doorbell's identity, as the VMM gives it.
pub const IVSHMEM_IDS: PciIds = PciIds {
    vendor_id: 0x1af4,
    device_id: 0x1110,
    revision: 1,
    class: 0x05,
    subclass: 0x00,
    prog_if: 0,
    subsystem_vendor_id: 0x1af4,
    subsystem_id: 0x1100,
};

/// What KVM holds: the routing table and the bound irqfds.
#[derive(Default)]
pub struct FakeKvmState {
    /// GSI -> MSI message of the last routing table pushed.
    pub msi_routes: BTreeMap<u32, MsiMessage>,
    /// (raw eventfd, gsi) bound with irqfd.
    pub irqfds: Vec<(i32, u32)>,
    /// Interrupts injected (irqfd deliveries and KVM_SIGNAL_MSI).
    pub injected: Vec<MsiMessage>,
}

/// A stand-in for KVM's interrupt routing that records what the device asks of it.
#[derive(Default)]
pub struct FakeKvm {
    /// What it holds, behind a lock as `IrqBackend` takes `&self`.
    pub state: Mutex<FakeKvmState>,
}

impl FakeKvm {
    /// Its state (a panic elsewhere does not poison it for the checks).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeKvmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What KVM does for a signalled irqfd: consume the count, inject the route's message.
    pub fn deliver(&self, fd: &EventFd) {
        let mut state = self.lock();
        let Some(&(_, gsi)) = state.irqfds.iter().find(|(f, _)| *f == fd.as_raw_fd()) else {
            return;
        };
        let Ok(count) = fd.read() else { return };
        let message = state.msi_routes.get(&gsi).copied();
        let message = message.expect("a bound irqfd's GSI has an MSI route");
        for _ in 0..count.min(16) {
            state.injected.push(message);
        }
    }
}

impl IrqBackend for FakeKvm {
    fn set_gsi_routing(&self, entries: &[kvm_irq_routing_entry]) -> io::Result<()> {
        let mut state = self.lock();
        state.msi_routes = entries
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_MSI)
            .map(|e| {
                // SAFETY: type_ says the union holds the msi member.
                let msi = unsafe { e.u.msi };
                let message = MsiMessage {
                    address: u64::from(msi.address_hi) << 32 | u64::from(msi.address_lo),
                    data: msi.data,
                };
                (e.gsi, message)
            })
            .collect();
        Ok(())
    }
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        let mut state = self.lock();
        if state.irqfds.iter().any(|&(f, _)| f == fd.as_raw_fd()) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        state.irqfds.push((fd.as_raw_fd(), gsi));
        Ok(())
    }
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        let mut state = self.lock();
        let before = state.irqfds.len();
        state.irqfds.retain(|&b| b != (fd.as_raw_fd(), gsi));
        if state.irqfds.len() == before {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
    fn signal_msi(&self, message: MsiMessage) -> io::Result<()> {
        self.lock().injected.push(message);
        Ok(())
    }
}

/// Memory and I/O spaces, bus 0 with the host bridge and an ivshmem-doorbell function.
pub struct Machine {
    /// The memory address space (ECAM, BARs).
    pub memory: AddressSpace,
    /// The I/O address space (conf1).
    pub io: AddressSpace,
    /// PCI bus 0.
    pub bus: Arc<PciBus>,
    /// The fake KVM the MSI-X vectors are routed through.
    pub kvm: Arc<FakeKvm>,
    /// The ivshmem device's BAR0 registers.
    pub registers: Arc<Registers>,
    /// Every peer's vectors, as the server would have announced them.
    pub peers: Arc<PeerTable>,
    /// The device's MSI-X state.
    pub msix: Msix,
    /// The device's own vectors (MSI-X sources).
    pub own_vectors: Vec<Arc<EventFd>>,
    /// (peer, vector eventfds) of the other peers the doorbell can ring.
    pub other_peers: Vec<(u16, Vec<Arc<EventFd>>)>,
    /// Where the ivshmem function sits.
    pub bdf: Bdf,
}

impl Machine {
    /// `vectors` (1..=2048) MSI-X vectors, each with a source eventfd.
    pub fn new(vectors: usize) -> Machine {
        let system = MemoryRegion::container("system", u64::MAX);
        let ram = MemoryRegion::ram("ram", 0x10_0000).expect("RAM");
        system.add_subregion(0, &ram, 0);
        let memory = AddressSpace::new("memory", system, SpaceKind::Memory);
        let io = AddressSpace::new("io", MemoryRegion::container("io", 0x1_0000), SpaceKind::Io);
        let bus = pci::attach(&memory, &io, ECAM_BASE);

        let kvm = Arc::new(FakeKvm::default());
        let router = InterruptRouter::new(kvm.clone());
        let peers = Arc::new(PeerTable::default());
        let registers = Arc::new(Registers::new(OWN_ID, peers.clone()));
        let msix = Msix::new("ivshmem0", vectors, router).expect("MSI-X");

        // As devices/ivshmem builds it: BAR0 registers (32-bit implemented), BAR1 MSI-X,
        // BAR2 64-bit prefetchable RAM, decoding on from the start.
        let mut function = PciFunction::new("ivshmem-doorbell", IVSHMEM_IDS);
        function
            .config_mut()
            .set_word(config::COMMAND, config::COMMAND_IO | config::COMMAND_MEMORY);
        let bar0 = MemoryRegion::io(
            "ivshmem0-mmio",
            BAR0_SIZE,
            registers.clone(),
            IoAccess {
                valid: AccessSizes::new(1, 4),
                implemented: AccessSizes::new(4, 4),
            },
        );
        function
            .set_bar(0, Bar::memory32(bar0, false))
            .expect("BAR0");
        function.add_msix(&msix, 1).expect("MSI-X BAR");
        let bar2 = MemoryRegion::ram("ivshmem0-bar2", BAR2_SIZE).expect("BAR2 RAM");
        function
            .set_bar(2, Bar::memory64(bar2, true))
            .expect("BAR2");
        let bdf = bus
            .add_device_at(IVSHMEM_SLOT, function)
            .expect("free slot");

        let mut own_vectors = Vec::new();
        for vector in 0..vectors {
            let fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
            peers.add_vector(OWN_ID, fd.clone());
            msix.set_vector_source(vector, Some(fd.clone()))
                .expect("vector exists");
            own_vectors.push(fd);
        }
        let mut other_peers = Vec::new();
        for peer in [0u16, 2] {
            let fds: Vec<_> = (0..2)
                .map(|_| Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")))
                .collect();
            for fd in &fds {
                peers.add_vector(peer, fd.clone());
            }
            other_peers.push((peer, fds));
        }
        Machine {
            memory,
            io,
            bus,
            kvm,
            registers,
            peers,
            msix,
            own_vectors,
            other_peers,
            bdf,
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

    /// Address of config register `offset` of `slot` in ECAM.
    pub fn ecam_addr(slot: u8, offset: u64) -> u64 {
        ECAM_BASE + (u64::from(slot) << 15) + offset
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
            self.kvm.deliver(fd);
        }
    }

    /// Checks what must hold between the guest-visible MSI-X state and the KVM wiring.
    pub fn check_msix_wiring(&self) {
        let kvm = self.kvm.lock();
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
                    kvm.msi_routes.get(&gsi),
                    Some(&message),
                    "vector {vector}: KVM's table has the route's message"
                );
            }
            let is_bound = kvm.irqfds.iter().any(|&(f, _)| f == fd.as_raw_fd());
            assert_eq!(is_bound, self.msix.is_irqfd_bound(vector));
            assert_eq!(
                is_bound, !masked,
                "vector {vector}: bound with irqfd exactly while unmasked"
            );
            if is_bound {
                let gsi = route.expect("bound vectors have a route").0;
                assert!(kvm.irqfds.contains(&(fd.as_raw_fd(), gsi)));
                bound += 1;
            }
        }
        assert_eq!(kvm.irqfds.len(), bound, "no irqfd left bound behind");
        assert_eq!(
            kvm.msi_routes.len(),
            if self.msix.is_enabled() {
                self.own_vectors.len()
            } else {
                0
            },
            "no MSI route left behind"
        );
    }
}
