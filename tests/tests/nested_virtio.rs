//! Linux in our VMM on ordinary KVM (the nested bed) with devices served by third-party
//! vhost-user backends in L1, L2 Linux loading Debian's virtio modules:
//!
//! - a disk from qemu-storage-daemon: /dev/vda with the image's size, sector 0 reads what L1
//!   wrote, a write from L2 lands in L1's image (tests/nested/virtio-blk);
//! - the root filesystem on that disk: an ext4 image built here (busybox and an init), which
//!   L2's initramfs mounts and switch_roots into (tests/nested/virtio-blk-root);
//! - a shared folder from virtiofsd (files both ways), vsock from vhost-device-vsock
//!   (connections both ways) and entropy from vhost-device-rng as a generic device
//!   (tests/nested/vhost-user-linux).

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

/// More modules for the second scenario, after the virtio core ones above.
const MORE_MODULES: &[&str] = &[
    "fs/fuse/fuse",
    "fs/fuse/virtiofs",
    "net/vmw_vsock/vsock",
    "net/vmw_vsock/vmw_vsock_virtio_transport_common",
    "net/vmw_vsock/vmw_vsock_virtio_transport",
    "drivers/char/hw_random/virtio-rng",
];

/// `program` on PATH (or at an absolute path), or a skip (a failure when its
/// `harness::virtio_host::require_variable` is 1).
fn find_program(test: &str, program: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if program.starts_with('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        let var = harness::virtio_host::require_variable(program);
        if std::env::var(var).as_deref() == Ok("1") {
            panic!("{test}: {program} is missing and {var}=1");
        }
        eprintln!("SKIP {test}: {program} not found");
    }
    found
}

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

/// The ext4 modules, in load order, for a root filesystem.
const EXT4_MODULES: &[&str] = &[
    "lib/crc16",
    "fs/mbcache",
    "fs/jbd2/jbd2",
    "crypto/crc32c_generic",
    "fs/ext4/ext4",
];

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

#[test]
fn linux_uses_virtiofsd_vsock_and_rng_backends() {
    let test = "linux_uses_virtiofsd_vsock_and_rng_backends";
    if !nested_available(test) {
        return;
    }
    let Some(virtiofsd) = find_program(test, "/usr/lib/qemu/virtiofsd") else {
        return;
    };
    let Some(vsock) = find_program(test, "vhost-device-vsock") else {
        return;
    };
    let Some(rng) = find_program(test, "vhost-device-rng") else {
        return;
    };
    let probe = harness::bin("vsock-probe");
    let dir = Scratch::new("nested-vhost-user-linux");
    let modules_root = unpack_modules(&dir);
    // --binary keeps each program's host path; the scenario adds their directories to PATH.
    let extra_path: Vec<String> = [&vsock, &rng, &probe]
        .iter()
        .map(|p| p.parent().unwrap().display().to_string())
        .collect();
    let run = Nested::scenario("vhost-user-linux")
        .arg(&format!("EXTRA_PATH={}", extra_path.join(":")))
        .binary(&virtiofsd)
        .binary(&vsock)
        .binary(&rng)
        .binary(&probe)
        .l2_binary(&probe, "/usr/local/bin/vsock-probe");
    let run = with_modules(run, &modules_root, MODULES);
    let outcome = with_modules(run, &modules_root, MORE_MODULES).run();
    outcome.assert_passed(&[
        "vmm_exit_status",
        "boots_to_init",
        "drivers_bind",
        "fs_mounts",
        "fs_l1_file_read_in_l2",
        "fs_l2_file_seen_in_l1",
        "vsock_l2_to_l1",
        "vsock_l1_saw_l2",
        "vsock_l1_to_l2",
        "vsock_l2_saw_l1",
        "hwrng_gives_bytes",
        "no_needs_reset",
    ]);
    assert_eq!(outcome.status, Some(0));
}

#[test]
fn linux_boots_with_its_root_filesystem_on_a_vhost_user_disk() {
    let test = "linux_boots_with_its_root_filesystem_on_a_vhost_user_disk";
    if !nested_available(test) {
        return;
    }
    let Some(qsd) = find_program(test, "/usr/bin/qemu-storage-daemon") else {
        return;
    };
    let Some(mkfs) = find_program(test, "/usr/sbin/mkfs.ext4") else {
        return;
    };
    let dir = Scratch::new("nested-virtio-root");
    let modules_root = unpack_modules(&dir);
    // The root: the bed's static busybox, the scenario's init, a marker; as an ext4 image.
    let busybox = std::fs::read_dir(nested_cache().unwrap())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("busybox")))
        .find(|p| p.is_file())
        .expect("the bed's busybox (scripts/nested-kvm.sh prepare)");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("nested/virtio-blk-root");
    let root = dir.join("rootfs");
    for sub in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    std::fs::copy(scenario.join("rootfs-init"), root.join("sbin/init")).unwrap();
    for program in ["bin/busybox", "sbin/init"] {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(root.join(program), mode).unwrap();
    }
    std::fs::write(root.join("etc/marker"), "rootfs-from-host\n").unwrap();
    let image = dir.join("rootfs.img");
    let status = Command::new(&mkfs)
        .args(["-q", "-L", "vroot", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("32M")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkfs.ext4");
    assert!(status.success(), "mkfs.ext4 -d {root:?} {image:?}");

    let run = Nested::scenario("virtio-blk-root")
        .binary(&qsd)
        .file(&image, "/rootfs.img")
        .l2_file(&scenario.join("l2-init"), "/init");
    let run = with_modules(run, &modules_root, MODULES);
    let outcome = with_modules(run, &modules_root, EXT4_MODULES).run();
    outcome.assert_passed(&[
        "vmm_exit_status",
        "root_mounted",
        "root_init_runs",
        "root_is_vda_ext4",
        "root_write_reaches_l1",
    ]);
    assert_eq!(outcome.status, Some(0));
}
