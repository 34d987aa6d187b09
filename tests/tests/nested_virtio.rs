//! Linux in our VMM on ordinary KVM (the nested bed) on a raw disk served by qemu-storage-daemon
//! in L1, L2 Linux loading Debian's virtio modules: /dev/vda with the image's size, sector 0
//! reads what L1 wrote, a write from L2 lands in L1's image (tests/nested/virtio-blk). The root
//! filesystem on a vhost-user disk, virtiofs, vsock, a generic device and the network are
//! tests/nested/vhost-user-devices (`nested_vhost_user`), against QEMU on the same backends.

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

/// The L2 modules of the bed's kernel, unpacked under `dir`; returns their tree's `kernel/`.
fn unpack_modules(dir: &Scratch) -> PathBuf {
    let deb = kernel_deb().expect("the bed's kernel package");
    let unpacked = dir.join("kernel");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .expect("dpkg-deb");
    assert!(status.success(), "dpkg-deb -x {deb:?}");
    std::fs::read_dir(unpacked.join("lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("kernel")
}

fn with_modules(mut run: Nested, root: &Path, modules: &[&str]) -> Nested {
    for module in modules {
        let name = Path::new(module).file_name().unwrap().to_str().unwrap();
        run = run.l2_file(
            &root.join(format!("{module}.ko")),
            &format!("/modules/{name}.ko"),
        );
    }
    run
}

/// The bed's cache directory.
fn nested_cache() -> Option<PathBuf> {
    let target = harness::bin_dir().parent()?.to_path_buf();
    Some(
        std::env::var_os("NESTED_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("nested")),
    )
}

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
    std::fs::read_dir(nested_cache()?.join("debs"))
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
    let dir = Scratch::new("nested-virtio-modules");
    let modules_root = unpack_modules(&dir);
    let run = with_modules(
        Nested::scenario("virtio-blk").binary(qsd),
        &modules_root,
        MODULES,
    );
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
