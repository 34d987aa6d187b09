//! vhost-user devices against a real third-party backend, `qemu-storage-daemon` exporting a
//! disk image as vhost-user-blk:
//!
//! - on the host, no KVM needed: the VMM's own memory model, PCI bus and virtio-pci transport,
//!   driven the way a guest driver drives them (config cycles, MMIO to BAR4), with the test as
//!   the driver: handshake, configuration (capacity = image size / 512), a real read and write
//!   of sectors through a split ring in shared guest RAM, a guest reset and a second session,
//!   then the backend killed (DEVICE_NEEDS_RESET, nothing hangs);
//! - a backend that accepts and never answers: start-up fails within the reply timeout;
//! - the `vmm` binary (KVM) with `--device vhost-user-blk` and seccomp on: the `virtio_blk`
//!   guest program (guest/src/bin/virtio_blk.rs) finds the device, reads sector 0 and writes
//!   sector 1 through the backend, kicks through KVM's ioeventfd, all vhost-user requests made
//!   from the vCPU thread under its filter; without `shared=on` a clear refusal.
//!
//! Skips with a printed reason when qemu-storage-daemon is missing, unless
//! `IVSHMEM_REQUIRE_QEMU=1`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::virtio_host::{
    backend_available, reg, status, Backend, HostDriver, Machine, BAR4, WAIT,
};
use harness::{require_kvm, run_vmm, text, wait_until, Scratch};
use vmm::devices::vhost_user::{self, VhostUserKind, VhostUserOptions};
use vmm::memory::RamBacking;

const QSD: &str = "qemu-storage-daemon";
const IMAGE_SIZE: u64 = 8 << 20;
const HEADER: u64 = 0x11_0000;
const DATA: u64 = HEADER + 0x1000;

macro_rules! require_qsd {
    () => {
        if !backend_available(harness::test_name!(), QSD, "--version") {
            return;
        }
    };
}

fn storage_daemon(image: &Path, socket: &Path) -> Backend {
    storage_daemon_with_queues(image, socket, 1)
}

fn storage_daemon_with_queues(image: &Path, socket: &Path, queues: u16) -> Backend {
    Backend::start(
        Command::new(QSD)
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=disk,filename={}",
                image.display()
            ))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=e,node-name=disk,addr.type=unix,addr.path={},\
                 writable=on,num-queues={queues}",
                socket.display()
            )),
        socket,
    )
}

/// An image whose sector N starts with "sector N" and is filled with N's low byte.
fn make_image(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(IMAGE_SIZE).unwrap();
    for sector in 0..4u64 {
        let mut data = vec![sector as u8; 512];
        let label = format!("sector {sector}");
        data[..label.len()].copy_from_slice(label.as_bytes());
        file.write_all_at(&data, sector * 512).unwrap();
    }
}

/// One virtio-blk request of one sector (IN = read, OUT = write); returns the status byte.
fn blk_request(m: &Machine, driver: &mut HostDriver<'_>, write: bool, sector: u64) -> u8 {
    harness::virtio_host::blk_request(m, driver, write, sector, HEADER)
}

fn blk_options(socket: &Path) -> VhostUserOptions {
    let mut options = VhostUserOptions::new(VhostUserKind::Blk, socket);
    options.reply_timeout = Duration::from_secs(3);
    options
}

