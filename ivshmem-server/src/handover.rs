//! The hand-over format: everything a serving process passes to its successor (upgrade, see
//! [`crate::upgrade`]) so that peers notice nothing — the listening socket, the shared memory,
//! every client socket with its eventfds and queued messages, the id cursor and the counters.
//!
//! The fds themselves are inherited across `execve` (CLOEXEC cleared); the state is a versioned
//! binary blob in a memfd whose number is in the environment variable [`STATE_FD_ENV`]. The
//! blob names fds by their index in an fd table at its start, so one fd shared by many
//! references (the shared memory in every queued handshake, an eventfd in several queues) is
//! passed once.
//!
//! Layout (all integers little-endian): magic `IVSHMSRV`, `u32` version ([`VERSION`]), `u32`
//! ready fd (a pipe the successor writes one 0 byte to once it serves, `u32::MAX` for none),
//! `u32` fd count, that many `u32` fd numbers, then the body written by [`State::encode_body`].
//! A successor accepts exactly its own version: an upgrade to a binary with another layout fails
//! cleanly and the old server keeps serving.
//!
//! Nothing here trusts the blob: every length is bounded, every fd index checked, every fd
//! checked to be open and of the right kind, and a mistake is an error naming the field.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use protocol::wire::{MAX_VECTORS, MESSAGE_LEN};

/// The environment variable holding the state memfd's number in a successor.
pub const STATE_FD_ENV: &str = "IVSHMEM_SERVER_STATE_FD";
/// First bytes of a state blob.
pub const MAGIC: &[u8; 8] = b"IVSHMSRV";
/// Version of the layout this binary writes and reads.
pub const VERSION: u32 = 1;
/// "No fd" in an fd slot.
pub const NO_FD: u32 = u32::MAX;

/// Bounds that keep a corrupt blob from making us allocate without end.
const MAX_FDS: usize = 1 << 24;
const MAX_TEXT: usize = 4096;
const MAX_PEERS: usize = 1 << 16;
const MAX_QUEUED: usize = 1 << 24;
/// A blob larger than this is refused before it is read.
pub const MAX_BLOB: u64 = 1 << 30;

/// Why a state blob was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The blob ends before a field.
    #[error("state blob truncated: no room for {0}")]
    Truncated(&'static str),
    /// The blob does not start with [`MAGIC`].
    #[error("not an ivshmem-server state blob (bad magic)")]
    BadMagic,
    /// Written by a binary with another layout.
    #[error("state version {found} is not supported by this binary (it reads version {VERSION})")]
    Version {
        /// The version in the blob.
        found: u32,
    },
    /// A count or length above its bound.
    #[error("state blob field {what} is {value}, more than the maximum {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The bound.
        max: u64,
    },
    /// Any other inconsistent value.
    #[error("state blob field {what}: {why}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Bytes after the last field.
    #[error("state blob has {0} bytes after its end")]
    Trailing(usize),
    /// The environment variable or the memfd could not be read.
    #[error("{0}")]
    Io(String),
}

/// The server-wide counters, kept across upgrades, for `--status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// When the first server of this lineage started, seconds since the Unix epoch.
    pub started: u64,
    /// Peers that joined.
    pub joins: u64,
    /// Peers that left (disconnected, hung up, sent data, or were dropped).
    pub leaves: u64,
    /// Of those, peers the server dropped (full queue, failed send).
    pub drops: u64,
    /// Upgrades this lineage went through.
    pub upgrades: u64,
    /// Times the keeper restarted a crashed server ([`crate::keeper`]).
    pub restarts: u64,
}

/// One message waiting for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedState {
    /// The 8 bytes.
    pub bytes: [u8; MESSAGE_LEN],
    /// Bytes already sent (0..8); a message partly sent has no fd left.
    pub sent: u8,
    /// Index of its fd in the fd table, if it still has to go.
    pub fd: Option<u32>,
    /// Counts against the queue limit.
    pub is_notice: bool,
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// Its id.
    pub id: u16,
    /// Its connection number (connect order).
    pub seq: u64,
    /// From SO_PEERCRED.
    pub pid: Option<i32>,
    /// From SO_PEERCRED.
    pub uid: Option<u32>,
    /// When it joined (seconds since the Unix epoch).
    pub since: u64,
    /// Index of its socket.
    pub socket: u32,
    /// Indices of its eventfds.
    pub vectors: Vec<u32>,
    /// What it has not been sent yet.
    pub queue: Vec<QueuedState>,
}

