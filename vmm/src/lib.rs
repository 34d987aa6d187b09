//! ivshmem-rs VMM: a small KVM virtual machine monitor.
//!
//! docs/vmm.md describes the modules and the lock order. The modules' dependency order is
//! written once, in `layering.rs` (`ORDER`), which a test checks against every source file and
//! against docs/vmm.md. From the bottom: constants shared with the guest runtime, the memory
//! model, interrupts, PCI, vCPUs, the device models and their one plug (`devices::plug`), the
//! `vm`, guest loading (`boot`), the whole `machine`, and at the edge the command line's
//! `options`.

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
pub mod threads;
pub mod vcpu;
pub mod vm;

#[cfg(test)]
mod layering;
