//! What `ivshmem-server --status` shows: who is connected (id, pid, uid, vectors, since when),
//! the memory, uptime and counters — as JSON for programs and as text for people. Rendering
//! only; [`crate::control`] serves it and the event loop fills in a [`Report`].
//!
//! The JSON (serde_json) has the shape documented in docs/server-operations.md, versioned by
//! `"format"`.

use std::fmt::Write;

use serde::Serialize;

/// Version of the JSON shape.
pub const FORMAT: u32 = 1;

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerReport {
    /// Its id.
    pub id: u16,
    /// From SO_PEERCRED (None: unknown).
    pub pid: Option<i32>,
    /// From SO_PEERCRED (None: unknown).
    pub uid: Option<u32>,
    /// Its vectors.
    pub vectors: u32,
    /// When it joined, seconds since the Unix epoch.
    pub since: u64,
    /// Messages waiting to be sent to it (a peer that does not read has many).
    pub queued: usize,
}

/// The server's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The serving process.
    pub pid: u32,
    /// Its listening socket.
    pub socket: String,
    /// Now, seconds since the Unix epoch.
    pub now: u64,
    /// When the first server of this lineage started (upgrades keep it).
    pub started: u64,
    /// When this process started serving.
    pub process_started: u64,
    /// Shared-memory size in bytes.
    pub memory_size: u64,
    /// Where the memory comes from.
    pub memory_backing: String,
    /// Vectors per peer.
    pub vectors: u32,
    /// Peers that joined since the start.
    pub joins: u64,
    /// Peers that left.
    pub leaves: u64,
    /// Of those, peers the server dropped.
    pub drops: u64,
    /// Upgrades since the start.
    pub upgrades: u64,
    /// Crashed servers the keeper replaced.
    pub restarts: u64,
    /// Log lines dropped because stderr did not keep up.
    pub log_lines_dropped: u64,
    /// Connected peers, in connect order.
    pub peers: Vec<PeerReport>,
}

/// The JSON document: the report in its documented shape.
#[derive(Serialize)]
struct JsonReport<'a> {
    format: u32,
    pid: u32,
    socket: &'a str,
    now: u64,
    started: u64,
    process_started: u64,
    uptime_s: u64,
    memory: JsonMemory<'a>,
    vectors: u32,
    counters: JsonCounters,
    peers: &'a [PeerReport],
}

#[derive(Serialize)]
struct JsonMemory<'a> {
    size: u64,
    backing: &'a str,
}

#[derive(Serialize)]
struct JsonCounters {
    joins: u64,
    leaves: u64,
    drops: u64,
    upgrades: u64,
    restarts: u64,
    log_lines_dropped: u64,
}

impl Report {
    /// One JSON object, one line, with a trailing newline.
    pub fn to_json(&self) -> String {
        let doc = JsonReport {
            format: FORMAT,
            pid: self.pid,
            socket: &self.socket,
            now: self.now,
            started: self.started,
            process_started: self.process_started,
            uptime_s: self.now.saturating_sub(self.started),
            memory: JsonMemory {
                size: self.memory_size,
                backing: &self.memory_backing,
            },
            vectors: self.vectors,
            counters: JsonCounters {
                joins: self.joins,
                leaves: self.leaves,
                drops: self.drops,
                upgrades: self.upgrades,
                restarts: self.restarts,
                log_lines_dropped: self.log_lines_dropped,
            },
            peers: &self.peers,
        };
        // Plain data (numbers, strings): serializing cannot fail.
        let mut line = serde_json::to_string(&doc).unwrap_or_default();
        line.push('\n');
        line
    }

    /// A few lines for people.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "ivshmem-server pid {} on {}", self.pid, self.socket);
        let _ = writeln!(
            o,
            "up {} (this process {}), {} upgrade{}, {} restart{} after a crash",
            duration(self.now.saturating_sub(self.started)),
            duration(self.now.saturating_sub(self.process_started)),
            self.upgrades,
            if self.upgrades == 1 { "" } else { "s" },
            self.restarts,
            if self.restarts == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            o,
            "memory: {} bytes ({}), {} vector{} per peer",
            self.memory_size,
            self.memory_backing,
            self.vectors,
            if self.vectors == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            o,
            "peers: {} connected; {} joined, {} left ({} dropped) since start; {} log lines dropped",
            self.peers.len(),
            self.joins,
            self.leaves,
            self.drops,
            self.log_lines_dropped
        );
        if !self.peers.is_empty() {
            let _ = writeln!(
                o,
                "{:>5}  {:>8}  {:>6}  {:>7}  {:>6}  since",
                "id", "pid", "uid", "vectors", "queued"
            );
            for p in &self.peers {
                let _ = writeln!(
                    o,
                    "{:>5}  {:>8}  {:>6}  {:>7}  {:>6}  {} ago",
                    p.id,
                    p.pid.map_or("?".into(), |v| v.to_string()),
                    p.uid.map_or("?".into(), |v| v.to_string()),
                    p.vectors,
                    p.queued,
                    duration(self.now.saturating_sub(p.since))
                );
            }
        }
        o
    }
}

/// `3d 4h`, `2h 5m`, `7m 3s`, `12s`.
fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            pid: 42,
            socket: "/tmp/a \"b\"\n".into(),
            now: 1000,
            started: 100,
            process_started: 990,
            memory_size: 4096,
            memory_backing: "memfd".into(),
            vectors: 2,
            joins: 3,
            leaves: 1,
            drops: 0,
            upgrades: 1,
            restarts: 0,
            log_lines_dropped: 0,
            peers: vec![PeerReport {
                id: 1,
                pid: Some(7),
                uid: None,
                vectors: 2,
                since: 995,
                queued: 0,
            }],
        }
    }

    #[test]
    fn json_is_escaped_and_complete() {
        let j = report().to_json();
        assert!(
            j.starts_with("{\"format\":1,\"pid\":42,\"socket\":\"/tmp/a \\\"b\\\"\\n\""),
            "{j}"
        );
        assert!(j.contains("\"uptime_s\":900"), "{j}");
        assert!(j.contains("\"peers\":[{\"id\":1,\"pid\":7,\"uid\":null,\"vectors\":2,\"since\":995,\"queued\":0}]"), "{j}");
        assert!(j.ends_with("]}\n"));
        assert_eq!(j.matches('{').count(), j.matches('}').count());
    }

    #[test]
    fn text_lists_peers() {
        let t = report().to_text();
        assert!(
            t.contains("up 15m 0s (this process 10s), 1 upgrade, 0 restarts after a crash"),
            "{t}"
        );
        assert!(t.contains("5s ago"), "{t}");
    }
}
