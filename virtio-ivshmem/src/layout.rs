//! The "virtio over ivshmem" layout, version 1: where each field of a device's header sits in the
//! shared memory, and the checks either side applies to values the other side wrote.
//!
//! Uses `core` only, so a `no_std` guest program can include this file with `#[path]`.
//! docs/virtio-over-ivshmem.md describes the protocol in words; this file is its reference.
//!
//! Every field is a little-endian `u32` or `u64` at a naturally aligned offset, so each is read
//! and written with one atomic access. All offsets are relative to the header's start (its
//! "base"), which is 4 KiB aligned inside the shared memory. Ring and buffer addresses are
//! offsets from the start of the shared memory (they are what the vhost-user backend sees as
//! guest-physical addresses).

/// `b"VIRTIVSH"` read as a little-endian u64: written last by the device side once the header
/// is complete, cleared first when it is torn down.
pub const MAGIC: u64 = u64::from_le_bytes(*b"VIRTIVSH");
/// The layout version this file describes.
pub const VERSION: u32 = 1;
/// Size of the header; rings and buffers live outside it.
pub const HEADER_SIZE: u32 = 4096;
/// Most queues one header describes.
pub const MAX_QUEUES: u32 = 32;
/// Largest queue size (split virtqueues allow 32768).
pub const MAX_QUEUE_SIZE: u32 = 32768;
/// "No peer" in a peer-id field.
pub const NO_PEER: u32 = 0xFFFF_FFFF;
/// The device peer's vector the driver rings after posting a request (queues kick others).
pub const DEVICE_REQUEST_VECTOR: u32 = 0;

/// Header fields (byte offsets from the header base). Written by D = device side (bridge),
/// R = driver.
pub mod field {
    /// u64 D: [`super::MAGIC`].
    pub const MAGIC: usize = 0x00;
    /// u32 D: [`super::VERSION`].
    pub const VERSION: usize = 0x08;
    /// u32 D: [`super::HEADER_SIZE`].
    pub const HEADER_SIZE: usize = 0x0C;
    /// u32 D: the virtio device id (4 = entropy source, ...).
    pub const DEVICE_ID: usize = 0x10;
    /// u32 D: the device side's ivshmem peer id.
    pub const DEVICE_PEER: usize = 0x14;
    /// u32 D: how many queues the device has.
    pub const NUM_QUEUES: usize = 0x18;
    /// u32 D: bumped whenever the device side resets the device on its own (driver gone,
    /// bridge restarted), so a driver can tell its set-up is gone.
    pub const GENERATION: usize = 0x1C;
    /// u64 D: feature bits the device offers.
    pub const DEVICE_FEATURES: usize = 0x20;
    /// u64 R: feature bits the driver accepts (a subset of the offer).
    pub const DRIVER_FEATURES: usize = 0x28;
    /// u32 D: the virtio device status as the device side applied it.
    pub const DEVICE_STATUS: usize = 0x30;
    /// u32 R: the status the driver asks for (0 = reset).
    pub const DRIVER_STATUS: usize = 0x34;
    /// u32 R: request counter: the driver bumps it after changing fields, then rings
    /// (device peer, [`super::DEVICE_REQUEST_VECTOR`]).
    pub const REQUEST: usize = 0x38;
    /// u32 D: the last request applied; equal to REQUEST when the device side is done.
    pub const ACK: usize = 0x3C;
    /// u32 R: the driver's ivshmem peer id, claimed by compare-and-swap from
    /// [`super::NO_PEER`]; the device side clears it when that peer leaves.
    pub const DRIVER_PEER: usize = 0x40;
    /// u32 R: the driver's vector the device side rings after each acknowledgement.
    pub const DRIVER_CONFIG_VECTOR: usize = 0x44;
    /// u32 D: why the last request was refused ([`super::ErrorCode`]), 0 when it was not.
    pub const ERROR: usize = 0x48;
    /// u32 D: how many bytes of device configuration space follow at [`CONFIG`].
    pub const CONFIG_SIZE: usize = 0x4C;
    /// Queue entries: `QUEUES + q * QUEUE_STRIDE`.
    pub const QUEUES: usize = 0x100;
    /// Size of one queue entry.
    pub const QUEUE_STRIDE: usize = 0x40;
    /// Device configuration space (read-only copy), up to [`CONFIG_MAX`] bytes.
    pub const CONFIG: usize = 0xC00;
    /// Room for device configuration space.
    pub const CONFIG_MAX: usize = 0x400;
}

/// Fields of one queue entry (byte offsets from the entry's start).
pub mod queue_field {
    /// u32 D: the largest size the device accepts.
    pub const MAX_SIZE: usize = 0x00;
    /// u32 R: the size the driver chose (power of two, at most MAX_SIZE); 0 = queue unused.
    pub const SIZE: usize = 0x04;
    /// u32 D: the device peer's vector that kicks this queue.
    pub const KICK_VECTOR: usize = 0x08;
    /// u32 R: the driver's own vector the device calls when it used buffers.
    pub const CALL_VECTOR: usize = 0x0C;
    /// u64 R: descriptor table offset in the shared memory (16-byte aligned).
    pub const DESC: usize = 0x10;
    /// u64 R: available ring offset (2-byte aligned).
    pub const AVAIL: usize = 0x18;
    /// u64 R: used ring offset (4-byte aligned).
    pub const USED: usize = 0x20;
}

