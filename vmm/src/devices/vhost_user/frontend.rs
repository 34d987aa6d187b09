//! [`Connection`]: our side of one vhost-user socket (the `vhost` crate's `Frontend`), the
//! control plane of one device. Everything here runs on the thread that touches the device's
//! registers (the main thread at start-up, then vCPU threads), so every request is bounded by
//! the [`RequestWatchdog`], and a request that fails or times out leaves the connection
//! *broken* (the reply stream can no longer be trusted); a broken connection makes no further
//! requests.
//!
//! The message sequence follows the vhost-user specification and what QEMU sends:
//! connect: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (MQ),
//! GET_CONFIG (CONFIG); DRIVER_OK: SET_FEATURES, SET_MEM_TABLE, per queue SET_VRING_NUM,
//! SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR, then
//! SET_VRING_ENABLE; reset: SET_VRING_ENABLE 0 and GET_VRING_BASE per started queue.
//! (vhost-bridge's `backend.rs` does the same for rings in ivshmem memory; the two differ in
//! where rings live and how their addresses translate.)

use crate::devices::virtio_pci::QueueActivation;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use super::watchdog::RequestWatchdog;
use crate::memory::GuestRam;

/// Protocol features we use when the backend offers them.
const WANTED_PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::MQ
    .union(VhostUserProtocolFeatures::REPLY_ACK)
    .union(VhostUserProtocolFeatures::CONFIG);

/// Most queues a backend may report (the transport's notify page holds 1024).
const MAX_QUEUES: u64 = 1024;

/// Why talking to the backend failed. Each message carries its cause (so no `source()`:
/// `anyhow`'s `{:#}` would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// Connecting to the socket failed.
    #[error("vhost-user backend at {socket}: connecting: {cause}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The vhost crate's error.
        cause: vhost::Error,
    },
    /// A request failed (refused, timed out, or the socket broke).
    #[error("vhost-user backend at {socket}: {request}: {cause}")]
    Request {
        /// The socket.
        socket: PathBuf,
        /// Which request.
        request: String,
        /// The vhost crate's error.
        cause: vhost::Error,
    },
    /// A socket option or fd duplication failed.
    #[error("vhost-user backend at {socket}: {what}: {cause}")]
    Io {
        /// The socket.
        socket: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        cause: std::io::Error,
    },
    /// The backend cannot serve this device.
    #[error("vhost-user backend at {socket}: {why}")]
    Unsuitable {
        /// The socket.
        socket: PathBuf,
        /// What is missing.
        why: String,
    },
    /// An earlier failure left the connection unusable.
    #[error("vhost-user backend at {socket}: connection unusable since: {since}")]
    Broken {
        /// The socket.
        socket: PathBuf,
        /// The first failure.
        since: String,
    },
}

/// A connected, negotiated vhost-user backend.
pub struct Connection {
    frontend: Frontend,
    watchdog: Arc<RequestWatchdog>,
    socket: PathBuf,
    features: u64,
    protocol: VhostUserProtocolFeatures,
    queue_num: Option<u64>,
    started: Vec<usize>,
    broken: Option<String>,
}

/// An owned duplicate of `fd` as the `vhost` crate takes it.
fn duplicate(fd: &EventFd) -> std::io::Result<EventFd> {
    fd.try_clone()
}

impl Connection {
    /// Connects to `socket`; no request yet (start the watcher on [`Connection::watchdog`]
    /// first, then [`Connection::negotiate`]). Each request may take at most `timeout`.
    pub fn open(socket: &Path, timeout: Duration) -> Result<Connection, FrontendError> {
        let frontend =
            Frontend::connect(socket, MAX_QUEUES).map_err(|cause| FrontendError::Connect {
                socket: socket.to_path_buf(),
                cause,
            })?;
        let watchdog = RequestWatchdog::new(timeout).map_err(|cause| FrontendError::Io {
            socket: socket.to_path_buf(),
            what: "creating the watchdog's eventfd",
            cause,
        })?;
        Ok(Connection {
            frontend,
            watchdog: Arc::new(watchdog),
            socket: socket.to_path_buf(),
            features: 0,
            protocol: VhostUserProtocolFeatures::empty(),
            queue_num: None,
            started: Vec::new(),
            broken: None,
        })
    }

