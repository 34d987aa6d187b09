//! vhost-user devices of every kind against real third-party backends, on the host (no KVM):
//! the VMM's bus, transport and frontend, with the test as the guest driver
//! (`harness::virtio_host`).
//!
//! - generic `vhost-user,virtio-id=4` + rust-vmm's `vhost-device-rng`: entropy arrives in a
//!   buffer of guest RAM;
//! - `vhost-user-vsock` + `vhost-device-vsock`: the guest CID comes from the backend's
//!   configuration (GET_CONFIG), three queues;
//! - `vhost-user-fs` + Debian's C `virtiofsd`: the configuration we build (tag, request
//!   queues), and a FUSE_INIT round trip on the request queue.
//!
//! Each skips with a printed reason when its backend is missing, unless
//! `IVSHMEM_REQUIRE_QEMU=1`.

use std::process::Command;
use std::time::Duration;

use harness::virtio_host::{backend_available, reg, Backend, Buf, HostDriver, Machine, BAR4};
use harness::Scratch;
use vmm::devices::vhost_user::{self, VhostUserKind, VhostUserOptions};

const DATA: u64 = 0x11_0000;
const REPLY: u64 = 0x11_1000;

fn options(kind: VhostUserKind, socket: &std::path::Path, queues: u16) -> VhostUserOptions {
    let mut options = VhostUserOptions::new(kind, socket);
    options.queues = Some(queues);
    options.reply_timeout = Duration::from_secs(3);
    options
}

#[test]
fn generic_device_with_vhost_device_rng_fills_a_buffer() {
    if !backend_available(harness::test_name!(), "vhost-device-rng", "--version") {
        return;
    }
    let dir = Scratch::new("vhost-user-rng");
    let base = dir.join("rng.sock");
    // vhost-device-rng numbers its sockets: PATH0 for the first.
    let socket = dir.join("rng.sock0");
    let _backend = Backend::start(
        Command::new("vhost-device-rng")
            .arg("--socket-path")
            .arg(&base),
        &socket,
    );
    let m = Machine::shared();
    let kind = VhostUserKind::Generic {
        virtio_id: 4,
        config_size: 0,
    };
    vhost_user::add(&m.ctx, &options(kind, &socket, 1), 0).expect("vhost-user rng");
    assert_eq!(m.map_device(), 0x1044_1AF4, "virtio id 4 (entropy)");
    let mut driver = HostDriver::start(&m, 0);
    m.write_bytes(DATA, &[0; 64]);
    let written = driver.submit(&[Buf {
        addr: DATA,
        len: 64,
        writable: true,
    }]);
    assert!(written > 0 && written <= 64, "wrote {written}");
    let bytes = m.read_bytes(DATA, written as usize);
    assert!(bytes.iter().any(|&b| b != 0), "{bytes:?}");
}

#[test]
fn vsock_config_comes_from_vhost_device_vsock() {
    if !backend_available(harness::test_name!(), "vhost-device-vsock", "--version") {
        return;
    }
    let dir = Scratch::new("vhost-user-vsock");
    let socket = dir.join("vsock.sock");
    let uds = dir.join("vsock.uds");
    let _backend = Backend::start(
        Command::new("vhost-device-vsock").arg("--vm").arg(format!(
            "guest-cid=7,socket={},uds-path={}",
            socket.display(),
            uds.display()
        )),
        &socket,
    );
    let m = Machine::shared();
    vhost_user::add(&m.ctx, &options(VhostUserKind::Vsock, &socket, 1), 0).expect("vsock");
    assert_eq!(m.map_device(), 0x1053_1AF4, "virtio id 19 (vsock)");
    assert_eq!(m.read(BAR4 + reg::NUM_QUEUES, 2), 3, "rx, tx, event");
    assert_eq!(m.read(BAR4 + reg::DEVICE_CFG, 8), 7, "guest_cid");
    // The rx queue starts (the backend gets rx and tx; the event queue stays with us).
    let driver = HostDriver::start(&m, 0);
    assert_eq!(driver.status() & 0x40, 0);
}

#[test]
fn fs_config_is_ours_and_virtiofsd_answers_fuse_init() {
    let virtiofsd = "/usr/lib/qemu/virtiofsd";
    if !backend_available(harness::test_name!(), virtiofsd, "--version") {
        return;
    }
    let dir = Scratch::new("vhost-user-fs");
    let socket = dir.join("fs.sock");
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let _backend = Backend::start(
        Command::new(virtiofsd)
            .arg(format!("--socket-path={}", socket.display()))
            .arg("-o")
            .arg(format!("source={}", share.display()))
            .args(["-o", "sandbox=chroot", "-o", "cache=none"]),
        &socket,
    );
    let m = Machine::shared();
    let kind = VhostUserKind::Fs {
        tag: "myshare".into(),
    };
    vhost_user::add(&m.ctx, &options(kind, &socket, 1), 0).expect("vhost-user-fs");
    assert_eq!(m.map_device(), 0x105A_1AF4, "virtio id 26 (fs)");
    assert_eq!(
        m.read(BAR4 + reg::NUM_QUEUES, 2),
        2,
        "hiprio + 1 request queue"
    );
    let tag = m.read_bytes(BAR4 + reg::DEVICE_CFG, 36);
    assert_eq!(&tag[..8], b"myshare\0");
    assert_eq!(
        m.read(BAR4 + reg::DEVICE_CFG + 36, 4),
        1,
        "num_request_queues"
    );

    // FUSE_INIT (opcode 26) on request queue 1: fuse_in_header + fuse_init_in.
    let mut request = Vec::new();
    for word in [56u32, 26] {
        request.extend_from_slice(&word.to_le_bytes());
    }
    request.extend_from_slice(&1u64.to_le_bytes()); // unique
    request.extend_from_slice(&0u64.to_le_bytes()); // nodeid
    request.extend_from_slice(&[0u8; 16]); // uid, gid, pid, padding
    for word in [7u32, 31, 0, 0] {
        request.extend_from_slice(&word.to_le_bytes()); // major, minor, readahead, flags
    }
    m.write_bytes(DATA, &request);
    m.write_bytes(REPLY, &[0xFF; 80]);
    let mut driver = HostDriver::start(&m, 1);
    let written = driver.submit(&[
        Buf {
            addr: DATA,
            len: 56,
            writable: false,
        },
        Buf {
            addr: REPLY,
            len: 80,
            writable: true,
        },
    ]);
    assert!(written >= 16 + 8, "wrote {written}");
    let error = m.read(REPLY + 4, 4) as u32 as i32;
    assert_eq!(error, 0, "fuse_out_header.error");
    assert_eq!(m.read(REPLY + 8, 8), 1, "unique echoed");
    assert_eq!(m.read(REPLY + 16, 4), 7, "FUSE major version 7");
}
