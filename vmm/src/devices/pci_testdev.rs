//! `pci-testdev`: a PCI device for testing the bus, BAR mapping and MSI-X from guest programs.
//!
//! Identity 1b36:0005 (QEMU's pci-testdev ID, class "other"), no INTx. Its registers are its own:
//! - BAR0, 4 KiB MMIO, 32-bit: the registers below;
//! - BAR1, exclusive MSI-X BAR (`vectors` entries, QEMU's layout);
//! - BAR2, 64-bit prefetchable RAM (`ram` bytes, anonymous): guest accesses never exit, and the
//!   guest can move it to check that the KVM slot follows.
//!
//! Every vector has its own eventfd as its source, like an ivshmem peer vector: writing the
//! RAISE register signals it from the VMM, writing RAISE_FAST signals it from KVM (ioeventfd),
//! and from there KVM (irqfd) or the MSI-X watcher (masked vectors: pending bit) takes over. With
//! RAISE_FAST and an unmasked vector, guest doorbell to guest interrupt never leaves the kernel.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::DeviceContext;
use crate::interrupts::InterruptRouter;
use crate::memory::{IoAccess, MemoryError, MemoryRegion, RegionOps};
use crate::pci::{Bar, BusError, FunctionError, Msix, MsixError, PciFunction, PciIds};

// Identity and registers are the guest ABI, shared with the guest runtime.
pub use crate::guest_abi::pci_testdev::{
    reg as regs, CLASS_CODE, DEVICE_ID, MAGIC, REGS_SIZE, VENDOR_ID,
};

/// The test device's settings (`--device pci-testdev[,vectors=N][,ram=SIZE]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciTestDevConfig {
    /// MSI-X vectors (BAR1's table).
    pub vectors: usize,
    /// Size of the RAM behind BAR2.
    pub ram_size: u64,
}

impl Default for PciTestDevConfig {
    fn default() -> Self {
        Self {
            vectors: 4,
            ram_size: 1 << 20,
        }
    }
}

