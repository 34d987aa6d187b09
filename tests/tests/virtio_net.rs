//! `--device virtio-net,tap=NAME` (the kernel's vhost-net on a TAP) at start-up, on the host:
//!
//! - through the VMM's real device plug (`DeviceSet::plug`, KVM-less context): without
//!   `/dev/vhost-net` the refusal names the device, the step and the module to load; with it,
//!   the device appears on bus 0 as a virtio-net card (1af4:1041) whose configuration space
//!   holds the MAC and LINK_UP, offering VERSION_1, MAC and STATUS and no offload;
//! - the `vmm` binary with a bad `mac=` or `tap=`: a clear refusal, exit status 1; `--help`
//!   lists the kind.
//!
//! The data path (frames between the guest's rings and the TAP) needs vhost-net, which this
//! machine's kernel lacks: it is tested on the nested bed (tests/nested/vhost-user-devices, L2
//! Linux fetching a page over the TAP from L1's httpd; tests/tests/nested_vhost_user.rs).
//! Needs root (TUNSETIFF): otherwise the tests skip with a printed reason.

use harness::virtio_host::{reg, Machine};
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
