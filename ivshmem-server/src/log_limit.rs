//! Rate limit for join and leave lines, so a reconnect storm is logged once, not thousands of
//! times. QEMU's own ivshmem-client, for example, refuses a server with more than 64 vectors per
//! peer and reconnects in a loop: each cycle is a join and a leave from the same pid.
//!
//! Lines are grouped by a key (the caller uses pid + what happened). Within a window of
//! [`WINDOW`], the first [`BURST`] lines of a key are logged; the rest are counted, and when the
//! window ends the last of them is logged with "(N similar lines suppressed)". A key that was
//! suppressing stays quiet for the next window too (a storm yields one summary per window); a
//! key whose window passes without suppression is forgotten.
//!
//! Lines are values of any `Display` type, formatted only when written: a suppressed line is
//! kept as it is (the last one of a window is shown in its summary), so a reconnect storm costs
//! no formatting per suppressed line.
//!
//! Memory: every key logged within the last window is remembered, even one that logged a single
//! line, so the table follows the rate of distinct sources (each short-lived client is a new
//! pid). At most [`MAX_KEYS`] are tracked; lines of further keys share one overflow window with
//! the same burst, so a flood of connections from many pids costs bounded memory. The table
//! gives its memory back when it empties out after a flood.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lines of one key logged per window before suppression starts.
pub const BURST: u32 = 10;
/// Length of a rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Keys tracked at once: 2048 sources (a join and a leave key each) within one window, about
/// 200 new pids a second; at this cap the server's table takes about 0.9 MiB (88-byte entries
/// in 8192 slots, plus the keys' strings).
pub const MAX_KEYS: usize = 4096;

#[derive(Debug)]
struct Window<L> {
    end: Instant,
    /// Lines still allowed in this window.
    allowance: u32,
    suppressed: u64,
    /// The last suppressed line, shown in the summary.
    last: Option<L>,
}

/// Per-key windows over lines of type `L`; time is passed in, so it is testable without
/// sleeping.
#[derive(Debug)]
pub struct RateLimiter<K, L = String> {
    burst: u32,
    window: Duration,
    windows: HashMap<K, Window<L>>,
    max_keys: usize,
    /// Shared by the lines of keys that arrive while `max_keys` are tracked.
    overflow: Option<Window<L>>,
    /// Earliest window end, when [`RateLimiter::expire`] has work.
    next_end: Option<Instant>,
}

impl<K: Hash + Eq + Clone, L: Display> RateLimiter<K, L> {
    /// Lets `burst` alike lines per key through in each `window`; the rest are counted. Tracks
    /// at most `max_keys` keys; the lines of others share one overflow window.
    pub fn new(burst: u32, window: Duration, max_keys: usize) -> Self {
        RateLimiter {
            burst,
            window,
            windows: HashMap::new(),
            max_keys,
            overflow: None,
            next_end: None,
        }
    }

    /// Keys with an open window (the overflow window not counted).
    pub fn tracked_keys(&self) -> usize {
        self.windows.len()
    }

    /// `Some(line)` when `line` should be logged now; otherwise it is counted (and kept, for
    /// the summary) and the answer is None.
    pub fn admit(&mut self, key: K, line: L, now: Instant) -> Option<L> {
        let fresh = Window::new(now + self.window, self.burst);
        // One hash of the key either way (SipHash: pids are the clients').
        let entry = if self.windows.len() < self.max_keys {
            self.windows.entry(key).or_insert(fresh)
        } else {
            match self.windows.get_mut(&key) {
                Some(window) => window,
                None => self.overflow.get_or_insert(fresh),
            }
        };
        let end = entry.end;
        let admitted = entry.admit(line);
        self.next_end = Some(self.next_end.map_or(end, |e| e.min(end)));
        admitted
    }

    /// Whether [`admit`](Self::admit) would let a line of `key` through now (nothing is
    /// counted): a caller can skip work that only the written line needs.
    pub fn would_admit(&self, key: &K) -> bool {
        match self.windows.get(key) {
            Some(w) => w.allowance > 0,
            None if self.windows.len() < self.max_keys => self.burst > 0,
            None => self
                .overflow
                .as_ref()
                .map_or(self.burst > 0, |w| w.allowance > 0),
        }
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
        let next = now + self.window;
        self.windows
            .retain(|_, w| w.end > now || w.roll_over(next, &mut summaries, Summary::Similar));
        if let Some(w) = &mut self.overflow {
            if w.end <= now && !w.roll_over(next, &mut summaries, Summary::Overflow) {
                self.overflow = None;
            }
        }
        // After a flood of sources: give the table back rather than keep its high-water mark.
        if self.windows.len() < self.windows.capacity() / 4 {
            self.windows.shrink_to(self.windows.len() * 2);
        }
        self.next_end = self
            .windows
            .values()
            .chain(&self.overflow)
            .map(|w| w.end)
            .min();
        summaries
    }