/// Offset of queue `q`'s field `f` from the header base.
pub const fn queue_offset(q: u32, f: usize) -> usize {
    field::QUEUES + q as usize * field::QUEUE_STRIDE + f
}

/// Virtio device status bits (virtio 1.2 §2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// Driver ready: queues live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = 8;
    /// The device failed and must be reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// Feature bits with a meaning for the transport.
pub mod feature {
    /// VIRTIO_F_VERSION_1: required (modern little-endian devices only).
    pub const VERSION_1: u64 = 1 << 32;
    /// VIRTIO_F_RING_PACKED: not offered (this layout describes split rings only).
    pub const RING_PACKED: u64 = 1 << 34;
    /// VIRTIO_F_ACCESS_PLATFORM: not offered (no IOMMU between the peers).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// VHOST_F_LOG_ALL and VHOST_USER_F_PROTOCOL_FEATURES: vhost-user's own bits, never
    /// offered to drivers.
    pub const VHOST_ONLY: u64 = (1 << 26) | (1 << 30);
    /// Bits the transport never offers.
    pub const NEVER_OFFERED: u64 = RING_PACKED | ACCESS_PLATFORM | VHOST_ONLY;
    /// VIRTIO_F_INDIRECT_DESC: chains in indirect descriptor tables.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_F_EVENT_IDX: `used_event` / `avail_event` notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// Device-type bits (virtio 1.2 §6: 0 to 23 and 50 to 63): a driver's caller may ask for
    /// these. Bits 24 to 49 describe the rings and the transport: a driver accepts only those
    /// it implements (its `ring` argument to [`accepted`]), or a backend that honours them
    /// (used_event, indirect tables) would stall it.
    pub const DEVICE_SPECIFIC: u64 = ((1 << 24) - 1) | !((1 << 50) - 1);

    /// What a driver accepts of `offered` when its caller wants `wanted`: the device-type bits
    /// asked for, the ring and transport bits asked for among those the driver implements
    /// (`ring`, e.g. `EVENT_IDX | INDIRECT_DESC`; 0 for a driver that implements none), and
    /// VERSION_1.
    pub const fn accepted(offered: u64, wanted: u64, ring: u64) -> u64 {
        offered & ((wanted & (DEVICE_SPECIFIC | (ring & !DEVICE_SPECIFIC))) | VERSION_1)
    }
}

/// Why the device side refused a request (the ERROR field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// The driver peer is not a peer the device side knows.
    UnknownDriverPeer = 1,
    /// The driver accepted features that were not offered, or not VIRTIO_F_VERSION_1.
    FeaturesRefused = 2,
    /// A queue's size is not a power of two within MAX_SIZE.
    BadQueueSize = 3,
    /// A ring lies outside the shared memory, overlaps the header, or is misaligned.
    BadRingAddress = 4,
    /// A call vector the driver peer does not have.
    BadCallVector = 5,
    /// The vhost-user backend refused the set-up or is gone.
    BackendFailed = 6,
    /// DRIVER_OK without FEATURES_OK, or another status step out of order.
    BadStatusSequence = 7,
    /// The driver config vector is one the driver peer does not have.
    BadConfigVector = 8,
}

impl ErrorCode {
    /// The code for a raw ERROR value; `None` for values this version does not define.
    pub fn from_raw(raw: u32) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match raw {
            0 => None,
            1 => UnknownDriverPeer,
            2 => FeaturesRefused,
            3 => BadQueueSize,
            4 => BadRingAddress,
            5 => BadCallVector,
            6 => BackendFailed,
            7 => BadStatusSequence,
            8 => BadConfigVector,
            _ => return Option::None,
        })
    }
}

/// Bytes taken by the split ring parts of a queue of `size` entries.
pub mod ring_size {
    /// Descriptor table: 16 bytes per entry.
    pub const fn desc(size: u32) -> u64 {
        16 * size as u64
    }
    /// Available ring: flags, idx, ring, used_event.
    pub const fn avail(size: u32) -> u64 {
        6 + 2 * size as u64
    }
    /// Used ring: flags, idx, ring of (id, len), avail_event.
    pub const fn used(size: u32) -> u64 {
        6 + 8 * size as u64
    }
}

/// A queue set-up as the driver wrote it, to be checked before anyone uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSetup {
    /// Entries.
    pub size: u32,
    /// Descriptor table offset.
    pub desc: u64,
    /// Available ring offset.
    pub avail: u64,
    /// Used ring offset.
    pub used: u64,
}

