//! [`Backend`]: our vhost-user frontend connection to one backend process (the `vhost` crate's
//! `Frontend`): feature and protocol negotiation, and handing it rings that live in the ivshmem
//! shared memory, with the ivshmem eventfds as kick and call.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::path::Path;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use virtio_ivshmem::layout::QueueSetup;

/// Protocol features we use when the backend offers them.
const WANTED_PROTOCOL: VhostUserProtocolFeatures = VhostUserProtocolFeatures::MQ
    .union(VhostUserProtocolFeatures::REPLY_ACK)
    .union(VhostUserProtocolFeatures::CONFIG);

/// Errors talking to the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend answered a message we asked an acknowledgement for (REPLY_ACK) with a
    /// failure.
    #[error("the backend refused vhost-user {what}")]
    Refused {
        /// Which message.
        what: String,
    },
    /// A vhost-user request failed (the socket broke, or a malformed answer).
    #[error("vhost-user {what}: {source}")]
    Request {
        /// Which step.
        what: String,
        /// The vhost error.
        #[source]
        source: vhost::Error,
    },
    /// Duplicating an eventfd failed.
    #[error("cannot duplicate an eventfd: {0}")]
    Dup(#[source] std::io::Error),
    /// The backend reports more queues than the layout holds.
    #[error("the backend has {0} queues; the layout holds at most {max}", max = virtio_ivshmem::layout::MAX_QUEUES)]
    TooManyQueues(u64),
}

fn step(what: impl Into<String>) -> impl FnOnce(vhost::Error) -> BackendError {
    let what = what.into();
    move |source| match source {
        vhost::Error::VhostUserProtocol(vhost::vhost_user::Error::BackendInternalError) => {
            BackendError::Refused { what }
        }
        source => BackendError::Request { what, source },
    }
}

/// One queue to hand to the backend.
pub struct QueueStart<'a> {
    /// Queue index.
    pub index: u32,
    /// Where its rings are (offsets in the shared memory, validated).
    pub setup: QueueSetup,
    /// The size we advertised as maximum.
    pub max_size: u32,
    /// Where the backend starts taking available buffers (0 on a fresh queue).
    pub base: u16,
    /// The eventfd the driver rings to kick (our own vector).
    pub kick: BorrowedFd<'a>,
    /// The eventfd that interrupts the driver (its vector).
    pub call: BorrowedFd<'a>,
}

/// A connected, negotiated vhost-user backend.
pub struct Backend {
    frontend: Frontend,
    /// Virtio feature bits the backend offers (vhost-user's own bits included).
    pub features: u64,
    /// Queues the backend has.
    pub num_queues: u32,
    /// Device configuration space, when the backend offers it.
    pub config: Vec<u8>,
    /// Queues handed over and not stopped yet.
    started: Vec<u32>,
    /// REPLY_ACK was negotiated: set-up messages ask for an acknowledgement (NEED_REPLY), so
    /// a refusal is reported as the message refused, not as a broken socket later.
    reply_ack: bool,
}

/// An owned duplicate of `fd` as vmm-sys-util's EventFd (what the `vhost` crate takes).
fn eventfd_of(fd: BorrowedFd<'_>) -> Result<EventFd, BackendError> {
    let owned = fd.try_clone_to_owned().map_err(BackendError::Dup)?;
    // SAFETY: `owned` is a fresh duplicate we own; EventFd takes over its ownership.
    Ok(unsafe { EventFd::from_raw_fd(owned.into_raw_fd()) })
}