    /// Summaries of every open window (at shutdown).
    pub fn flush(&mut self) -> Vec<String> {
        self.next_end = None;
        let overflow = self.overflow.take();
        let mut summaries: Vec<String> = self
            .windows
            .drain()
            .filter_map(|(_, w)| w.summary(Summary::Similar))
            .collect();
        summaries.extend(overflow.and_then(|w| w.summary(Summary::Overflow)));
        summaries
    }
}

impl<L: Display> Window<L> {
    fn new(end: Instant, allowance: u32) -> Self {
        Window {
            end,
            allowance,
            suppressed: 0,
            last: None,
        }
    }

    /// Takes one line from the allowance (and gives it back to be logged), or counts it as
    /// suppressed and keeps it as the last one.
    fn admit(&mut self, line: L) -> Option<L> {
        if self.allowance > 0 {
            self.allowance -= 1;
            return Some(line);
        }
        self.suppressed += 1;
        self.last = Some(line);
        None
    }

    /// The summary of what this window suppressed, if anything.
    fn summary(&self, kind: Summary) -> Option<String> {
        match &self.last {
            Some(last) if self.suppressed > 0 => Some(kind.line(last, self.suppressed)),
            _ => None,
        }
    }

    /// Ends this window: false when nothing was suppressed (forget it); otherwise adds its
    /// summary and starts a quiet window ending at `next` (still storming).
    fn roll_over(&mut self, next: Instant, summaries: &mut Vec<String>, kind: Summary) -> bool {
        let Some(summary) = self.summary(kind) else {
            return false;
        };
        summaries.push(summary);
        *self = Window::new(next, 0);
        true
    }
}

/// What a summary line says was suppressed.
#[derive(Clone, Copy)]
enum Summary {
    /// Lines of the same key.
    Similar,
    /// Lines of keys beyond the tracked maximum.
    Overflow,
}