#[test]
fn qsd_blk_handshake_config_and_sector_io_through_the_transport() {
    require_qsd!();
    let dir = Scratch::new("vhost-user-blk-host");
    let image = dir.join("disk.img");
    let socket = dir.join("blk.sock");
    make_image(&image);
    let mut daemon = storage_daemon(&image, &socket);

    let m = Machine::shared();
    let device = vhost_user::add(&m.ctx, &blk_options(&socket), 0).expect("vhost-user-blk");
    assert_eq!(m.map_device(), 0x1042_1AF4, "virtio-blk, modern");
    assert_eq!(m.read(BAR4 + reg::NUM_QUEUES, 2), 1);
    // virtio_blk_config.capacity: 512-byte sectors.
    assert_eq!(m.read(BAR4 + reg::DEVICE_CFG, 8), IMAGE_SIZE / 512);

    let mut driver = HostDriver::start(&m, 0);
    assert_eq!(m.read(BAR4 + reg::STATUS, 1) & status::NEEDS_RESET, 0);
    for sector in [0u64, 3] {
        assert_eq!(
            blk_request(&m, &mut driver, false, sector),
            0,
            "read of sector {sector}: OK"
        );
        let data = m.read_bytes(DATA, 512);
        let label = format!("sector {sector}");
        assert_eq!(&data[..label.len()], label.as_bytes());
        assert!(data[label.len()..].iter().all(|&b| b == sector as u8));
    }
    // A write lands in the image file.
    let mut payload = vec![0xA5u8; 512];
    payload[..7].copy_from_slice(b"written");
    m.write_bytes(DATA, &payload);
    assert_eq!(
        blk_request(&m, &mut driver, true, 2),
        0,
        "write of sector 2: OK"
    );
    let mut on_disk = vec![0u8; 512];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut on_disk, 1024)
        .unwrap();
    assert_eq!(on_disk, payload);

    // The driver resets (GET_VRING_BASE stops the ring) and starts over: it still works.
    let mut driver = HostDriver::start(&m, 0);
    assert_eq!(blk_request(&m, &mut driver, false, 1), 0);
    assert_eq!(&m.read_bytes(DATA, 8)[..], b"sector 1");
    assert_eq!(m.read(BAR4 + reg::STATUS, 1) & status::NEEDS_RESET, 0);

    // The backend dies: the device reports DEVICE_NEEDS_RESET; nothing hangs.
    daemon.kill();
    assert!(
        wait_until(WAIT, || m.read(BAR4 + reg::STATUS, 1) & status::NEEDS_RESET
            != 0),
        "no DEVICE_NEEDS_RESET after the backend died"
    );
    let started = Instant::now();
    let _driver = HostDriver::start(&m, 0);
    assert!(started.elapsed() < Duration::from_secs(5), "a reset hung");
    assert_eq!(
        m.read(BAR4 + reg::STATUS, 1) & status::NEEDS_RESET,
        status::NEEDS_RESET,
        "a new session on a dead backend fails visibly"
    );
    drop(device);
}

/// Plugs a disk on `socket` into a machine of `cpus` vCPUs with `options` and maps it; checks
/// the queue count the driver reads (common configuration) and the one virtio_blk_config says
/// (num_queues, offset 34: ours, not the backend's).
fn plug_disk_with_queues(cpus: u32, options: &VhostUserOptions, queues: u64) -> Machine {
    let mut m = Machine::shared();
    m.ctx.machine.cpus = cpus;
    vhost_user::add(&m.ctx, options, 0).expect("vhost-user-blk");
    m.map_device();
    assert_eq!(m.read(BAR4 + reg::NUM_QUEUES, 2), queues);
    assert_eq!(m.read(BAR4 + reg::DEVICE_CFG + 34, 2), queues);
    m
}

#[test]
fn a_two_queue_disk_serves_its_second_queue() {
    require_qsd!();
    let dir = Scratch::new("vhost-user-blk-mq");
    let image = dir.join("disk.img");
    let socket = dir.join("blk.sock");
    make_image(&image);
    let _daemon = storage_daemon_with_queues(&image, &socket, 2);
    {
        let mut options = blk_options(&socket);
        options.queues = Some(2);
        let m = plug_disk_with_queues(1, &options, 2);
        let mut driver = HostDriver::start(&m, 1);
        assert_eq!(blk_request(&m, &mut driver, false, 2), 0);
        assert_eq!(&m.read_bytes(DATA, 8)[..], b"sector 2");
    }

    // More queues than the backend has: refused at start-up, naming both counts (a new
    // machine: qemu-storage-daemon serves one frontend at a time).
    let m = Machine::shared();
    let mut options = blk_options(&socket);
    options.queues = Some(4);
    let error = vhost_user::add(&m.ctx, &options, 0)
        .err()
        .expect("4 queues on a 2-queue backend")
        .to_string();
    assert!(
        error.contains("has 2 queue(s)") && error.contains("needs 4"),
        "{error}"
    );
}

