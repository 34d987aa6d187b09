//! The typed options of a virtio-net device ([`VirtioNetOptions`], spelled
//! `--device virtio-net,tap=NAME[,mac=..][,queue-size=N]` and parsed in `options::device`),
//! the MAC address, and the device configuration space the guest reads.

use std::fmt;
use std::str::FromStr;

use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;

/// Ring size when none is given (QEMU's virtio-net default).
pub const DEFAULT_QUEUE_SIZE: u16 = 256;
/// Bytes of configuration space: `mac[6]`, `status` (u16), `max_virtqueue_pairs` (u16).
pub const CONFIG_LEN: usize = 10;

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// The default address of the device on TAP `tap`: QEMU's locally administered prefix
    /// 52:54:00, then three bytes of a hash (FNV-1a) of the TAP's name, so one VM's address
    /// is the same every run and two TAPs give two addresses.
    pub fn derived(tap: &str) -> MacAddress {
        let hash = tap.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let [a, b, c, _] = hash.to_be_bytes();
        MacAddress([0x52, 0x54, 0x00, a, b, c])
    }

    /// A multicast address (bit 0 of the first byte) cannot be a station's.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

/// Why a MAC address did not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("six hex bytes separated by colons (52:54:00:12:34:56), not multicast")]
pub struct BadMac;

impl FromStr for MacAddress {
    type Err = BadMac;

    fn from_str(text: &str) -> Result<MacAddress, BadMac> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or(BadMac)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BadMac);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| BadMac)?;
        }
        let mac = MacAddress(bytes);
        if parts.next().is_some() || mac.is_multicast() {
            return Err(BadMac);
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A `--device virtio-net` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioNetOptions {
    /// The existing TAP interface the device is attached to.
    pub tap: String,
    /// The guest's address (default: [`MacAddress::derived`] from the TAP's name).
    pub mac: Option<MacAddress>,
    /// Largest ring size the driver may choose (a power of two).
    pub queue_size: u16,
}

impl VirtioNetOptions {
    /// A device on TAP `tap` with the defaults.
    pub fn new(tap: impl Into<String>) -> Self {
        VirtioNetOptions {
            tap: tap.into(),
            mac: None,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }

    /// The address the guest gets.
    pub fn mac(&self) -> MacAddress {
        self.mac.unwrap_or_else(|| MacAddress::derived(&self.tap))
    }
}

/// The configuration space (`struct virtio_net_config`, little-endian): the MAC, the link
/// up (VIRTIO_NET_F_STATUS), one queue pair.
pub fn config_space(mac: MacAddress) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    config[..6].copy_from_slice(&mac.0);
    config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    config[8..10].copy_from_slice(&1u16.to_le_bytes());
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let mac: MacAddress = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac, MacAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]));
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "52:54:00:ab:cd:1",
            "52:54:00:ab:cd:001",
            "52-54-00-ab-cd-01",
            "52:54:00:ab:cd:zz",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "+2:54:00:ab:cd:01",
        ] {
            assert_eq!(bad.parse::<MacAddress>(), Err(BadMac), "{bad:?}");
        }
    }

    #[test]
    fn the_default_mac_is_local_unicast_and_stable() {
        let a = MacAddress::derived("tap0");
        assert_eq!(a, MacAddress::derived("tap0"));
        assert_ne!(a, MacAddress::derived("tap1"));
        assert_eq!(a.0[..3], [0x52, 0x54, 0x00]);
        assert!(!a.is_multicast());
        assert_eq!(a.0[0] & 2, 2, "locally administered");
        assert_eq!(VirtioNetOptions::new("tap0").mac(), a);
    }

    #[test]
    fn config_space_layout() {
        let config = config_space(MacAddress([1 << 1, 2, 3, 4, 5, 6]));
        assert_eq!(config, [2, 2, 3, 4, 5, 6, 1, 0, 1, 0]);
    }
}
