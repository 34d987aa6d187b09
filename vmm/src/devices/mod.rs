//! Device models. Each implements `memory::RegionOps` and is mapped into the system memory or
//! I/O address space by `vm`.
//!
//! - `testdev`: the guest programs' debug/exit/console device (MMIO, plus a few PIO ports);
//! - `i8042`: just enough keyboard controller for a guest to reset (end) the VM;
//! - `serial`: a 16550A UART (vm-superio) on 0x3F8 for Linux guests;
//! - `pci_testdev`, `ivshmem`: PCI devices (helpers "pci" and "ivshmem").
pub mod console;
pub mod i8042;
pub mod ivshmem;
pub mod pci_testdev;
pub mod serial;
pub mod testdev;
