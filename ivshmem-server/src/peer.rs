//! Peers: id allocation (QEMU's rules), per-peer state, and the bounded outgoing queue that keeps
//! one peer that does not read from stalling the others.
//!
//! Ids come from a 16-bit cursor: the first free id at or after it, then the cursor moves past
//! the id given, so ids grow monotonically (first client 0) and are reused only after a wrap.
//!
//! Every message for a peer goes through its [`OutQueue`] and is sent as far as its non-blocking
//! socket accepts; the rest waits for EPOLLOUT. Queued fds are reference-counted owned fds
//! (`Rc<OwnedFd>`), so a peer's eventfds stay open while a message carrying them is queued
//! anywhere, even after that peer left, without one `dup` per recipient. The handshake is always
//! queued in full (its length is bounded by the peers and vectors the server holds); the join
//! and leave notices that follow are bounded by the queue limit, and a peer exceeding it is
//! dropped by the caller.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use protocol::server::Message;
use protocol::wire::{encode, MESSAGE_LEN};

/// Messages handed to the kernel per `sendmmsg` (a handshake with 4 vectors and no other peer
/// is 7; longer queues take several calls).
pub(crate) const SEND_BATCH: usize = 16;

/// Room for one cmsghdr carrying one int (`CMSG_SPACE(4)` is 24 on 64-bit Linux), aligned for
/// cmsghdr.
#[repr(C)]
#[derive(Clone, Copy)]
union ControlBuffer {
    _align: libc::cmsghdr,
    bytes: [u8; 32],
}

/// Sends the first `count` (at most [`SEND_BATCH`]) of `items` with one `sendmmsg`: each
/// message its own `msghdr` with its remaining bytes and, if none of it went yet, its fd as
/// SCM_RIGHTS; `MSG_NOSIGNAL`; retried on EINTR. Returns the bytes each message sent, in order,
/// for as many messages as the kernel took.
///
/// On the wire this is exactly `count` `sendmsg` calls in a row: the kernel runs its `sendmsg`
/// for each header in turn, so every message is its own write with its own fd, and a reader
/// taking 8 bytes and one fd at a time (QEMU's clients) sees no difference. The kernel stops at
/// the first message it cannot take whole (full socket, error: the rest are not attempted),
/// so the byte stream never skips ahead of a partly sent message. Control buffers are on the
/// stack (no allocation per message; they were most of the server's instructions once).
fn send_batch(
    sock: BorrowedFd<'_>,
    items: &VecDeque<Queued>,
    count: usize,
) -> io::Result<([u32; SEND_BATCH], usize)> {
    let count = count.min(SEND_BATCH).min(items.len());
    let mut controls = [ControlBuffer { bytes: [0; 32] }; SEND_BATCH];
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; SEND_BATCH];
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize,
            libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize,
        )
    };
    debug_assert!(space <= std::mem::size_of::<ControlBuffer>());
    for (i, item) in items.iter().take(count).enumerate() {
        let bytes = &item.bytes[item.sent..];
        iovs[i] = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let msg = &mut headers[i].msg_hdr;
        msg.msg_iov = &mut iovs[i];
        msg.msg_iovlen = 1;
        // The fd went with the first byte: a partly sent message has none left to send.
        let fd = if item.sent == 0 {
            item.fd.as_ref()
        } else {
            None
        };
        if let Some(fd) = fd {
            msg.msg_control = std::ptr::addr_of_mut!(controls[i]).cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points at `controls[i]`, aligned for cmsghdr and at least
            // `space` bytes long, so CMSG_FIRSTHDR is non-null and the header and its one int
            // fit in it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = len as _;
                std::ptr::write_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
                    fd.as_raw_fd(),
                );
            }
        }
    }
    loop {
        // SAFETY: the first `count` headers point at live iovecs over the queued messages'
        // bytes and, with an fd, at their control buffers; all of it outlives the call, and
        // the kernel writes only the headers' msg_len.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            let mut sent = [0u32; SEND_BATCH];
            for (out, header) in sent.iter_mut().zip(&headers).take(n as usize) {
                *out = header.msg_len;
            }
            return Ok((sent, n as usize));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Hashes peer ids (which the server assigns, so no peer chooses a key) with one multiply
/// instead of SipHash: the tables are looked up once or more per message sent, and SipHash was
/// ~14% of the server's instructions in a connect storm (callgrind).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits (which the table uses first) depend on every bit.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by peer id.
pub type IdMap<V> = HashMap<u16, V, BuildHasherDefault<IdHash>>;
/// A set of peer ids.
pub type IdSet = HashSet<u16, BuildHasherDefault<IdHash>>;

/// A message whose fd is shared by every queue that holds it.
pub type SharedMessage = Message<Rc<OwnedFd>>;

/// QEMU's id cursor.
#[derive(Debug, Default)]
pub struct IdAllocator {
    cursor: u16,
}

impl IdAllocator {
    /// An allocator whose next id is searched from `cursor` (a hand-over keeps it).
    pub fn at(cursor: u16) -> Self {
        IdAllocator { cursor }
    }

    /// Where the next search starts.
    pub fn cursor(&self) -> u16 {
        self.cursor
    }

    /// The first id at or after the cursor for which `in_use` is false, or None when all 65536
    /// are taken. The cursor moves past the id returned.
    pub fn allocate(&mut self, in_use: impl Fn(u16) -> bool) -> Option<u16> {
        for step in 0..=u32::from(u16::MAX) {
            let id = self.cursor.wrapping_add(step as u16);
            if !in_use(id) {
                self.cursor = id.wrapping_add(1);
                return Some(id);
            }
        }
        None
    }
}

#[derive(Debug)]
struct Queued {
    bytes: [u8; MESSAGE_LEN],
    /// Bytes of this message already sent; its fd went with the first of them.
    sent: usize,
    fd: Option<Rc<OwnedFd>>,
    /// Counts against the limit (join/leave notices; not the handshake).
    is_notice: bool,
}

/// One waiting message as [`OutQueue::export`] sees it.
#[derive(Debug)]
pub struct QueuedExport<'q> {
    /// The 8 bytes of the message.
    pub bytes: [u8; MESSAGE_LEN],
    /// How many of them were sent already (0..8).
    pub sent: usize,
    /// Its fd, if none of the message was sent yet.
    pub fd: Option<&'q Rc<OwnedFd>>,
    /// Counts against the queue limit (join/leave notice).
    pub is_notice: bool,
}

