//! [`RequestWatchdog`]: a bound on how long any vhost-user request may wait for its backend.
//!
//! The `vhost` crate's frontend retries a receive that would block (`EAGAIN`) in a loop, so a
//! socket receive timeout does not bound a request. Instead the thread making the request arms
//! the watchdog with a deadline; the device's watcher thread (`watch`) wakes at the deadline
//! and, if the request is still pending, shuts the socket down: the blocked receive returns,
//! the request fails, and the connection is marked broken. A vCPU thread thus never waits
//! longer than the timeout, whatever the backend does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A pending request's deadline, shared by the requesting thread and the watcher.
pub struct RequestWatchdog {
    timeout: Duration,
    pending: Mutex<Option<(Instant, String)>>,
    expired: Mutex<Option<String>>,
    /// Signalled when a deadline is armed, so the watcher recomputes its poll timeout.
    wake: EventFd,
}

impl RequestWatchdog {
    /// A watchdog giving each request `timeout`.
    pub fn new(timeout: Duration) -> std::io::Result<RequestWatchdog> {
        Ok(RequestWatchdog {
            timeout,
            pending: Mutex::new(None),
            expired: Mutex::new(None),
            wake: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The time each request gets.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request named `what` starts now.
    pub fn arm(&self, what: &str) {
        *lock(&self.pending) = Some((Instant::now() + self.timeout, what.to_string()));
        let _ = self.wake.write(1);
    }

    /// Wakes the watcher to re-read what it watches (the device's error eventfds).
    pub fn nudge(&self) {
        let _ = self.wake.write(1);
    }

    /// The request finished (either way).
    pub fn disarm(&self) {
        *lock(&self.pending) = None;
    }

    /// The eventfd the watcher polls to learn of a new deadline.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// For the watcher: how long it may sleep, or `Err(what)` when the pending request's
    /// deadline has passed (the watchdog then forgets it and remembers it expired).
    pub fn check(&self, now: Instant) -> Result<Option<Duration>, String> {
        let _ = self.wake.read();
        let mut pending = lock(&self.pending);
        match pending.as_ref() {
            None => Ok(None),
            Some((deadline, _)) if *deadline > now => Ok(Some(*deadline - now)),
            Some(_) => {
                let (_, what) = pending.take().unwrap_or((now, String::new()));
                let message = format!("no answer to {what} within {:?}", self.timeout);
                *lock(&self.expired) = Some(message.clone());
                Err(message)
            }
        }
    }

    /// Why the socket was shut down, if the watchdog did it.
    pub fn expired(&self) -> Option<String> {
        lock(&self.expired).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        let dog = RequestWatchdog::new(Duration::from_millis(100)).unwrap();
        let now = Instant::now();
        assert_eq!(dog.check(now), Ok(None));
        dog.arm("GET_FEATURES");
        assert!(
            matches!(dog.check(Instant::now()), Ok(Some(d)) if d <= Duration::from_millis(100))
        );
        dog.disarm();
        assert_eq!(dog.check(Instant::now() + Duration::from_secs(1)), Ok(None));
        dog.arm("GET_CONFIG");
        let error = dog
            .check(Instant::now() + Duration::from_secs(1))
            .unwrap_err();
        assert!(error.contains("GET_CONFIG"), "{error}");
        assert!(dog.expired().is_some());
        assert_eq!(dog.check(Instant::now() + Duration::from_secs(2)), Ok(None));
    }
}
