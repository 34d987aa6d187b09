//! Linux in our VMM on ordinary KVM (the nested bed) on a raw disk served by qemu-storage-daemon
//! in L1, L2 Linux loading Debian's virtio modules: /dev/vda with the image's size, sector 0
//! reads what L1 wrote, a write from L2 lands in L1's image (tests/nested/virtio-blk). The root
//! filesystem on a vhost-user disk, virtiofs, vsock, a generic device and the network are
//! tests/nested/vhost-user-devices (`nested_vhost_user`), against QEMU on the same backends.

use std::path::Path;

use harness::nested::{nested_available, Nested};

#[test]
fn linux_reads_and_writes_a_qemu_storage_daemon_disk() {
    if !nested_available("linux_reads_and_writes_a_qemu_storage_daemon_disk") {
        return;
    }
    let qsd = Path::new("/usr/bin/qemu-storage-daemon");
    if !qsd.exists() {
        if std::env::var("IVSHMEM_REQUIRE_QEMU").as_deref() == Ok("1") {
            panic!("qemu-storage-daemon is missing and IVSHMEM_REQUIRE_QEMU=1");
        }
        eprintln!("SKIP linux_reads_and_writes_a_qemu_storage_daemon_disk: no {qsd:?}");
        return;
    }
    // The scenario's host.sh ships qemu-storage-daemon and the L2 virtio modules.
    let outcome = Nested::scenario("virtio-blk").run();
    outcome.assert_passed(&[
        "vmm_exit_status",
        "boots_to_init",
        "virtio_pci_binds",
        "disk_appears",
        "sector0_reads",
        "write_reaches_l1",
        "no_needs_reset",
    ]);
    assert_eq!(outcome.status, Some(0));
}
