//! `--device virtio-net,tap=NAME` (the kernel's vhost-net on a TAP) at start-up, on the host:
//!
//! - through the VMM's real device plug (`DeviceSet::plug`, KVM-less context): without
//!   `/dev/vhost-net` the refusal names the device, the step and the module to load; with it,
//!   the device appears on bus 0 as a virtio-net card (1af4:1041) whose configuration space
//!   holds the MAC and LINK_UP, offering VERSION_1, MAC and STATUS and no offload;
//! - the `vmm` binary with a bad `mac=` or `tap=`: a clear refusal, exit status 1; `--help`
//!   lists the kind.
//!
//! With vhost-net, also the data path from the test acting as the guest driver: a frame on the
//! TX queue comes out of the TAP (a packet socket on it), then again after a reset. This
//! machine's kernel has no vhost-net; the bed's L1 has, and there the whole path is tested with
//! Linux as the guest (tests/nested/vhost-user-devices: L2 fetching a page over the TAP from L1's
//! httpd, and again after a driver reset; tests/tests/nested_vhost_user.rs).
//! `virtio_net_moves_frames_through_vhost_net_in_l1` runs the first test in the bed's L1 (whose
//! kernel has vhost-net), so the data path is tested wherever the bed runs. Needs root
//! (TUNSETIFF): otherwise the tests skip with a printed reason.

use harness::virtio_host::{reg, Buf, HostDriver, Machine};
use vmm::devices::plug::{DeviceOptions, DeviceSet};
use vmm::devices::virtio_net::{MacAddress, VirtioNetOptions};
use vmm::memory::RamBacking;

/// Whether the test can attach a TAP at all (root with /dev/net/tun).
fn tun_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIP {test}: needs root and /dev/net/tun");
        return false;
    }
    true
}

fn vhost_net_available() -> bool {
    std::path::Path::new("/dev/vhost-net").exists()
}

