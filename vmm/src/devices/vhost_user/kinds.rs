//! What differs between vhost-user device kinds: virtio id, PCI class, queue counts, where
//! the configuration space comes from, and the feature bits the transport lets through.

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_SECURE_ERASE, VIRTIO_BLK_F_ZONED};

use super::options::{VhostUserKind, VhostUserOptions, FS_TAG_MAX};

/// Feature bits a guest may see: the device-specific bits (0..=23), indirect descriptors,
/// event index, VERSION_1, IN_ORDER and ORDER_PLATFORM. Left out: vhost-user's own
/// PROTOCOL_FEATURES bit (30), ACCESS_PLATFORM (no IOMMU), packed rings and
/// NOTIFICATION_DATA/RING_RESET/ADMIN_VQ (the transport does not implement them), and the
/// legacy NOTIFY_ON_EMPTY/ANY_LAYOUT.
pub const SUPPORTED_FEATURES: u64 = 0x00FF_FFFF | 1 << 28 | 1 << 29 | 1 << 32 | 1 << 35 | 1 << 36;

/// virtio_blk_config as QEMU 7.2 sends it (up to write_zeroes_may_unmap and its padding):
/// asking for more makes libvhost-user backends refuse GET_CONFIG.
const BLK_CONFIG_SIZE: u32 = 60;
/// Offset of virtio_blk_config.num_queues.
const BLK_NUM_QUEUES: usize = 34;
/// virtio_vsock_config: the guest CID (u64).
const VSOCK_CONFIG_SIZE: u32 = 8;

/// Where the device configuration space comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// GET_CONFIG of this many bytes; the backend must offer CONFIG.
    Backend(u32),
    /// GET_CONFIG when the backend offers CONFIG, else no configuration space.
    BackendIfOffered(u32),
    /// Built by us, the backend is not asked.
    Built(Vec<u8>),
}

/// The per-kind facts of one device.
#[derive(Clone, Debug)]
pub struct KindInfo {
    /// Short name (`vhost-user-blk`).
    pub name: &'static str,
    /// Virtio device id.
    pub virtio_id: u16,
    /// PCI class code (QEMU's for the same device).
    pub class_code: u32,
    /// Queues the guest sees.
    pub guest_queues: u16,
    /// Queues handed to the backend (vsock's event queue stays with us, as in QEMU).
    pub backend_queues: u16,
    /// The configuration space.
    pub config: ConfigSource,
    /// Feature bits of this kind the guest must not see (on top of [`SUPPORTED_FEATURES`]).
    pub hidden_features: u64,
}

impl KindInfo {
    /// The facts for `options`, with its queue count as given (1 when left to the default:
    /// [`KindInfo::with_queues`] takes the resolved count).
    pub fn of(options: &VhostUserOptions) -> KindInfo {
        Self::with_queues(options, options.queues.unwrap_or(1))
    }

    /// The facts for `options` with `queues` queues (blk, generic) or request queues (fs).
    pub fn with_queues(options: &VhostUserOptions, queues: u16) -> KindInfo {
        match &options.kind {
            VhostUserKind::Blk => KindInfo {
                name: "vhost-user-blk",
                virtio_id: 2,
                class_code: 0x01_00_00,
                guest_queues: queues,
                backend_queues: queues,
                config: ConfigSource::Backend(BLK_CONFIG_SIZE),
                // Their configuration fields lie past the 60 bytes we read.
                hidden_features: 1 << VIRTIO_BLK_F_SECURE_ERASE | 1 << VIRTIO_BLK_F_ZONED,
            },
            VhostUserKind::Fs { tag } => {
                // virtio_fs_config: tag[36] (NUL-padded), num_request_queues (le32).
                let mut config = vec![0u8; FS_TAG_MAX + 4];
                config[..tag.len()].copy_from_slice(tag.as_bytes());
                config[FS_TAG_MAX..].copy_from_slice(&u32::from(queues).to_le_bytes());
                KindInfo {
                    name: "vhost-user-fs",
                    virtio_id: 26,
                    class_code: 0x01_80_00,
                    guest_queues: queues + 1,
                    backend_queues: queues + 1,
                    config: ConfigSource::Built(config),
                    hidden_features: 0,
                }
            }
            VhostUserKind::Vsock => KindInfo {
                name: "vhost-user-vsock",
                virtio_id: 19,
                class_code: 0x07_80_00,
                // rx, tx, event; the backend serves rx and tx.
                guest_queues: 3,
                backend_queues: 2,
                config: ConfigSource::Backend(VSOCK_CONFIG_SIZE),
                hidden_features: 0,
            },
            VhostUserKind::Generic {
                virtio_id,
                config_size,
            } => KindInfo {
                name: "vhost-user",
                virtio_id: *virtio_id,
                class_code: match virtio_id {
                    1 => 0x02_00_00,
                    2 => 0x01_00_00,
                    3 | 19 => 0x07_80_00,
                    _ => 0xFF_00_00,
                },
                guest_queues: queues,
                backend_queues: queues,
                config: ConfigSource::BackendIfOffered(*config_size),
                hidden_features: 0,
            },
        }
    }

    /// The features the guest is offered out of what the backend offers.
    pub fn guest_features(&self, backend_features: u64) -> u64 {
        backend_features & SUPPORTED_FEATURES & !self.hidden_features
    }

    /// Adjusts a configuration read from the backend to what the guest sees: a blk backend
    /// reports its own queue count, the guest must see ours (QEMU does the same).
    pub fn fix_config(&self, config: &mut [u8]) {
        if self.virtio_id == 2 && self.name == "vhost-user-blk" {
            if let Some(field) = config.get_mut(BLK_NUM_QUEUES..BLK_NUM_QUEUES + 2) {
                field.copy_from_slice(&self.guest_queues.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_config_is_the_tag_and_request_queues() {
        let mut options = VhostUserOptions::new(
            VhostUserKind::Fs {
                tag: "share".into(),
            },
            "/tmp/s",
        );
        options.queues = Some(2);
        let info = KindInfo::of(&options);
        assert_eq!((info.virtio_id, info.guest_queues), (26, 3));
        let ConfigSource::Built(config) = info.config else {
            panic!("fs builds its config")
        };
        assert_eq!(config.len(), 40);
        assert_eq!(&config[..6], b"share\0");
        assert_eq!(&config[36..], &2u32.to_le_bytes());
    }

    #[test]
    fn blk_config_shows_our_queue_count() {
        let mut options = VhostUserOptions::new(VhostUserKind::Blk, "/tmp/s");
        options.queues = Some(2);
        let info = KindInfo::of(&options);
        let mut config = vec![0xFFu8; 60];
        info.fix_config(&mut config);
        assert_eq!(&config[34..36], &[2, 0]);
        assert_eq!(config[33], 0xFF);
        assert_eq!(
            info.guest_features(1 << 32 | 1 << 16 | 1 << 9),
            1 << 32 | 1 << 9
        );
        let vsock = KindInfo::of(&VhostUserOptions::new(VhostUserKind::Vsock, "/tmp/s"));
        assert_eq!((vsock.guest_queues, vsock.backend_queues), (3, 2));
    }

    #[test]
    fn the_protocol_feature_bit_never_reaches_the_guest() {
        assert_eq!(SUPPORTED_FEATURES & 1 << 30, 0);
        assert_ne!(SUPPORTED_FEATURES & 1 << 32, 0);
    }
}
