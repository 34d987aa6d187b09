//! The ivshmem PCI device, guest-visible exactly as QEMU's `ivshmem-plain` / `ivshmem-doorbell`
//! (1af4:1110 rev 1, class 0x0500, subsystem 1af4:1100, no INTx):
//! - BAR0: 256 bytes of registers ([`registers`]), served on MMIO exits;
//! - BAR1 (doorbell only): the exclusive MSI-X BAR (`pci::Msix`);
//! - BAR2: the shared memory, 64-bit prefetchable, a RAM region mapped from the server's (or the
//!   file's) fd, so it becomes a KVM memory slot that follows the BAR (`mapping=trap` serves it
//!   through exits instead).
//!
//! Fast paths never enter this process: every (peer, vector) the server announced is a KVM
//! ioeventfd on BAR0+0x0C with datamatch `peer << 16 | vector`, and our own vectors are the
//! source eventfds of the MSI-X vectors, bound to KVM with irqfd while unmasked.
//!
//! Design note: the connection to the server is the `peer` library's [`peer::Peer`] (handshake,
//! validation of every message, joins and leaves), so the VMM and host programs share one
//! tested client; [`link`] follows it on a thread and applies joins and leaves to the device.

pub mod backend;
pub mod link;
pub mod options;
pub mod registers;

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use super::DeviceContext;
use crate::memory::{AccessSizes, IoAccess, MemoryError, MemoryRegion};
use crate::pci::config as pci_config;
use crate::pci::{Bar, BusError, FunctionError, Msix, MsixError, PciFunction, PciIds};
pub use options::{Bar2Mapping, IvshmemOptions, IvshmemVariant};
use registers::{PeerTable, Registers, BAR0_SIZE};

use crate::guest_abi::ivshmem::{
    CLASS_CODE, DEVICE_ID, REVISION, SUBSYSTEM_ID, SUBSYSTEM_VENDOR_ID, VENDOR_ID,
};

