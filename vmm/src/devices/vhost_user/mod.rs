//! vhost-user devices: a virtio-pci device whose queues an external backend process serves
//! (qemu-storage-daemon, virtiofsd, vhost-device-*). The VMM does only the control plane: it
//! negotiates with the backend over its UNIX socket and hands it guest RAM (SET_MEM_TABLE with
//! the memfd), the rings' addresses, the kick ioeventfds and the call irqfds. Requests and
//! buffers never pass through the VMM.
//!
//! - `options`: the typed options (their spelling is parsed in `options::device`);
//! - `kinds`: blk, fs, vsock and generic devices (virtio id, queues, configuration source);
//! - `frontend`: the vhost-user connection (the `vhost` crate's `Frontend`);
//! - `watchdog`: the deadline of the pending request (a silent backend cannot hang a vCPU);
//! - `watch`: the background thread that enforces it and notices a backend going away.
//!
//! A backend that dies, times out or refuses a request stops only its own device: the driver
//! sees DEVICE_NEEDS_RESET (0x40) in device_status and a configuration interrupt; the VM and
//! its other devices go on. There is no reconnection: the connection is made once, before the
//! seccomp filters forbid creating sockets; a restarted backend needs a restarted VM.

mod frontend;
mod kinds;
mod options;
mod watch;
mod watchdog;

use std::sync::Arc;

use super::virtio_pci::{Activation, VirtioBackend, VirtioPci, VirtioPciConfig, VirtioPciError};
use super::DeviceContext;
use crate::memory::GuestRam;
use crate::pci::BusError;

pub use frontend::{Connection, FrontendError};
pub use kinds::{ConfigSource, KindInfo, SUPPORTED_FEATURES};
pub use options::{
    VhostUserKind, VhostUserOptions, DEFAULT_QUEUE_SIZE, FS_TAG_MAX, MAX_QUEUES,
    VSOCK_DEFAULT_VECTORS,
};
pub use watchdog::RequestWatchdog;

/// Why a vhost-user device could not be added.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// Guest RAM is private: the backend could not map it.
    #[error(
        "{0}: guest RAM must be shared with the backend: give --memory SIZE,shared=on \
         (a memfd the backend maps)"
    )]
    RamNotShared(String),
    /// The backend could not be reached or negotiated with.
    #[error("{device}: {cause}")]
    Backend {
        /// The device.
        device: String,
        /// What failed.
        cause: FrontendError,
    },
    /// The transport could not be built.
    #[error(transparent)]
    Transport(#[from] VirtioPciError),
    /// The bus is full.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The watcher thread could not start.
    #[error("starting the backend watcher: {0}")]
    Thread(std::io::Error),
}

/// The backend side of a vhost-user virtio-pci device (what the transport calls).
pub struct VhostUserDevice {
    name: String,
    info: KindInfo,
    connection: Connection,
    ram: GuestRam,
    offered_features: u64,
    config: Vec<u8>,
    /// Configuration from the backend: its size, to refresh it on reset.
    config_from_backend: Option<u32>,
}

impl VhostUserDevice {
    /// Negotiates with the backend on `connection` (opened, its watchdog enforced) for the
    /// device `options` describe in a VM of `cpus` vCPUs (a blk device's default queue count);
    /// `name` is for logs.
    pub fn negotiate(
        name: &str,
        options: &VhostUserOptions,
        cpus: u32,
        ram: GuestRam,
        mut connection: Connection,
    ) -> Result<VhostUserDevice, VhostUserError> {
        let failed = |cause| VhostUserError::Backend {
            device: name.to_string(),
            cause,
        };
        connection.negotiate().map_err(failed)?;
        let queues = options.queue_count(cpus, connection.queue_num());
        let info = KindInfo::with_queues(options, queues);
        let features = connection.features();
        if features & (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1) == 0 {
            return Err(failed(connection.unsuitable(format!(
                "offers features {features:#x} without VIRTIO_F_VERSION_1 (a modern device \
                 needs it)"
            ))));
        }
        if let Some(available) = connection.queue_num() {
            if available < u64::from(info.backend_queues) {
                return Err(failed(connection.unsuitable(format!(
                    "has {available} queue(s); {name} needs {}",
                    info.backend_queues
                ))));
            }
        }
        let has_config = connection
            .protocol()
            .contains(vhost::vhost_user::message::VhostUserProtocolFeatures::CONFIG);
        let config_from_backend = match &info.config {
            ConfigSource::Backend(size) if !has_config => {
                return Err(failed(connection.unsuitable(format!(
                    "does not offer the CONFIG protocol feature; {name} reads its {size}-byte \
                     configuration from the backend"
                ))))
            }
            ConfigSource::Backend(size) => Some(*size),
            ConfigSource::BackendIfOffered(size) if has_config && *size > 0 => Some(*size),
            _ => None,
        };
        let config = match (&info.config, config_from_backend) {
            (_, Some(size)) => {
                let mut config = connection.get_config(size).map_err(failed)?;
                info.fix_config(&mut config);
                config
            }
            (ConfigSource::Built(config), None) => config.clone(),
            _ => Vec::new(),
        };
        Ok(VhostUserDevice {
            name: name.to_string(),
            offered_features: info.guest_features(features),
            info,
            connection,
            ram,
            config,
            config_from_backend,
        })
    }