/// The queue was full: the peer is not reading.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// Result of trying to send what is queued.
#[derive(Debug)]
pub enum Flush {
    /// Everything was sent.
    Done,
    /// The socket is full; wait for EPOLLOUT.
    Blocked,
    /// The socket failed (peer gone): drop the peer.
    Failed(io::Error),
}

/// Capacity an empty queue keeps: enough for a join or leave notice burst without reallocating.
const IDLE_QUEUE_CAPACITY: usize = 16;

/// A peer's outgoing messages.
#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Queued>,
    notices: usize,
    limit: usize,
}

impl OutQueue {
    /// `limit`: how many notice messages may wait at once.
    pub fn new(limit: usize) -> Self {
        OutQueue {
            items: VecDeque::new(),
            notices: 0,
            limit,
        }
    }

    /// Messages waiting to be sent.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// What waits, in order, for a hand-over ([`crate::handover`]): the message bytes, how many
    /// of them went out, the fd if it has not gone yet, and whether it counts as a notice.
    pub fn export(&self) -> Vec<QueuedExport<'_>> {
        self.items
            .iter()
            .map(|q| QueuedExport {
                bytes: q.bytes,
                sent: q.sent,
                // The fd went with the first byte: a partly sent message has none left to send.
                fd: if q.sent == 0 { q.fd.as_ref() } else { None },
                is_notice: q.is_notice,
            })
            .collect()
    }

    /// Appends a message taken over from a predecessor, as it was (bytes, progress, fd); it
    /// counts against the limit but is never refused: the predecessor had accepted it.
    pub fn push_adopted(
        &mut self,
        bytes: [u8; MESSAGE_LEN],
        sent: usize,
        fd: Option<Rc<OwnedFd>>,
        is_notice: bool,
    ) {
        if is_notice {
            self.notices += 1;
        }
        self.items.push_back(Queued {
            bytes,
            sent: sent.min(MESSAGE_LEN - 1),
            fd,
            is_notice,
        });
    }

    /// Queues handshake messages, unbounded.
    pub fn push_handshake(&mut self, messages: Vec<SharedMessage>) {
        self.items.reserve(messages.len());
        for m in messages {
            self.push(m, false);
        }
    }

    /// Queues notices (all of them or none); `Err(Overflow)` when they exceed the limit.
    /// Takes a slice, so that one notice goes to every peer without a `Vec` per recipient.
    pub fn push_notices(&mut self, messages: &[SharedMessage]) -> Result<(), Overflow> {
        if self.notices + messages.len() > self.limit {
            return Err(Overflow);
        }
        for m in messages {
            self.push(m.clone(), true);
        }
        Ok(())
    }

    fn push(&mut self, m: SharedMessage, is_notice: bool) {
        if is_notice {
            self.notices += 1;
        }
        self.items.push_back(Queued {
            bytes: encode(m.value),
            sent: 0,
            fd: m.fd,
            is_notice,
        });
    }

    /// Sends as much as the socket takes, resuming a partially sent message without its fd:
    /// up to [`SEND_BATCH`] messages per `sendmmsg`.
    pub fn flush(&mut self, sock: BorrowedFd<'_>) -> Flush {
        while !self.items.is_empty() {
            let (sent, taken) = match send_batch(sock, &self.items, SEND_BATCH) {
                Ok(result) => result,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) => return Flush::Failed(e),
            };
            if taken == 0 {
                return Flush::Blocked;
            }
            for &n in &sent[..taken] {
                let Some(front) = self.items.front_mut() else {
                    break;
                };
                if n == 0 {
                    return Flush::Blocked;
                }
                front.sent += n as usize;
                if front.sent < MESSAGE_LEN {
                    // Taken in part: the kernel stopped here, the rest waits.
                    break;
                }
                if self.items.pop_front().is_some_and(|done| done.is_notice) {
                    self.notices -= 1;
                }
            }
        }
        // A handshake queues 3 + vectors × peers messages at once; give that memory back
        // once it is sent, or a thousand idle peers keep ~100 KiB each.
        self.items.shrink_to(IDLE_QUEUE_CAPACITY);
        Flush::Done
    }
}

