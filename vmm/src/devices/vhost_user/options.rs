//! The typed options of a vhost-user device ([`VhostUserOptions`]) and the one function that
//! parses their command-line spelling ([`VhostUserOptions::parse`]):
//!
//! - `vhost-user-blk,socket=PATH[,queues=N][,queue-size=N]`
//! - `vhost-user-fs,socket=PATH,tag=NAME[,queues=N][,queue-size=N]` (N request queues)
//! - `vhost-user-vsock,socket=PATH[,queue-size=N]`
//! - `vhost-user,socket=PATH,virtio-id=N,queues=N[,queue-size=N][,config-size=N]`

use std::path::PathBuf;
use std::time::Duration;

/// Longest virtio-fs tag (the config field is 36 bytes, NUL-padded).
pub const FS_TAG_MAX: usize = 36;
/// Queue size when none is given (QEMU's for vhost-user-blk and -fs is 128/256).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
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
    /// queue); vsock has its fixed three.
    pub queues: u16,
    /// Largest ring size the driver may choose (a power of two).
    pub queue_size: u16,
    /// How long one request may wait for the backend's reply.
    pub reply_timeout: Duration,
}

impl VhostUserOptions {
    /// Options of `kind` on `socket` with the defaults.
    pub fn new(kind: VhostUserKind, socket: impl Into<PathBuf>) -> Self {
        VhostUserOptions {
            kind,
            socket: socket.into(),
            queues: 1,
            queue_size: DEFAULT_QUEUE_SIZE,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
        }
    }

    /// Whether `spec` names a vhost-user device (`vhost-user` or `vhost-user-*`).
    pub fn is_vhost_user(spec: &str) -> bool {
        let name = spec.split(',').next().unwrap_or("");
        name == "vhost-user" || name.starts_with("vhost-user-")
    }

    /// Parses one `--device` value (see the module docs for the spellings).
    pub fn parse(spec: &str) -> Result<VhostUserOptions, String> {
        let mut items = spec.split(',');
        let device = items.next().unwrap_or("");
        let mut socket = None;
        let mut queues = None;
        let mut queue_size = DEFAULT_QUEUE_SIZE;
        let mut tag = None;
        let mut virtio_id = None;
        let mut config_size = 0u32;
        for item in items.filter(|i| !i.is_empty()) {
            let bad = |why: &str| format!("--device {device}: {item:?}: {why}");
            let number = |value: &str, max: u32| {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| bad(&format!("expected a number 1..={max}")))
            };
            match item.split_once('=') {
                Some(("socket", path)) if !path.is_empty() => socket = Some(PathBuf::from(path)),
                Some(("queues", n)) => queues = Some(number(n, 256)? as u16),
                Some(("queue-size", n)) => {
                    queue_size = Some(number(n, 32768)? as u16)
                        .filter(|n| n.is_power_of_two())
                        .ok_or_else(|| bad("expected a power of two up to 32768"))?;
                }
                Some(("tag", name)) if device == "vhost-user-fs" => {
                    if name.is_empty() || name.len() > FS_TAG_MAX {
                        return Err(bad(&format!("a tag is 1 to {FS_TAG_MAX} bytes")));
                    }
                    tag = Some(name.to_string());
                }
                Some(("virtio-id", n)) if device == "vhost-user" => {
                    virtio_id = Some(number(n, 0xFFBF)? as u16);
                }
                Some(("config-size", n)) if device == "vhost-user" => {
                    config_size = n
                        .parse()
                        .ok()
                        .filter(|n| *n <= 4096)
                        .ok_or_else(|| bad("expected a number 0..=4096"))?;
                }
                _ => return Err(bad(&format!("unknown option (have {})", usage(device)))),
            }
        }
        let socket = socket.ok_or_else(|| format!("--device {device}: socket=PATH is required"))?;
        let kind = match device {
            "vhost-user-blk" => VhostUserKind::Blk,
            "vhost-user-fs" => VhostUserKind::Fs {
                tag: tag.ok_or("--device vhost-user-fs: tag=NAME is required")?,
            },
            "vhost-user-vsock" => {
                if queues.is_some() {
                    return Err("--device vhost-user-vsock: has 3 fixed queues".into());
                }
                VhostUserKind::Vsock
            }
            "vhost-user" => {
                if queues.is_none() {
                    return Err("--device vhost-user: queues=N is required".into());
                }
                VhostUserKind::Generic {
                    virtio_id: virtio_id.ok_or("--device vhost-user: virtio-id=N is required")?,
                    config_size,
                }
            }
            _ => {
                return Err(format!(
                    "--device {device}: unknown vhost-user device (have vhost-user-blk, \
                     vhost-user-fs, vhost-user-vsock, vhost-user)"
                ))
            }
        };
        let mut options = VhostUserOptions::new(kind, socket);
        options.queues = queues.unwrap_or(1);
        options.queue_size = queue_size;
        Ok(options)
    }
}

