//! The typed options of a vhost-user device ([`VhostUserOptions`]). Their command-line spelling
//! (`--device vhost-user-blk,socket=PATH,...`) is parsed at the edge, in `options::device`.

use std::path::PathBuf;
use std::time::Duration;

/// Longest virtio-fs tag (the config field is 36 bytes, NUL-padded).
pub const FS_TAG_MAX: usize = 36;
/// Queue size when none is given (QEMU's for vhost-user-blk and -fs is 128/256).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Most queues `queues=` accepts, and most a blk device gets by default (one per vCPU).
pub const MAX_QUEUES: u16 = 256;
/// MSI-X vectors of a vsock device when none are given: configuration changes and one shared
/// by its queues (QEMU's `vhost-user-vsock-pci` default).
pub const VSOCK_DEFAULT_VECTORS: u16 = 2;
/// How long a vCPU waits for a backend's reply before giving up on it.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which device a vhost-user backend serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VhostUserKind {
    /// virtio-blk (id 2); configuration from the backend (GET_CONFIG).
    Blk,
    /// virtio-fs (id 26); configuration built here: the tag and the request queue count.
    Fs {
        /// The mount tag the guest uses (`mount -t virtiofs TAG /mnt`).
        tag: String,
    },
    /// virtio-vsock (id 19); configuration (the guest CID) from the backend.
    Vsock,
    /// Any device by virtio id; configuration from the backend when it offers CONFIG.
    Generic {
        /// Virtio device id.
        virtio_id: u16,
        /// Bytes of configuration space to ask the backend for (0: none).
        config_size: u32,
    },
}

/// A `--device vhost-user-*` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhostUserOptions {
    /// The device kind.
    pub kind: VhostUserKind,
    /// The backend's listening UNIX socket.
    pub socket: PathBuf,
    /// Queues: blk and generic, all of them; fs, the request queues (plus one high-priority
    /// queue); vsock has its fixed three. `None`: the kind's default ([`VhostUserOptions::queue_count`]).
    pub queues: Option<u16>,
    /// Largest ring size the driver may choose (a power of two).
    pub queue_size: u16,
    /// MSI-X vectors (`vectors=N`, 2..=2048). `None`: the kind's default
    /// ([`VhostUserOptions::vector_count`]).
    pub vectors: Option<u16>,
    /// How long one request may wait for the backend's reply.
    pub reply_timeout: Duration,
}

impl VhostUserOptions {
    /// Options of `kind` on `socket` with the defaults.
    pub fn new(kind: VhostUserKind, socket: impl Into<PathBuf>) -> Self {
        VhostUserOptions {
            kind,
            socket: socket.into(),
            queues: None,
            queue_size: DEFAULT_QUEUE_SIZE,
            vectors: None,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }

    /// The queue count the device gets. Given (`queues=N`): that. Otherwise blk gets one
    /// queue per vCPU, as QEMU's `vhost-user-blk-pci` (its `num-queues` defaults to the vCPU
    /// count), but no more than the backend serves (`backend_queues`: GET_QUEUE_NUM, `None`
    /// when the backend has no MQ protocol feature, i.e. one); where QEMU would stop with
    /// "the maximum number of queues supported by the backend is N", we take N. Other
    /// kinds: 1 (fs: one request queue, as QEMU's `num-request-queues`).
    pub fn queue_count(&self, cpus: u32, backend_queues: Option<u64>) -> u16 {
        if let Some(queues) = self.queues {
            return queues;
        }
        match self.kind {
            VhostUserKind::Blk => {
                let backend = backend_queues.unwrap_or(1).max(1);
                u64::from(cpus).clamp(1, u64::from(MAX_QUEUES)).min(backend) as u16
            }
            _ => 1,
        }
    }

    /// The MSI-X vectors of the device (`None`: the transport's default). Given (`vectors=N`):
    /// that; otherwise one per queue plus one for configuration changes, except vsock: 2, as QEMU's
    /// `vhost-user-vsock-pci`. With 2, Linux shares one vector among rx, tx and event, so the
    /// used-buffer signals of a request and its answer that come close together (a round
    /// trip's tx completion and rx) are one interrupt; with a vector per queue they are two
    /// (measured on the nested bed: 2.2 device interrupts per vsock round trip against QEMU's
    /// 1.5, docs/virtio-pci.md).
    pub fn vector_count(&self) -> Option<u16> {
        match (self.vectors, &self.kind) {
            (Some(vectors), _) => Some(vectors),
            (None, VhostUserKind::Vsock) => Some(VSOCK_DEFAULT_VECTORS),
            (None, _) => None,
        }
    }
}