/// One connected peer.
#[derive(Debug)]
pub struct Peer {
    /// The id the server assigned; others ring it through the doorbell register.
    pub id: u16,
    /// Connection number: connect order and epoll token.
    pub seq: u64,
    /// The connection; the server only writes to it and reads it for hang-up.
    pub socket: UnixStream,
    /// From SO_PEERCRED, for the logs.
    pub pid: Option<i32>,
    /// From SO_PEERCRED, for `--status`.
    pub uid: Option<u32>,
    /// When it joined, in seconds since the Unix epoch (kept across upgrades), for `--status`.
    pub since: u64,
    /// Its eventfds, vector 0..N-1.
    pub vectors: Vec<Rc<OwnedFd>>,
    /// What it has not been sent yet (non-blocking sends).
    pub queue: OutQueue,
    /// EPOLLOUT is in its epoll interest set.
    pub wants_write: bool,
    /// Another process may hold a copy of its socket (the keeper, the server it was taken over
    /// from, a successor being started): closing ours then leaves the socket in the epoll set,
    /// so it must be taken out first (`EPOLL_CTL_DEL`). Otherwise closing does that.
    pub socket_elsewhere: bool,
}

impl Peer {
    /// `pid 1234` or `pid ?` for the logs.
    pub fn pid_text(&self) -> String {
        match self.pid {
            Some(pid) => format!("pid {pid}"),
            None => "pid ?".into(),
        }
    }
}

