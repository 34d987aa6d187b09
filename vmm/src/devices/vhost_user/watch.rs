//! The device's background thread: it watches the backend's socket for hang-up and each
//! queue's error eventfd, and turns either into DEVICE_NEEDS_RESET plus a configuration
//! interrupt. It sends nothing on the socket (requests stay on the register-access threads);
//! it only polls a duplicate of it for POLLRDHUP, which a reply in flight never raises.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use vmm_sys_util::eventfd::EventFd;

use crate::background::StopSignal;
use crate::devices::virtio_pci::VirtioPci;

/// What the thread watches.
pub struct Watched {
    /// The device to fail.
    pub device: Weak<VirtioPci>,
    /// A duplicate of the backend's socket.
    pub socket: OwnedFd,
    /// Its path, for the log.
    pub path: PathBuf,
    /// Each queue's error eventfd.
    pub err_fds: Vec<Arc<EventFd>>,
}

/// The thread's loop: until `stop`.
pub fn run(watched: Watched, stop: StopSignal) {
    let mut socket_open = true;
    loop {
        let mut fds = vec![
            libc::pollfd {
                fd: stop.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative fd is skipped by poll: the socket is no longer watched once it
                // hung up (it stays readable forever).
                fd: if socket_open {
                    watched.socket.as_fd().as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLRDHUP,
                revents: 0,
            },
        ];
        fds.extend(watched.err_fds.iter().map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: `fds` is a valid array of pollfds of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!(
                "vhost-user watcher ({}): poll: {error}",
                watched.path.display()
            );
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        let Some(device) = watched.device.upgrade() else {
            return;
        };
        if fds[1].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            socket_open = false;
            device.device_failed(&format!(
                "vhost-user backend at {} closed the connection (it exited or crashed)",
                watched.path.display()
            ));
        }
        for (queue, pollfd) in fds[2..].iter().enumerate() {
            if pollfd.revents & libc::POLLIN != 0 {
                let _ = watched.err_fds[queue].read();
                device.device_failed(&format!(
                    "vhost-user backend at {} reported an error on queue {queue}",
                    watched.path.display()
                ));
            }
        }
    }
}
