//! vhost-user backends that misbehave, next to one that works (qemu-storage-daemon), on the
//! host (no KVM; `harness::virtio_host` drives the devices as a guest driver would):
//!
//! - a garbage reply at start-up: a clear error naming the socket and the request;
//! - a backend closing its socket in the middle of the DRIVER_OK sequence: that device reports
//!   DEVICE_NEEDS_RESET at once, the disk next to it keeps serving requests;
//! - a backend that stops answering: the vCPU's DRIVER_OK returns after the request timeout,
//!   the device reports DEVICE_NEEDS_RESET, the disk next to it keeps working;
//! - a guest driver programming rings outside guest RAM: DEVICE_NEEDS_RESET, nothing sent.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::fake_vhost_user::{request, Action, FakeVhostUser, Fault};
use harness::virtio_host::{backend_available, reg, status, Backend, HostDriver, Machine, BAR4};
use harness::Scratch;
use vmm::devices::vhost_user::{self, VhostUserKind, VhostUserOptions};

const QSD: &str = "qemu-storage-daemon";
/// Where the misbehaving device's BAR4 goes (the disk's is at BAR4).
const FAKE_BAR4: u64 = BAR4 + 0x10_0000;
const TIMEOUT: Duration = Duration::from_millis(500);

fn generic(socket: &Path) -> VhostUserOptions {
    let kind = VhostUserKind::Generic {
        virtio_id: 4,
        config_size: 0,
    };
    let mut options = VhostUserOptions::new(kind, socket);
    options.reply_timeout = TIMEOUT;
    options
}

/// A disk from qemu-storage-daemon in slot 1 and a device on `fake` in slot 2, both mapped.
fn machine_with_disk_and(dir: &Scratch, fake: &FakeVhostUser) -> (Machine, Backend) {
    let image = dir.join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let socket = dir.join("blk.sock");
    let daemon = Backend::start(
        Command::new(QSD)
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=disk,filename={}",
                image.display()
            ))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=e,node-name=disk,addr.type=unix,addr.path={},writable=on",
                socket.display()
            )),
        &socket,
    );
    let m = Machine::shared();
    vhost_user::add(
        &m.ctx,
        &VhostUserOptions::new(VhostUserKind::Blk, &socket),
        0,
    )
    .expect("the disk");
    vhost_user::add(&m.ctx, &generic(fake.path()), 0).expect("the fake device");
    assert_eq!(m.map_device_at(1, BAR4), 0x1042_1AF4);
    assert_eq!(m.map_device_at(2, FAKE_BAR4), 0x1044_1AF4);
    (m, daemon)
}

/// One read of sector 0 on the disk; its status byte.
fn disk_read(m: &Machine, disk: &mut HostDriver<'_>) -> u8 {
    harness::virtio_host::blk_request(m, disk, false, 0, 0x18_0000)
}

#[test]
fn a_garbage_reply_at_start_up_is_a_clear_error() {
    let dir = Scratch::new("vhost-user-garbage");
    let socket = dir.join("garbage.sock");
    let _fake = FakeVhostUser::start(
        &socket,
        Fault {
            request: request::GET_FEATURES,
            nth: 1,
            action: Action::Garbage,
        },
    );
    let m = Machine::shared();
    let error = vhost_user::add(&m.ctx, &generic(&socket), 0)
        .err()
        .expect("a garbage reply must fail")
        .to_string();
    assert!(
        error.contains("garbage.sock") && error.contains("GET_FEATURES"),
        "{error}"
    );
}

#[test]
fn a_backend_closing_mid_driver_ok_fails_only_its_device() {
    if !backend_available(harness::test_name!(), QSD, "--version") {
        return;
    }
    let dir = Scratch::new("vhost-user-close");
    let fake = FakeVhostUser::start(
        &dir.join("closing.sock"),
        Fault {
            request: request::SET_MEM_TABLE,
            nth: 1,
            action: Action::Close,
        },
    );
    let (m, _daemon) = machine_with_disk_and(&dir, &fake);
    let mut disk = HostDriver::start(&m, 0);
    assert_eq!(disk_read(&m, &mut disk), 0);

    let started = Instant::now();
    let broken = HostDriver::start_at(&m, FAKE_BAR4, 0x1_0000, 0);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        harness::wait_until(Duration::from_secs(5), || broken.status()
            & status::NEEDS_RESET
            != 0),
        "no DEVICE_NEEDS_RESET (status {:#x})",
        broken.status()
    );
    assert!(fake.requests().contains(&request::SET_MEM_TABLE));
    // The disk next to it is untouched.
    assert_eq!(disk_read(&m, &mut disk), 0);
    assert_eq!(disk.status() & status::NEEDS_RESET, 0);
}

#[test]
fn a_backend_that_stops_answering_costs_one_timeout_and_only_its_device() {
    if !backend_available(harness::test_name!(), QSD, "--version") {
        return;
    }
    let dir = Scratch::new("vhost-user-silent-late");
    // The second GET_FEATURES is the set-up barrier at DRIVER_OK.
    let fake = FakeVhostUser::start(
        &dir.join("silent.sock"),
        Fault {
            request: request::GET_FEATURES,
            nth: 2,
            action: Action::Silent,
        },
    );
    let (m, _daemon) = machine_with_disk_and(&dir, &fake);
    let mut disk = HostDriver::start(&m, 0);

    let started = Instant::now();
    let stuck = HostDriver::start_at(&m, FAKE_BAR4, 0x1_0000, 0);
    let took = started.elapsed();
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(2),
        "DRIVER_OK took {took:?}"
    );
    assert_eq!(stuck.status() & status::NEEDS_RESET, status::NEEDS_RESET);
    // A reset on the dead connection returns at once (nothing more is sent).
    let started = Instant::now();
    m.write(FAKE_BAR4 + reg::STATUS, 1, 0);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(disk_read(&m, &mut disk), 0);
}

#[test]
fn rings_outside_guest_ram_set_needs_reset() {
    let dir = Scratch::new("vhost-user-bad-rings");
    let fake = FakeVhostUser::start(
        &dir.join("fake.sock"),
        Fault {
            request: 0,
            nth: 1,
            action: Action::Close,
        },
    );
    let m = Machine::shared();
    vhost_user::add(&m.ctx, &generic(fake.path()), 0).expect("the fake device");
    m.map_device();
    let b = BAR4;
    m.write(b + reg::STATUS, 1, status::ACK_DRIVER);
    m.write(b + reg::DRIVER_FEATURE_SELECT, 4, 1);
    m.write(b + reg::DRIVER_FEATURE, 4, 1);
    m.write(b + reg::STATUS, 1, status::ACK_DRIVER | status::FEATURES_OK);
    m.write(b + reg::QUEUE_SELECT, 2, 0);
    m.write(b + reg::QUEUE_SIZE, 2, 16);
    // Descriptors far beyond the 4 MiB of RAM.
    m.write(b + reg::QUEUE_DESC, 4, 0x4000_0000);
    m.write(b + reg::QUEUE_DRIVER, 4, 0x1000);
    m.write(b + reg::QUEUE_DEVICE, 4, 0x2000);
    m.write(b + reg::QUEUE_ENABLE, 2, 1);
    m.write(
        b + reg::STATUS,
        1,
        status::ACK_DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert_eq!(
        m.read(b + reg::STATUS, 1) & status::NEEDS_RESET,
        status::NEEDS_RESET
    );
    assert!(
        !fake.requests().contains(&9),
        "no SET_VRING_ADDR for a ring outside RAM: {:?}",
        fake.requests()
    );
}
