//! A virtio 1.x PCI transport ("modern", non-transitional): the PCI function, its registers,
//! and the wiring that keeps the data path out of the VMM.
//!
//! - `capabilities`: the vendor capabilities and the BAR layout (QEMU's: BAR4, 16 KiB);
//! - `common`: the common configuration registers as a state machine;
//! - `backend`: the [`VirtioBackend`] trait the device's server implements (vhost-user today).
//!
//! Identity: vendor 0x1AF4, device 0x1040 + virtio id, revision 1, subsystem 0x1AF4:0x1100 (as
//! QEMU's modern-only devices). No INTx: interrupts are MSI-X only, by default one vector per
//! queue plus one for configuration changes (`VirtioPciConfig::msix_vectors` may ask for fewer:
//! Linux then takes one for configuration changes and shares one among its queues), table and
//! PBA in an exclusive BAR1.
//!
//! What never reaches the VMM once the driver is running: a queue notification is a guest
//! write to the queue's notify address, which KVM turns into a signal on the queue's kick
//! eventfd (ioeventfd); a used-buffer interrupt is a signal on the eventfd of the queue's MSI-X
//! vector, which KVM injects (irqfd). The backend gets both eventfds at DRIVER_OK.
//!
//! Lock order: the device's state lock → the backend's own locks. Raising the configuration
//! vector (MSI-X state) happens with the state lock released; a failure is reported through
//! atomics (`device_failed` takes no lock), so a watcher thread can report while a vCPU holds
//! the state lock waiting on the backend.

mod backend;
mod capabilities;
mod common;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_NEEDS_RESET};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::interrupts::InterruptRouter;
use crate::memory::{IoAccess, MemoryRegion, RegionOps};
use crate::pci::{Bar, ConfigError, FunctionError, Msix, MsixError, PciFunction, PciIds};

pub use backend::{Activation, QueueActivation, VirtioBackend};
pub use capabilities::{NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER};
pub use common::{reg as common_reg, CommonConfig, QueueRegs, StatusChange, NO_VECTOR};

/// Virtio vendor id.
pub const VENDOR_ID: u16 = 0x1AF4;
/// Device id of a modern device: this plus its virtio id.
pub const DEVICE_ID_BASE: u16 = 0x1040;
/// ISR bit: a used buffer (unused with MSI-X).
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// What the transport needs to know about the device it carries.
#[derive(Clone, Debug)]
pub struct VirtioPciConfig {
    /// Name in logs (e.g. `vhost-user-blk0`).
    pub name: String,
    /// Virtio device id (2 block, 19 vsock, 26 fs, ...).
    pub virtio_id: u16,
    /// PCI class code (class, subclass, programming interface), e.g. 0x018000.
    pub class_code: u32,
    /// Each queue's maximum size (a power of two), by index.
    pub queue_max_sizes: Vec<u16>,
    /// Bytes of device configuration the driver may read.
    pub device_config_len: u32,
    /// MSI-X vectors (the table's size). `None`: one per queue plus one for configuration
    /// changes. Fewer than that makes Linux share one vector among all queues (QEMU's
    /// `vectors=`); at least 2, since without INTx a Linux driver needs one for configuration
    /// changes and one for its queues.
    pub msix_vectors: Option<u16>,
}