/// Everything but the fds themselves, which the fd table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Index of the listening socket.
    pub listener: u32,
    /// Index of the control socket (`--status`), if any.
    pub control: Option<u32>,
    /// Index of the shared-memory fd.
    pub shm: u32,
    /// Its size.
    pub shm_size: u64,
    /// Its description (for logs and `--status`).
    pub shm_description: String,
    /// Vectors per peer.
    pub vectors: u32,
    /// The socket file was created by the server (false: systemd's socket unit owns it).
    pub socket_file_ours: bool,
    /// Where id allocation continues.
    pub id_cursor: u16,
    /// The last connection number given.
    pub next_seq: u64,
    /// Counters.
    pub counters: Counters,
    /// Peers in connect order.
    pub peers: Vec<PeerState>,
    /// Peers gone while no server served (a crash): announced as leaving once serving.
    pub announce_leaves: Vec<u16>,
}

/// Collects fds for a blob: each distinct fd once, in first-use order.
#[derive(Debug, Default)]
pub struct FdCollector<'a> {
    fds: Vec<BorrowedFd<'a>>,
    index: HashMap<RawFd, u32>,
}

impl<'a> FdCollector<'a> {
    /// An empty table.
    pub fn new() -> Self {
        FdCollector::default()
    }

    /// The index of `fd`, added if new.
    pub fn add(&mut self, fd: BorrowedFd<'a>) -> u32 {
        let raw = fd.as_raw_fd();
        if let Some(&i) = self.index.get(&raw) {
            return i;
        }
        let i = self.fds.len() as u32;
        self.fds.push(fd);
        self.index.insert(raw, i);
        i
    }

    /// The fds in index order.
    pub fn fds(&self) -> &[BorrowedFd<'a>] {
        &self.fds
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        self.u32(v.unwrap_or(NO_FD));
    }
    fn text(&mut self, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(MAX_TEXT)];
        self.u32(bytes.len() as u32);
        self.0.extend_from_slice(bytes);
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'b [u8], HandoverError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(HandoverError::Truncated(what))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, HandoverError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HandoverError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, HandoverError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, HandoverError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn opt_u32(&mut self, what: &'static str) -> Result<Option<u32>, HandoverError> {
        Ok(Some(self.u32(what)?).filter(|&v| v != NO_FD))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, HandoverError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(HandoverError::Invalid {
                what,
                why: format!("{v} is not 0 or 1"),
            }),
        }
    }
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, HandoverError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(HandoverError::TooLarge {
                what,
                value: n as u64,
                max: max as u64,
            });
        }
        Ok(n)
    }
    fn text(&mut self, what: &'static str) -> Result<String, HandoverError> {
        let n = self.count(what, MAX_TEXT)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| HandoverError::Invalid {
            what,
            why: "not UTF-8".into(),
        })
    }
}

