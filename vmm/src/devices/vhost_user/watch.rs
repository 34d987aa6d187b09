//! The device's background thread: it enforces the [`RequestWatchdog`]'s deadlines (shutting
//! the socket down under a request the backend does not answer), watches the backend's socket
//! for hang-up and each queue's error eventfd, and turns any of them into DEVICE_NEEDS_RESET
//! plus a configuration interrupt. It sends nothing on the socket (requests stay on the
//! register-access threads); it polls a duplicate of it for POLLRDHUP, which a reply in flight
//! never raises.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use super::watchdog::RequestWatchdog;
use crate::background::StopSignal;
use crate::devices::virtio_pci::VirtioPci;

/// The device a watcher reports to; empty until the device exists (the watcher starts before
/// the first request, to bound it).
pub type DeviceSlot = Arc<Mutex<Weak<VirtioPci>>>;

/// What the thread watches.
pub struct Watched {
    /// The device to fail.
    pub device: DeviceSlot,
    /// A duplicate of the backend's socket.
    pub socket: OwnedFd,
    /// Its path, for the log.
    pub path: PathBuf,
    /// Deadlines of pending requests.
    pub watchdog: Arc<RequestWatchdog>,
    /// Each queue's error eventfd (filled in with the device).
    pub err_fds: Arc<Mutex<Vec<Arc<EventFd>>>>,
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The thread's loop: until `stop`, or until the socket is gone and no device was made.
pub fn run(watched: Watched, stop: StopSignal) {
    let mut socket_open = true;
    loop {
        let timeout = match watched.watchdog.check(Instant::now()) {
            Ok(None) => -1,
            Ok(Some(left)) => left.as_millis().min(i32::MAX as u128) as i32 + 1,
            Err(why) => {
                // SAFETY: shutting down our duplicate of the socket: the request blocked on
                // it returns at once, and nothing else is affected.
                unsafe { libc::shutdown(watched.socket.as_raw_fd(), libc::SHUT_RDWR) };
                log::error!("vhost-user backend at {}: {why}", watched.path.display());
                0
            }
        };
        let err_fds: Vec<Arc<EventFd>> = lock(&watched.err_fds).clone();
        let mut fds = vec![
            pollfd(stop.fd().as_raw_fd(), libc::POLLIN),
            pollfd(watched.watchdog.wake_fd().as_raw_fd(), libc::POLLIN),
            // A negative fd is skipped: once hung up, the socket stays readable forever.
            pollfd(
                if socket_open {
                    watched.socket.as_raw_fd()
                } else {
                    -1
                },
                libc::POLLRDHUP,
            ),
        ];
        fds.extend(
            err_fds
                .iter()
                .map(|fd| pollfd(fd.as_raw_fd(), libc::POLLIN)),
        );
        // SAFETY: `fds` is a valid array of pollfds of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
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
        let device = lock(&watched.device).upgrade();
        if fds[2].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            socket_open = false;
            let why = match watched.watchdog.expired() {
                Some(why) => format!(
                    "vhost-user backend at {}: {why}; connection closed",
                    watched.path.display()
                ),
                None => format!(
                    "vhost-user backend at {} closed the connection (it exited or crashed)",
                    watched.path.display()
                ),
            };
            match &device {
                Some(device) => device.device_failed(&why),
                // The device was never made (start-up failed): nothing left to watch.
                None => return,
            }
        }
        for (queue, pollfd) in fds[3..].iter().enumerate() {
            if pollfd.revents & libc::POLLIN != 0 {
                let _ = err_fds[queue].read();
                if let Some(device) = &device {
                    device.device_failed(&format!(
                        "vhost-user backend at {} reported an error on queue {queue}",
                        watched.path.display()
                    ));
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
