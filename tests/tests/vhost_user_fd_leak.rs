//! A vhost-user device leaves no file descriptor behind: devices on a qemu-storage-daemon disk
//! are created, driven (negotiation, a request, a reset), and dropped with their machine, over
//! and over; the process's fd count comes back to where it was. One test in its own binary, so
//! no other test's fds move the count.

use std::process::Command;

use harness::virtio_host::{backend_available, status, Backend, HostDriver, Machine, BAR4};
use harness::{fd_count, Scratch};
use vmm::devices::vhost_user::{self, VhostUserKind, VhostUserOptions};

fn one_round(socket: &std::path::Path) {
    let m = Machine::shared();
    vhost_user::add(
        &m.ctx,
        &VhostUserOptions::new(VhostUserKind::Blk, socket),
        0,
    )
    .expect("the disk");
    m.map_device();
    let mut driver = HostDriver::start(&m, 0);
    assert_eq!(
        harness::virtio_host::blk_request(&m, &mut driver, false, 0, 0x18_0000),
        0
    );
    // The guest resets the device (the backend stops its ring), then the machine goes.
    m.write(BAR4 + harness::virtio_host::reg::STATUS, 1, 0);
    assert_eq!(driver.status() & status::NEEDS_RESET, 0);
}

#[test]
fn devices_come_and_go_without_leaking_fds() {
    if !backend_available(harness::test_name!(), "qemu-storage-daemon", "--version") {
        return;
    }
    let dir = Scratch::new("vhost-user-fds");
    let image = dir.join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let socket = dir.join("blk.sock");
    let _daemon = Backend::start(
        Command::new("qemu-storage-daemon")
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
    // The first round creates what lives for the whole process (the MSI-X watcher).
    one_round(&socket);
    let before = fd_count(std::process::id());
    for _ in 0..5 {
        one_round(&socket);
    }
    let after = fd_count(std::process::id());
    assert_eq!(
        after, before,
        "fds before {before}, after five devices {after}"
    );
}
