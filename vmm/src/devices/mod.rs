//! Device models. Each implements `memory::RegionOps` for its registers.
//!
//! - `acpi_sleep`: the ACPI sleep control register, so that a guest's power-off ends the VM;
//! - `testdev`: the guest programs' debug/exit/console device (MMIO, plus a few PIO ports);
//! - `i8042`: just enough keyboard controller for a guest to reset (end) the VM;
//! - `serial`: a 16550A UART (vm-superio) on 0x3F8 for Linux guests;
//! - `rtc`: the CMOS real-time clock (MC146818) on 0x70/0x71;
//! - `console`: where testdev and serial output goes (stdout, a file, nowhere);
//! - `pci_testdev`, `ivshmem`: PCI devices, plugged through a [`DeviceContext`].
//!
//! The legacy devices are mapped by `vm` (`Vm::add_legacy_devices`). PCI devices never see the
//! `Vm`: they get a [`DeviceContext`] with the bus, the interrupt router, system memory and the
//! VM's background threads, so the device models depend only on `pci`, `interrupts`, `memory`
//! and `background` (see docs/vmm.md for the whole dependency order).
use std::sync::Arc;

use crate::background::BackgroundThreads;
use crate::interrupts::InterruptRouter;
use crate::memory::{AddressSpace, GuestRam};
use crate::pci::PciBus;

pub mod acpi_sleep;
pub mod console;
pub mod i8042;
pub mod ivshmem;
pub mod pci_testdev;
pub mod rtc;
pub mod serial;
pub mod testdev;
pub mod vhost_user;
pub mod virtio_pci;

/// What a PCI device needs from the VM it is plugged into.
#[derive(Clone)]
pub struct DeviceContext {
    /// Bus 0: plug the device's function with `pci.add_device(..)`.
    pub pci: Arc<PciBus>,
    /// GSI routes and irqfds for MSI-X vectors.
    pub interrupts: Arc<InterruptRouter>,
    /// System memory, to commit after changing a mapped region (ioeventfds on a BAR).
    pub memory: AddressSpace,
    /// Where a device starts threads that must end with the VM.
    pub threads: Arc<BackgroundThreads>,
    /// Guest RAM region by region (guest address, size, our mapping, its file when shared):
    /// what a vhost-user frontend describes to its backend.
    pub ram: GuestRam,
}
