//! Linux in our VMM on ordinary KVM (the nested bed) with a disk served by a vhost-user backend:
//! qemu-storage-daemon runs in L1, L2 Linux loads Debian's virtio modules, binds virtio-pci to
//! our transport, sees /dev/vda with the image's size, reads what L1 wrote and writes what L1
//! then finds in the image. Scenario: tests/nested/virtio-blk.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::nested::{nested_available, Nested};
use harness::Scratch;

/// The L2 modules, in load order (each module's `depends=`), under the kernel package's tree.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
];

/// The bed's cached kernel package (scripts/nested-kvm.sh prepare fetches it).
fn kernel_deb() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let status = Command::new(root.join("scripts/nested-kvm.sh"))
        .arg("prepare")
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let target = harness::bin_dir().parent()?.to_path_buf();
    let cache = std::env::var_os("NESTED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("nested"));
    std::fs::read_dir(cache.join("debs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
        })
}

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
    let deb = kernel_deb().expect("the bed's kernel package");
    let dir = Scratch::new("nested-virtio-modules");
    let unpacked = dir.join("kernel");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .expect("dpkg-deb");
    assert!(status.success(), "dpkg-deb -x {deb:?}");
    let modules_root = std::fs::read_dir(unpacked.join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("kernel");
    let mut run = Nested::scenario("virtio-blk").binary(qsd);
    for module in MODULES {
        let name = Path::new(module).file_name().unwrap().to_str().unwrap();
        run = run.l2_file(
            &modules_root.join(format!("{module}.ko")),
            &format!("/modules/{name}.ko"),
        );
    }
    let outcome = run.run();
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