/// Why the test device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PciTestDevError {
    /// BAR2's RAM could not be created.
    #[error("pci-testdev: {0}")]
    Memory(#[from] MemoryError),
    /// The MSI-X table could not be set up.
    #[error("pci-testdev: {0}")]
    Msix(#[from] MsixError),
    /// A BAR or capability was refused.
    #[error("pci-testdev: {0}")]
    Function(#[from] FunctionError),
    /// A vector's eventfd could not be created.
    #[error("pci-testdev: eventfd: {0}")]
    EventFd(#[from] std::io::Error),
    /// The bus has no room for the device.
    #[error("pci-testdev: {0}")]
    Bus(#[from] BusError),
}

/// Creates the device and plugs it into the bus.
pub fn add(
    ctx: &DeviceContext,
    config: &PciTestDevConfig,
) -> Result<Arc<PciTestDev>, PciTestDevError> {
    let (function, device) = PciTestDev::create(*config, ctx.interrupts.clone())?;
    ctx.pci.add_device(function)?;
    Ok(device)
}

/// The device's state (BAR0 ops). The rest lives in the regions and the [`Msix`].
pub struct PciTestDev {
    msix: Msix,
    sources: Vec<Arc<EventFd>>,
    ram_size: u64,
    scratch: AtomicU32,
    accesses: AtomicU64,
    raised: AtomicU64,
}

impl PciTestDev {
    /// Build the device's PCI function (plug it with `PciBus::add_device`).
    pub fn create(
        config: PciTestDevConfig,
        router: Arc<InterruptRouter>,
    ) -> Result<(PciFunction, Arc<PciTestDev>), PciTestDevError> {
        let msix = Msix::new("pci-testdev", config.vectors, router)?;
        let mut sources = Vec::with_capacity(config.vectors);
        for vector in 0..config.vectors {
            let fd = Arc::new(EventFd::new(EFD_NONBLOCK)?);
            msix.set_vector_source(vector, Some(fd.clone()))?;
            sources.push(fd);
        }
        let device = Arc::new(PciTestDev {
            msix: msix.clone(),
            sources,
            ram_size: config.ram_size,
            scratch: AtomicU32::new(0),
            accesses: AtomicU64::new(0),
            raised: AtomicU64::new(0),
        });
        let mut function = PciFunction::new(
            "pci-testdev",
            PciIds {
                vendor_id: VENDOR_ID,
                device_id: DEVICE_ID,
                revision: 0,
                class: (CLASS_CODE >> 16) as u8,
                subclass: (CLASS_CODE >> 8) as u8,
                prog_if: CLASS_CODE as u8,
                subsystem_vendor_id: 0x1AF4,
                subsystem_id: 0x1100,
            },
        );
        let regs = MemoryRegion::io(
            "pci-testdev-regs",
            REGS_SIZE,
            device.clone(),
            IoAccess::sizes(4, 4),
        );
        for (vector, fd) in device.sources.iter().enumerate() {
            regs.add_eventfd(regs::RAISE_FAST, 4, Some(vector as u64), fd.clone());
        }
        function.set_bar(0, Bar::memory32(regs, false))?;
        function.add_msix(&msix, 1)?;
        let ram = MemoryRegion::ram("pci-testdev-ram", config.ram_size)?;
        function.set_bar(2, Bar::memory64(ram, true))?;
        Ok((function, device))
    }

    /// The device's MSI-X state (tests look at masks and pending bits).
    pub fn msix(&self) -> &Msix {
        &self.msix
    }

    /// Signal vector `vector`'s eventfd, as the RAISE register does.
    pub fn raise(&self, vector: usize) -> bool {
        match self.sources.get(vector) {
            Some(fd) => match fd.write(1) {
                Ok(()) => {
                    self.raised.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    log::warn!("pci-testdev: signalling vector {vector}: {e}");
                    false
                }
            },
            None => false,
        }
    }
}

impl RegionOps for PciTestDev {
    fn read(&self, offset: u64, _size: u32) -> u64 {
        let accesses = self.accesses.fetch_add(1, Ordering::Relaxed) + 1;
        let value = match offset {
            regs::MAGIC => MAGIC,
            regs::SCRATCH => self.scratch.load(Ordering::Relaxed),
            regs::VECTORS => self.sources.len() as u32,
            regs::ACCESSES => accesses as u32,
            regs::RAM_SIZE_LO => self.ram_size as u32,
            regs::RAM_SIZE_HI => (self.ram_size >> 32) as u32,
            regs::RAISED => self.raised.load(Ordering::Relaxed) as u32,
            _ => 0,
        };
        value as u64
    }

    fn write(&self, offset: u64, _size: u32, value: u64) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        match offset {
            regs::SCRATCH => self.scratch.store(value as u32, Ordering::Relaxed),
            regs::RAISE | regs::RAISE_FAST => {
                self.raise(value as u32 as usize);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interrupts::fake::FakeIrqBackend;

    #[test]
    fn registers_and_raise() {
        let router = InterruptRouter::new(FakeIrqBackend::new());
        let (function, dev) = PciTestDev::create(PciTestDevConfig::default(), router).unwrap();
        assert_eq!(function.config().dword(0), 0x0005_1b36);
        assert_eq!(
            function.config().dword(8),
            0x00FF_0000,
            "class 0x00, subclass 0xFF"
        );
        assert_eq!(
            (regs::RAISE, regs::RAISE_FAST, MAGIC),
            (0x0C, 0x20, 0x5443_4950)
        );
        assert_eq!(dev.read(regs::MAGIC, 4), MAGIC as u64);
        dev.write(regs::SCRATCH, 4, 0xABCD);
        assert_eq!(dev.read(regs::SCRATCH, 4), 0xABCD);
        assert_eq!(dev.read(regs::VECTORS, 4), 4);
        assert_eq!(dev.read(regs::RAM_SIZE_LO, 4), 1 << 20);
        dev.write(regs::RAISE, 4, 2);
        dev.write(regs::RAISE, 4, 99);
        assert_eq!(dev.read(regs::RAISED, 4), 1);
        assert_eq!(dev.read(regs::ACCESSES, 4), 9);
    }
}
