//! ivshmem-rs VMM: a small KVM virtual machine monitor.
//!
//! docs/vmm.md describes the modules, their dependency order and the lock order; in short,
//! lowest first (a module uses only modules before it, which the `layering` test checks):
//!
//! 1. `guest_abi`, `arch::x86_64::layout` (constants shared with the guest runtime), `memory`
//!    (QEMU's memory model), `interrupts` (GSI routes, irqfds), `seccomp` (each thread's
//!    allow-list), `background` (device threads joined at shutdown);
//! 2. `exit` (why a VM ended, `VmControl`);
//! 3. `arch::x86_64` (guest set-up; `unemulated` uses `memory`);
//! 4. `pci` (bus, config space, BARs, MSI-X);
//! 5. `vcpu` (`KVM_RUN` loops, the `ExitShortcut` hook);
//! 6. `bench` (benchmark floors);
//! 7. `devices` (legacy devices; PCI devices plugged through a `DeviceContext`);
//! 8. `vm` (wires it all together);
//! 9. `arch::x86_64::linux` (boots a kernel into a `Vm`).
//!
//! `guest_images` carries the built-in guest programs.

pub mod arch;
pub mod background;
pub mod bench;
pub mod boot;
pub mod devices;
pub mod exit;
pub mod guest_abi;
pub mod guest_images;
pub mod interrupts;
pub mod machine;
pub mod memory;
pub mod options;
pub mod pci;
pub mod seccomp;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod layering;
