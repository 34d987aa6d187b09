//! An existing TAP interface, attached by name (`TUNSETIFF` on `/dev/net/tun`) the way vhost-net
//! wants it: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte virtio-net header on every frame
//! (`TUNSETVNETHDRSZ`, the VERSION_1 / MRG_RXBUF header), and no offloads (`TUNSETOFFLOAD 0`:
//! the host stack checksums and segments every frame before it reaches the TAP, matching a
//! guest that negotiated no CSUM/GSO feature).
//!
//! The interface must exist (`ip tuntap add tap0 mode tap`, busybox `tunctl -t tap0`), and be
//! addressed and up: the VMM attaches to it and configures nothing on the host side.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_expr, _IOC_WRITE};

/// Bytes of the virtio-net header on each frame (`struct virtio_net_hdr_mrg_rxbuf`).
pub const VNET_HDR_LEN: i32 = 12;
/// Longest interface name (`IFNAMSIZ` less the NUL).
pub const IFNAME_MAX: usize = 15;

const TUN_PATH: &str = "/dev/net/tun";
const TUNSETIFF: u64 = ioctl_expr(_IOC_WRITE, b'T' as u32, 202, 4);
const TUNSETOFFLOAD: u64 = ioctl_expr(_IOC_WRITE, b'T' as u32, 208, 4);
const TUNSETVNETHDRSZ: u64 = ioctl_expr(_IOC_WRITE, b'T' as u32, 216, 4);

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (a union of 24 bytes).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Why the TAP could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` could not be opened.
    #[error("opening {TUN_PATH}: {0} (is the tun module loaded?)")]
    Open(std::io::Error),
    /// An ioctl on the TAP failed.
    #[error("TAP {name}: {what}: {cause}")]
    Ioctl {
        /// The interface.
        name: String,
        /// Which step.
        what: &'static str,
        /// The kernel's error.
        cause: std::io::Error,
    },
}

/// An attached TAP interface (its queue's fd, what vhost-net reads and writes).
#[derive(Debug)]
pub struct Tap {
    name: String,
    file: File,
}

impl Tap {
    /// Attaches to the TAP interface `name` (1 to 15 bytes, checked at the edge).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(TapError::Open)?;
        let failed = |what| {
            move |cause| TapError::Ioctl {
                name: name.to_string(),
                what,
                cause,
            }
        };
        let mut request = IfReq {
            name: [0; 16],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16,
            _pad: [0; 22],
        };
        let len = name.len().min(IFNAME_MAX);
        request.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        // SAFETY: TUNSETIFF reads (and may write back) one `struct ifreq`, which `request`
        // is (40 bytes, the name NUL-terminated); the fd is ours.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut request) };
        check(rc).map_err(failed(
            "attaching (TUNSETIFF; does the TAP exist, and is it free?)",
        ))?;
        let hdr_len: i32 = VNET_HDR_LEN;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ as _, &hdr_len) };
        check(rc).map_err(failed("setting the vnet header size (TUNSETVNETHDRSZ)"))?;
        // SAFETY: TUNSETOFFLOAD takes its argument by value: no pointer.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD as _, 0 as libc::c_ulong) };
        check(rc).map_err(failed("clearing offloads (TUNSETOFFLOAD)"))?;
        Ok(Tap {
            name: name.to_string(),
            file,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's fd, for VHOST_NET_SET_BACKEND.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// An ioctl's return code as a result (errno read at once).
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_abi() {
        // <linux/if_tun.h> on x86-64.
        assert_eq!(TUNSETIFF, 0x4004_54ca);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