    /// The deadline of the pending request, for the watcher thread to enforce.
    pub fn watchdog(&self) -> &Arc<RequestWatchdog> {
        &self.watchdog
    }

    /// Owner, features, protocol features and queue count.
    pub fn negotiate(&mut self) -> Result<(), FrontendError> {
        let connection = self;
        connection.request("SET_OWNER", |f| f.set_owner())?;
        connection.features = connection.request("GET_FEATURES", |f| f.get_features())?;
        if connection.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered =
                connection.request("GET_PROTOCOL_FEATURES", |f| f.get_protocol_features())?;
            let protocol = offered & WANTED_PROTOCOL;
            connection.request("SET_PROTOCOL_FEATURES", |f| {
                f.set_protocol_features(protocol)
            })?;
            connection.protocol = protocol;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every request is then acknowledged: a refusal is seen where it happens.
                connection
                    .frontend
                    .set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if protocol.contains(VhostUserProtocolFeatures::MQ) {
                connection.queue_num =
                    Some(connection.request("GET_QUEUE_NUM", |f| f.get_queue_num())?);
            }
        }
        log::info!(
            "vhost-user backend at {}: features {:#x}, protocol features {:#x}, queues {:?}",
            connection.socket.display(),
            connection.features,
            connection.protocol.bits(),
            connection.queue_num
        );
        Ok(())
    }

    /// The backend's socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Virtio features the backend offers (VHOST_USER_F_PROTOCOL_FEATURES included).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The protocol features both sides use.
    pub fn protocol(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// How many queues the backend has, if it says (MQ).
    pub fn queue_num(&self) -> Option<u64> {
        self.queue_num
    }

    /// Whether an earlier failure made the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// A duplicate of the socket fd, for watching it for hang-up.
    pub fn socket_fd(&self) -> Result<OwnedFd, FrontendError> {
        // SAFETY: the frontend's socket stays open while we borrow it for the duplication.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.frontend.as_raw_fd()) };
        fd.try_clone_to_owned().map_err(|cause| FrontendError::Io {
            socket: self.socket.clone(),
            what: "duplicating the socket",
            cause,
        })
    }

    /// A backend that cannot serve the device (said at start-up).
    pub fn unsuitable(&self, why: impl Into<String>) -> FrontendError {
        FrontendError::Unsuitable {
            socket: self.socket.clone(),
            why: why.into(),
        }
    }

    /// Runs one request; a failure breaks the connection.
    fn request<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, FrontendError> {
        if let Some(since) = &self.broken {
            return Err(FrontendError::Broken {
                socket: self.socket.clone(),
                since: since.clone(),
            });
        }
        self.watchdog.arm(what);
        let result = f(&mut self.frontend);
        self.watchdog.disarm();
        result.map_err(|cause| {
            let error = FrontendError::Request {
                socket: self.socket.clone(),
                request: what.to_string(),
                cause,
            };
            // The watchdog's reason is the real one when it cut the socket.
            let why = self.watchdog.expired().unwrap_or_else(|| error.to_string());
            self.broken = Some(why);
            error
        })
    }

    /// `size` bytes of the device configuration space (GET_CONFIG; needs CONFIG).
    pub fn get_config(&mut self, size: u32) -> Result<Vec<u8>, FrontendError> {
        let buf = vec![0u8; size as usize];
        let (_, payload) = self.request("GET_CONFIG", |f| {
            f.get_config(0, size, VhostUserConfigFlags::empty(), &buf)
        })?;
        Ok(payload.to_vec())
    }

    /// The driver wrote `data` at `offset` of the configuration space (SET_CONFIG).
    pub fn set_config(&mut self, offset: u32, data: &[u8]) -> Result<(), FrontendError> {
        self.request("SET_CONFIG", |f| {
            f.set_config(offset, VhostUserConfigFlags::empty(), data)
        })
    }

    /// Starts `queues`: features, the memory table, then each ring, then enables them.
    pub fn start(
        &mut self,
        driver_features: u64,
        ram: &GuestRam,
        queues: &[&QueueActivation],
    ) -> Result<(), FrontendError> {
        let protocol_bit = self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.request("SET_FEATURES", |f| {
            f.set_features(driver_features | protocol_bit)
        })?;
        let regions = ram
            .regions()
            .iter()
            .map(|r| {
                let (fd, offset) = r
                    .file()
                    .ok_or_else(|| self.unsuitable("guest RAM is not shared"))?;
                Ok(VhostUserMemoryRegionInfo {
                    guest_phys_addr: r.guest_addr,
                    memory_size: r.size(),
                    userspace_addr: r.host_addr(),
                    mmap_offset: offset,
                    mmap_handle: fd.as_raw_fd(),
                })
            })
            .collect::<Result<Vec<_>, FrontendError>>()?;
        self.request("SET_MEM_TABLE", |f| f.set_mem_table(&regions).map(|_| ()))?;
        for q in queues {
            let i = usize::from(q.index);
            let size = u64::from(q.size);
            // The rings' extents (virtio 1.x §2.7): the backend maps them whole.
            let translate = |what: &str, gpa: u64, len: u64| {
                ram.host_address(gpa, len).ok_or_else(|| {
                    self.unsuitable(format!(
                        "queue {i}: {what} at {gpa:#x} (+{len:#x}) is not in guest RAM"
                    ))
                })
            };
            let config = VringConfigData {
                queue_max_size: q.size,
                queue_size: q.size,
                flags: 0,
                desc_table_addr: translate("descriptor table", q.desc, 16 * size)?,
                avail_ring_addr: translate("driver ring", q.driver, 6 + 2 * size)?,
                used_ring_addr: translate("device ring", q.device, 6 + 8 * size)?,
                log_addr: None,
            };
            let io = |what: &'static str| {
                let socket = self.socket.clone();
                move |cause| FrontendError::Io {
                    socket,
                    what,
                    cause,
                }
            };
            let kick = duplicate(&q.kick).map_err(io("duplicating an eventfd"))?;
            let call = duplicate(&q.call).map_err(io("duplicating an eventfd"))?;
            let err = duplicate(&q.err).map_err(io("duplicating an eventfd"))?;
            self.request(&format!("SET_VRING_NUM {i}"), |f| {
                f.set_vring_num(i, q.size)
            })?;
            self.request(&format!("SET_VRING_BASE {i}"), |f| f.set_vring_base(i, 0))?;
            self.request(&format!("SET_VRING_ADDR {i}"), |f| {
                f.set_vring_addr(i, &config)
            })?;
            self.request(&format!("SET_VRING_KICK {i}"), |f| {
                f.set_vring_kick(i, &kick)
            })?;
            self.request(&format!("SET_VRING_CALL {i}"), |f| {
                f.set_vring_call(i, &call)
            })?;
            self.request(&format!("SET_VRING_ERR {i}"), |f| f.set_vring_err(i, &err))?;
            self.started.push(i);
        }
        if protocol_bit != 0 {
            for q in queues {
                let i = usize::from(q.index);
                self.request(&format!("SET_VRING_ENABLE {i}"), |f| {
                    f.set_vring_enable(i, true)
                })?;
            }
        }
        // Without REPLY_ACK nothing above is answered: one request with a reply proves the
        // backend applied them all before the driver goes on. Then one kick per queue, for a
        // kick the backend may have read before its ring was enabled (a spurious kick is a
        // look at an unchanged ring).
        if !self.protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            self.request("GET_FEATURES (set-up barrier)", |f| f.get_features())?;
        }
        for q in queues {
            let _ = q.kick.write(1);
        }
        Ok(())
    }

    /// Stops every started queue (GET_VRING_BASE), so the backend lets go of the rings.
    pub fn stop(&mut self) {
        let protocol_bit = self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        for i in std::mem::take(&mut self.started) {
            if protocol_bit != 0 {
                if let Err(e) = self.request(&format!("SET_VRING_ENABLE {i} off"), |f| {
                    f.set_vring_enable(i, false)
                }) {
                    log::warn!("{e}");
                }
            }
            if let Err(e) = self.request(&format!("GET_VRING_BASE {i}"), |f| f.get_vring_base(i)) {
                log::warn!("{e}");
            }
        }
    }
}
