//! The server's logger: the event loop never waits for stderr.
//!
//! Log lines go into a bounded in-memory queue; one writer thread takes them out and does the
//! (blocking) writes. When stderr stops draining (a pipe nobody reads, a paused `| less`, a hung
//! supervisor) the writer blocks in write(2), the queue fills, and further lines are dropped and
//! counted instead of stalling the broker. Where lines were dropped the output says so, as soon
//! as stderr takes data again ("N log lines dropped: stderr was not writable"), and the total is
//! reported once more at shutdown.
//!
//! Why a writer thread rather than `O_NONBLOCK` on stderr: that flag belongs to the open file
//! description, which is shared with everyone else holding the same pipe or terminal (the shell,
//! the supervisor, sibling processes). Setting it would make their writes fail with EAGAIN, and a
//! terminal would stay non-blocking after we exit. A thread that blocks in write(2) disturbs
//! nobody. The thread must start after the shutdown signals are blocked (it inherits the mask, so
//! a SIGTERM can only reach the signalfd) and after daemonizing (fork keeps only the caller):
//! [`start_writer`] is called at that point, lines logged before wait in the queue.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Lines the queue holds while stderr is not draining (about 100 KiB of typical lines).
pub const QUEUE_CAPACITY: usize = 1024;

enum Entry {
    Line(String),
    /// This many lines were dropped here.
    Dropped(u64),
}

#[derive(Default)]
struct State {
    entries: VecDeque<Entry>,
    /// Lines (not markers) in `entries`.
    lines: usize,
    /// Dropped since the last marker was queued or written.
    dropped_pending: u64,
    dropped_total: u64,
    writer_started: bool,
    closing: bool,
    finished: bool,
}

/// A bounded queue of log lines drained by a writer thread; pushing never blocks on I/O.
pub struct LogQueue {
    state: Mutex<State>,
    /// Wakes the writer (new entry or closing).
    work: Condvar,
    /// Wakes [`LogQueue::finish`] when the writer is done.
    done: Condvar,
    capacity: usize,
}

