//! Interoperability with QEMU itself: a real `ivshmem-doorbell` device connects to our server
//! (QEMU does the handshake while creating the device, so no guest is needed), joins with its
//! vectors, has working eventfds, and is announced as leaving when it dies.
//!
//! Skips with a printed reason when `qemu-system-x86_64` is not on PATH, unless
//! `IVSHMEM_REQUIRE_QEMU=1` (scripts/test.sh installs Debian's qemu-system-x86).

mod server_support;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{qemu_available, wait_until, Scratch};
use protocol::client::ClientEvent;
use server_support::*;

/// Kills QEMU on drop.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn readable(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}

#[test]
fn qemu_interop_doorbell_device_joins_rings_and_leaves() {
    if !qemu_available("qemu_interop_doorbell_device_joins_rings_and_leaves") {
        return;
    }
    let dir = Scratch::new("qemu-interop");
    let sock = dir.join("sock");
    let server = start_server(&sock, &["--memfd", "-n", "2", "-l", "1M"]);
    let mut host = RawClient::connect(&sock, 2);

    let mut qemu = Qemu(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-S",
                "-display",
                "none",
                "-nodefaults",
                "-chardev",
            ])
            .arg(format!("socket,path={},id=c", sock.display()))
            .args(["-device", "ivshmem-doorbell,chardev=c,vectors=2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qemu-system-x86_64"),
    );
    let qemu_pid = qemu.0.id();

    // QEMU joins with 2 vectors (as peer 1).
    let mut qemu_id = None;
    for v in 0..2 {
        match host.next_event() {
            ClientEvent::PeerVector { peer, vector, fd } => {
                assert_eq!(vector, v);
                qemu_id.get_or_insert(peer);
                assert_eq!(Some(peer), qemu_id);
                host.vectors.entry(peer).or_default().push(fd);
            }
            other => panic!("expected QEMU's vectors, got {other:?}"),
        }
    }
    let qemu_id = qemu_id.unwrap();
    assert_eq!(qemu_id, 1);
    assert!(
        wait_log(
            &server,
            &format!("peer 1 joined (pid {qemu_pid}, 2 vectors)")
        ),
        "{}",
        server.log_text()
    );
    // QEMU is alive and paused (-S), having completed its handshake.
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(Some(status)) = qemu.0.try_wait() {
        let mut err = String::new();
        qemu.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("QEMU exited early ({status}): {err}");
    }

    // Ringing QEMU's vectors works; without a guest QEMU's own handler consumes the event.
    for fd in &host.vectors[&qemu_id] {
        ring(fd);
        assert!(
            wait_until(Duration::from_secs(5), || !readable(fd)),
            "QEMU did not consume the event on its vector"
        );
    }

    // A second host peer sees QEMU among the existing peers.
    let late = RawClient::connect(&sock, 2);
    assert_eq!(late.peer_ids(), vec![0, qemu_id]);
    host.expect_join(late.id);

    // Killing QEMU is announced as its departure.
    qemu.0.kill().unwrap();
    qemu.0.wait().unwrap();
    host.expect_leave(qemu_id);
    assert!(wait_log(
        &server,
        &format!("peer {qemu_id} left (pid {qemu_pid})")
    ));
}