/// Most MSI-X vectors a function may have (the table size field's limit).
pub const MAX_MSIX_VECTORS: u16 = 2048;

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// More queues than the notify page holds, or none.
    #[error("{name}: {count} queues (have 1..={max})", max = capabilities::MAX_QUEUES)]
    QueueCount {
        /// The device.
        name: String,
        /// Queues asked for.
        count: usize,
    },
    /// A queue's maximum size is not a power of two in 1..=32768.
    #[error("{name}: queue size {size} is not a power of two up to 32768")]
    QueueSize {
        /// The device.
        name: String,
        /// The size asked for.
        size: u16,
    },
    /// A vector count outside 2..=2048.
    #[error("{name}: {count} MSI-X vectors (have 2..={MAX_MSIX_VECTORS}: one for configuration changes, one or more for the queues)")]
    VectorCount {
        /// The device.
        name: String,
        /// Vectors asked for.
        count: u16,
    },
    /// MSI-X set-up failed.
    #[error(transparent)]
    Msix(#[from] MsixError),
    /// A BAR or capability was refused.
    #[error(transparent)]
    Function(#[from] FunctionError),
    /// Config space has no room for the capabilities.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An eventfd could not be created.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
}

struct State {
    common: CommonConfig,
    backend: Box<dyn VirtioBackend>,
    /// `VirtioPci::failed` has been applied to `common` (NEEDS_RESET, generation).
    failure_applied: bool,
}

/// A virtio-pci device: the transport's state and the eventfds it hands to the backend.
pub struct VirtioPci {
    name: String,
    state: Mutex<State>,
    /// The device failed (set without the state lock: a watcher must be able to report while
    /// a vCPU holds the lock waiting on the backend); applied to the registers at the next
    /// locked access.
    failed: AtomicBool,
    /// ISR status, read-to-clear.
    isr: AtomicU8,
    /// The configuration-change vector, mirrored out of the lock for the same reason.
    config_vector: AtomicU16,
    msix: Msix,
    /// The MSI-X source of each vector: what the backend signals to interrupt the driver.
    vector_fds: Vec<Arc<EventFd>>,
    /// The "call" of a queue the driver gave no vector: signalled, never read.
    no_vector_fd: Arc<EventFd>,
    /// Each queue's kick (ioeventfd on its notify address).
    kick_fds: Vec<Arc<EventFd>>,
    /// Each queue's error eventfd (a backend's SET_VRING_ERR).
    err_fds: Vec<Arc<EventFd>>,
}

impl VirtioPci {
    /// Builds the device's PCI function (plug it with `PciBus::add_device`) around `backend`.
    pub fn create(
        config: VirtioPciConfig,
        backend: Box<dyn VirtioBackend>,
        router: Arc<InterruptRouter>,
    ) -> Result<(PciFunction, Arc<VirtioPci>), VirtioPciError> {
        let name = config.name.clone();
        let queues = config.queue_max_sizes.len();
        if queues == 0 || queues > capabilities::MAX_QUEUES {
            return Err(VirtioPciError::QueueCount {
                name,
                count: queues,
            });
        }
        if let Some(&size) = config.queue_max_sizes.iter().find(|s| !s.is_power_of_two()) {
            return Err(VirtioPciError::QueueSize { name, size });
        }
        let vectors = match config.msix_vectors {
            None => queues + 1,
            Some(count) if (2..=MAX_MSIX_VECTORS).contains(&count) => usize::from(count),
            Some(count) => return Err(VirtioPciError::VectorCount { name, count }),
        };
        let msix = Msix::new(&name, vectors, router)?;
        let new_fd = || {
            EventFd::new(EFD_NONBLOCK)
                .map(Arc::new)
                .map_err(VirtioPciError::EventFd)
        };
        let mut vector_fds = Vec::with_capacity(vectors);
        for vector in 0..vectors {
            let fd = new_fd()?;
            msix.set_vector_source(vector, Some(fd.clone()))?;
            vector_fds.push(fd);
        }
        let kick_fds = (0..queues)
            .map(|_| new_fd())
            .collect::<Result<Vec<_>, _>>()?;
        let err_fds = (0..queues)
            .map(|_| new_fd())
            .collect::<Result<Vec<_>, _>>()?;
        let common = CommonConfig::new(
            &name,
            backend.device_features(),
            &config.queue_max_sizes,
            vectors as u16,
        );
        let device = Arc::new(VirtioPci {
            name: name.clone(),
            state: Mutex::new(State {
                common,
                backend,
                failure_applied: false,
            }),
            failed: AtomicBool::new(false),
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            msix: msix.clone(),
            vector_fds,
            no_vector_fd: new_fd()?,
            kick_fds,
            err_fds,
        });

        let mut function = PciFunction::new(
            &name,
            PciIds {
                vendor_id: VENDOR_ID,
                device_id: DEVICE_ID_BASE + config.virtio_id,
                revision: 1,
                class: (config.class_code >> 16) as u8,
                subclass: (config.class_code >> 8) as u8,
                prog_if: config.class_code as u8,
                subsystem_vendor_id: VENDOR_ID,
                subsystem_id: 0x1100,
            },
        );
        let bar = MemoryRegion::container(&format!("{name}-virtio"), capabilities::BAR_SIZE);
        let part = |which: Part, suffix: &str, size: u64, access: IoAccess| {
            MemoryRegion::io(
                &format!("{name}-{suffix}"),
                size,
                Arc::new(PartOps {
                    device: device.clone(),
                    which,
                }),
                access,
            )
        };
        let common_region = part(
            Part::Common,
            "common",
            capabilities::PAGE,
            IoAccess::sizes(1, 8),
        );
        let isr_region = part(Part::Isr, "isr", capabilities::PAGE, IoAccess::sizes(1, 4));
        let device_region = part(
            Part::Device,
            "device-cfg",
            capabilities::PAGE,
            IoAccess::sizes(1, 8),
        );
        let notify_region = part(
            Part::Notify,
            "notify",
            capabilities::PAGE,
            IoAccess::sizes(1, 4),
        );
        for (queue, fd) in device.kick_fds.iter().enumerate() {
            // Any width, any value: the address alone names the queue.
            let offset = queue as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
            notify_region.add_eventfd(offset, 0, None, fd.clone());
        }
        bar.add_subregion(capabilities::COMMON_OFFSET, &common_region, 0);
        bar.add_subregion(capabilities::ISR_OFFSET, &isr_region, 0);
        bar.add_subregion(capabilities::DEVICE_OFFSET, &device_region, 0);
        bar.add_subregion(capabilities::NOTIFY_OFFSET, &notify_region, 0);
        function.add_msix(&msix, capabilities::MSIX_BAR_INDEX)?;
        capabilities::add_all(function.config_mut(), config.device_config_len)?;
        function.set_bar(capabilities::BAR_INDEX as usize, Bar::memory64(bar, true))?;
        Ok((function, device))
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's MSI-X state.
    pub fn msix(&self) -> &Msix {
        &self.msix
    }

    /// Queue `index`'s kick eventfd (what the guest's notify write signals).
    pub fn kick_fd(&self, index: usize) -> Option<&Arc<EventFd>> {
        self.kick_fds.get(index)
    }

    /// Each queue's error eventfd (watched for a backend reporting a broken ring).
    pub fn err_fds(&self) -> &[Arc<EventFd>] {
        &self.err_fds
    }

    /// The MSI-X source eventfd of `vector`.
    pub fn vector_fd(&self, vector: usize) -> Option<&Arc<EventFd>> {
        self.vector_fds.get(vector)
    }

    /// The device status register as the driver would read it.
    pub fn status(&self) -> u8 {
        self.lock().common.status()
    }

    /// Runs `f` on the backend, under the device's lock (tests and diagnostics).
    pub fn with_backend<R>(&self, f: impl FnOnce(&mut dyn VirtioBackend) -> R) -> R {
        f(self.lock().backend.as_mut())
    }

    /// The device can no longer work (its backend went away or broke a ring): log `why`, set
    /// DEVICE_NEEDS_RESET and raise the configuration interrupt, once per driver session. The
    /// rest of the VM carries on. Takes no lock a backend request holds, so a watcher thread
    /// may call it while a vCPU waits on the backend.
    pub fn device_failed(&self, why: &str) {
        if self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        log::error!(
            "{}: {why}; the device needs a reset (DEVICE_NEEDS_RESET), the VM goes on",
            self.name
        );
        self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
        self.raise_config(self.config_vector.load(Ordering::Acquire));
    }

    /// The backend's configuration changed: bump the generation and tell the driver.
    pub fn config_changed(&self) {
        self.lock().common.config_changed();
        self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
        self.raise_config(self.config_vector.load(Ordering::Acquire));
    }

    fn raise_config(&self, vector: u16) {
        if vector != NO_VECTOR {
            self.msix.notify(vector as usize);
        }
    }

    /// The state, with a failure reported meanwhile applied to the registers.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.failure_applied && self.failed.load(Ordering::Acquire) {
            state.common.set_needs_reset();
            state.failure_applied = true;
        }
        state
    }

    fn common_write(&self, offset: u64, size: u32, value: u64) {
        let mut state = self.lock();
        match state.common.write(offset, size, value) {
            StatusChange::None => {}
            StatusChange::Reset => {
                self.isr.store(0, Ordering::Release);
                self.failed.store(false, Ordering::Release);
                state.failure_applied = false;
                state.backend.reset();
                // Signals the backend sent before it stopped must not fire into the next
                // driver session: drain them.
                for fd in self.kick_fds.iter().chain(&self.err_fds) {
                    let _ = fd.read();
                }
            }
            StatusChange::DriverOk => {
                if let Err(why) = self.activate(&mut state) {
                    drop(state);
                    self.device_failed(&format!("{why:#}"));
                    return;
                }
            }
        }
        self.config_vector
            .store(state.common.msix_config(), Ordering::Release);
    }

    fn activate(&self, state: &mut State) -> anyhow::Result<()> {
        let mut queues = Vec::new();
        for (index, regs) in state.common.queues().iter().enumerate() {
            if !regs.enabled {
                continue;
            }
            regs.check()
                .map_err(|why| anyhow::anyhow!("queue {index}: {why}"))?;
            let call = match self.vector_fds.get(regs.msix_vector as usize) {
                Some(fd) => fd.clone(),
                None => self.no_vector_fd.clone(),
            };
            queues.push(QueueActivation {
                index: index as u16,
                size: regs.size,
                desc: regs.desc,
                driver: regs.driver,
                device: regs.device,
                kick: self.kick_fds[index].clone(),
                call,
                err: self.err_fds[index].clone(),
            });
        }
        let activation = Activation {
            features: state.common.driver_features(),
            queues,
        };
        log::info!(
            "{}: DRIVER_OK with features {:#x}, {} queue(s)",
            self.name,
            activation.features,
            activation.queues.len()
        );
        state.backend.activate(activation)
    }

    fn read(&self, which: Part, offset: u64, size: u32) -> u64 {
        match which {
            Part::Common => self.lock().common.read(offset, size),
            // Read-to-clear.
            Part::Isr if offset == 0 => u64::from(self.isr.swap(0, Ordering::AcqRel)),
            Part::Isr => 0,
            Part::Device => {
                let mut data = [0u8; 8];
                let len = size.min(8) as usize;
                self.lock().backend.read_config(offset, &mut data[..len]);
                u64::from_le_bytes(data)
            }
            Part::Notify => 0,
        }
    }

    fn write(&self, which: Part, offset: u64, size: u32, value: u64) {
        match which {
            Part::Common => self.common_write(offset, size, value),
            Part::Isr => {}
            Part::Device => {
                let bytes = value.to_le_bytes();
                let mut state = self.lock();
                if state.common.status() & VIRTIO_CONFIG_S_NEEDS_RESET as u8 != 0 {
                    return;
                }
                state
                    .backend
                    .write_config(offset, &bytes[..size.min(8) as usize]);
            }
            Part::Notify => {
                // KVM's ioeventfd catches these; one that reaches us (before a commit, or a
                // misaligned address) is passed on by hand.
                let queue = (offset / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
                let live = self.lock().common.status() & VIRTIO_CONFIG_S_DRIVER_OK as u8 != 0;
                if let (true, Some(fd)) = (live, self.kick_fds.get(queue)) {
                    let _ = fd.write(1);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Common,
    Isr,
    Device,
    Notify,
}

struct PartOps {
    device: Arc<VirtioPci>,
    which: Part,
}

impl RegionOps for PartOps {
    fn read(&self, offset: u64, size: u32) -> u64 {
        self.device.read(self.which, offset, size)
    }

    fn write(&self, offset: u64, size: u32, value: u64) {
        self.device.write(self.which, offset, size, value)
    }
}