impl State {
    /// The body of the blob (everything after the fd table).
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256 + self.peers.len() * 64));
        w.u32(self.listener);
        w.opt_u32(self.control);
        w.u32(self.shm);
        w.u64(self.shm_size);
        w.text(&self.shm_description);
        w.u32(self.vectors);
        w.u8(u8::from(self.socket_file_ours));
        w.u16(self.id_cursor);
        w.u64(self.next_seq);
        let c = &self.counters;
        for v in [
            c.started, c.joins, c.leaves, c.drops, c.upgrades, c.restarts,
        ] {
            w.u64(v);
        }
        w.u32(self.peers.len() as u32);
        for p in &self.peers {
            w.u16(p.id);
            w.u64(p.seq);
            w.u8(u8::from(p.pid.is_some()));
            w.u32(p.pid.unwrap_or(0) as u32);
            w.u8(u8::from(p.uid.is_some()));
            w.u32(p.uid.unwrap_or(0));
            w.u64(p.since);
            w.u32(p.socket);
            w.u32(p.vectors.len() as u32);
            for &v in &p.vectors {
                w.u32(v);
            }
            w.u32(p.queue.len() as u32);
            for q in &p.queue {
                w.0.extend_from_slice(&q.bytes);
                w.u8(q.sent);
                w.opt_u32(q.fd);
                w.u8(u8::from(q.is_notice));
            }
        }
        w.u32(self.announce_leaves.len() as u32);
        for &id in &self.announce_leaves {
            w.u16(id);
        }
        w.0
    }

    /// Reads a body written by [`State::encode_body`]; indices are checked against `fd_count`.
    pub fn decode_body(bytes: &[u8], fd_count: usize) -> Result<State, HandoverError> {
        let mut r = Reader { bytes, at: 0 };
        let index = |v: u32, what: &'static str| {
            if (v as usize) < fd_count {
                Ok(v)
            } else {
                Err(HandoverError::Invalid {
                    what,
                    why: format!("fd index {v} outside the fd table of {fd_count}"),
                })
            }
        };
        let listener = index(r.u32("listener")?, "listener")?;
        let control = match r.opt_u32("control")? {
            Some(v) => Some(index(v, "control")?),
            None => None,
        };
        let shm = index(r.u32("shm")?, "shm")?;
        let shm_size = r.u64("shm size")?;
        let shm_description = r.text("shm description")?;
        let vectors = r.u32("vectors")?;
        if vectors > MAX_VECTORS {
            return Err(HandoverError::TooLarge {
                what: "vectors",
                value: vectors.into(),
                max: MAX_VECTORS.into(),
            });
        }
        let socket_file_ours = r.bool("socket file owner")?;
        let id_cursor = r.u16("id cursor")?;
        let next_seq = r.u64("next connection number")?;
        let counters = Counters {
            started: r.u64("started")?,
            joins: r.u64("joins")?,
            leaves: r.u64("leaves")?,
            drops: r.u64("drops")?,
            upgrades: r.u64("upgrades")?,
            restarts: r.u64("restarts")?,
        };
        let n_peers = r.count("peer count", MAX_PEERS)?;
        let mut peers = Vec::with_capacity(n_peers.min(1024));
        let mut ids = std::collections::HashSet::new();
        let mut seqs = std::collections::HashSet::new();
        for _ in 0..n_peers {
            let id = r.u16("peer id")?;
            let seq = r.u64("peer connection number")?;
            if !ids.insert(id) || !seqs.insert(seq) || seq == 0 || seq > next_seq {
                return Err(HandoverError::Invalid {
                    what: "peer",
                    why: format!("id {id} / connection {seq} repeated or out of range"),
                });
            }
            let has_pid = r.bool("peer pid flag")?;
            let pid = r.u32("peer pid")? as i32;
            let has_uid = r.bool("peer uid flag")?;
            let uid = r.u32("peer uid")?;
            let since = r.u64("peer since")?;
            let socket = index(r.u32("peer socket")?, "peer socket")?;
            let n_vectors = r.count("peer vector count", MAX_VECTORS as usize)?;
            let mut v = Vec::with_capacity(n_vectors);
            for _ in 0..n_vectors {
                v.push(index(r.u32("peer vector")?, "peer vector")?);
            }
            let n_queued = r.count("queued message count", MAX_QUEUED)?;
            let mut queue = Vec::with_capacity(n_queued.min(1024));
            for _ in 0..n_queued {
                let bytes: [u8; MESSAGE_LEN] = r
                    .take(MESSAGE_LEN, "queued message")?
                    .try_into()
                    .expect("8 bytes");
                let sent = r.u8("queued message progress")?;
                if usize::from(sent) >= MESSAGE_LEN {
                    return Err(HandoverError::Invalid {
                        what: "queued message progress",
                        why: format!("{sent} bytes sent of an {MESSAGE_LEN}-byte message"),
                    });
                }
                let fd = match r.opt_u32("queued message fd")? {
                    Some(i) => Some(index(i, "queued message fd")?),
                    None => None,
                };
                let is_notice = r.bool("queued message kind")?;
                queue.push(QueuedState {
                    bytes,
                    sent,
                    fd,
                    is_notice,
                });
            }
            peers.push(PeerState {
                id,
                seq,
                pid: has_pid.then_some(pid),
                uid: has_uid.then_some(uid),
                since,
                socket,
                vectors: v,
                queue,
            });
        }
        let n_gone = r.count("departed peer count", MAX_PEERS)?;
        let mut announce_leaves = Vec::with_capacity(n_gone.min(1024));
        for _ in 0..n_gone {
            announce_leaves.push(r.u16("departed peer")?);
        }
        if r.at != bytes.len() {
            return Err(HandoverError::Trailing(bytes.len() - r.at));
        }
        let state = State {
            listener,
            control,
            shm,
            shm_size,
            shm_description,
            vectors,
            socket_file_ours,
            id_cursor,
            next_seq,
            counters,
            peers,
            announce_leaves,
        };
        state.check_exclusive(fd_count)?;
        Ok(state)
    }

    /// The listener, the control socket and each peer socket must be fds of their own: they
    /// become owned sockets, not shared references.
    fn check_exclusive(&self, fd_count: usize) -> Result<(), HandoverError> {
        let mut uses = vec![0u32; fd_count];
        let mut exclusive = vec![self.listener];
        exclusive.extend(self.control);
        exclusive.extend(self.peers.iter().map(|p| p.socket));
        let shared = std::iter::once(self.shm).chain(self.peers.iter().flat_map(|p| {
            p.vectors
                .iter()
                .copied()
                .chain(p.queue.iter().filter_map(|q| q.fd))
        }));
        for i in exclusive.iter().copied().chain(shared) {
            uses[i as usize] += 1;
        }
        for i in exclusive {
            if uses[i as usize] != 1 {
                return Err(HandoverError::Invalid {
                    what: "socket",
                    why: format!(
                        "fd index {i} is a socket but is used {} times",
                        uses[i as usize]
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A whole blob: header, fd table (raw fd numbers as the successor will see them), body.
pub fn encode_blob(ready_fd: Option<RawFd>, fds: &[RawFd], body: &[u8]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(20 + fds.len() * 4 + body.len()));
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.opt_u32(ready_fd.map(|f| f as u32));
    w.u32(fds.len() as u32);
    for &f in fds {
        w.u32(f as u32);
    }
    w.0.extend_from_slice(body);
    w.0
}

/// A decoded blob, before the fds are taken.
#[derive(Debug)]
pub struct Blob {
    /// Where to say "ready".
    pub ready_fd: Option<RawFd>,
    /// The fd numbers, by index.
    pub fds: Vec<RawFd>,
    /// The rest.
    pub state: State,
}

/// Parses a whole blob (not touching any fd).
pub fn decode_blob(bytes: &[u8]) -> Result<Blob, HandoverError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(HandoverError::BadMagic);
    }
    let found = r.u32("version")?;
    if found != VERSION {
        return Err(HandoverError::Version { found });
    }
    let ready_fd = r.opt_u32("ready fd")?.map(|f| f as RawFd);
    let n = r.count("fd count", MAX_FDS)?;
    let mut fds = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let fd = r.u32("fd table")?;
        if fd > i32::MAX as u32 || fd <= 2 || !seen.insert(fd) {
            return Err(HandoverError::Invalid {
                what: "fd table",
                why: format!("fd {fd} is a standard stream, out of range or listed twice"),
            });
        }
        fds.push(fd as RawFd);
    }
    if let Some(ready) = ready_fd {
        if ready <= 2 || seen.contains(&(ready as u32)) {
            return Err(HandoverError::Invalid {
                what: "ready fd",
                why: format!("fd {ready} is a standard stream or also in the fd table"),
            });
        }
    }
    let state = State::decode_body(&bytes[r.at..], n)?;
    Ok(Blob {
        ready_fd,
        fds,
        state,
    })
}

/// The fds of a blob, owned: shared ones as `Rc`, sockets taken out once.
#[derive(Debug)]
pub struct FdTable {
    slots: Vec<Option<Rc<OwnedFd>>>,
}

impl FdTable {
    /// Takes ownership of the raw fds listed in a blob after checking each is open.
    ///
    /// The fds must have been handed to this process by its predecessor (inherited) and not be
    /// owned by anything else here; [`inherited`] is the only caller.
    fn adopt(fds: &[RawFd]) -> Result<FdTable, HandoverError> {
        for &fd in fds {
            if nix::fcntl::fcntl(
                // SAFETY: only borrowed for this one fcntl(F_GETFD), which checks it is open.
                unsafe { BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_GETFD,
            )
            .is_err()
            {
                return Err(HandoverError::Invalid {
                    what: "fd table",
                    why: format!("fd {fd} is not open in this process"),
                });
            }
        }
        let slots = fds
            .iter()
            .map(|&fd| {
                // SAFETY: checked open above; listed once (decode_blob refuses repeats) and
                // inherited from the predecessor for us alone, so nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                set_cloexec(&owned);
                Some(Rc::new(owned))
            })
            .collect();
        Ok(FdTable { slots })
    }

    /// A table holding nothing (what is left once a server has taken its fds).
    pub fn empty() -> FdTable {
        FdTable { slots: Vec::new() }
    }

    /// A shared fd (shared memory, eventfd, queued fd).
    pub fn shared(&self, index: u32) -> Rc<OwnedFd> {
        self.slots[index as usize]
            .clone()
            .expect("decode_body checked exclusive fds are not shared")
    }

    /// An exclusive fd (a socket), taken out of the table.
    pub fn take(&mut self, index: u32) -> OwnedFd {
        let rc = self.slots[index as usize]
            .take()
            .expect("decode_body checked each socket is used once");
        Rc::try_unwrap(rc).expect("a socket's fd is referenced only by the table")
    }
}

/// Sets FD_CLOEXEC again on an adopted fd: it must not leak into later children.
fn set_cloexec(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
}

/// What a successor received: the state, its fds and where to report readiness.
pub struct Inherited {
    /// The decoded state.
    pub state: State,
    /// Its fds, owned.
    pub fds: FdTable,
    /// The pipe to write one 0 byte to once serving.
    pub ready: Option<OwnedFd>,
}

impl fmt::Debug for Inherited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inherited")
            .field("peers", &self.state.peers.len())
            .finish()
    }
}

impl Inherited {
    /// Tells the predecessor (through the upgrade helper) that this process now serves.
    pub fn report_ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let _ = nix::unistd::write(&fd, &[0u8]);
        }
    }
}

