//! QEMU's own `ivshmem-doorbell` device as a peer of a server: a paused (`-S`), headless QEMU
//! under TCG whose device connects, joins and stays until the test kills it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// A running QEMU with one `ivshmem-doorbell` device; killed when dropped.
pub struct QemuDoorbell(Child);

impl QemuDoorbell {
    /// Starts QEMU with `ivshmem-doorbell,vectors=VECTORS` on the server at `socket`. Its stderr
    /// is kept for [`QemuDoorbell::stop`] and [`QemuDoorbell::exited`].
    pub fn spawn(socket: &Path, vectors: u32) -> QemuDoorbell {
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-S", "-display", "none", "-nodefaults"])
            .arg("-chardev")
            .arg(format!("socket,path={},id=c", socket.display()))
            .args([
                "-device",
                &format!("ivshmem-doorbell,chardev=c,vectors={vectors}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qemu-system-x86_64");
        QemuDoorbell(child)
    }

    /// Its process id (the server logs it at the join).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status and what it printed, if it has already exited.
    pub fn exited(&mut self) -> Option<(ExitStatus, String)> {
        let status = self.0.try_wait().ok().flatten()?;
        Some((status, self.stderr()))
    }

    /// Kills it (it must still be running) and returns what it printed.
    pub fn stop(mut self) -> String {
        assert!(
            self.0.try_wait().unwrap().is_none(),
            "QEMU exited early: {}",
            self.stderr()
        );
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        self.stderr()
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = pipe.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for QemuDoorbell {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
