//! Shared pieces of the fuzz targets: a reader that turns the fuzzer's bytes into operations, a
//! KVM stand-in for MSI-X wiring, and an ivshmem-doorbell device on a PCI bus built without
//! `/dev/kvm` (as the unit tests in vmm/src/pci build theirs).
//!
//! Inputs are plain byte formats (documented in each target) rather than `arbitrary` structures,
//! so the seed corpora in fuzz/corpus/ can be written by hand (fuzz/make_seeds.py).

pub mod machine;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Reads little-endian numbers from the fuzzer's input; once it is used up, every read gives 0.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over the fuzzer's input.
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }
    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }
    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }
    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }
    /// The next little-endian i64.
    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.le())
    }
    /// The next byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
}

/// A pipe whose write end is handed to the code under test; the read end tells, without
/// blocking, whether every copy of the write end has been closed (no fd leaked).
pub struct TrackedFd {
    read_end: OwnedFd,
}

impl TrackedFd {
    /// (tracker, write end to give away).
    pub fn new() -> (TrackedFd, OwnedFd) {
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .expect("pipe2");
        (TrackedFd { read_end }, write_end)
    }

    /// True once the write end and all its duplicates are closed (the read end sees EOF).
    pub fn is_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(nix::unistd::read(self.read_end.as_fd(), &mut byte), Ok(0))
    }
}

/// Number of open fds of this process (for leak checks at the end of a run).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Whether a non-blocking socket has at least `n` bytes waiting (so reading them cannot block).
pub fn bytes_waiting(sock: &impl AsRawFd, n: usize) -> bool {
    let mut buf = vec![0u8; n];
    matches!(
        nix::sys::socket::recv(
            sock.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ),
        Ok(got) if got >= n
    )
}
