//! The control socket, `<socket>.ctl` next to the main socket, with the same permissions: where
//! `ivshmem-server --status` and `--upgrade` talk to a running server. It is separate because
//! the main socket must stay exactly QEMU's protocol (a connection there is a peer).
//!
//! Protocol: the client sends one request line (at most [`MAX_REQUEST`] bytes, `\n`-terminated;
//! EOF also ends it), the server answers and closes:
//!
//! - `status` (or an empty request): the status as one JSON line ([`crate::status`]);
//! - `status text`: the same for people;
//! - `upgrade`: the same as SIGUSR2, answering `upgraded: pid N serves now` or
//!   `upgrade failed: why` — only for the server's own user or root.
//!
//! Anything else gets `{"error":"..."}` and the connection closes. At most [`MAX_CONNECTIONS`]
//! are open at once (a new one closes the oldest), each buffer is bounded, and nothing a client
//! sends or fails to read can stop the server or make it wait.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// Longest request line.
pub const MAX_REQUEST: usize = 128;
/// Control connections open at once.
pub const MAX_CONNECTIONS: usize = 8;

/// The control socket's path for a main socket path: `PATH.ctl`.
pub fn control_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".ctl");
    PathBuf::from(s)
}

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Status as JSON.
    Status,
    /// Status as text.
    StatusText,
    /// Upgrade now (allowed for `allowed` clients only).
    Upgrade {
        /// The client runs as the server's user or as root.
        allowed: bool,
    },
}

#[derive(Debug)]
struct Connection {
    socket: UnixStream,
    uid: Option<u32>,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// The request has been read; only writing is left.
    answered: bool,
    /// Accept order, to close the oldest when all slots are taken.
    serial: u64,
}

/// What the event loop should do after an event on a control connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing (more input expected, or output pending).
    Nothing,
    /// The request is complete: answer it with [`Control::answer`].
    Request(Request),
    /// The connection is finished and closed; stop watching `slot`.
    Closed,
}

/// The control listener and its connections.
#[derive(Debug)]
pub struct Control {
    /// The listening socket.
    pub listener: UnixListener,
    slots: Vec<Option<Connection>>,
    serial: u64,
    /// The server's effective uid: who may upgrade (besides root).
    owner_uid: u32,
}

