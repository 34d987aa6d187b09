//! One thread that watches the eventfds of masked (or disabled) MSI-X vectors.
//!
//! While a vector is unmasked its eventfd is bound to KVM with irqfd and never seen here. When the
//! guest masks it, the irqfd is unbound and the eventfd is handed to this watcher, which calls the
//! owner's handler when it becomes readable. The handler takes the owner's lock and then consumes
//! the signals with [`EventWatcher::drain`], so reading and deciding what a signal means (pending
//! bit, dropped, re-signalled) happen atomically with respect to the guest's mask and enable
//! changes. One epoll thread serves every vector of every device in the process.
//!
//! Reads of a watched eventfd happen only under the registry lock after checking that the
//! registration still exists and the fd is readable, so a registration that was just removed
//! (and its fd bound to an irqfd that consumes the count) is never read, and a read never blocks
//! even though the fd may be a blocking one received from a server. Epoll is level-triggered: a
//! handler that leaves the fd readable is called again, so handlers must drain or unwatch.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Called on the watcher thread when the registration's eventfd is readable.
pub type SignalHandler = Arc<dyn Fn(WatchToken) + Send + Sync>;

/// Identifies one registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchToken(u64);

struct Watched {
    fd: Arc<EventFd>,
    handler: SignalHandler,
}

/// The watcher: an epoll set of masked vectors' eventfds and the thread that waits on it.
pub struct EventWatcher {
    epoll: Epoll,
    registry: Mutex<HashMap<u64, Watched>>,
    next_token: AtomicU64,
}

impl EventWatcher {
    /// The process-wide watcher; its thread starts on first use.
    pub fn global() -> Arc<EventWatcher> {
        static GLOBAL: OnceLock<Arc<EventWatcher>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let watcher = Arc::new(EventWatcher {
                    epoll: Epoll::new().expect("epoll_create1 for the MSI-X watcher"),
                    registry: Mutex::new(HashMap::new()),
                    next_token: AtomicU64::new(1),
                });
                let runner = watcher.clone();
                crate::threads::named("msix-watcher")
                    .spawn(move || runner.run())
                    .expect("spawn the MSI-X watcher thread");
                watcher
            })
            .clone()
    }

    fn registry(&self) -> MutexGuard<'_, HashMap<u64, Watched>> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start watching `fd`; `handler` runs on the watcher thread for every batch of signals.
    pub fn watch(&self, fd: Arc<EventFd>, handler: SignalHandler) -> io::Result<WatchToken> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let raw = fd.as_raw_fd();
        let mut registry = self.registry();
        self.epoll.ctl(
            ControlOperation::Add,
            raw,
            EpollEvent::new(EventSet::IN, token),
        )?;
        registry.insert(token, Watched { fd, handler });
        Ok(WatchToken(token))
    }

    /// Stop watching. Returns the signals that arrived but were not yet delivered to the handler
    /// (they are consumed here, so the caller decides what they mean).
    pub fn unwatch(&self, token: WatchToken) -> u64 {
        let mut registry = self.registry();
        let Some(watched) = registry.remove(&token.0) else {
            return 0;
        };
        // The fd may already be closed elsewhere (epoll then dropped it itself); ignore errors.
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            watched.fd.as_raw_fd(),
            EpollEvent::default(),
        );
        drain(&watched.fd)
    }

    /// Read pending signals of a registration now (used when the guest reads the PBA, so it
    /// sees signals that the watcher thread has not processed yet).
    pub fn drain(&self, token: WatchToken) -> u64 {
        let registry = self.registry();
        registry.get(&token.0).map_or(0, |w| drain(&w.fd))
    }

    fn run(&self) {
        if let Err(e) = crate::seccomp::enter(crate::seccomp::ThreadKind::MsixWatcher) {
            log::error!("MSI-X watcher: {e}; masked vectors are not watched");
            return;
        }
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("MSI-X watcher: epoll_wait failed: {e}");
                    return;
                }
            };
            for event in &events[..n] {
                let token = event.data();
                let handler = match self.registry().get(&token) {
                    Some(watched) => watched.handler.clone(),
                    None => continue,
                };
                // The handler takes device locks: never call it with the registry locked.
                handler(WatchToken(token));
            }
        }
    }
}

/// Read an eventfd's count if (and only if) it is readable right now.
fn drain(fd: &EventFd) -> u64 {
    // SAFETY: `fd` is an open EventFd that outlives this borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let mut fds = [PollFd::new(borrowed, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(1)
            if fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN)) =>
        {
            fd.read().unwrap_or(0)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn handler_sees_signals_and_unwatch_stops_them() {
        let watcher = EventWatcher::global();
        let fd = Arc::new(EventFd::new(0).unwrap()); // blocking on purpose
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let token = watcher
            .watch(
                fd.clone(),
                Arc::new(move |token| {
                    let n = EventWatcher::global().drain(token);
                    if n > 0 {
                        tx.lock().unwrap().send(n).unwrap();
                    }
                }),
            )
            .unwrap();
        fd.write(3).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 3);
        assert_eq!(watcher.drain(token), 0);
        watcher.unwatch(token);
        fd.write(1).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // The signal stayed in the eventfd for whoever owns it next.
        assert_eq!(fd.read().unwrap(), 1);
    }
}