impl Backend {
    /// Connects to the backend's socket and negotiates: owner, features, protocol features,
    /// queue count (`queues` when the backend cannot say), configuration space.
    pub fn connect(
        path: &Path,
        queues: Option<u32>,
        config_size: u32,
    ) -> Result<Backend, BackendError> {
        let max = virtio_ivshmem::layout::MAX_QUEUES as u64;
        let mut frontend = Frontend::connect(path, max).map_err(step("connect"))?;
        frontend.set_owner().map_err(step("SET_OWNER"))?;
        let features = frontend.get_features().map_err(step("GET_FEATURES"))?;
        let mut protocol = VhostUserProtocolFeatures::empty();
        if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend
                .get_protocol_features()
                .map_err(step("GET_PROTOCOL_FEATURES"))?;
            protocol = offered & WANTED_PROTOCOL;
            frontend
                .set_protocol_features(protocol)
                .map_err(step("SET_PROTOCOL_FEATURES"))?;
        }
        let num_queues = if protocol.contains(VhostUserProtocolFeatures::MQ) {
            frontend.get_queue_num().map_err(step("GET_QUEUE_NUM"))?
        } else {
            queues.unwrap_or(1) as u64
        };
        let num_queues = queues.map_or(num_queues, |q| (q as u64).min(num_queues));
        if num_queues > max {
            return Err(BackendError::TooManyQueues(num_queues));
        }
        let mut config = Vec::new();
        if protocol.contains(VhostUserProtocolFeatures::CONFIG) && config_size > 0 {
            let buf = vec![0u8; config_size as usize];
            let (_, payload) = frontend
                .get_config(0, config_size, VhostUserConfigFlags::empty(), &buf)
                .map_err(step("GET_CONFIG"))?;
            config = payload.to_vec();
        }
        log::info!(
            "backend {}: features {features:#x}, protocol features {:#x}, {num_queues} queue(s)",
            path.display(),
            protocol.bits()
        );
        Ok(Backend {
            frontend,
            features,
            num_queues: num_queues as u32,
            config,
            started: Vec::new(),
            reply_ack: protocol.contains(VhostUserProtocolFeatures::REPLY_ACK),
        })
    }

    /// Sends one message that has no reply of its own, with NEED_REPLY when REPLY_ACK was
    /// negotiated, so that the backend's refusal comes back as the error of `what`.
    fn acked<T>(
        &mut self,
        what: impl Into<String>,
        send: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, BackendError> {
        if self.reply_ack {
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let result = send(&mut self.frontend);
        if self.reply_ack {
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::empty());
        }
        result.map_err(step(what))
    }

    /// The socket fd: it turns readable (EOF) when the backend goes away, since a backend never
    /// sends on it unasked.
    pub fn socket_fd(&self) -> RawFd {
        self.frontend.as_raw_fd()
    }

    /// Hands the rings to the backend: features, the shared memory as its only memory region
    /// (guest-physical 0..size, so ring and buffer offsets are its addresses), then for each
    /// queue size, addresses, base, call, kick, enable.
    pub fn start(
        &mut self,
        driver_features: u64,
        shm_fd: BorrowedFd<'_>,
        shm_va: u64,
        shm_size: u64,
        queues: &[QueueStart<'_>],
    ) -> Result<(), BackendError> {
        let vhost_bits = self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.acked("SET_FEATURES", |f| {
            f.set_features(driver_features | vhost_bits)
        })?;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: shm_size,
            userspace_addr: shm_va,
            mmap_offset: 0,
            mmap_handle: shm_fd.as_raw_fd(),
        };
        self.acked("SET_MEM_TABLE", |f| f.set_mem_table(&[region]))?;
        for q in queues {
            let i = q.index as usize;
            let s = q.setup;
            self.acked(format!("SET_VRING_NUM {i} (size {})", s.size), |f| {
                f.set_vring_num(i, s.size as u16)
            })?;
            let config = VringConfigData {
                queue_max_size: q.max_size as u16,
                queue_size: s.size as u16,
                flags: 0,
                // vhost-user ring addresses are in the frontend's address space.
                desc_table_addr: shm_va + s.desc,
                used_ring_addr: shm_va + s.used,
                avail_ring_addr: shm_va + s.avail,
                log_addr: None,
            };
            self.acked(format!("SET_VRING_ADDR {i}"), |f| {
                f.set_vring_addr(i, &config)
            })?;
            self.acked(format!("SET_VRING_BASE {i}"), |f| {
                f.set_vring_base(i, q.base)
            })?;
            let call = eventfd_of(q.call)?;
            self.acked(format!("SET_VRING_CALL {i}"), |f| {
                f.set_vring_call(i, &call)
            })?;
            let kick = eventfd_of(q.kick)?;
            self.acked(format!("SET_VRING_KICK {i}"), |f| {
                f.set_vring_kick(i, &kick)
            })?;
            self.started.push(q.index);
            if vhost_bits != 0 {
                self.acked(format!("SET_VRING_ENABLE {i}"), |f| {
                    f.set_vring_enable(i, true)
                })?;
            }
        }
        // Without REPLY_ACK none of those messages is answered, and a kick that reaches
        // vhost-user-backend's worker before its ring is enabled is read and dropped (the
        // request then waits forever). One request with a reply proves the backend applied them
        // all before the driver is told DRIVER_OK (with REPLY_ACK each was acknowledged already;
        // the round trip is kept as it costs little); then one kick per queue covers kicks that were already
        // pending (a driver that went on while a restarted backend was away). Virtio devices
        // take a spurious kick as a look at an unchanged ring.
        self.frontend
            .get_features()
            .map_err(step("GET_FEATURES (set-up barrier)"))?;
        for q in queues {
            if let Err(e) = eventfd_of(q.kick)?.write(1) {
                log::warn!("queue {}: kick after set-up failed: {e}", q.index);
            }
        }
        Ok(())
    }

    /// Stops every started queue (GET_VRING_BASE), so the backend lets go of the rings.
    pub fn stop(&mut self) {
        for q in std::mem::take(&mut self.started) {
            // Refused by the `vhost` crate itself when protocol features are off; harmless.
            let _ = self.acked("SET_VRING_ENABLE (stop)", |f| {
                f.set_vring_enable(q as usize, false)
            });
            if let Err(e) = self.frontend.get_vring_base(q as usize) {
                log::warn!("stopping queue {q}: GET_VRING_BASE failed: {e}");
            }
        }
    }
}
