//! ivshmem-rs VMM: a small KVM virtual machine monitor.
//!
//! Layout (see ARCHITECTURE.md, "The VMM"): `memory` is QEMU's memory model (regions, address
//! spaces, flat views, the KVM listener, dispatch); `vcpu` runs KVM_RUN loops; `pci` is the bus,
//! config space, BARs and MSI-X; `interrupts` keeps the GSI routing table and irqfds; `devices`
//! holds the device models; `arch::x86_64` sets up guests (64-bit entry, page tables, Linux boot);
//! `vm` wires it all together and `guest_images` carries the built-in guest programs.

pub mod arch;
pub mod background;
pub mod bench;
pub mod devices;
pub mod exit;
pub mod guest_abi;
pub mod guest_images;
pub mod interrupts;
pub mod memory;
pub mod pci;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod layering;