impl Summary {
    fn line(self, last: &impl Display, suppressed: u64) -> String {
        let s = if suppressed == 1 { "" } else { "s" };
        match self {
            Summary::Similar => format!("{last} ({suppressed} similar line{s} suppressed)"),
            Summary::Overflow => format!(
                "{last} ({suppressed} line{s} of other sources suppressed: too many sources at once)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter<&'static str> {
        RateLimiter::new(3, Duration::from_secs(10), 100)
    }

    #[test]
    fn burst_then_suppressed_then_one_summary() {
        let mut l = limiter();
        let t0 = Instant::now();
        let admitted: Vec<bool> = (0..10)
            .map(|i| {
                l.admit("pid 7 joined", format!("peer {i} joined"), t0)
                    .is_some()
            })
            .collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 3);
        assert!(admitted[..3].iter().all(|a| *a));
        // Another key is independent.
        assert!(l
            .admit("pid 8 joined", "peer 99 joined".to_string(), t0)
            .is_some());
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(l.expire(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            l.expire(t0 + Duration::from_secs(10)),
            vec!["peer 9 joined (7 similar lines suppressed)".to_string()]
        );
    }

    /// `would_admit` answers what `admit` would do, without counting anything.
    #[test]
    fn would_admit_predicts_admit() {
        let mut l: RateLimiter<u32> = RateLimiter::new(2, Duration::from_secs(10), 2);
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(l.would_admit(&1));
            assert!(l.would_admit(&1), "asking counts nothing");
            assert!(l.admit(1, "one".to_string(), t0).is_some());
        }
        assert!(!l.would_admit(&1));
        assert!(l.admit(1, "one".to_string(), t0).is_none());
        // Beyond the tracked keys: the overflow window's allowance decides.
        assert!(l.admit(2, "two".to_string(), t0).is_some());
        for _ in 0..2 {
            assert!(l.would_admit(&3));
            assert!(l.admit(3, "three".to_string(), t0).is_some());
        }
        assert!(!l.would_admit(&4));
        assert!(l.admit(4, "four".to_string(), t0).is_none());
        assert_eq!(
            l.flush(),
            vec![
                "one (1 similar line suppressed)".to_string(),
                "four (1 line of other sources suppressed: too many sources at once)".to_string()
            ]
        );
    }

    #[test]
    fn a_continuing_storm_stays_quiet_with_one_summary_per_window() {
        let mut l = limiter();
        let t0 = Instant::now();
        for i in 0..5 {
            let _ = l.admit("k", format!("line {i}"), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.expire(t1).len(), 1);
        // The next window admits nothing.
        assert!(l.admit("k", "line 5".to_string(), t1).is_none());
        assert!(l
            .admit("k", "line 6".to_string(), t1 + Duration::from_secs(1))
            .is_none());
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(
            l.expire(t2),
            vec!["line 6 (2 similar lines suppressed)".to_string()]
        );
        // A quiet window ends the storm: the key is forgotten and logs again.
        assert!(l.expire(t2 + Duration::from_secs(10)).is_empty());
        assert_eq!(l.next_deadline(), None);
        assert!(l
            .admit("k", "line 7".to_string(), t2 + Duration::from_secs(11))
            .is_some());
    }

    #[test]
    fn quiet_keys_are_forgotten_and_flush_reports_open_windows() {
        let mut l = limiter();
        let t0 = Instant::now();
        assert!(l.admit("a", "a".to_string(), t0).is_some());
        assert!(l.expire(t0 + Duration::from_secs(11)).is_empty());
        assert_eq!(l.next_deadline(), None);
        for _ in 0..4 {
            let _ = l.admit("b", "b".to_string(), t0);
        }
        assert_eq!(l.flush(), vec!["b (1 similar line suppressed)".to_string()]);
        assert!(l.flush().is_empty());
    }

    /// The soak's pattern: short-lived clients, each a new pid with one join and one leave
    /// line. The table holds the sources of one window, not of the whole run.
    #[test]
    fn new_sources_are_forgotten_window_by_window() {
        const PER_SECOND: u32 = 100;
        let mut l: RateLimiter<u32> = RateLimiter::new(BURST, WINDOW, MAX_KEYS);
        let t0 = Instant::now();
        let step = Duration::from_secs(1) / PER_SECOND;
        let sources = 6_000;
        let mut most = 0;
        for pid in 0..sources {
            let now = t0 + step * pid;
            assert!(l.admit(pid * 2, "joined".to_string(), now).is_some());
            assert!(l.admit(pid * 2 + 1, "left".to_string(), now).is_some());
            assert!(l.expire(now).is_empty());
            most = most.max(l.tracked_keys());
        }
        // Two keys per source for one window (plus the sources of the instant it ends).
        let per_window = 2 * PER_SECOND as usize * WINDOW.as_secs() as usize;
        assert!(most <= per_window + 2, "{most} keys tracked at once");
        assert!(most >= per_window, "{most} keys tracked at once");
        let after = t0 + step * sources + WINDOW;
        assert!(l.expire(after).is_empty());
        assert_eq!(l.tracked_keys(), 0);
        assert_eq!(l.next_deadline(), None);
        assert!(l.windows.capacity() < 64, "{}", l.windows.capacity());
    }

    #[test]
    fn keys_beyond_the_cap_share_one_overflow_window() {
        let mut l: RateLimiter<u32> = RateLimiter::new(3, Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let admitted = (0..1000)
            .filter(|&pid| l.admit(pid, format!("peer {pid} joined"), t0).is_some())
            .count();
        // Each tracked key's first line, then the overflow window's burst.
        assert_eq!(admitted, 100 + 3);
        assert_eq!(l.tracked_keys(), 100);
        // A tracked key keeps its own window.
        assert!(l.admit(5, "peer 5 left".to_string(), t0).is_some());
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            l.expire(t1),
            vec![
                "peer 999 joined (897 lines of other sources suppressed: too many sources at once)"
                    .to_string()
            ]
        );
        assert_eq!(l.tracked_keys(), 0);
        // The quiet keys are forgotten, so a new key is tracked (and logged) again; the
        // overflow window stays, quiet, until a window passes without suppression.
        assert!(l.admit(5000, "peer 5000 joined".to_string(), t1).is_some());
        assert_eq!(l.tracked_keys(), 1);
        assert!(l.expire(t1 + Duration::from_secs(10)).is_empty());
        assert_eq!(l.next_deadline(), None);
        assert!(l.overflow.is_none());
        assert!(l.windows.capacity() < 16, "{}", l.windows.capacity());
    }
}