/// How long creating a doorbell device waits for the server's handshake (QEMU waits forever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an ivshmem device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum IvshmemError {
    /// The plain device's memory could not be set up.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    /// The doorbell device could not join the server.
    #[error("ivshmem: server {socket}: {source}")]
    Connect {
        /// The server's socket.
        socket: String,
        /// Why the connection or handshake failed.
        source: peer::ConnectError,
    },
    #[error(
        "ivshmem: the server's shared memory is {0} bytes; BAR2 needs a non-zero power of two"
    )]
    /// The server's shared memory is not a size BAR2 can have.
    ServerShmSize(u64),
    /// BAR2 could not map the shared memory.
    #[error("ivshmem: mapping the shared memory: {0}")]
    Memory(#[from] MemoryError),
    /// The MSI-X table could not be set up.
    #[error("ivshmem: {0}")]
    Msix(#[from] MsixError),
    /// A BAR or capability was refused.
    #[error("ivshmem: {0}")]
    Function(#[from] FunctionError),
    /// The bus has no room for the device.
    #[error("ivshmem: {0}")]
    Bus(#[from] BusError),
    /// An eventfd from the server could not be duplicated.
    #[error("ivshmem: duplicating an eventfd from the server: {0}")]
    Dup(std::io::Error),
    /// The thread that follows the server could not start.
    #[error("ivshmem: cannot start the thread following the server: {0}")]
    Thread(std::io::Error),
}

/// A plugged ivshmem device.
pub struct IvshmemDevice {
    registers: Arc<Registers>,
    peers: Arc<PeerTable>,
    msix: Option<Msix>,
    bdf: crate::pci::Bdf,
}

impl IvshmemDevice {
    /// BAR0's registers (tests drive them directly).
    pub fn registers(&self) -> &Arc<Registers> {
        &self.registers
    }
    /// Every peer's vectors as the device knows them (its own included).
    pub fn peers(&self) -> &Arc<PeerTable> {
        &self.peers
    }
    /// The doorbell variant's MSI-X state.
    pub fn msix(&self) -> Option<&Msix> {
        self.msix.as_ref()
    }
    /// Where the function sits on the bus.
    pub fn bdf(&self) -> crate::pci::Bdf {
        self.bdf
    }

    /// Doorbell writes that matched no ioeventfd and reached the VMM.
    pub fn slow_doorbells(&self) -> u64 {
        self.registers.slow_doorbells()
    }
}

fn identity() -> PciIds {
    PciIds {
        vendor_id: VENDOR_ID,
        device_id: DEVICE_ID,
        revision: REVISION,
        class: (CLASS_CODE >> 16) as u8,
        subclass: (CLASS_CODE >> 8) as u8,
        prog_if: CLASS_CODE as u8,
        subsystem_vendor_id: SUBSYSTEM_VENDOR_ID,
        subsystem_id: SUBSYSTEM_ID,
    }
}

/// A function with the device's identity. Like QEMU's realize, the command register starts with
/// I/O and memory decoding on (nothing decodes until the guest gives the BARs addresses).
fn new_function(name: &str) -> PciFunction {
    let mut function = PciFunction::new(name, identity());
    function.config_mut().set_word(
        pci_config::COMMAND,
        pci_config::COMMAND_IO | pci_config::COMMAND_MEMORY,
    );
    function
}

/// BAR0: 32-bit registers; other sizes are converted by the memory core, as in QEMU.
fn bar0_region(name: &str, registers: Arc<Registers>) -> MemoryRegion {
    let access = IoAccess {
        valid: AccessSizes::new(1, 4),
        implemented: AccessSizes::new(4, 4),
    };
    MemoryRegion::io(&format!("{name}-mmio"), BAR0_SIZE, registers, access)
}

fn bar2_region(
    name: &str,
    fd: BorrowedFd<'_>,
    size: u64,
    mapping: Bar2Mapping,
) -> Result<MemoryRegion, MemoryError> {
    let region = MemoryRegion::ram_from_fd(&format!("{name}-bar2"), fd, 0, size)?;
    region.set_ram_device(mapping == Bar2Mapping::Trap);
    Ok(region)
}

/// Duplicates a borrowed eventfd into one the device owns (the same kernel object).
fn own_eventfd(fd: BorrowedFd<'_>) -> Result<Arc<EventFd>, IvshmemError> {
    let raw = fd
        .try_clone_to_owned()
        .map_err(IvshmemError::Dup)?
        .into_raw_fd();
    // SAFETY: `raw` is a freshly duplicated eventfd that nothing else owns.
    Ok(Arc::new(unsafe { EventFd::from_raw_fd(raw) }))
}

/// Creates the device `options` describe and plugs it into the PCI bus; `name` (`ivshmem0`,
/// ...) names its regions and log lines.
pub fn add(
    ctx: &DeviceContext,
    options: &IvshmemOptions,
    name: &str,
) -> Result<Arc<IvshmemDevice>, IvshmemError> {
    match &options.variant {
        IvshmemVariant::Plain { source, size } => {
            add_plain(ctx, name, source, *size, options.mapping)
        }
        IvshmemVariant::Doorbell {
            socket,
            vectors,
            ioeventfd,
        } => {
            let connect = peer::ConnectOptions {
                vectors: None,
                timeout: HANDSHAKE_TIMEOUT,
            };
            let server = peer::Peer::connect_with(socket, &connect).map_err(|source| {
                IvshmemError::Connect {
                    socket: socket.display().to_string(),
                    source,
                }
            })?;
            let doorbell = DoorbellOptions {
                vectors: *vectors,
                ioeventfd: *ioeventfd,
                mapping: options.mapping,
            };
            add_doorbell(ctx, name, server, &doorbell)
        }
    }
}

/// What an ivshmem-doorbell device is made of besides its server connection.
#[derive(Clone, Copy, Debug)]
pub struct DoorbellOptions {
    /// MSI-X vectors of the device.
    pub vectors: u32,
    /// Doorbells through KVM ioeventfds.
    pub ioeventfd: bool,
    /// How BAR2 is mapped.
    pub mapping: Bar2Mapping,
}

/// ivshmem-plain: BAR0 and BAR2, no peers, IVPosition 0.
fn add_plain(
    ctx: &DeviceContext,
    name: &str,
    source: &options::SharedMemorySource,
    size: Option<u64>,
    mapping: Bar2Mapping,
) -> Result<Arc<IvshmemDevice>, IvshmemError> {
    let shm = backend::open(source, size)?;
    let peers = Arc::new(PeerTable::default());
    let registers = Arc::new(Registers::new(0, peers.clone()));
    let mut function = new_function("ivshmem-plain");
    let bar0 = bar0_region(name, registers.clone());
    function.set_bar(0, Bar::memory32(bar0, false))?;
    let bar2 = bar2_region(name, shm.fd.as_fd(), shm.size, mapping)?;
    function.set_bar(2, Bar::memory64(bar2, true))?;
    let bdf = ctx.pci.add_device(function)?;
    log::info!("{name}: ivshmem-plain at {bdf}, {} bytes", shm.size);
    Ok(Arc::new(IvshmemDevice {
        registers,
        peers,
        msix: None,
        bdf,
    }))
}

/// ivshmem-doorbell on `server`, a peer that has finished its handshake (as QEMU's realize
/// does): wires what the server announced, plugs the function, then follows the server on one
/// of the VM's background threads. Tests and fuzz targets build the real device this way.
pub fn add_doorbell(
    ctx: &DeviceContext,
    name: &str,
    server: peer::Peer,
    options: &DoorbellOptions,
) -> Result<Arc<IvshmemDevice>, IvshmemError> {
    let DoorbellOptions {
        vectors,
        ioeventfd,
        mapping,
    } = *options;
    let size = server.shm().len() as u64;
    if !size.is_power_of_two() {
        return Err(IvshmemError::ServerShmSize(size));
    }
    let own_id = server.id();
    let peers = Arc::new(PeerTable::default());
    let registers = Arc::new(Registers::new(own_id, peers.clone()));
    let bar0 = bar0_region(name, registers.clone());
    let msix = Msix::new(name, vectors as usize, ctx.interrupts.clone())?;
    let mut function = new_function("ivshmem-doorbell");
    function.set_bar(0, Bar::memory32(bar0.clone(), false))?;
    function.add_msix(&msix, 1)?;
    let bar2 = bar2_region(name, server.shm().fd(), size, mapping)?;
    function.set_bar(2, Bar::memory64(bar2, true))?;

    let wiring = link::Wiring {
        name: name.to_string(),
        peers: peers.clone(),
        bar0,
        memory: ctx.memory.clone(),
        msix: msix.clone(),
        own_id,
        vectors,
        ioeventfd,
    };
    wiring.sync_with(&server)?;
    let bdf = ctx.pci.add_device(function)?;
    log::info!(
        "{name}: ivshmem-doorbell at {bdf}, peer id {own_id}, {size} bytes, peers {:?}",
        peers.snapshot()
    );
    link::follow(server, wiring, &ctx.threads)?;
    Ok(Arc::new(IvshmemDevice {
        registers,
        peers,
        msix: Some(msix),
        bdf,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's identity, written out here rather than taken from the shared ABI file, so a wrong
    /// edit there (which the guest programs would follow) still fails.
    #[test]
    fn config_space_shows_qemus_identity() {
        let function = new_function("ivshmem-test");
        let config = function.config();
        assert_eq!(config.dword(0x00) & 0xFFFF, 0x1af4);
        assert_eq!(config.dword(0x00) >> 16, 0x1110);
        assert_eq!(config.dword(0x08), 0x0500_0001, "class 0x0500, revision 1");
        assert_eq!(config.dword(0x2C), 0x1100_1af4, "subsystem 1af4:1100");
        assert_eq!(BAR0_SIZE, 0x100);
        assert_eq!((registers::INTR_MASK, registers::INTR_STATUS), (0x00, 0x04));
        assert_eq!((registers::IV_POSITION, registers::DOORBELL), (0x08, 0x0C));
        assert_eq!(registers::doorbell_value(3, 0x1_0002), 0x0003_0002);
    }
}