impl QueueSetup {
    /// Checks the set-up against the device's maximum, the shared memory's size and the header
    /// at `header_base`: power-of-two size, aligned rings inside the memory, none overlapping the
    /// header. Every sum is checked, so any value a peer wrote is safe to pass.
    pub fn validate(
        &self,
        max_size: u32,
        shm_size: u64,
        header_base: u64,
    ) -> Result<(), ErrorCode> {
        if self.size == 0 || !self.size.is_power_of_two() || self.size > max_size {
            return Err(ErrorCode::BadQueueSize);
        }
        let parts = [
            (self.desc, ring_size::desc(self.size), 16),
            (self.avail, ring_size::avail(self.size), 2),
            (self.used, ring_size::used(self.size), 4),
        ];
        let header_end = header_base + HEADER_SIZE as u64;
        for (start, len, align) in parts {
            let end = start.checked_add(len).ok_or(ErrorCode::BadRingAddress)?;
            let misaligned = !start.is_multiple_of(align);
            let outside = end > shm_size;
            let overlaps_header = start < header_end && end > header_base;
            if misaligned || outside || overlaps_header {
                return Err(ErrorCode::BadRingAddress);
            }
        }
        Ok(())
    }
}

/// Checks a header base offset: 4 KiB aligned and the whole header inside `shm_size` bytes.
pub fn valid_header_base(base: u64, shm_size: u64) -> bool {
    base.is_multiple_of(HEADER_SIZE as u64)
        && base
            .checked_add(HEADER_SIZE as u64)
            .is_some_and(|end| end <= shm_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_setup_refuses_every_kind_of_bad_value() {
        let good = QueueSetup {
            size: 16,
            desc: 0x2000,
            avail: 0x2100,
            used: 0x2200,
        };
        assert_eq!(good.validate(256, 0x10000, 0x1000), Ok(()));
        let bad = |q: QueueSetup| q.validate(256, 0x10000, 0x1000);
        for size in [0, 3, 512, u32::MAX] {
            assert_eq!(
                bad(QueueSetup { size, ..good }),
                Err(ErrorCode::BadQueueSize)
            );
        }
        for (desc, avail, used) in [
            (0x2008, 0x2100, 0x2200),        // misaligned descriptors
            (0x2000, 0x2101, 0x2200),        // misaligned avail
            (0x2000, 0x2100, 0x2202),        // misaligned used
            (0x1000, 0x2100, 0x2200),        // inside the header
            (0x0FF0, 0x2100, 0x2200),        // reaches into the header
            (0x2000, 0x2100, 0xFFF0),        // past the end
            (u64::MAX - 15, 0x2100, 0x2200), // wraps
            (0x2000, u64::MAX - 1, 0x2200),
        ] {
            assert_eq!(
                bad(QueueSetup {
                    desc,
                    avail,
                    used,
                    ..good
                }),
                Err(ErrorCode::BadRingAddress),
                "{desc:#x} {avail:#x} {used:#x}"
            );
        }
    }

    #[test]
    fn header_base_checks() {
        assert!(valid_header_base(0, 4096));
        assert!(valid_header_base(0x3000, 0x4000));
        assert!(!valid_header_base(0x3000, 0x3FFF));
        assert!(!valid_header_base(0x800, 0x10000));
        assert!(!valid_header_base(u64::MAX - 4095, u64::MAX));
    }

    #[test]
    fn drivers_accept_only_device_bits_and_version_1() {
        let event_idx = feature::EVENT_IDX;
        let indirect = feature::INDIRECT_DESC;
        let offered = feature::VERSION_1 | event_idx | indirect | 0b101;
        assert_eq!(
            feature::accepted(offered, u64::MAX, 0),
            feature::VERSION_1 | 0b101
        );
        assert_eq!(feature::accepted(offered, 0, 0), feature::VERSION_1);
        assert_eq!(
            feature::accepted(offered, event_idx | 1, 0),
            feature::VERSION_1 | 1
        );
        assert_eq!(feature::accepted(1 << 55, 1 << 55, 0), 1 << 55);
        // A driver that implements EVENT_IDX accepts it when asked, and nothing else of the
        // ring bits (packed rings, access platform) even when asked.
        let ring = event_idx | indirect;
        assert_eq!(
            feature::accepted(offered | feature::RING_PACKED, u64::MAX, event_idx),
            feature::VERSION_1 | event_idx | 0b101
        );
        assert_eq!(
            feature::accepted(offered, event_idx | indirect, ring),
            feature::VERSION_1 | event_idx | indirect
        );
        assert_eq!(feature::accepted(offered, 0, ring), feature::VERSION_1);
        assert_eq!(
            feature::accepted(feature::VERSION_1, ring, ring),
            feature::VERSION_1
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for raw in 0..=8 {
            assert_eq!(ErrorCode::from_raw(raw).map(|c| c as u32), Some(raw));
        }
        assert_eq!(ErrorCode::from_raw(9), None);
    }
}

/// One buffer in the shared memory: `len` bytes at `offset` (the driver-side API of both the
/// host driver and the guest programs' driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Offset from the start of the shared memory (the device's "guest-physical" address).
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// A chain the device has finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// The token the driver returned when the chain was added (its head descriptor).
    pub token: u16,
    /// How many bytes the device wrote into the chain's writable buffers.
    pub len: u32,
}