impl LogQueue {
    /// A queue holding at most `capacity` lines; later ones are counted as dropped.
    pub fn new(capacity: usize) -> Arc<LogQueue> {
        Arc::new(LogQueue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent; keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one line (without its newline), or counts it as dropped when the queue is full.
    pub fn push(&self, line: String) {
        let mut state = self.lock();
        if state.closing && state.finished {
            return;
        }
        if state.lines >= self.capacity {
            state.dropped_pending += 1;
            state.dropped_total += 1;
            return;
        }
        if state.dropped_pending > 0 {
            let n = std::mem::take(&mut state.dropped_pending);
            state.entries.push_back(Entry::Dropped(n));
        }
        state.entries.push_back(Entry::Line(line));
        state.lines += 1;
        drop(state);
        self.work.notify_one();
    }

    /// Lines dropped so far.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Starts the thread that writes the queue to `out` (once; later calls do nothing).
    pub fn start_writer(self: &Arc<Self>, out: Box<dyn Write + Send>) -> std::io::Result<()> {
        {
            let mut state = self.lock();
            if state.writer_started {
                return Ok(());
            }
            state.writer_started = true;
        }
        let queue = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || queue.write_loop(out));
        if spawned.is_err() {
            self.lock().writer_started = false;
        }
        spawned.map(drop)
    }

    fn write_loop(&self, mut out: Box<dyn Write + Send>) {
        loop {
            let entry = {
                let mut state = self.lock();
                loop {
                    if let Some(entry) = state.entries.pop_front() {
                        if matches!(entry, Entry::Line(_)) {
                            state.lines -= 1;
                        }
                        break Some(entry);
                    }
                    // Stderr took everything queued: say what was lost since.
                    if state.dropped_pending > 0 {
                        break Some(Entry::Dropped(std::mem::take(&mut state.dropped_pending)));
                    }
                    if state.closing {
                        break None;
                    }
                    state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            };
            // Write errors (stderr closed) lose the line; there is nowhere else to report them.
            let _ = match entry {
                Some(Entry::Line(line)) => writeln!(out, "{line}"),
                Some(Entry::Dropped(n)) => writeln!(
                    out,
                    "ivshmem-server: {n} log line{} dropped: stderr was not writable",
                    plural(n)
                ),
                None => break,
            };
            let _ = out.flush();
        }
        let total = self.dropped_total();
        if total > 0 {
            let _ = writeln!(
                out,
                "ivshmem-server: {total} log line{} dropped in all because stderr was not writable",
                plural(total)
            );
            let _ = out.flush();
        }
        self.lock().finished = true;
        self.done.notify_all();
    }

    /// Asks the writer to write what is queued (and the drop total) and waits up to `timeout`
    /// for it; returns whether it finished. A writer still blocked on stderr is abandoned (the
    /// process is exiting). Starts a writer on `fallback` if none was started.
    pub fn finish(
        self: &Arc<Self>,
        timeout: Duration,
        fallback: impl FnOnce() -> Box<dyn Write + Send>,
    ) -> bool {
        let started = self.lock().writer_started;
        if !started && self.start_writer(fallback()).is_err() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        state.closing = true;
        self.work.notify_one();
        while !state.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The `log` front end: formats the message alone (no level or timestamp, like QEMU's server).
struct Logger {
    queue: Arc<LogQueue>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.queue.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static QUEUE: OnceLock<Arc<LogQueue>> = OnceLock::new();

fn global() -> &'static Arc<LogQueue> {
    QUEUE.get_or_init(|| LogQueue::new(QUEUE_CAPACITY))
}

/// Makes this the process's logger, at `level`. Lines wait in the queue until [`start_writer`].
pub fn install(level: log::LevelFilter) {
    // Leaked once: the logger lives as long as the process.
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        queue: global().clone(),
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Starts writing the log to stderr. Call once the shutdown signals are blocked and after
/// daemonizing (see the module docs).
pub fn start_writer() -> std::io::Result<()> {
    global().start_writer(Box::new(std::io::stderr()))
}

/// Log lines dropped so far because stderr did not keep up (for `--status`).
pub fn dropped_lines() -> u64 {
    global().dropped_total()
}

/// How long the exiting process waits for stderr to take the rest of the log.
pub const EXIT_DRAIN: Duration = Duration::from_secs(5);

/// Writes the rest of the log (and the drop total) before exit, waiting at most [`EXIT_DRAIN`]
/// for stderr; returns false when stderr did not take it in time.
pub fn finish() -> bool {
    global().finish(EXIT_DRAIN, || Box::new(std::io::stderr()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;

    fn pipe(capacity: i32) -> (std::fs::File, std::fs::File) {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(capacity)).unwrap();
        (r.into(), w.into())
    }

    #[test]
    fn full_stderr_drops_and_counts_then_reports() {
        let (mut reader, writer) = pipe(4096);
        let queue = LogQueue::new(8);
        queue.start_writer(Box::new(writer)).unwrap();
        let start = Instant::now();
        // Far more than the pipe (4 KiB) and the queue (8 lines) hold; must not block.
        for i in 0..2000 {
            queue.push(format!("line {i:04} {}", "x".repeat(50)));
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(queue.dropped_total() > 1000, "{}", queue.dropped_total());
        let drain = std::thread::spawn(move || {
            let mut text = String::new();
            reader.read_to_string(&mut text).unwrap();
            text
        });
        assert!(queue.finish(Duration::from_secs(10), || unreachable!()));
        drop(queue); // closes the pipe's write end once the writer thread is gone
        let text = drain.join().unwrap();
        let dropped = queue_total(&text);
        let written = text.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(written + dropped, 2000, "{text}");
        // The writer may free room while lines are pushed: then the drops come in several
        // runs, each marked where it happened; the markers add up to the total.
        let marked: u64 = text
            .lines()
            .filter(|l| l.contains(" dropped: stderr was not writable"))
            .filter_map(|l| {
                l.strip_prefix("ivshmem-server: ")?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert_eq!(marked, dropped, "{text}");
        assert!(text.lines().last().unwrap().contains("dropped in all"));
        // Lines come out in order.
        let numbers: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.get(..4)?.parse().ok())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    }

    fn queue_total(text: &str) -> u64 {
        let last = text.lines().last().unwrap();
        last.strip_prefix("ivshmem-server: ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no total in {last:?}"))
    }

    #[test]
    fn nothing_dropped_reports_nothing() {
        let (mut reader, writer) = pipe(65536);
        let queue = LogQueue::new(8);
        queue.push("before the writer".into());
        queue.start_writer(Box::new(writer)).unwrap();
        queue.push("after".into());
        assert!(queue.finish(Duration::from_secs(10), || unreachable!()));
        drop(queue);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "before the writer\nafter\n");
    }

    #[test]
    fn finish_gives_up_on_a_blocked_stderr() {
        let (_reader, writer) = pipe(4096);
        let queue = LogQueue::new(1000);
        for _ in 0..200 {
            queue.push("y".repeat(100));
        }
        queue.start_writer(Box::new(writer)).unwrap();
        let start = Instant::now();
        assert!(!queue.finish(Duration::from_millis(200), || unreachable!()));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