/// The state handed to this process, if [`STATE_FD_ENV`] is set (it is removed from the
/// environment so it does not reach any child). `Ok(None)` when the variable is absent.
pub fn inherited() -> Result<Option<Inherited>, HandoverError> {
    let Some(value) = std::env::var_os(STATE_FD_ENV) else {
        return Ok(None);
    };
    // The process is still single-threaded here (first thing in run()).
    std::env::remove_var(STATE_FD_ENV);
    let text = value.to_string_lossy();
    let fd: RawFd =
        text.parse().ok().filter(|&fd| fd > 2).ok_or_else(|| {
            HandoverError::Io(format!("{STATE_FD_ENV}={text} is not an fd number"))
        })?;
    // SAFETY: borrowed only to check the fd is open before it is taken.
    let check = nix::fcntl::fcntl(
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    );
    if check.is_err() {
        return Err(HandoverError::Io(format!(
            "{STATE_FD_ENV}={fd}: fd {fd} is not open"
        )));
    }
    // SAFETY: open (checked), and the predecessor passed it to us alone by this variable.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let bytes =
        read_blob(file).map_err(|e| HandoverError::Io(format!("cannot read the state: {e}")))?;
    let blob = decode_blob(&bytes)?;
    if blob.fds.contains(&fd) {
        return Err(HandoverError::Invalid {
            what: "fd table",
            why: format!("lists the state fd {fd} itself"),
        });
    }
    let ready = match blob.ready_fd {
        Some(r) => {
            // SAFETY: borrowed for one F_GETFD to check it is open.
            let open = nix::fcntl::fcntl(
                unsafe { BorrowedFd::borrow_raw(r) },
                nix::fcntl::FcntlArg::F_GETFD,
            );
            if open.is_err() || r == fd {
                return Err(HandoverError::Invalid {
                    what: "ready fd",
                    why: format!("fd {r} is not open"),
                });
            }
            // SAFETY: open, distinct from the table and the state fd, passed for us alone.
            let owned = unsafe { OwnedFd::from_raw_fd(r) };
            set_cloexec(&owned);
            Some(owned)
        }
        None => None,
    };
    let fds = FdTable::adopt(&blob.fds)?;
    Ok(Some(Inherited {
        state: blob.state,
        fds,
        ready,
    }))
}