/// The connected peers, by id and in connect order.
#[derive(Debug, Default)]
pub struct PeerTable {
    by_id: IdMap<Peer>,
    order: BTreeMap<u64, u16>,
    ids: IdAllocator,
    next_seq: u64,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        PeerTable::default()
    }

    /// A table taken over from a predecessor: ids continue from `cursor`, connection numbers
    /// from `next_seq` (the last one given).
    pub fn resume(cursor: u16, next_seq: u64) -> Self {
        PeerTable {
            ids: IdAllocator::at(cursor),
            next_seq,
            ..PeerTable::default()
        }
    }

    /// Where id allocation continues, and the last connection number given (for a hand-over).
    pub fn counters(&self) -> (u16, u64) {
        (self.ids.cursor(), self.next_seq)
    }

    /// A fresh id for a new connection (QEMU's rules), or None when all are taken.
    pub fn allocate_id(&mut self) -> Option<u16> {
        let by_id = &self.by_id;
        self.ids.allocate(|id| by_id.contains_key(&id))
    }

    /// A fresh connection number (never reused).
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Adds a peer that has its id and connection number.
    pub fn insert(&mut self, peer: Peer) {
        self.order.insert(peer.seq, peer.id);
        self.by_id.insert(peer.id, peer);
    }

    /// Calls `f` on every peer.
    pub fn for_each_mut(&mut self, f: impl FnMut(&mut Peer)) {
        self.by_id.values_mut().for_each(f);
    }

    /// Takes a peer out by id (it left or is dropped).
    pub fn remove(&mut self, id: u16) -> Option<Peer> {
        let peer = self.by_id.remove(&id)?;
        self.order.remove(&peer.seq);
        Some(peer)
    }

    /// The peer with this id.
    pub fn get(&self, id: u16) -> Option<&Peer> {
        self.by_id.get(&id)
    }

    /// The peer with this id, to update its queue.
    pub fn get_mut(&mut self, id: u16) -> Option<&mut Peer> {
        self.by_id.get_mut(&id)
    }

    /// The id of the peer with this connection number, if it is still connected.
    pub fn id_of_seq(&self, seq: u64) -> Option<u16> {
        self.order.get(&seq).copied()
    }

    /// Ids in connect order.
    pub fn ids_in_order(&self) -> Vec<u16> {
        self.order.values().copied().collect()
    }

    /// Connected peers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn ids_are_monotonic_and_not_reused_until_wrap() {
        let mut alloc = IdAllocator::default();
        let mut used = HashSet::new();
        for expected in 0..3 {
            let id = alloc.allocate(|i| used.contains(&i)).unwrap();
            assert_eq!(id, expected);
            used.insert(id);
        }
        used.remove(&1);
        assert_eq!(alloc.allocate(|i| used.contains(&i)), Some(3));
    }

    #[test]
    fn ids_wrap_and_skip_used() {
        let mut alloc = IdAllocator { cursor: 65535 };
        let used: HashSet<u16> = [65535, 0, 1].into_iter().collect();
        assert_eq!(alloc.allocate(|i| used.contains(&i)), Some(2));
        assert_eq!(alloc.cursor, 3);
        let mut alloc = IdAllocator { cursor: 65535 };
        assert_eq!(alloc.allocate(|_| false), Some(65535));
        assert_eq!(alloc.allocate(|_| false), Some(0));
    }

    #[test]
    fn no_free_id_is_none() {
        let mut alloc = IdAllocator { cursor: 7 };
        assert_eq!(alloc.allocate(|_| true), None);
        assert_eq!(alloc.allocate(|i| i != 6), Some(6));
    }

    fn msg(v: i64) -> SharedMessage {
        Message::new(v, None)
    }

    #[test]
    fn notices_are_bounded_handshake_is_not() {
        let mut q = OutQueue::new(3);
        q.push_handshake((0..10).map(msg).collect());
        assert_eq!(q.push_notices(&[msg(1), msg(2)]), Ok(()));
        assert_eq!(q.push_notices(&[msg(3), msg(4)]), Err(Overflow));
        assert_eq!(q.push_notices(&[msg(3)]), Ok(()));
        assert_eq!(q.len(), 13);
    }

    #[test]
    fn flush_sends_in_order_and_frees_notice_budget() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::new(2);
        q.push_notices(&[msg(5), msg(-1)]).unwrap();
        assert!(matches!(q.flush(a.as_fd()), Flush::Done));
        assert!(q.is_empty());
        q.push_notices(&[msg(6), msg(7)]).unwrap();
        assert!(matches!(q.flush(a.as_fd()), Flush::Done));
        let mut buf = [0u8; 32];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..8], &encode(5));
        assert_eq!(&buf[8..16], &encode(-1));
        assert_eq!(&buf[24..], &encode(7));
    }

    #[test]
    fn full_socket_blocks_then_resumes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::new(usize::MAX);
        let count = 100_000;
        q.push_handshake((0..count).map(msg).collect());
        assert!(matches!(q.flush(a.as_fd()), Flush::Blocked));
        assert!(!q.is_empty());
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            b.read_to_end(&mut all).unwrap();
            all
        });
        loop {
            match q.flush(a.as_fd()) {
                Flush::Done => break,
                Flush::Blocked => std::thread::sleep(std::time::Duration::from_millis(1)),
                Flush::Failed(e) => panic!("{e}"),
            }
        }
        drop(a);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), count as usize * 8);
        for (i, chunk) in all.chunks(8).enumerate() {
            assert_eq!(chunk, encode(i as i64));
        }
    }

    /// A batch of messages with fds reads, 8 bytes and one fd at a time (QEMU's way), as the
    /// same messages sent one `sendmsg` each: every fd with its own message, in order.
    #[test]
    fn each_fd_arrives_with_its_own_message() {
        use protocol::fdpass::{recv_message, Received};
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let eventfds: Vec<Rc<OwnedFd>> = (0..3)
            .map(|_| Rc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap())))
            .collect();
        let mut q = OutQueue::new(usize::MAX);
        // More than one batch: 40 messages, every other one with an fd.
        let messages: Vec<SharedMessage> = (0..40)
            .map(|i| SharedMessage::new(i, (i % 2 == 0).then(|| eventfds[i as usize % 3].clone())))
            .collect();
        q.push_handshake(messages);
        assert!(matches!(q.flush(a.as_fd()), Flush::Done));
        for i in 0..40 {
            match recv_message(b.as_fd()).unwrap() {
                Received::Message { value, fd } => {
                    assert_eq!(value, i);
                    assert_eq!(fd.is_some(), i % 2 == 0, "message {i}");
                }
                Received::Eof => panic!("EOF at {i}"),
            }
        }
    }

    /// A message a predecessor had sent in part continues where it stopped, without its fd,
    /// and the messages after it follow in the same batch.
    #[test]
    fn an_adopted_partial_message_resumes() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::new(4);
        let fd = Rc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        q.push_adopted(encode(0x0102_0304_0506_0708), 3, Some(fd), true);
        q.push_notices(&[msg(9)]).unwrap();
        assert!(matches!(q.flush(a.as_fd()), Flush::Done));
        assert!(q.is_empty());
        let mut buf = [0u8; 13];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..5], &encode(0x0102_0304_0506_0708)[3..]);
        assert_eq!(&buf[5..], &encode(9));
        // The notice budget was given back for both.
        q.push_notices(&[msg(1), msg(2), msg(3), msg(4)]).unwrap();
    }

    #[test]
    fn closed_peer_fails() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut q = OutQueue::new(4);
        q.push_notices(&[msg(1)]).unwrap();
        assert!(matches!(q.flush(a.as_fd()), Flush::Failed(_)));
    }

    #[test]
    fn table_keeps_connect_order() {
        let mut t = PeerTable::new();
        for _ in 0..3 {
            let id = t.allocate_id().unwrap();
            let seq = t.next_seq();
            let (s, _) = UnixStream::pair().unwrap();
            t.insert(Peer {
                id,
                seq,
                socket: s,
                pid: None,
                uid: None,
                since: 0,
                vectors: vec![],
                queue: OutQueue::new(1),
                wants_write: false,
                socket_elsewhere: false,
            });
        }
        assert_eq!(t.ids_in_order(), vec![0, 1, 2]);
        let seq1 = t.get(1).unwrap().seq;
        t.remove(1).unwrap();
        assert_eq!(t.id_of_seq(seq1), None);
        assert_eq!(t.allocate_id(), Some(3));
        assert_eq!(t.ids_in_order(), vec![0, 2]);
        assert_eq!(t.len(), 2);
    }
}
