//! Threads that devices run beside the vCPUs (an ivshmem doorbell device following its server),
//! stopped and joined when the VM shuts down.
//!
//! Each thread gets a [`StopSignal`]: an eventfd it polls next to whatever it waits on, and
//! leaves its loop when it becomes readable. [`BackgroundThreads::shutdown`] (called by
//! `Vm::run` on its way out, and on drop for a VM that never ran) signals every thread, then
//! joins them, so no thread outlives the VM holding its fds.
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::seccomp::ThreadKind;

/// Readable once the thread should stop (poll it with the thread's other fds).
#[derive(Clone)]
pub struct StopSignal(Arc<EventFd>);

impl StopSignal {
    fn new() -> std::io::Result<StopSignal> {
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        Ok(StopSignal(Arc::new(EventFd::from_flags(flags)?)))
    }

    fn raise(&self) {
        // Only fails when the counter would overflow, i.e. it is raised already.
        let _ = self.0.write(1);
    }

    /// The fd to poll for POLLIN.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

struct Running {
    name: String,
    stop: StopSignal,
    handle: JoinHandle<()>,
}

/// The background threads of one VM.
#[derive(Default)]
pub struct BackgroundThreads {
    threads: Mutex<Vec<Running>>,
}

impl BackgroundThreads {
    /// An empty set; threads are added as devices start them.
    pub fn new() -> Arc<BackgroundThreads> {
        Arc::new(BackgroundThreads::default())
    }

    /// Starts `body` on a thread named `name`; it must return soon after its [`StopSignal`]
    /// becomes readable.
    pub fn spawn(
        &self,
        name: &str,
        body: impl FnOnce(StopSignal) + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = StopSignal::new()?;
        let thread = name.to_string();
        let signal = stop.clone();
        let handle = crate::threads::named(name).spawn(move || {
            match crate::seccomp::enter(ThreadKind::Background) {
                Ok(()) => body(signal),
                Err(e) => log::error!("{thread}: {e}; thread not started"),
            }
        })?;
        self.lock().push(Running {
            name: name.to_string(),
            stop,
            handle,
        });
        Ok(())
    }

    /// Threads started and not yet joined.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Asks every thread to stop, then joins them all.
    pub fn shutdown(&self) {
        let threads = std::mem::take(&mut *self.lock());
        for thread in &threads {
            thread.stop.raise();
        }
        for thread in threads {
            if thread.handle.join().is_err() {
                log::error!("{}: thread panicked", thread.name);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for BackgroundThreads {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn shutdown_stops_and_joins_every_thread() {
        let threads = BackgroundThreads::new();
        let finished: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
        for (i, done) in finished.iter().enumerate() {
            let done = done.clone();
            threads
                .spawn(&format!("worker{i}"), move |stop| {
                    // Blocks until the stop signal, as a device thread waiting on its fds does.
                    let mut fds = [nix::poll::PollFd::new(
                        stop.fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    while nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).is_err() {}
                    done.store(true, Ordering::SeqCst);
                })
                .unwrap();
        }
        assert_eq!(threads.count(), 3);
        threads.shutdown();
        assert_eq!(threads.count(), 0);
        assert!(finished.iter().all(|d| d.load(Ordering::SeqCst)));
    }
}
