//! Device models. Each implements `memory::RegionOps` for its registers.
//!
//! - `acpi_sleep`: the ACPI sleep control register, so that a guest's power-off ends the VM;
//! - `testdev`: the guest programs' debug/exit/console device (MMIO, plus a few PIO ports);
//! - `i8042`: just enough keyboard controller for a guest to reset (end) the VM;
//! - `serial`: a 16550A UART (vm-superio) on 0x3F8 for Linux guests;
//! - `rtc`: the CMOS real-time clock (MC146818) on 0x70/0x71;
//! - `console`: where testdev and serial output goes (stdout, a file, nowhere);
//! - `pci_testdev`, `ivshmem`: PCI devices;
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
use crate::memory::AddressSpace;
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
