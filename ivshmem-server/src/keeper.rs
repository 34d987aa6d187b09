//! Crash survival (`--keeper`): a small process of ours that holds everything the serving
//! process holds — the listening and control sockets, the memory, every peer's socket and
//! eventfds — and a copy of the peer table, and starts a new server with them (the upgrade's
//! hand-over format, [`crate::handover`]) when the serving one dies.
//!
//! Why a keeper and not systemd's fd store (`FDSTORE=1`): the fd store needs systemd as PID 1,
//! which many hosts running VMs (and every test machine here) do not have; the keeper works
//! everywhere, and under systemd too. Why not a thread: a crash (or `kill -9`) takes the whole
//! process.
//!
//! The server tells its keeper, over a SEQPACKET socket, about every change, before it matters:
//!
//! - `J` when a peer joins, *before* anyone is told (its socket and eventfds travel with it);
//! - `S` when everything queued for a peer has been sent (settled), `U` when a peer's socket
//!   filled up and messages wait (unsettled);
//! - `L` after a departure has been announced.
//!
//! When the server dies (killed, crashed, or exited with an error), the keeper reads what the
//! socket still holds, then starts a new server with the settled peers. A peer that was
//! unsettled at the crash — its handshake or a notice not completely sent, so its byte stream
//! may end in the middle of a message — is disconnected, and its departure is announced by the
//! new server, as is every peer that hung up while no server ran (the new server sees their
//! sockets closed). Everything else is as before the crash: ids continue, nobody else is told
//! anything. A peer whose departure the old server had announced just before dying, before its
//! `L` reached the keeper, is announced a second time; peers treat a departure of an unknown
//! peer as the harmless no-op it is (QEMU logs it).
//!
//! SIGTERM, SIGINT and SIGHUP to the keeper are passed to the server, which shuts down as
//! usual; then the keeper exits. SIGUSR2 is passed on too: the server upgrades through the
//! keeper, which starts the new server itself. A server killed by SIGKILL is always replaced;
//! if servers keep crashing by themselves (more than [`MAX_RESTARTS`] within
//! [`RESTART_WINDOW`]: any other signal, or an exit status other than 0) the keeper gives up,
//! exits 1 and the peers see their connections close.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::handover::{Counters, FdCollector, PeerState, State};
use crate::upgrade::{
    launch_successor, receive, Launch, TAG_BODY, TAG_END, TAG_FAILED, TAG_FDS, TAG_OK,
};

/// A peer joined (before it is announced).
pub const TAG_JOIN: u8 = b'J';
/// More eventfds of the peer that just joined (more than fit in one message).
pub const TAG_MORE_VECTORS: u8 = b'V';
/// Everything queued for a peer has been sent.
pub const TAG_SETTLED: u8 = b'S';
/// Messages wait for a peer.
pub const TAG_UNSETTLED: u8 = b'U';
/// A peer left and its departure has been announced.
pub const TAG_LEFT: u8 = b'L';
/// Eventfds in a `J` message besides the socket (the rest follow in `V` messages).
pub const VECTORS_IN_JOIN: usize = 240;

/// Servers that may die within [`RESTART_WINDOW`] before the keeper gives up.
pub const MAX_RESTARTS: usize = 5;
/// See [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// What the keeper starts with: what the set-up made.
#[derive(Debug)]
pub struct Setup {
    /// The listening socket.
    pub listener: OwnedFd,
    /// The control socket, if any.
    pub control: Option<OwnedFd>,
    /// The shared memory.
    pub shm: OwnedFd,
    /// Its size.
    pub shm_size: u64,
    /// Its origin.
    pub shm_description: String,
    /// Vectors per peer.
    pub vectors: u32,
    /// Whether the server created the socket file (not systemd).
    pub socket_file_ours: bool,
    /// What to start.
    pub launch: Launch,
}

#[derive(Debug)]
struct Mirrored {
    id: u16,
    pid: Option<i32>,
    uid: Option<u32>,
    since: u64,
    socket: OwnedFd,
    vectors: Vec<OwnedFd>,
    settled: bool,
}

/// The keeper's copy of the peer table, keyed by connection number.
#[derive(Debug, Default)]
struct Mirror {
    peers: BTreeMap<u64, Mirrored>,
    id_cursor: u16,
    next_seq: u64,
    last_join: Option<u64>,
}