    /// The kind's facts (virtio id, queues, ...).
    pub fn info(&self) -> &KindInfo {
        &self.info
    }

    /// The connection (features, protocol features).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The configuration space as the guest reads it.
    pub fn config(&self) -> &[u8] {
        &self.config
    }
}

impl VirtioBackend for VhostUserDevice {
    fn device_features(&self) -> u64 {
        self.offered_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| self.config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Some(end) = (offset as usize)
            .checked_add(data.len())
            .filter(|&end| end <= self.config.len())
        else {
            log::warn!(
                "{}: config write of {} bytes at {offset:#x} is outside the {}-byte \
                 configuration space; ignored",
                self.name,
                data.len(),
                self.config.len()
            );
            return;
        };
        if self.config_from_backend.is_none() {
            log::warn!(
                "{}: configuration space is read-only; write ignored",
                self.name
            );
            return;
        }
        match self.connection.set_config(offset as u32, data) {
            Ok(()) => self.config[offset as usize..end].copy_from_slice(data),
            Err(e) => log::warn!("{}: {e}", self.name),
        }
    }

    fn activate(&mut self, activation: Activation) -> anyhow::Result<()> {
        let queues: Vec<_> = activation
            .queues
            .iter()
            .filter(|q| q.index < self.info.backend_queues)
            .collect();
        self.connection
            .start(activation.features, &self.ram, &queues)?;
        Ok(())
    }

    fn reset(&mut self) {
        if self.connection.is_broken() {
            return;
        }
        self.connection.stop();
        // The backend's configuration may have changed while the driver was away (a resized
        // disk): the next driver reads it fresh.
        if let Some(size) = self.config_from_backend {
            match self.connection.get_config(size) {
                Ok(mut config) => {
                    self.info.fix_config(&mut config);
                    self.config = config;
                }
                Err(e) => log::warn!("{}: {e}", self.name),
            }
        }
    }
}

/// Connects to the backend, builds the virtio-pci device, plugs it into bus 0 and starts its
/// watcher thread. `index` numbers devices of the same kind in logs (`vhost-user-blk0`).
pub fn add(
    ctx: &DeviceContext,
    options: &VhostUserOptions,
    index: usize,
) -> Result<Arc<VirtioPci>, VhostUserError> {
    let name = format!("{}{index}", KindInfo::of(options).name);
    if !ctx.ram.is_shareable() {
        return Err(VhostUserError::RamNotShared(name));
    }
    let backend_error = |cause| VhostUserError::Backend {
        device: name.clone(),
        cause,
    };
    let connection =
        Connection::open(&options.socket, options.reply_timeout).map_err(backend_error)?;
    // The watcher runs before the first request: it is what bounds a request's wait.
    let slot: watch::DeviceSlot = Default::default();
    let err_fds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let watched = watch::Watched {
        device: slot.clone(),
        socket: connection.socket_fd().map_err(backend_error)?,
        path: options.socket.clone(),
        watchdog: connection.watchdog().clone(),
        err_fds: err_fds.clone(),
    };
    ctx.threads
        .spawn(&format!("{name}-watch"), move |stop| {
            watch::run(watched, stop)
        })
        .map_err(VhostUserError::Thread)?;
    let watchdog = connection.watchdog().clone();
    let device = VhostUserDevice::negotiate(
        &name,
        options,
        ctx.machine.cpus,
        ctx.ram.clone(),
        connection,
    )?;
    // The queue count as negotiated (a blk device's default depends on the backend).
    let info = device.info().clone();
    let config = VirtioPciConfig {
        name: name.clone(),
        virtio_id: info.virtio_id,
        class_code: info.class_code,
        queue_max_sizes: vec![options.queue_size; info.guest_queues as usize],
        device_config_len: device.config().len() as u32,
        msix_vectors: options.vector_count(),
    };
    let (function, pci) = VirtioPci::create(config, Box::new(device), ctx.interrupts.clone())?;
    ctx.pci.add_device(function)?;
    *err_fds.lock().unwrap_or_else(|e| e.into_inner()) = pci.err_fds().to_vec();
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&pci);
    watchdog.nudge();
    log::info!(
        "{name}: virtio id {} on {} ({} queue(s) of up to {}, {} MSI-X vectors)",
        info.virtio_id,
        options.socket.display(),
        info.guest_queues,
        options.queue_size,
        options.vector_count().unwrap_or(info.guest_queues + 1)
    );
    Ok(pci)
}
