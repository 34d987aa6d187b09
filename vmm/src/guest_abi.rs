//! The guest<->VMM interface of the PCI devices guest programs drive: identities and register
//! offsets of the ivshmem device and of `pci-testdev`.
//!
//! One file for both sides, like `arch::x86_64::layout` (addresses, the testdev registers): the
//! guest runtime compiles this same file as `guest::abi` (`#[path]` in guest/src/lib.rs), so it
//! must stay plain `core`-only constants and `const fn`s. The VMM's device models and the guest's
//! drivers both read these names; neither side writes a number of its own.

/// The ivshmem device, as QEMU's `ivshmem-plain` / `ivshmem-doorbell` present it.
pub mod ivshmem {
    /// Red Hat's (virtio) vendor ID, which QEMU gives ivshmem.
    pub const VENDOR_ID: u16 = 0x1af4;
    /// ivshmem's device ID.
    pub const DEVICE_ID: u16 = 0x1110;
    /// QEMU's revision.
    pub const REVISION: u8 = 1;
    /// Class code (class, subclass, programming interface): RAM memory controller.
    pub const CLASS_CODE: u32 = 0x05_00_00;
    /// Subsystem vendor ID (Red Hat, as QEMU).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x1af4;
    /// Subsystem ID (QEMU's default for its devices).
    pub const SUBSYSTEM_ID: u16 = 0x1100;
    /// BAR0: 256 bytes of 32-bit registers.
    pub const BAR0_SIZE: u64 = 0x100;

    /// BAR0 register offsets.
    pub mod reg {
        /// Plain storage.
        pub const INTR_MASK: u64 = 0x00;
        /// Storage; a read returns the value and clears it.
        pub const INTR_STATUS: u64 = 0x04;
        /// Own peer id (0 for ivshmem-plain); writes are ignored.
        pub const IV_POSITION: u64 = 0x08;
        /// Write [`super::doorbell_value`] to ring that peer's vector; reads 0.
        pub const DOORBELL: u64 = 0x0C;
    }

    /// What a guest writes to DOORBELL to ring `vector` of `peer` (bits 15..0: the vector).
    pub const fn doorbell_value(peer: u16, vector: u32) -> u32 {
        ((peer as u32) << 16) | (vector & 0xffff)
    }
}

/// `pci-testdev` (QEMU's ID, registers of our own): registers in BAR0, MSI-X in BAR1, RAM in BAR2.
pub mod pci_testdev {
    /// Red Hat's QEMU vendor ID.
    pub const VENDOR_ID: u16 = 0x1b36;
    /// QEMU's pci-testdev device ID.
    pub const DEVICE_ID: u16 = 0x0005;
    /// Class code: "other" (class 0x00, subclass 0xFF).
    pub const CLASS_CODE: u32 = 0x00_FF_00;
    /// BAR0 size.
    pub const REGS_SIZE: u64 = 0x1000;
    /// What the MAGIC register reads: "PCIT".
    pub const MAGIC: u32 = 0x5443_4950;

    /// BAR0 register offsets (32-bit accesses).
    pub mod reg {
        /// RO: [`super::MAGIC`].
        pub const MAGIC: u64 = 0x00;
        /// RW: plain storage.
        pub const SCRATCH: u64 = 0x04;
        /// RO: number of MSI-X vectors.
        pub const VECTORS: u64 = 0x08;
        /// WO: signal the eventfd of vector N (ignored for N out of range).
        pub const RAISE: u64 = 0x0C;
        /// RO: BAR0 accesses served so far (this one included): every one is a VM exit.
        pub const ACCESSES: u64 = 0x10;
        /// RO: BAR2 size, low dword.
        pub const RAM_SIZE_LO: u64 = 0x14;
        /// RO: BAR2 size, high dword.
        pub const RAM_SIZE_HI: u64 = 0x18;
        /// RO: RAISE writes that signalled a vector.
        pub const RAISED: u64 = 0x1C;
        /// WO: like RAISE, but a KVM ioeventfd (datamatch = vector) per vector signals the
        /// vector's eventfd inside the kernel: the write never reaches the VMM (like ivshmem's
        /// doorbell). Only writes that match no ioeventfd arrive; they are handled as RAISE.
        pub const RAISE_FAST: u64 = 0x20;
    }
}