fn read_blob(mut file: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    if len > MAX_BLOB {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than {MAX_BLOB}"
        )));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            listener: 0,
            control: Some(1),
            shm: 2,
            shm_size: 4 << 20,
            shm_description: "memfd".into(),
            vectors: 2,
            socket_file_ours: true,
            id_cursor: 7,
            next_seq: 9,
            counters: Counters {
                started: 1,
                joins: 8,
                leaves: 6,
                drops: 1,
                upgrades: 3,
                restarts: 2,
            },
            peers: vec![PeerState {
                id: 6,
                seq: 9,
                pid: Some(-1),
                uid: None,
                since: 5,
                socket: 3,
                vectors: vec![4, 5],
                queue: vec![
                    QueuedState {
                        bytes: [1; 8],
                        sent: 3,
                        fd: None,
                        is_notice: true,
                    },
                    QueuedState {
                        bytes: [2; 8],
                        sent: 0,
                        fd: Some(2),
                        is_notice: false,
                    },
                ],
            }],
            announce_leaves: vec![4, 65535],
        }
    }

    #[test]
    fn blob_round_trips() {
        let body = sample().encode_body();
        let blob = encode_blob(Some(40), &[10, 11, 12, 13, 14, 15], &body);
        let back = decode_blob(&blob).unwrap();
        assert_eq!(back.state, sample());
        assert_eq!(back.fds, vec![10, 11, 12, 13, 14, 15]);
        assert_eq!(back.ready_fd, Some(40));
    }

    #[test]
    fn other_versions_and_garbage_are_refused_with_a_reason() {
        let body = sample().encode_body();
        let mut blob = encode_blob(None, &[10, 11, 12, 13, 14, 15], &body);
        blob[8] = 2;
        let e = decode_blob(&blob).unwrap_err();
        assert!(e.to_string().contains("state version 2"), "{e}");
        assert!(matches!(
            decode_blob(b"nonsense"),
            Err(HandoverError::BadMagic)
        ));
        // Every truncation is an error, never a panic.
        let blob = encode_blob(None, &[10, 11, 12, 13, 14, 15], &body);
        for len in 0..blob.len() {
            assert!(decode_blob(&blob[..len]).is_err(), "{len}");
        }
        let mut long = blob.clone();
        long.push(0);
        assert!(matches!(
            decode_blob(&long),
            Err(HandoverError::Trailing(1))
        ));
        // Fewer fds than the body refers to.
        let short = encode_blob(None, &[10, 11, 12], &body);
        assert!(decode_blob(&short)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        // A socket that is also a vector.
        let mut s = sample();
        s.peers[0].vectors[0] = 3;
        let blob = encode_blob(None, &[10, 11, 12, 13, 14, 15], &s.encode_body());
        assert!(decode_blob(&blob)
            .unwrap_err()
            .to_string()
            .contains("socket"));
        // Standard streams are never adopted.
        let blob = encode_blob(None, &[1, 11, 12, 13, 14, 15], &body);
        assert!(decode_blob(&blob).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let body = sample().encode_body();
        let blob = encode_blob(Some(40), &[10, 11, 12, 13, 14, 15], &body);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut b = blob.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % b.len();
                b[at] = (x >> 32) as u8;
            }
            let _ = decode_blob(&b);
        }
    }
}