impl Control {
    /// Serves on `listener` (non-blocking); `owner_uid` may upgrade, as may root.
    pub fn new(listener: UnixListener, owner_uid: u32) -> io::Result<Control> {
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            slots: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            serial: 0,
            owner_uid,
        })
    }

    /// Accepts one pending connection into a slot; returns the slot and any slot whose
    /// connection was closed to make room (both for the caller's epoll). None: nothing pending.
    pub fn accept(&mut self) -> Option<(usize, Option<usize>, &UnixStream)> {
        let socket = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        };
        if socket.set_nonblocking(true).is_err() {
            return None;
        }
        let uid = getsockopt(&socket, PeerCredentials).ok().map(|c| c.uid());
        let (slot, evicted) = match self.slots.iter().position(Option::is_none) {
            Some(free) => (free, None),
            None => {
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, c)| c.as_ref().map_or(0, |c| c.serial))
                    .map_or(0, |(i, _)| i);
                self.slots[oldest] = None;
                (oldest, Some(oldest))
            }
        };
        self.serial += 1;
        self.slots[slot] = Some(Connection {
            socket,
            uid,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            answered: false,
            serial: self.serial,
        });
        let socket = &self.slots[slot].as_ref().expect("just set").socket;
        Some((slot, evicted, socket))
    }

    /// The socket in `slot`, if open (to remove it from epoll before closing).
    pub fn socket(&self, slot: usize) -> Option<&UnixStream> {
        self.slots.get(slot)?.as_ref().map(|c| &c.socket)
    }

    /// Handles readiness of `slot`: reads the request or writes the answer.
    pub fn on_event(&mut self, slot: usize) -> Event {
        let owner = self.owner_uid;
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Event::Nothing;
        };
        if conn.answered {
            return self.write_more(slot);
        }
        let allowed = conn.uid.is_some_and(|u| u == owner || u == 0);
        let mut buf = [0u8; MAX_REQUEST + 1];
        // Some(line), or None when the request is too long.
        let line = loop {
            match conn.socket.read(&mut buf) {
                Ok(0) => break Some(std::mem::take(&mut conn.input)),
                Ok(n) => {
                    conn.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = conn.input.iter().position(|&b| b == b'\n') {
                        conn.input.truncate(end);
                        break Some(std::mem::take(&mut conn.input));
                    }
                    if conn.input.len() > MAX_REQUEST {
                        break None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Event::Nothing,
                Err(_) => {
                    self.slots[slot] = None;
                    return Event::Closed;
                }
            }
        };
        conn.answered = true;
        conn.input = Vec::new();
        let request = match line {
            None => Err(format!("request longer than {MAX_REQUEST} bytes")),
            Some(line) => parse_request(&line, allowed),
        };
        match request {
            Ok(r) => Event::Request(r),
            Err(why) => self.answer(slot, error_json(&why)),
        }
    }

    /// Sends `reply` on `slot` and closes it once sent (now, or on later events).
    pub fn answer(&mut self, slot: usize, reply: String) -> Event {
        if let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            conn.answered = true;
            conn.output = reply.into_bytes();
            conn.written = 0;
        }
        self.write_more(slot)
    }

    fn write_more(&mut self, slot: usize) -> Event {
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return Event::Nothing;
        };
        while conn.written < conn.output.len() {
            match conn.socket.write(&conn.output[conn.written..]) {
                Ok(0) => break,
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Event::Nothing,
                Err(_) => break,
            }
        }
        // Closing a UNIX socket with unread input resets the connection, and the client
        // would lose the answer (say, the error about its oversized request): read what is
        // there first, up to a bound.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match conn.socket.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        self.slots[slot] = None;
        Event::Closed
    }

    /// Whether `slot` waits to write (watch EPOLLOUT).
    pub fn wants_write(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.answered && c.written < c.output.len())
    }
}

/// The request a line names.
fn parse_request(line: &[u8], allowed: bool) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        [] | ["status"] | ["status", "json"] => Ok(Request::Status),
        ["status", "text"] => Ok(Request::StatusText),
        ["upgrade"] => Ok(Request::Upgrade { allowed }),
        _ => Err(format!(
            "unknown request {:?}: expected 'status', 'status text' or 'upgrade'",
            text.chars().take(40).collect::<String>()
        )),
    }
}

/// `{"error":"..."}` and a newline; control characters in `why` become spaces, so the reply
/// stays one line.
pub fn error_json(why: &str) -> String {
    let why: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut line = serde_json::json!({ "error": why }).to_string();
    line.push('\n');
    line
}

/// The client side: sends `request` to the control socket at `path` and returns the answer.
pub fn request(path: &Path, request: &str, timeout: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request(b"", false), Ok(Request::Status));
        assert_eq!(parse_request(b" status ", false), Ok(Request::Status));
        assert_eq!(
            parse_request(b"status text", false),
            Ok(Request::StatusText)
        );
        assert_eq!(
            parse_request(b"upgrade", true),
            Ok(Request::Upgrade { allowed: true })
        );
        assert!(parse_request(b"\xff", true).is_err());
        assert!(parse_request(b"rm -rf", true)
            .unwrap_err()
            .contains("unknown request"));
    }

    #[test]
    fn error_json_escapes() {
        assert_eq!(error_json("a\"b\\c\n"), "{\"error\":\"a\\\"b\\\\c \"}\n");
    }

    #[test]
    fn control_path_appends() {
        assert_eq!(
            control_path(Path::new("/run/x.sock")),
            PathBuf::from("/run/x.sock.ctl")
        );
    }
}