impl Mirror {
    /// Applies one message from the server; returns false for one it does not know.
    fn apply(&mut self, tag: u8, data: &[u8], fds: Vec<OwnedFd>, counters: &mut Counters) -> bool {
        let seq_of = |d: &[u8]| {
            d.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
        };
        match tag {
            TAG_JOIN => {
                let Some(join) = parse_join(data) else {
                    return false;
                };
                let mut fds = fds.into_iter();
                let Some(socket) = fds.next() else {
                    return false;
                };
                self.id_cursor = join.id.wrapping_add(1);
                self.next_seq = self.next_seq.max(join.seq);
                self.last_join = Some(join.seq);
                counters.joins += 1;
                self.peers.insert(
                    join.seq,
                    Mirrored {
                        id: join.id,
                        pid: join.pid,
                        uid: join.uid,
                        since: join.since,
                        socket,
                        vectors: fds.collect(),
                        settled: false,
                    },
                );
                true
            }
            TAG_MORE_VECTORS => match seq_of(data).and_then(|s| self.peers.get_mut(&s)) {
                Some(p) => {
                    p.vectors.extend(fds);
                    true
                }
                None => false,
            },
            TAG_SETTLED | TAG_UNSETTLED => {
                if let Some(p) = seq_of(data).and_then(|s| self.peers.get_mut(&s)) {
                    p.settled = tag == TAG_SETTLED;
                }
                true
            }
            TAG_LEFT => {
                if let Some(seq) = seq_of(data) {
                    if self.peers.remove(&seq).is_some() {
                        counters.leaves += 1;
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// The mirror of a state handed over by an upgrade, with the fds it came with.
    fn from_handover(state: &State, fds: Vec<OwnedFd>) -> Mirror {
        // Eventfds may also sit in queued messages: each reference gets its own duplicate.
        let take = |i: u32| fds.get(i as usize).and_then(|f| f.try_clone().ok());
        let mut mirror = Mirror {
            id_cursor: state.id_cursor,
            next_seq: state.next_seq,
            ..Mirror::default()
        };
        for p in &state.peers {
            let Some(socket) = take(p.socket) else {
                continue;
            };
            let vectors = p.vectors.iter().filter_map(|&i| take(i)).collect();
            mirror.peers.insert(
                p.seq,
                Mirrored {
                    id: p.id,
                    pid: p.pid,
                    uid: p.uid,
                    since: p.since,
                    socket,
                    vectors,
                    settled: p.queue.is_empty(),
                },
            );
        }
        mirror
    }
}

struct Join {
    id: u16,
    seq: u64,
    pid: Option<i32>,
    uid: Option<u32>,
    since: u64,
}

/// The `J` payload: id u16, seq u64, pid flag u8 + i32, uid flag u8 + u32, since u64.
pub fn join_payload(id: u16, seq: u64, pid: Option<i32>, uid: Option<u32>, since: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(32);
    d.extend_from_slice(&id.to_le_bytes());
    d.extend_from_slice(&seq.to_le_bytes());
    d.push(u8::from(pid.is_some()));
    d.extend_from_slice(&pid.unwrap_or(0).to_le_bytes());
    d.push(u8::from(uid.is_some()));
    d.extend_from_slice(&uid.unwrap_or(0).to_le_bytes());
    d.extend_from_slice(&since.to_le_bytes());
    d
}

fn parse_join(d: &[u8]) -> Option<Join> {
    if d.len() != 2 + 8 + 5 + 5 + 8 {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(d[at..at + 4].try_into().expect("4"));
    Some(Join {
        id: u16::from_le_bytes([d[0], d[1]]),
        seq: u64::from_le_bytes(d[2..10].try_into().expect("8")),
        pid: (d[10] == 1).then(|| u32_at(11) as i32),
        uid: (d[15] == 1).then(|| u32_at(16)),
        since: u64::from_le_bytes(d[20..28].try_into().expect("8")),
    })
}

/// The keeper's running server.
struct Child {
    pid: u32,
    /// Our end of its socket.
    sock: OwnedFd,
    /// Kept so the process is not reaped behind our back (we reap with waitpid).
    _process: std::process::Child,
}

/// Holds the fds, starts the first server and replaces it whenever it dies; returns when a
/// server shut down on request (or by itself), or gives up after too many deaths.
pub fn run(
    setup: Setup,
    signals: SignalFd,
    mut notifier: Option<crate::systemd::Notifier>,
) -> anyhow::Result<()> {
    let mut counters = Counters {
        started: crate::clock::unix_now(),
        ..Counters::default()
    };
    let mut mirror = Mirror::default();
    let mut gone: Vec<u16> = Vec::new();
    let mut child = start(&setup, &mirror, &counters, &[])
        .map_err(|e| anyhow::anyhow!("cannot start the server: {e}"))?;
    log::info!(
        "ivshmem-server keeper (pid {}): server pid {} serves",
        std::process::id(),
        child.pid
    );
    if let Some(n) = &notifier {
        n.notify(&format!(
            "READY=1\nSTATUS=keeper pid {}, server pid {}",
            std::process::id(),
            child.pid
        ));
    }
    let mut stopping = false;
    let mut deaths: Vec<Instant> = Vec::new();
    // Pids of servers replaced by an upgrade, reaped quietly.
    let mut retired: Vec<u32> = Vec::new();
    let mut handover = (Vec::new(), Vec::new());
    loop {
        let (sock_ready, sig_ready) = {
            let mut fds = [
                PollFd::new(child.sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            // The keeper is the service systemd watches: it sends the watchdog keep-alives.
            let timeout = match notifier.as_ref().and_then(|n| n.next_deadline()) {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    PollTimeout::from(u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX))
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if let Some(n) = &mut notifier {
            n.keepalive(Instant::now());
        }
        if sock_ready {
            read_messages(
                &setup,
                &mut child,
                &mut mirror,
                &mut counters,
                &mut handover,
                &mut retired,
            );
        }
        if !sig_ready {
            continue;
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == libc::SIGCHLD {
                continue;
            }
            let Ok(signal) = Signal::try_from(signo) else {
                continue;
            };
            if signal != Signal::SIGUSR2 {
                stopping = true;
            }
            let _ = kill(Pid::from_raw(child.pid as i32), signal);
        }
        // Reap: retired servers quietly; the current one's end decides what happens.
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let Some(pid) = status.pid().map(|p| p.as_raw() as u32) else {
                break;
            };
            if let Some(i) = retired.iter().position(|&r| r == pid) {
                retired.swap_remove(i);
                continue;
            }
            if pid != child.pid {
                continue;
            }
            let clean = matches!(status, WaitStatus::Exited(_, 0));
            if stopping || clean {
                log::info!(
                    "ivshmem-server keeper: the server exited ({}); keeper exits",
                    describe(&status)
                );
                return Ok(());
            }
            // What the server told us before it died is still in the socket: take it in.
            read_messages(
                &setup,
                &mut child,
                &mut mirror,
                &mut counters,
                &mut handover,
                &mut retired,
            );
            // A server killed from outside (kill -9, the OOM killer) is always replaced; one
            // that keeps crashing by itself is a crash loop the keeper must not feed forever.
            let killed = matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _));
            let now = Instant::now();
            deaths.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            if !killed {
                deaths.push(now);
            }
            if deaths.len() > MAX_RESTARTS {
                anyhow::bail!(
                    "the server died {} times within {} s ({}); giving up",
                    deaths.len(),
                    RESTART_WINDOW.as_secs(),
                    describe(&status)
                );
            }
            // Peers with messages not completely sent: their streams are unknown; they go.
            let unsettled: Vec<u64> = mirror
                .peers
                .iter()
                .filter(|(_, p)| !p.settled)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in unsettled {
                if let Some(p) = mirror.peers.remove(&seq) {
                    log::info!(
                        "ivshmem-server keeper: peer {} had messages in flight at the crash: disconnected",
                        p.id
                    );
                    counters.leaves += 1;
                    gone.push(p.id);
                }
            }
            counters.restarts += 1;
            log::warn!(
                "ivshmem-server keeper: server pid {} died ({}); restarting it with {} peer{}",
                child.pid,
                describe(&status),
                mirror.peers.len(),
                if mirror.peers.len() == 1 { "" } else { "s" }
            );
            child = start(&setup, &mirror, &counters, &gone)
                .map_err(|e| anyhow::anyhow!("cannot restart the server: {e}"))?;
            gone.clear();
            log::info!("ivshmem-server keeper: server pid {} serves", child.pid);
        }
    }
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {}", sig.as_str()),
        other => format!("{other:?}"),
    }
}

/// Takes in every message the server has sent (non-blocking), including a hand-over.
fn read_messages(
    setup: &Setup,
    child: &mut Child,
    mirror: &mut Mirror,
    counters: &mut Counters,
    handover: &mut (Vec<u8>, Vec<OwnedFd>),
    retired: &mut Vec<u32>,
) {
    loop {
        let readable = {
            let mut fds = [PollFd::new(child.sock.as_fd(), PollFlags::POLLIN)];
            matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        };
        if !readable {
            return;
        }
        let (tag, data, fds) = match receive(child.sock.as_fd()) {
            Ok(Some(p)) => p,
            // EOF or error: the server is gone or going; SIGCHLD decides.
            Ok(None) | Err(_) => return,
        };
        match tag {
            TAG_BODY => {
                handover.0.extend_from_slice(&data);
                handover.1.extend(fds);
            }
            TAG_FDS => handover.1.extend(fds),
            TAG_END => {
                let (body, fds) = std::mem::take(handover);
                upgrade(setup, child, mirror, counters, body, fds, retired);
                return; // the socket changed
            }
            _ => {
                if !mirror.apply(tag, &data, fds, counters) {
                    log::warn!("ivshmem-server keeper: ignored a malformed message ({tag:#x}) from the server");
                }
            }
        }
    }
}

/// The server asks to be replaced (SIGUSR2 or `--upgrade`): start the successor ourselves,
/// answer the old server, and keep the new server's state as the mirror.
fn upgrade(
    setup: &Setup,
    child: &mut Child,
    mirror: &mut Mirror,
    counters: &mut Counters,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
    retired: &mut Vec<u32>,
) {
    let state = match State::decode_body(&body, fds.len()) {
        Ok(s) => s,
        Err(e) => {
            answer(
                &child.sock,
                TAG_FAILED,
                format!("the keeper could not read the state: {e}").as_bytes(),
            );
            return;
        }
    };
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    match launch_with_socket(&setup.launch, &body, &borrowed) {
        Ok(next) => {
            answer(&child.sock, TAG_OK, &next.pid.to_le_bytes());
            log::info!(
                "ivshmem-server keeper: upgraded, server pid {} serves",
                next.pid
            );
            retired.push(child.pid);
            *counters = state.counters;
            *mirror = Mirror::from_handover(&state, fds);
            *child = next;
        }
        Err(why) => answer(&child.sock, TAG_FAILED, why.as_bytes()),
    }
}

fn answer(sock: &OwnedFd, tag: u8, data: &[u8]) {
    let mut m = vec![tag];
    m.extend_from_slice(data);
    let _ = nix::sys::socket::send(sock.as_raw_fd(), &m, MsgFlags::MSG_NOSIGNAL);
}

/// Starts a server with the mirror's settled peers; `gone` are announced as leaving.
fn start(
    setup: &Setup,
    mirror: &Mirror,
    counters: &Counters,
    gone: &[u16],
) -> Result<Child, String> {
    let mut fds = FdCollector::new();
    let listener = fds.add(setup.listener.as_fd());
    let control = setup.control.as_ref().map(|c| fds.add(c.as_fd()));
    let shm = fds.add(setup.shm.as_fd());
    let peers = mirror
        .peers
        .iter()
        .map(|(&seq, p)| PeerState {
            id: p.id,
            seq,
            pid: p.pid,
            uid: p.uid,
            since: p.since,
            socket: fds.add(p.socket.as_fd()),
            vectors: p.vectors.iter().map(|v| fds.add(v.as_fd())).collect(),
            queue: Vec::new(),
        })
        .collect();
    let state = State {
        listener,
        control,
        shm,
        shm_size: setup.shm_size,
        shm_description: setup.shm_description.clone(),
        vectors: setup.vectors,
        socket_file_ours: setup.socket_file_ours,
        id_cursor: mirror.id_cursor,
        next_seq: mirror.next_seq,
        counters: *counters,
        peers,
        announce_leaves: gone.to_vec(),
    };
    launch_with_socket(&setup.launch, &state.encode_body(), fds.fds())
}

/// Launches a server with a fresh keeper socket; waits until it serves.
fn launch_with_socket(
    launch: &Launch,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<Child, String> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("cannot create the server's keeper socket: {e}"))?;
    let (pid, process) = launch_successor(launch, body, fds, Some(theirs.as_fd()))?;
    drop(theirs);
    Ok(Child {
        pid,
        sock: ours,
        _process: process,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_payload_round_trips() {
        let d = join_payload(7, 9, Some(-3), None, 11);
        let j = parse_join(&d).unwrap();
        assert_eq!(
            (j.id, j.seq, j.pid, j.uid, j.since),
            (7, 9, Some(-3), None, 11)
        );
        assert!(parse_join(&d[1..]).is_none());
    }

    #[test]
    fn mirror_tracks_joins_settling_and_leaves() {
        let mut m = Mirror::default();
        let mut c = Counters::default();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(m.apply(
            TAG_JOIN,
            &join_payload(4, 2, None, None, 0),
            vec![a.into()],
            &mut c
        ));
        assert!(!m.peers[&2].settled);
        assert!(m.apply(TAG_SETTLED, &2u64.to_le_bytes(), vec![], &mut c));
        assert!(m.peers[&2].settled);
        assert_eq!((m.id_cursor, m.next_seq), (5, 2));
        assert!(m.apply(TAG_LEFT, &2u64.to_le_bytes(), vec![], &mut c));
        assert!(m.peers.is_empty());
        assert_eq!((c.joins, c.leaves), (1, 1));
        assert!(!m.apply(TAG_JOIN, b"short", vec![], &mut c));
        assert!(!m.apply(b'?', b"", vec![], &mut c));
    }
}
