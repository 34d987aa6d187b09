//! Running commands against a connected [`Peer`] and printing what happens: the
//! [`peer_cli::session::Session`] the shared front end drives. Output goes to stdout (command
//! results, notifications) and stderr (errors, warnings).

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use peer::{Peer, ServerEvent};
use peer_cli::commands::{Command, IntTarget, DEFAULT_ANNOUNCE_WAIT_MS, HELP};
use peer_cli::report;
use peer_cli::say;
use peer_cli::session::{self, CommandFailed, Flow};

/// The name errors are prefixed with.
pub const PROGRAM: &str = "ivshmem-client";

/// Prints `ivshmem-client: <message>` on stderr, ignoring write errors.
macro_rules! complain {
    ($($arg:tt)*) => {
        peer_cli::output::complain($crate::session::PROGRAM, format_args!($($arg)*))
    };
}
pub(crate) use complain;

/// The connected client and how chatty it is about server news.
pub struct Session {
    pub peer: Peer,
    /// Print joins and leaves on stdout (interactive use); otherwise they are only logged.
    pub announce_server_news: bool,
}

/// What woke the prompt up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    /// The server socket is readable.
    Server,
    /// One of our vectors fired.
    Notification,
}

impl session::Session for Session {
    type NewsSource = News;

    fn execute(&mut self, command: &Command) -> Result<Flow, CommandFailed> {
        Session::execute(self, command)
    }

    /// The server socket always (joins and leaves are taken in between commands); our vectors
    /// only at an interactive prompt, since a script's `wait` must still find its rings pending.
    fn news_fds(&self, interactive: bool) -> Vec<(News, BorrowedFd<'_>)> {
        let mut fds: Vec<_> = self
            .peer
            .server_fd()
            .map(|fd| (News::Server, fd))
            .into_iter()
            .collect();
        if interactive {
            fds.extend(
                self.peer
                    .own_vector_fds()
                    .into_iter()
                    .map(|fd| (News::Notification, fd)),
            );
        }
        fds
    }

    fn take_news(&mut self, ready: &[News]) {
        if ready.contains(&News::Notification) {
            self.print_notifications();
        }
        if ready.contains(&News::Server) {
            self.process_server_news();
        }
    }
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
            Command::Read { offset, len } => report::read(self.peer.shm(), *offset, *len)?,
            Command::Write { offset, data } => report::write(self.peer.shm(), *offset, data)?,
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

    fn wait(&mut self, vector: Option<u32>, timeout_ms: Option<u64>) -> Result<(), CommandFailed> {
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
        report::wait(&mut self.peer, own, vector, timeout_ms, failed)
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

    /// Drains our vectors and prints one QEMU-style line per vector that fired.
    fn print_notifications(&self) {
        match self.peer.drain_all() {
            Ok(fired) => {
                for n in fired {
                    say!("{}", report::notification_line(self.peer.id(), n.vector));
                }
            }
            Err(e) => complain!("reading our vectors failed: {e}"),
        }
        peer_cli::output::flush_stdout();
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
