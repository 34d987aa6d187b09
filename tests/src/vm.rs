//! Shared by the ivshmem_* tests: running `vmm` with built-in guest programs and ivshmem
//! devices, reading its `--stats` line, and a host peer that speaks the guest programs' peer
//! directory (guest/src/ivshmem.rs `directory`: 64-byte slots at the start of the shared
//! memory, slot = peer id, magic "IVSH" at +0, text at +16).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{bin, collect_lines, vmm_stat, wait_until};
use peer::{Peer, ServerEvent};

/// Generous: the machine has 2 cores and other tests run VMs too.
pub const VM_TIMEOUT: Duration = Duration::from_secs(90);

/// Bytes per peer slot in the guest programs' directory at the start of the shared memory.
pub const SLOT_SIZE: usize = 64;
/// Offset of the text within a slot (after magic, id and counter).
pub const SLOT_TEXT: usize = 16;
/// The magic that marks a published slot.
pub const MAGIC: &[u8; 4] = b"IVSH";

/// A running `vmm` whose stdout and stderr are collected by background threads.
pub struct Vm {
    /// The `--name` given to the VMM (its console lines' prefix).
    pub name: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// How a VM ended.
#[derive(Debug)]
pub struct VmOutcome {
    /// The VM's `--name`.
    pub name: String,
    /// Exit status (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Everything the VM printed on stdout (its console).
    pub stdout: String,
    /// Everything the VMM printed on stderr (its log).
    pub stderr: String,
}

impl VmOutcome {
    /// A number from the `vmm-stats:` line (`--stats`).
    pub fn stat(&self, key: &str) -> u64 {
        vmm_stat(&self.stderr, key)
    }

