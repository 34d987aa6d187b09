//! Runtime for guest programs of the ivshmem-rs VMM (no_std, no libc).
//!
//! The VMM enters every vCPU in ring 3 at `_start` with its own stack and `rdi` = cpu id,
//! `rsi` = number of cpus, `rdx` = RAM size (see `layout`). A program names its entry points with
//! [`entry!`]; vCPU 0 runs `main` and exits the VM with its return value, the others run the
//! optional `ap_main` and then park. Everything talks to the VMM through MMIO (`testdev`), because
//! ring-3 port I/O is not reliable on this project's KVM (docs/environment.md).
#![no_std]

/// The VMM's guest-ABI file (PCI device identities and registers), compiled here too.
#[path = "../../vmm/src/guest_abi.rs"]
pub mod abi;
pub mod args;
pub mod clock;
pub mod console;
pub mod interrupts;
pub mod ivshmem;
/// The VMM's layout file, compiled here too, so both sides agree by construction.
#[path = "../../vmm/src/arch/x86_64/layout.rs"]
pub mod layout;
mod mem;
pub mod mmio;
pub mod pci;
pub mod peers;
pub mod pio;
pub mod rt;
/// The server's peer state table layout and its reader (`--state-table`): the protocol crate's
/// own file compiled here too (it uses `core` only), so guests and host tools read the table
/// with one implementation.
#[path = "../../protocol/src/state_table.rs"]
pub mod state_table;
pub mod testdev;
pub mod virtio;
/// The virtio-over-ivshmem header layout, the host driver's and the bridge's own file compiled
/// here too (it uses `core` only), so a guest driver and the bridge agree by construction.
#[path = "../../virtio-ivshmem/src/layout.rs"]
pub mod virtio_layout;

/// Defines the program's entry points: `entry!(main)` or `entry!(main, ap_main)`, with
/// `fn main() -> i32` (the VM's exit status) and `fn ap_main(cpu: u32)`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The runtime's call into the program on vCPU 0 (defined by `entry!`).
        #[no_mangle]
        pub extern "C" fn __guest_main() -> i32 {
            $main()
        }
        /// The runtime's call into the program on the other vCPUs.
        #[no_mangle]
        pub extern "C" fn __guest_ap_main(_cpu: u32) {}
    };
    ($main:path, $ap_main:path) => {
        /// The runtime's call into the program on vCPU 0 (defined by `entry!`).
        #[no_mangle]
        pub extern "C" fn __guest_main() -> i32 {
            $main()
        }
        /// The runtime's call into the program on the other vCPUs.
        #[no_mangle]
        pub extern "C" fn __guest_ap_main(cpu: u32) {
            $ap_main(cpu)
        }
    };
}
