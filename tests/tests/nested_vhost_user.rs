//! Linux with real I/O devices served by third-party vhost-user backends, on the nested ordinary-KVM
//! bed (tests/nested/vhost-user-devices, docs/nested-kvm.md): root on virtio-blk
//! (qemu-storage-daemon), a virtiofs share (virtiofsd), vsock both ways (vhost-device-vsock), a
//! generic vhost-user device (vhost-device-rng → /dev/hwrng) and a network (virtio-net on vhost-net
//! and a TAP device in L1).
//!
//! The same scenario runs in QEMU `-accel kvm` inside L1 (the baseline: it proves the bed, the
//! backends and the guest side) and in our VMM (`VMM=ours`).
use harness::nested::{backends_present, missing_tools, nested_available, Nested};

/// The checks of one run (tests/nested/vhost-user-devices/l1.sh and l2.sh).
const CHECKS: &[&str] = &[
    // L1
    "vm_exit_status",
    "l2_switched_root",
    "l2_ran",
    "vsock_l1_to_l2",
    "fs_l2_to_l1",
    "vsock_l2_to_l1_listener",
    // L2
    "root_on_vda",
    "blk_queue_per_vcpu",
    "root_writable",
    "virtiofs_mounted",
    "fs_reads_l1",
    "fs_writes_for_l1",
    "vsock_l2_to_l1",
    "hwrng_reads",
    "hwrng_is_virtio",
    "net_http_from_l1",
    "net_after_driver_reset",
    "vsock_l1_connected",
    "blk_scratch_direct_io",
    "no_oops",
];

/// The backends the scenario carries into L1 (its host.sh), looked up as it does. Missing ones
/// skip the test with a reason, or fail it when IVSHMEM_REQUIRE_VHOST_DEVICE=1.
fn backends_available(test: &str) -> bool {
    let mut missing = missing_tools(&[
        "qemu-storage-daemon",
        "vhost-device-vsock",
        "vhost-device-rng",
        "mke2fs",
    ]);
    let virtiofsd = ["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"]
        .iter()
        .any(|path| std::path::Path::new(path).exists())
        || missing_tools(&["virtiofsd"]).is_empty();
    if !virtiofsd {
        missing.push("virtiofsd".into());
    }
    backends_present(test, &missing)
}

/// The baseline: QEMU -accel kvm (q35, vhost-user-*-pci, virtio-net-pci with vhost=on) in L1.
#[test]
fn qemu_linux_uses_vhost_user_devices_from_third_party_backends() {
    let name = "qemu_linux_uses_vhost_user_devices_from_third_party_backends";
    if !nested_available(name) || !backends_available(name) {
        return;
    }
    let outcome = Nested::scenario("vhost-user-devices").arg("VMM=qemu").run();
    outcome.assert_passed(CHECKS);
    assert_eq!(outcome.status, Some(0));
}

/// The same scenario in our VMM (`vmm --memory 512M,shared=on --device vhost-user-blk,...
/// --device virtio-net,tap=tap0`, see l1.sh's vm_command).
#[test]
fn our_linux_uses_vhost_user_devices_from_third_party_backends() {
    let name = "our_linux_uses_vhost_user_devices_from_third_party_backends";
    if !nested_available(name) || !backends_available(name) {
        return;
    }
    let outcome = Nested::scenario("vhost-user-devices").arg("VMM=ours").run();
    outcome.assert_passed(CHECKS);
    assert_eq!(outcome.status, Some(0));
}
