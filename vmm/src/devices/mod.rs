//! Device models. Each implements `memory::RegionOps` for its registers.
//!
//! - `acpi_sleep`: the ACPI sleep control register, so that a guest's power-off ends the VM;
//! - `testdev`: the guest programs' debug/exit/console device (MMIO, plus a few PIO ports);
//! - `i8042`: just enough keyboard controller for a guest to reset (end) the VM;
//! - `serial`: a 16550A UART (vm-superio) on 0x3F8 for Linux guests;
//! - `rtc`: the CMOS real-time clock (MC146818) on 0x70/0x71;
//! - `console`: where testdev and serial output goes (stdout, a file, nowhere);
//! - `pci_testdev`, `ivshmem`: PCI devices;
//! - `virtio_pci`: a virtio 1.x PCI transport; `vhost_user`: its devices served by vhost-user
//!   backend processes (docs/virtio-pci.md); `virtio_net`: virtio-net served by the kernel's
//!   vhost-net on a TAP interface;
//! - `plug`: the one way every device is created, from typed [`plug::DeviceOptions`].
//!
//! No device sees the `Vm`: each gets a [`DeviceContext`] (the bus, the interrupt router, the
//! two address spaces, the VM's background threads, its control, console and RAM), so the
//! device models depend only on the layers below them (docs/vmm.md has the whole order).
use std::sync::Arc;
use std::time::Instant;

use vm_memory::GuestMemoryMmap;

use crate::background::BackgroundThreads;
use crate::exit::VmControl;
use crate::interrupts::InterruptRouter;
use crate::memory::{AddressSpace, GuestRam};
use crate::pci::PciBus;
use console::Console;

pub mod acpi_sleep;
pub mod console;
pub mod i8042;
pub mod ivshmem;
pub mod pci_testdev;
pub mod plug;
pub mod rtc;
pub mod serial;
pub mod testdev;
pub mod vhost_user;
pub mod virtio_net;
pub mod virtio_pci;

/// What a device needs from the VM it is plugged into.
#[derive(Clone)]
pub struct DeviceContext {
    /// Bus 0: plug the device's function with `pci.add_device(..)`.
    pub pci: Arc<PciBus>,
    /// GSI routes and irqfds (MSI-X vectors, legacy interrupt lines).
    pub interrupts: Arc<InterruptRouter>,
    /// System memory: fixed MMIO devices map here; commit after changing a mapped region
    /// (ioeventfds on a BAR).
    pub memory: AddressSpace,
    /// Port I/O space, where the legacy devices sit.
    pub io: AddressSpace,
    /// Where a device starts threads that must end with the VM.
    pub threads: Arc<BackgroundThreads>,
    /// How a device ends the VM (reset, power-off, a guest program's exit).
    pub control: Arc<VmControl>,
    /// Where console output goes.
    pub console: Arc<Console>,
    /// Guest RAM, for devices that read it.
    pub guest_memory: GuestMemoryMmap,
    /// The machine's size, for devices that report it.
    pub machine: MachineInfo,
    /// Guest RAM region by region (guest address, size, our mapping, its file when shared):
    /// what a vhost-user frontend describes to its backend.
    pub ram: GuestRam,
}

/// What the guest can ask a device about the machine it runs in.
#[derive(Clone, Copy, Debug)]
pub struct MachineInfo {
    /// vCPUs.
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// When the VM was created (the guest programs' clock starts here).
    pub created: Instant,
}

#[cfg(any(test, feature = "test-util"))]
impl DeviceContext {
    /// A context with no KVM behind it, for tests and fuzz targets that drive real devices:
    /// system memory with `ram_size` bytes of RAM at 0 and bus 0's ECAM where the VM has it,
    /// the I/O space with conf1, and the interrupt router on the returned recording fake.
    /// Guest accesses go through `memory`/`io` directly. A test double: it panics if the host
    /// cannot give it memory or an eventfd.
    pub fn without_kvm(
        ram_size: u64,
    ) -> (DeviceContext, Arc<crate::interrupts::fake::FakeIrqBackend>) {
        Self::without_kvm_backed(ram_size, crate::memory::RamBacking::default())
    }

    /// [`DeviceContext::without_kvm`] with RAM backed as `backing` (`shared` for vhost-user
    /// devices, whose backends map it).
    pub fn without_kvm_backed(
        ram_size: u64,
        backing: crate::memory::RamBacking,
    ) -> (DeviceContext, Arc<crate::interrupts::fake::FakeIrqBackend>) {
        use crate::arch::x86_64::layout::PCI_ECAM_ADDR;
        use crate::memory::{GuestRamRegion, MemoryRegion, SpaceKind};
        let system = MemoryRegion::container("system", u64::MAX);
        let ram = backing
            .create("ram", ram_size)
            .expect("RAM for a KVM-less context");
        system.add_subregion(0, &ram, 0);
        let memory = AddressSpace::new("memory", system, SpaceKind::Memory);
        let io = AddressSpace::new(
            "I/O",
            MemoryRegion::container("io", 0x1_0000),
            SpaceKind::Io,
        );
        let pci = crate::pci::attach(&memory, &io, PCI_ECAM_ADDR);
        let fake = crate::interrupts::fake::FakeIrqBackend::new();
        // Devices that read guest RAM get a zeroed view of their own: nothing in a KVM-less
        // context writes guest RAM behind their back.
        let guest_memory =
            GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), ram_size as usize)])
                .expect("a guest RAM view");
        let ctx = DeviceContext {
            pci,
            interrupts: InterruptRouter::new(fake.clone()),
            memory,
            io,
            threads: BackgroundThreads::new(),
            control: Arc::new(VmControl::new().expect("an eventfd")),
            console: Arc::new(Console::new(None, console::ConsoleSink::Discard)),
            guest_memory,
            machine: MachineInfo {
                cpus: 1,
                ram_size,
                created: Instant::now(),
            },
            ram: GuestRam::new(vec![GuestRamRegion {
                guest_addr: 0,
                region: ram,
            }]),
        };
        (ctx, fake)
    }
}
