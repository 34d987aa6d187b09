//! Running one command against the open device and printing what happens (stdout: results and
//! notifications; errors are returned as messages): the [`peer_cli::session::Session`] the
//! shared front end drives. A guest has no news to print at the prompt (no server socket; its
//! vectors are only read by `wait`).

use std::os::fd::AsRawFd;
use std::time::Duration;

use ivshmem_guest::{GuestDevice, RingError, WaitError};
use peer_cli::commands::{Command, IntTarget};
use peer_cli::report;
use peer_cli::say;
use peer_cli::session::{self, CommandFailed, Flow};

/// The help text of `help` and `--help`.
pub const HELP: &str = "\
available commands:
  help, ?                 show this help
  dump                    our id, vectors, shared memory and device
  int PEER VECTOR [MS]    ring VECTOR of PEER (PEER may be our own id; MS is accepted
                          for ivshmem-client scripts and ignored: the ring is immediate)
  int PEER all [MS]       ring vectors 0..N-1 of PEER, N = our own vector count
  read OFFSET LEN         hex dump of LEN bytes of shared memory at OFFSET
  write OFFSET TEXT       write TEXT at OFFSET (escapes: \\n \\t \\0 \\\\ \\; \\xHH)
  wait [VECTOR|any] [MS]  wait for a notification (default: any vector, forever)
  sleep MS                pause
  quit, exit              leave
numbers are decimal or 0x-prefixed hex; commands are separated by newline or ';'
(`peers`, `wait-peer` and `int all` need the server's peer list, which a guest does not see)";

/// Why `peers`, `wait-peer` and `int all` fail in a guest.
const NO_PEER_LIST: &str =
    "not available in a guest: the device does not tell which peers are connected";

/// The open device and how doorbells are rung.
pub struct Session {
    pub device: GuestDevice,
    /// Ring with the ioctl rather than the mapped register page.
    pub ring_ioctl: bool,
}

impl session::Session for Session {
    type NewsSource = ();

    fn execute(&mut self, command: &Command) -> Result<Flow, CommandFailed> {
        // The mappings show a scratch page once the device is gone: say so instead.
        if !matches!(
            command,
            Command::Help | Command::Quit | Command::Sleep { .. }
        ) && self.device.is_gone()
        {
            return Err(CommandFailed(format!(
                "{}: the device is gone (unbound or unplugged)",
                self.device.path().display()
            )));
        }
        if command.needs_peer_list() {
            return Err(CommandFailed(NO_PEER_LIST.to_string()));
        }
        match command {
            Command::Help => say!("{HELP}"),
            Command::Dump => self.dump(),
            Command::Peers | Command::WaitPeer { .. } => {
                return Err(CommandFailed(NO_PEER_LIST.to_string()))
            }
            // ivshmem-client's MS (await a peer not announced yet) means nothing here: the
            // device cannot tell who is connected, so the doorbell is written at once.
            Command::Int { target, .. } => self
                .int(*target)
                .map_err(|e| CommandFailed(format!("int: {e}")))?,
            Command::Read { offset, len } => report::read(self.device.shm(), *offset, *len)?,
            Command::Write { offset, data } => report::write(self.device.shm(), *offset, data)?,
            Command::Wait { vector, timeout_ms } => self.wait(*vector, *timeout_ms)?,
            Command::Sleep { ms } => std::thread::sleep(Duration::from_millis(*ms)),
            Command::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }
}

impl Session {
    fn dump(&self) {
        let d = &self.device;
        match d.id() {
            Some(id) => say!("our_id = {id}"),
            None => say!("our_id = none (IVPosition {})", d.info().iv_position),
        }
        for v in 0..d.own_vector_count() {
            match d.own_vector_fd(v) {
                Some(fd) => say!("  vector {v} is enabled (fd={})", fd.as_raw_fd()),
                None => say!("  vector {v} is held by another program"),
            }
        }
        say!(
            "shared memory: {} bytes; device {}; doorbells by {}",
            d.shm().len(),
            d.path().display(),
            if d.rings_without_syscall() && !self.ring_ioctl {
                "the mapped register page"
            } else {
                "ioctl"
            }
        );
    }

    fn ring(&self, peer: u16, vector: u32) -> Result<(), RingError> {
        if self.ring_ioctl {
            self.device.ring_with_ioctl(peer, vector)
        } else {
            self.device.ring(peer, vector)
        }
    }

    fn int(&self, target: IntTarget) -> Result<(), RingError> {
        match target {
            IntTarget::One { peer, vector } => self.ring(peer, vector),
            IntTarget::AllOf { peer } => {
                for vector in 0..self.device.own_vector_count() {
                    self.ring(peer, vector)?;
                }
                Ok(())
            }
            // Refused in `execute`; ringing nobody is the harmless answer.
            IntTarget::Everyone => Ok(()),
        }
    }

    fn wait(&mut self, vector: Option<u32>, timeout_ms: Option<u64>) -> Result<(), CommandFailed> {
        let failed = |e: WaitError| CommandFailed(format!("wait: {e}"));
        let own = self
            .device
            .id()
            .map_or_else(|| "none".to_string(), |id| id.to_string());
        report::wait(&mut self.device, own, vector, timeout_ms, failed)
    }
}