    /// The number after `key=` in the guest program's results ([`value`](Self::value)); panics
    /// with the VM's output when there is none.
    pub fn number(&self, key: &str) -> u64 {
        self.value(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {key}= in\n{}", self.stdout))
    }

    /// The value of `key=` in the first stdout line containing it (guest program results).
    pub fn value(&self, key: &str) -> Option<String> {
        let pat = format!("{key}=");
        self.stdout.lines().find_map(|l| {
            let at = l.find(&pat)?;
            let rest = &l[at + pat.len()..];
            Some(rest.split_whitespace().next().unwrap_or("").to_string())
        })
    }

    /// Asserts the VM exited with `code`, showing its output otherwise.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            self.name,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Appends a child's output stream to `sink`, line by line, on a background thread.
fn collect(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    collect_lines(stream, move |line| {
        let mut s = sink.lock().unwrap();
        s.push_str(&line);
        s.push('\n');
    })
}

/// `--ivshmem doorbell,socket=SOCKET,vectors=N`.
pub fn doorbell(socket: &Path, vectors: u32) -> String {
    format!("doorbell,socket={},vectors={vectors}", socket.display())
}

impl Vm {
    /// Starts `vmm --stats --name NAME --guest builtin:PROGRAM --guest-args ARGS` with the
    /// given `--ivshmem` specs and extra arguments.
    pub fn start(
        name: &str,
        program: &str,
        ivshmem: &[String],
        guest_args: &str,
        extra: &[&str],
    ) -> Vm {
        // The device logs joins and leaves at info level: tests watch for them.
        let log = "vmm::devices::ivshmem=info";
        Vm::start_logging(name, program, ivshmem, guest_args, extra, log)
    }

    /// As [`Vm::start`] with `RUST_LOG=log`.
    pub fn start_logging(
        name: &str,
        program: &str,
        ivshmem: &[String],
        guest_args: &str,
        extra: &[&str],
        log: &str,
    ) -> Vm {
        let mut cmd = Command::new(bin("vmm"));
        cmd.args(["--stats", "--name", name])
            .arg("--guest")
            .arg(format!("builtin:{program}"))
            .arg("--guest-args")
            .arg(guest_args)
            .args(extra);
        for spec in ivshmem {
            cmd.arg("--ivshmem").arg(spec);
        }
        cmd.env("RUST_LOG", log);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vmm");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Vm {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// The VMM's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the VM printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the VMM printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the VMM logged `text` on stderr (true) or `timeout` passed / it ended.
    pub fn wait_stderr(&mut self, text: &str, timeout: Duration) -> bool {
        let stderr = self.stderr.clone();
        self.wait_for(&stderr, text, timeout)
    }

    /// Waits until the guest printed `text` (true) or `timeout` passed / the VM ended (false).
    pub fn wait_output(&mut self, text: &str, timeout: Duration) -> bool {
        let stdout = self.stdout.clone();
        self.wait_for(&stdout, text, timeout)
    }

    fn wait_for(&mut self, output: &Mutex<String>, text: &str, timeout: Duration) -> bool {
        let contains = || output.lock().unwrap().contains(text);
        wait_until(timeout, || {
            contains() || matches!(self.child.try_wait(), Ok(Some(_)))
        });
        contains()
    }

    /// Waits for the VM to end (killing it after `timeout`) and returns its outcome.
    pub fn finish(mut self, timeout: Duration) -> VmOutcome {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().expect("try_wait vmm");
            status.is_some()
        });
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let outcome = VmOutcome {
            name: self.name.clone(),
            code: status.and_then(|s| s.code()),
            stdout: self.stdout(),
            stderr: self.stderr.lock().unwrap().clone(),
        };
        assert!(
            status.is_some(),
            "{} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            outcome.name,
            outcome.stdout,
            outcome.stderr
        );
        outcome
    }

    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a guest program to completion.
pub fn run_vm(
    name: &str,
    program: &str,
    ivshmem: &[String],
    guest_args: &str,
    extra: &[&str],
) -> VmOutcome {
    Vm::start(name, program, ivshmem, guest_args, extra).finish(VM_TIMEOUT)
}

/// A host peer (the `peer` library) that also reads and writes the directory.
pub struct HostPeer {
    /// The connected peer.
    pub peer: Peer,
    /// Doorbells received so far, per vector.
    pub received: Vec<u64>,
    /// Server news not yet consumed by `wait_join` / `wait_left`.
    pub events: std::collections::VecDeque<ServerEvent>,
}

impl HostPeer {
    /// Connects and waits until the server has sent all `vectors` of our own vectors.
    pub fn connect(socket: &Path, vectors: u32) -> HostPeer {
        let options = peer::ConnectOptions {
            vectors: Some(vectors),
            ..peer::ConnectOptions::default()
        };
        let peer = Peer::connect_with(socket, &options).expect("host peer connects");
        let received = vec![0; peer.own_vector_count() as usize];
        HostPeer {
            peer,
            received,
            events: Default::default(),
        }
    }

    /// This peer's id.
    pub fn id(&self) -> u16 {
        self.peer.id()
    }

    /// Publishes our directory slot (text first, magic last).
    pub fn publish(&self, text: &str) {
        let at = self.id() as usize * SLOT_SIZE;
        let mut slot = [0u8; SLOT_SIZE - SLOT_TEXT];
        slot[..text.len()].copy_from_slice(text.as_bytes());
        self.peer.shm().write(at + SLOT_TEXT, &slot).unwrap();
        self.peer
            .shm()
            .write(at + 4, &(self.id() as u32).to_le_bytes())
            .unwrap();
        self.peer.shm().write(at, MAGIC).unwrap();
    }

    /// The text of slot `id` if it is valid.
    pub fn slot_text(&self, id: u16) -> Option<String> {
        read_slot(self.peer.shm(), id)
    }

    /// Every valid slot but ours, as (id, text).
    pub fn directory(&self) -> Vec<(u16, String)> {
        (0..256u16)
            .filter(|&id| id != self.id())
            .filter_map(|id| Some((id, self.slot_text(id)?)))
            .collect()
    }

    /// Processes server news without blocking (queued for `wait_join` / `wait_left`).
    pub fn news(&mut self) {
        let events = self.peer.process_server_messages();
        self.events.extend(events);
    }

    /// Waits up to `timeout` for doorbells; adds them to `received`.
    pub fn collect_doorbells(&mut self, timeout: Duration) {
        for n in self.peer.wait(Some(timeout)).expect("wait for doorbells") {
            self.received[n.vector as usize] += n.count;
        }
    }

    /// Rings `peer`'s `vector`, first catching up with the server's news so that a peer that
    /// just joined is known; retries for up to `timeout`.
    pub fn ring(&mut self, peer: u16, vector: u32, timeout: Duration) {
        let mut failure = None;
        let rung = wait_until(timeout, || {
            self.news();
            failure = self.peer.ring(peer, vector).err();
            failure.is_none()
        });
        assert!(rung, "ringing peer {peer}: {}", failure.unwrap());
    }
}

/// Slot `id` of a directory in `shm`, if valid.
pub fn read_slot(shm: &peer::SharedMemory, id: u16) -> Option<String> {
    let at = id as usize * SLOT_SIZE;
    let mut slot = [0u8; SLOT_SIZE];
    shm.read(at, &mut slot).ok()?;
    if &slot[..4] != MAGIC {
        return None;
    }
    let text = &slot[SLOT_TEXT..];
    let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Some(String::from_utf8_lossy(&text[..len]).into_owned())
}

/// The peer id an ivshmem_demo VM printed ("I am peer N").
pub fn demo_id(vm: &VmOutcome) -> u16 {
    vm.stdout
        .lines()
        .find_map(|l| {
            l.split("I am peer ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{} printed no id:\n{}", vm.name, vm.stdout))
}

impl HostPeer {
    /// Waits for the next doorbell on `vector` (up to `timeout`); panics if none comes.
    pub fn expect_doorbell(&mut self, vector: u32, timeout: Duration) {
        let got = self
            .peer
            .wait_vector(vector, Some(timeout))
            .expect("wait for a doorbell");
        assert!(
            got.is_some(),
            "host peer {}: no doorbell on vector {vector} within {timeout:?}",
            self.id()
        );
        self.received[vector as usize] += got.unwrap_or(0);
    }

    /// Waits until the server announces a peer joining; returns its id.
    pub fn wait_join(&mut self, timeout: Duration) -> u16 {
        self.wait_event(timeout, |e| match e {
            ServerEvent::Joined { peer, .. } => Some(*peer),
            _ => None,
        })
        .unwrap_or_else(|| panic!("nobody joined within {timeout:?}"))
    }

    /// Waits until the server announces a peer leaving; returns its id.
    pub fn wait_left(&mut self, timeout: Duration) -> u16 {
        self.wait_event(timeout, |e| match e {
            ServerEvent::Left { peer } => Some(*peer),
            _ => None,
        })
        .unwrap_or_else(|| panic!("nobody left within {timeout:?}"))
    }

    /// Takes the first queued server event `pick` accepts, polling the server until `timeout`.
    fn wait_event<T>(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&ServerEvent) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| pick(e).is_some()) {
                return self.events.remove(i).and_then(|e| pick(&e));
            }
            if Instant::now() >= deadline {
                return None;
            }
            let events = self.peer.poll_server(Some(Duration::from_millis(50)));
            self.events.extend(events);
        }
    }

    /// Writes `value` little-endian at `offset` in the shared memory.
    pub fn write_u64(&self, offset: usize, value: u64) {
        self.peer.shm().write(offset, &value.to_le_bytes()).unwrap();
    }

    /// Reads a little-endian u64 at `offset` in the shared memory.
    pub fn read_u64(&self, offset: usize) -> u64 {
        let mut b = [0u8; 8];
        self.peer.shm().read(offset, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
}

/// A host echo on a thread: for the first peer that joins after `host` connected, answers
/// `rounds` doorbells on vector 0 with one doorbell back. Returns the host id and the thread
/// (which yields the number of rounds answered).
pub fn spawn_host_echo(mut host: HostPeer, rounds: u64) -> (u16, std::thread::JoinHandle<u64>) {
    let id = host.id();
    let thread = std::thread::spawn(move || {
        let partner = host.wait_join(VM_TIMEOUT);
        for i in 0..rounds {
            match host.peer.wait_vector(0, Some(Duration::from_secs(30))) {
                Ok(Some(_)) => host.ring(partner, 0, Duration::from_secs(10)),
                _ => return i,
            }
        }
        rounds
    });
    (id, thread)
}