fn usage(device: &str) -> &'static str {
    match device {
        "vhost-user-blk" => "socket=PATH, queues=N, queue-size=N",
        "vhost-user-fs" => "socket=PATH, tag=NAME, queues=N, queue-size=N",
        "vhost-user-vsock" => "socket=PATH, queue-size=N",
        _ => "socket=PATH, virtio-id=N, queues=N, queue-size=N, config-size=N",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let blk = VhostUserOptions::parse("vhost-user-blk,socket=/tmp/b.sock").unwrap();
        assert_eq!(blk.kind, VhostUserKind::Blk);
        assert_eq!(blk.socket, PathBuf::from("/tmp/b.sock"));
        assert_eq!((blk.queues, blk.queue_size), (1, 256));
        let blk =
            VhostUserOptions::parse("vhost-user-blk,socket=s,queues=4,queue-size=1024").unwrap();
        assert_eq!((blk.queues, blk.queue_size), (4, 1024));
        let fs = VhostUserOptions::parse("vhost-user-fs,socket=s,tag=share").unwrap();
        assert_eq!(
            fs.kind,
            VhostUserKind::Fs {
                tag: "share".into()
            }
        );
        let vsock = VhostUserOptions::parse("vhost-user-vsock,socket=s").unwrap();
        assert_eq!(vsock.kind, VhostUserKind::Vsock);
        let rng = VhostUserOptions::parse("vhost-user,socket=s,virtio-id=4,queues=1").unwrap();
        assert_eq!(
            rng.kind,
            VhostUserKind::Generic {
                virtio_id: 4,
                config_size: 0
            }
        );
        assert!(VhostUserOptions::is_vhost_user("vhost-user-blk,socket=x"));
        assert!(!VhostUserOptions::is_vhost_user("pci-testdev"));
    }

    #[test]
    fn refusals_name_the_problem() {
        for (spec, expected) in [
            ("vhost-user-blk", "socket=PATH is required"),
            ("vhost-user-blk,socket=s,queue-size=100", "power of two"),
            ("vhost-user-blk,socket=s,queues=0", "1..=256"),
            ("vhost-user-blk,socket=s,tag=x", "unknown option"),
            ("vhost-user-fs,socket=s", "tag=NAME is required"),
            (
                "vhost-user-fs,socket=s,tag=0123456789012345678901234567890123456",
                "1 to 36",
            ),
            ("vhost-user,socket=s,queues=1", "virtio-id=N is required"),
            ("vhost-user,socket=s,virtio-id=4", "queues=N is required"),
            ("vhost-user-vsock,socket=s,queues=2", "3 fixed queues"),
            ("vhost-user-gpu,socket=s", "unknown vhost-user device"),
        ] {
            let error = VhostUserOptions::parse(spec).unwrap_err();
            assert!(error.contains(expected), "{spec}: {error}");
        }
    }
}
