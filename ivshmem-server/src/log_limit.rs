//! Rate limit for join and leave lines, so a reconnect storm is logged once, not thousands of
//! times. QEMU's own ivshmem-client, for example, refuses a server with more than 64 vectors per
//! peer and reconnects in a loop: each cycle is a join and a leave from the same pid.
//!
//! Lines are grouped by a key (the caller uses pid + what happened). Within a window of
//! [`WINDOW`], the first [`BURST`] lines of a key are logged; the rest are counted, and when the
//! window ends the last of them is logged with "(N similar lines suppressed)". A key that was
//! suppressing stays quiet for the next window too (a storm yields one summary per window); a
//! key whose window passes without suppression is forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lines of one key logged per window before suppression starts.
pub const BURST: u32 = 10;
/// Length of a rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Window {
    end: Instant,
    /// Lines still allowed in this window.
    allowance: u32,
    suppressed: u64,
    /// The last suppressed line, shown in the summary.
    last: String,
}

/// Per-key windows; time is passed in, so it is testable without sleeping.
#[derive(Debug)]
pub struct RateLimiter<K> {
    burst: u32,
    window: Duration,
    windows: HashMap<K, Window>,
    /// Earliest window end, when [`RateLimiter::expire`] has work.
    next_end: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// Lets `burst` alike lines per key through in each `window`; the rest are counted.
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimiter {
            burst,
            window,
            windows: HashMap::new(),
            next_end: None,
        }
    }

    /// True when `line` should be logged now; otherwise it is counted for a later summary.
    pub fn admit(&mut self, key: K, line: &str, now: Instant) -> bool {
        let window = self.window;
        let burst = self.burst;
        let entry = self.windows.entry(key).or_insert_with(|| Window {
            end: now + window,
            allowance: burst,
            suppressed: 0,
            last: String::new(),
        });
        let end = entry.end;
        let admitted = if entry.allowance > 0 {
            entry.allowance -= 1;
            true
        } else {
            entry.suppressed += 1;
            entry.last.clear();
            entry.last.push_str(line);
            false
        };
        self.next_end = Some(self.next_end.map_or(end, |e| e.min(end)));
        admitted
    }

    /// When [`expire`](Self::expire) should run next (None: nothing pending).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_end
    }

    /// Ends the windows that are over at `now`; returns the summary lines to log.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        if self.next_end.is_none_or(|end| end > now) {
            return Vec::new();
        }
        let mut summaries = Vec::new();
        let window = self.window;
        self.windows.retain(|_, w| {
            if w.end > now {
                return true;
            }
            if w.suppressed == 0 {
                return false;
            }
            summaries.push(summary(&w.last, w.suppressed));
            // Still storming: the next window starts quiet.
            *w = Window {
                end: now + window,
                allowance: 0,
                suppressed: 0,
                last: String::new(),
            };
            true
        });
        self.next_end = self.windows.values().map(|w| w.end).min();
        summaries
    }

    /// Summaries of every open window (at shutdown).
    pub fn flush(&mut self) -> Vec<String> {
        self.next_end = None;
        self.windows
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .map(|(_, w)| summary(&w.last, w.suppressed))
            .collect()
    }
}

fn summary(last: &str, suppressed: u64) -> String {
    format!(
        "{last} ({suppressed} similar line{} suppressed)",
        if suppressed == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter<&'static str> {
        RateLimiter::new(3, Duration::from_secs(10))
    }

    #[test]
    fn burst_then_suppressed_then_one_summary() {
        let mut l = limiter();
        let t0 = Instant::now();
        let admitted: Vec<bool> = (0..10)
            .map(|i| l.admit("pid 7 joined", &format!("peer {i} joined"), t0))
            .collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 3);
        assert!(admitted[..3].iter().all(|a| *a));
        // Another key is independent.
        assert!(l.admit("pid 8 joined", "peer 99 joined", t0));
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(l.expire(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            l.expire(t0 + Duration::from_secs(10)),
            vec!["peer 9 joined (7 similar lines suppressed)".to_string()]
        );
    }

    #[test]
    fn a_continuing_storm_stays_quiet_with_one_summary_per_window() {
        let mut l = limiter();
        let t0 = Instant::now();
        for i in 0..5 {
            l.admit("k", &format!("line {i}"), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.expire(t1).len(), 1);
        // The next window admits nothing.
        assert!(!l.admit("k", "line 5", t1));
        assert!(!l.admit("k", "line 6", t1 + Duration::from_secs(1)));
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(
            l.expire(t2),
            vec!["line 6 (2 similar lines suppressed)".to_string()]
        );
        // A quiet window ends the storm: the key is forgotten and logs again.
        assert!(l.expire(t2 + Duration::from_secs(10)).is_empty());
        assert_eq!(l.next_deadline(), None);
        assert!(l.admit("k", "line 7", t2 + Duration::from_secs(11)));
    }

    #[test]
    fn quiet_keys_are_forgotten_and_flush_reports_open_windows() {
        let mut l = limiter();
        let t0 = Instant::now();
        assert!(l.admit("a", "a", t0));
        assert!(l.expire(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(l.next_deadline(), None);
        for _ in 0..4 {
            l.admit("b", "b", t0);
        }
        assert_eq!(l.flush(), vec!["b (1 similar line suppressed)".to_string()]);
        assert!(l.flush().is_empty());
    }
}