#[test]
fn virtio_net_is_a_network_card_or_a_clear_refusal() {
    if !tun_available("virtio_net_is_a_network_card_or_a_clear_refusal") {
        return;
    }
    // Private RAM: vhost-net works in our own address space.
    let m = Machine::new(RamBacking::default());
    let mut devices = DeviceSet::new(m.ctx.clone());
    // A TAP name nobody uses: the kernel makes a transient one for us (root), gone with its fd.
    let mut options = VirtioNetOptions::new("ivnettest0");
    options.mac = Some(MacAddress([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]));
    let result = devices.plug(&DeviceOptions::VirtioNet(options));
    if !vhost_net_available() {
        let error = result
            .err()
            .expect("no /dev/vhost-net, yet the device was made");
        let text = error.to_string();
        assert!(
            text.contains("ivnettest0")
                && text.contains("/dev/vhost-net")
                && text.contains("vhost_net module"),
            "{text}"
        );
        eprintln!("virtio_net: without /dev/vhost-net: {text}");
        return;
    }
    result.expect("a virtio-net device");
    assert_eq!(m.map_device(), 0x1041_1af4, "virtio-net, modern");
    let bar4 = harness::virtio_host::BAR4;
    m.write(bar4 + reg::DEVICE_FEATURE_SELECT, 4, 0);
    let low = m.read(bar4 + reg::DEVICE_FEATURE, 4);
    assert_ne!(low & (1 << 5), 0, "VIRTIO_NET_F_MAC");
    assert_ne!(low & (1 << 16), 0, "VIRTIO_NET_F_STATUS");
    assert_eq!(low & 0b11, 0, "no CSUM/GUEST_CSUM: the TAP has no offload");
    m.write(bar4 + reg::DEVICE_FEATURE_SELECT, 4, 1);
    assert_eq!(m.read(bar4 + reg::DEVICE_FEATURE, 4) & 1, 1, "VERSION_1");
    let config = reg::DEVICE_CFG;
    let mac: Vec<u8> = (0..6).map(|i| m.read(bar4 + config + i, 1) as u8).collect();
    assert_eq!(mac, [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
    assert_eq!(m.read(bar4 + config + 6, 2), 1, "LINK_UP");

    // The data path: a frame the driver puts on the TX queue comes out of the TAP (seen by a
    // packet socket on it), through vhost-net alone; then a reset (the TAP detached, the ring
    // base read back) and a second session does it again.
    let tap = TapWatch::open("ivnettest0");
    for session in 0..2u8 {
        let mut driver = HostDriver::start(&m, 1);
        let mut frame = vec![0u8; VNET_HDR];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
        frame.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
        frame.extend_from_slice(b"virtio-net tx, session ");
        frame.push(b'0' + session);
        frame.resize(VNET_HDR + 60, 0);
        m.write_bytes(FRAME, &frame);
        driver.submit(&[Buf {
            addr: FRAME,
            len: frame.len() as u32,
            writable: false,
        }]);
        let seen = tap.receive(TEST_ETHERTYPE);
        assert_eq!(seen, frame[VNET_HDR..], "session {session}");
        assert_eq!(driver.status() & 0x40, 0, "no DEVICE_NEEDS_RESET");
        m.write(bar4 + reg::STATUS, 1, 0);
        assert_eq!(m.read(bar4 + reg::STATUS, 1), 0, "reset");
    }
}

/// Bytes of the virtio-net header before each frame (VERSION_1).
const VNET_HDR: usize = 12;
/// IEEE 802 local experimental ethertype: nothing else on the TAP sends it.
const TEST_ETHERTYPE: u16 = 0x88b5;
/// Where the test's frame sits in guest RAM.
const FRAME: u64 = 0x11_0000;

/// The host side of the TAP: brought up, with a packet socket bound to it.
struct TapWatch {
    packets: std::os::fd::OwnedFd,
}

impl TapWatch {
    fn open(name: &str) -> TapWatch {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: plain socket and ioctl calls on fds we own, with a properly sized ifreq.
        unsafe {
            let control = OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0));
            let mut request: libc::ifreq = std::mem::zeroed();
            for (dst, src) in request.ifr_name.iter_mut().zip(cname.as_bytes()) {
                *dst = *src as libc::c_char;
            }
            assert!(libc::ioctl(control.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) >= 0);
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            assert!(
                libc::ioctl(control.as_raw_fd(), libc::SIOCSIFFLAGS, &request) >= 0,
                "{}",
                std::io::Error::last_os_error()
            );
            let index = libc::if_nametoindex(cname.as_ptr());
            assert_ne!(index, 0);
            let protocol = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol));
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            let packets = OwnedFd::from_raw_fd(fd);
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = protocol;
            address.sll_ifindex = index as i32;
            assert!(
                libc::bind(
                    packets.as_raw_fd(),
                    &address as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                ) >= 0
            );
            let timeout = libc::timeval {
                tv_sec: 10,
                tv_usec: 0,
            };
            libc::setsockopt(
                packets.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            TapWatch { packets }
        }
    }

    /// The next frame of `ethertype` the TAP received (what the guest sent).
    fn receive(&self, ethertype: u16) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        loop {
            let mut buf = [0u8; 2048];
            // SAFETY: a read into our buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.packets.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            assert!(n >= 0, "no frame: {}", std::io::Error::last_os_error());
            let frame = &buf[..n as usize];
            if frame.len() >= 14 && frame[12..14] == ethertype.to_be_bytes() {
                return frame.to_vec();
            }
        }
    }
}

/// The data path where vhost-net exists: this very test binary, run in the nested bed's L1
/// (tests/nested/virtio-net-host), whose kernel has vhost-net.
#[test]
fn virtio_net_moves_frames_through_vhost_net_in_l1() {
    let name = "virtio_net_moves_frames_through_vhost_net_in_l1";
    if !harness::nested::nested_available(name) {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // At a fixed path: L1's /tmp is a tmpfs, which would hide a checkout under /tmp.
    let in_l1 = "/usr/local/bin/virtio-net-test";
    let outcome = harness::nested::Nested::scenario("virtio-net-host")
        .binary_at(&exe, in_l1)
        .arg(&format!("VIRTIO_NET_TEST={in_l1}"))
        .run();
    outcome.assert_passed(&["virtio_net_host_test"]);
    assert_eq!(outcome.status, Some(0));
}

#[test]
fn bad_virtio_net_options_are_refused_clearly() {
    for (device, expected) in [
        ("virtio-net,tap=tap0,mac=01:02:03:04:05:06", "not multicast"),
        ("virtio-net,tap=a-name-far-too-long", "1 to 15 bytes"),
        ("virtio-net", "needs tap=NAME"),
    ] {
        let out = harness::run_vmm(&["--device", device, "--guest", "builtin:hello"]);
        assert_eq!(out.status.code(), Some(1), "{device}");
        let stderr = harness::text(&out.stderr);
        assert!(stderr.contains(expected), "{device}: {stderr}");
    }
}

#[test]
fn help_lists_virtio_net() {
    let out = harness::run_vmm(&["--help"]);
    let help = harness::text(&out.stdout);
    assert!(
        help.contains("virtio-net,tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,queue-size=N]"),
        "{help}"
    );
}
