//! Running commands against a connected [`Peer`] and printing what happens. Output goes to
//! stdout (command results, notifications) and stderr (errors, warnings); write errors on stdout
//! (e.g. a closed pipe) are ignored so that nothing here can panic.

use std::io::Write;
use std::time::{Duration, Instant};

use peer::cli::commands::{Command, IntTarget, DEFAULT_ANNOUNCE_WAIT_MS, HELP};
use peer::cli::hexdump;
use peer::{Peer, ServerEvent};

/// Prints `ivshmem-client: <message>` on stderr, ignoring write errors.
#[macro_export]
macro_rules! complain {
    ($($arg:tt)*) => {{
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "ivshmem-client: ");
        let _ = writeln!(err, $($arg)*);
    }};
}

/// Prints a line on stdout, ignoring write errors.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
    }};
}

/// What the caller should do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// A failed command; the message names what was wrong.
#[derive(Debug)]
pub struct CommandFailed(pub String);

/// The connected client and how chatty it is about server news.
pub struct Session {
    pub peer: Peer,
    /// Print joins and leaves on stdout (interactive use); otherwise they are only logged.
    pub announce_server_news: bool,
}

impl Session {
    /// Runs one command.
    pub fn execute(&mut self, command: &Command) -> Result<Flow, CommandFailed> {
        // Keep the peer list current before acting on it.
        self.process_server_news();
        match command {
            Command::Help => say!("{HELP}"),
            Command::Dump => self.dump(),
            Command::Peers => {
                for p in self.peer.peers() {
                    say!("peer_id={} vectors={}", p.id, p.vectors);
                }
            }
            Command::Int { target, timeout_ms } => self.int(*target, *timeout_ms)?,
            Command::Read { offset, len } => self.read(*offset, *len)?,
            Command::Write { offset, data } => self
                .peer
                .shm()
                .write(*offset, data)
                .map_err(|e| CommandFailed(format!("write: {e}")))?,
            Command::Wait { vector, timeout_ms } => self.wait(*vector, *timeout_ms)?,
            Command::WaitPeer { peer, timeout_ms } => self.wait_peer(*peer, *timeout_ms)?,
            Command::Sleep { ms } => std::thread::sleep(Duration::from_millis(*ms)),
            Command::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    fn dump(&self) {
        let peer = &self.peer;
        say!("our_id = {}", peer.id());
        for v in 0..peer.own_vector_count() {
            print_vector(peer, peer.id(), v);
        }
        for p in peer.peers() {
            say!("peer_id = {}", p.id);
            for v in 0..p.vectors {
                print_vector(peer, p.id, v);
            }
        }
        use std::os::fd::AsRawFd;
        say!(
            "shared memory: {} bytes (fd={}){}",
            peer.shm().len(),
            peer.shm().fd().as_raw_fd(),
            match peer.server_gone_reason() {
                Some(reason) => format!("; server gone: {reason}"),
                None => String::new(),
            }
        );
    }

    /// Rings; a peer or vector the server has not announced yet is awaited up to the timeout,
    /// since the handshake has no end marker and may still be arriving.
    fn int(&mut self, target: IntTarget, timeout_ms: Option<u64>) -> Result<(), CommandFailed> {
        let ms = timeout_ms.unwrap_or(DEFAULT_ANNOUNCE_WAIT_MS);
        let timeout = Some(Duration::from_millis(ms));
        let failed = |e: peer::RingError| {
            let late = matches!(
                e,
                peer::RingError::UnknownPeer(_) | peer::RingError::UnknownVector { .. }
            );
            let waited = if late {
                format!(" (not announced within {ms} ms)")
            } else {
                String::new()
            };
            CommandFailed(format!("int: {e}{waited}"))
        };
        match target {
            IntTarget::One { peer, vector } => self
                .peer
                .ring_within(peer, vector, timeout)
                .map_err(failed)?,
            IntTarget::AllOf { peer } => {
                self.peer.await_peer(peer, timeout);
                self.peer.ring_all(peer).map_err(failed)?;
            }
            IntTarget::Everyone => {
                for p in self.peer.peers() {
                    self.peer.ring_all(p.id).map_err(failed)?;
                }
            }
        }
        Ok(())
    }

    fn read(&self, offset: usize, len: usize) -> Result<(), CommandFailed> {
        let shm = self.peer.shm();
        shm.check_range(offset, len)
            .map_err(|e| CommandFailed(format!("read: {e}")))?;
        let mut buf = [0u8; 16];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(16);
            shm.read(offset + done, &mut buf[..n])
                .map_err(|e| CommandFailed(format!("read: {e}")))?;
            say!("{}", hexdump::line(offset + done, &buf[..n]));
            done += n;
        }
        Ok(())
    }

    fn wait(&mut self, vector: Option<u32>, timeout_ms: Option<u64>) -> Result<(), CommandFailed> {
        let timeout = timeout_ms.map(Duration::from_millis);
        let failed = |e: peer::WaitError| {
            let waited = match (&e, timeout_ms) {
                (peer::WaitError::UnknownVector { .. }, Some(ms)) => {
                    format!(" (not announced within {ms} ms)")
                }
                _ => String::new(),
            };
            CommandFailed(format!("wait: {e}{waited}"))
        };
        let own = self.peer.id();
        match vector {
            Some(v) => match self.peer.wait_vector(v, timeout).map_err(failed)? {
                Some(_) => say!("receive notification from peer_id={own} vector={v}"),
                None => {
                    return Err(CommandFailed(format!(
                        "wait: no notification on vector {v} within {} ms",
                        timeout_ms.unwrap_or(0)
                    )))
                }
            },
            None => {
                let fired = self.peer.wait(timeout).map_err(failed)?;
                if fired.is_empty() {
                    return Err(CommandFailed(format!(
                        "wait: no notification on any vector within {} ms",
                        timeout_ms.unwrap_or(0)
                    )));
                }
                for n in fired {
                    say!(
                        "receive notification from peer_id={own} vector={}",
                        n.vector
                    );
                }
            }
        }
        Ok(())
    }

    fn wait_peer(
        &mut self,
        peer: Option<u16>,
        timeout_ms: Option<u64>,
    ) -> Result<(), CommandFailed> {
        let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        loop {
            let found = self
                .peer
                .peers()
                .into_iter()
                .find(|p| peer.is_none_or(|want| want == p.id));
            if let Some(p) = found {
                say!("peer_id={} vectors={}", p.id, p.vectors);
                return Ok(());
            }
            let what = match peer {
                Some(id) => format!("peer {id}"),
                None => "any other peer".to_string(),
            };
            if !self.peer.server_connected() {
                return Err(CommandFailed(format!(
                    "wait-peer: the server is gone, {what} can no longer join"
                )));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(CommandFailed(format!(
                    "wait-peer: {what} did not connect within {} ms",
                    timeout_ms.unwrap_or(0)
                )));
            }
            let events = self.peer.poll_server(left);
            self.report(events);
        }
    }

    /// Handles whatever the server has sent meanwhile.
    pub fn process_server_news(&mut self) {
        let events = self.peer.process_server_messages();
        self.report(events);
    }

    fn report(&self, events: Vec<ServerEvent>) {
        for event in events {
            match event {
                ServerEvent::Joined { peer, vectors } => {
                    self.news(format!("peer_id={peer} joined with {vectors} vector(s)"))
                }
                ServerEvent::VectorsAdded { peer, vectors } => {
                    self.news(format!("peer_id={peer} now has {vectors} vector(s)"))
                }
                ServerEvent::OwnVectorsAdded { vectors } => {
                    self.news(format!("we now have {vectors} vector(s)"))
                }
                ServerEvent::Left { peer } => self.news(format!("peer_id={peer} left")),
                ServerEvent::ExtraVectorClosed { peer, vector } => log::warn!(
                    "server sent vector {vector} for peer {peer}, more than we accept; closed it"
                ),
                ServerEvent::ProtocolViolation(e) => {
                    complain!("ignoring a bad message from the server: {e}")
                }
                ServerEvent::ServerGone { reason } => {
                    complain!("{reason}; keeping the shared memory and the known peers")
                }
            }
        }
    }

    fn news(&self, text: String) {
        if self.announce_server_news {
            say!("{text}");
        } else {
            log::info!("{text}");
        }
    }
}

fn print_vector(peer: &Peer, id: u16, vector: u32) {
    use std::os::fd::AsRawFd;
    let fd = peer
        .peer_vector_fd(id, vector)
        .map(|fd| fd.as_raw_fd())
        .unwrap_or(-1);
    say!("  vector {vector} is enabled (fd={fd})");
}

/// Flushes stdout, ignoring errors (used after prompts).
pub fn flush_stdout() {
    let _ = std::io::stdout().flush();
}