#[test]
fn a_disk_without_queues_gets_one_per_vcpu_up_to_what_the_backend_serves() {
    require_qsd!();
    let dir = Scratch::new("vhost-user-blk-auto-queues");
    let image = dir.join("disk.img");
    let socket = dir.join("blk.sock");
    make_image(&image);
    // QEMU's vhost-user-blk-pci: num-queues = vCPUs. Three vCPUs on a two-queue backend:
    // two (QEMU would refuse to start), the guest sees them in num_queues too.
    let daemon = storage_daemon_with_queues(&image, &socket, 2);
    drop(plug_disk_with_queues(3, &blk_options(&socket), 2));
    drop(daemon);
    // One vCPU on a four-queue backend: one.
    let socket = dir.join("blk4.sock");
    let _daemon = storage_daemon_with_queues(&image, &socket, 4);
    drop(plug_disk_with_queues(1, &blk_options(&socket), 1));
}

#[test]
fn private_ram_is_refused_with_a_clear_message() {
    require_qsd!();
    let dir = Scratch::new("vhost-user-blk-private");
    let image = dir.join("disk.img");
    let socket = dir.join("blk.sock");
    make_image(&image);
    let _daemon = storage_daemon(&image, &socket);
    let m = Machine::new(RamBacking::default());
    let error = vhost_user::add(&m.ctx, &blk_options(&socket), 0)
        .err()
        .expect("private RAM must be refused")
        .to_string();
    assert!(error.contains("shared=on"), "{error}");
}

#[test]
fn a_backend_that_never_answers_fails_start_up_within_the_timeout() {
    // Needs no third-party backend: a socket that accepts and then says nothing.
    let dir = Scratch::new("vhost-user-silent");
    let socket = dir.join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let holder = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    let m = Machine::shared();
    let mut options = blk_options(&socket);
    options.reply_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = vhost_user::add(&m.ctx, &options, 0)
        .err()
        .expect("a silent backend must fail")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.contains("silent.sock"), "{error}");
    holder.join().unwrap();
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn guest_program_reads_and_writes_sectors_through_qsd_under_seccomp() {
    require_qsd!();
    require_kvm!();
    let dir = Scratch::new("vhost-user-blk-vmm");
    let image = dir.join("disk.img");
    let socket: PathBuf = dir.join("blk.sock");
    make_image(&image);
    let _daemon = storage_daemon(&image, &socket);
    let device = format!("vhost-user-blk,socket={}", path_str(&socket));
    let out = run_vmm(&[
        "--memory",
        "64M,shared=on",
        "--device",
        &device,
        "--seccomp",
        "on",
        "--guest",
        "builtin:virtio_blk",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let capacity = format!("capacity={}", IMAGE_SIZE / 512);
    assert!(stdout.contains(&capacity), "{stdout}");
    assert!(stdout.contains("sector0=\"sector 0"), "{stdout}");
    assert!(stdout.contains("virtio_blk: ok"), "{stdout}");
    let mut on_disk = vec![0u8; 20];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut on_disk, 512)
        .unwrap();
    assert_eq!(&on_disk, b"written by the guest");

    let out = run_vmm(&[
        "--memory",
        "64M",
        "--device",
        &device,
        "--guest",
        "builtin:hello",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("vhost-user-blk0") && stderr.contains("shared=on"),
        "{stderr}"
    );
}
