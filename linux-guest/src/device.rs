//! [`GuestDevice`]: one open `/dev/ivshmemN` — the shared memory, our id, doorbells to other
//! peers, and our own vectors as eventfds.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::stat::Mode;
use peer::vector::Vector;
use peer::{Notification, SharedMemory};

use crate::discovery;
use crate::error::{OpenError, RingError, WaitError};
use crate::registers::RegisterPage;
use crate::uapi;

/// What the device reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Bytes of shared memory.
    pub shm_size: u64,
    /// IVPosition: our peer id on a doorbell device (0 on QEMU's ivshmem-plain).
    pub iv_position: i32,
    /// Our interrupt vectors (0 for ivshmem-plain).
    pub vectors: u32,
    /// The register page can be mapped, so doorbells need no system call.
    pub registers_mappable: bool,
}

/// An open ivshmem device in a Linux guest, with the shape of [`peer::Peer`].
#[derive(Debug)]
pub struct GuestDevice {
    path: PathBuf,
    info: DeviceInfo,
    shm: SharedMemory,
    registers: Option<RegisterPage>,
    /// Index = vector; `None` when another program holds the vector.
    vectors: Vec<Option<Vector>>,
    device: OwnedFd,
    /// Where the server keeps its state table, once [`GuestDevice::set_state_table`] said.
    pub(crate) table: Option<StateTableConfig>,
}

impl GuestDevice {
    /// Opens `/dev/ivshmem<index>`.
    pub fn open(index: u32) -> Result<GuestDevice, OpenError> {
        GuestDevice::open_path(format!("/dev/ivshmem{index}"))
    }

    /// Opens the device at PCI address `address` (`0000:00:04.0` or `00:04.0`).
    pub fn open_pci(address: &str) -> Result<GuestDevice, OpenError> {
        let entry = discovery::by_pci_address(address)
            .ok_or_else(|| OpenError::NoSuchPciAddress(address.to_string()))?;
        GuestDevice::open_path(entry.path)
    }

    /// Opens `spec`: an index (`0`), a PCI address (`00:04.0`) or a device node path.
    pub fn open_spec(spec: &str) -> Result<GuestDevice, OpenError> {
        if let Ok(index) = spec.parse::<u32>() {
            GuestDevice::open(index)
        } else if discovery::is_pci_address(spec) {
            GuestDevice::open_pci(spec)
        } else {
            GuestDevice::open_path(spec)
        }
    }

    /// Opens a device node: reads its information, maps the shared memory (and the register page
    /// when the driver allows it) and binds an eventfd to each of our vectors. A vector that
    /// another program holds stays unbound here (waiting on it reports
    /// [`WaitError::VectorBusy`]).
    pub fn open_path(path: impl AsRef<Path>) -> Result<GuestDevice, OpenError> {
        let path = path.as_ref().to_path_buf();
        let device: OwnedFd =
            nix::fcntl::open(&path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(
                |e| OpenError::Open {
                    path: path.clone(),
                    source: e.into(),
                },
            )?;
        let raw = read_info(device.as_fd()).map_err(|source| OpenError::NotIvshmem {
            path: path.clone(),
            source,
        })?;
        let info = DeviceInfo {
            shm_size: raw.shm_size,
            iv_position: raw.iv_position,
            vectors: raw.vectors,
            registers_mappable: raw.flags & uapi::INFO_REGS_MMAP != 0,
        };
        let shm_fd = device.try_clone().map_err(|source| OpenError::Open {
            path: path.clone(),
            source,
        })?;
        let shm_len = usize::try_from(raw.shm_size).unwrap_or(usize::MAX);
        let shm = SharedMemory::map_len(shm_fd, shm_len).map_err(|source| OpenError::MapShm {
            path: path.clone(),
            source,
        })?;
        let registers = if info.registers_mappable {
            RegisterPage::map(device.as_fd())
                .inspect_err(|e| {
                    log::warn!(
                        "{}: register page not mapped ({e}); doorbells by ioctl",
                        path.display()
                    )
                })
                .ok()
        } else {
            None
        };
        let mut vectors = Vec::with_capacity(info.vectors as usize);
        for vector in 0..info.vectors {
            vectors.push(bind_vector(device.as_fd(), vector)?);
        }
        Ok(GuestDevice {
            path,
            info,
            shm,
            registers,
            vectors,
            device,
            table: None,
        })
    }

    /// The device node this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the device reported when opened.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// Our peer id (IVPosition), `None` when the device reports none (a negative value).
    pub fn id(&self) -> Option<u16> {
        u16::try_from(self.info.iv_position).ok()
    }

    /// The shared memory, with bounds-checked copies and atomic views.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// How many interrupt vectors we have.
    pub fn own_vector_count(&self) -> u32 {
        self.info.vectors
    }

    /// True when doorbells go through the mapped register page (no system call).
    pub fn rings_without_syscall(&self) -> bool {
        self.registers.is_some()
    }

    /// Rings `vector` of `peer` (which may be our own id): one store to the mapped Doorbell
    /// register when the page is mapped (a store cannot fail, so a gone device is not noticed
    /// here: see [`is_gone`](Self::is_gone)), the ioctl otherwise.
    pub fn ring(&self, peer: u16, vector: u32) -> Result<(), RingError> {
        let vector16 = u16::try_from(vector).map_err(|_| RingError::VectorOutOfRange(vector))?;
        match &self.registers {
            Some(registers) => {
                registers.ring(peer, vector16);
                Ok(())
            }
            None => self.ring_with_ioctl(peer, vector),
        }
    }

    /// Rings `vector` of `peer` through the driver's ioctl (a system call that reports a gone
    /// device).
    pub fn ring_with_ioctl(&self, peer: u16, vector: u32) -> Result<(), RingError> {
        if vector > u32::from(u16::MAX) {
            return Err(RingError::VectorOutOfRange(vector));
        }
        let request = uapi::Ring {
            peer: u32::from(peer),
            vector,
        };
        // SAFETY: the fd is our open device and `request` is a valid `struct ivshmem_ring` the
        // kernel only reads.
        match unsafe { uapi::ioctl_ring(self.device.as_raw_fd(), &request) } {
            Ok(_) => Ok(()),
            Err(nix::errno::Errno::ENODEV) => Err(RingError::Gone),
            Err(e) => Err(RingError::Io {
                peer,
                vector,
                source: e.into(),
            }),
        }
    }

    /// Rings every vector `0..N` of `peer`, N being our own vector count (every peer of one
    /// server has the server's vector count; the device does not tell who is connected).
    pub fn ring_all(&self, peer: u16) -> Result<u32, RingError> {
        for vector in 0..self.info.vectors {
            self.ring(peer, vector)?;
        }
        Ok(self.info.vectors)
    }

    /// True once the device is gone (unbound or unplugged): the mappings then show a scratch
    /// page and nothing more arrives.
    pub fn is_gone(&self) -> bool {
        self.wait_any(&[], Some(Duration::ZERO))
            .is_err_and(|e| matches!(e, WaitError::Gone))
    }

    /// Waits until at least one of our vectors fires or `timeout` passes (`None` = forever).
    /// Returns the vectors that fired with their counts (drained); empty on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Vec<Notification>, WaitError> {
        if self.vectors.is_empty() {
            return Err(WaitError::NoVectors);
        }
        let all: Vec<u32> = (0..self.info.vectors)
            .filter(|&v| self.vectors[v as usize].is_some())
            .collect();
        if all.is_empty() {
            // Nothing to wait on; a gone device is the more useful answer.
            self.wait_any(&[], Some(Duration::ZERO))?;
            return Err(WaitError::VectorBusy(0));
        }
        self.wait_any(&all, timeout)
    }

    /// Waits until our `vector` fires or `timeout` passes; the drained count, `None` on timeout.
    pub fn wait_vector(
        &self,
        vector: u32,
        timeout: Option<Duration>,
    ) -> Result<Option<u64>, WaitError> {
        self.own_vector(vector)?;
        let fired = self.wait_any(&[vector], timeout)?;
        Ok(fired.first().map(|n| n.count))
    }

    /// Drains our `vector` without waiting; how many interrupts were pending (coalesced).
    pub fn drain_vector(&self, vector: u32) -> Result<u64, WaitError> {
        Ok(self.own_vector(vector)?.drain()?)
    }

    /// Drains every vector we hold without waiting; those that had interrupts pending.
    pub fn drain_all(&self) -> Result<Vec<Notification>, WaitError> {
        // Vectors another program holds are skipped.
        let held = self.vectors.iter().enumerate();
        Ok(peer::vector::drain_each(held.filter_map(|(vector, v)| {
            Some((vector as u32, v.as_ref()?))
        }))?)
    }

    /// The eventfd of our `vector` for an epoll set or async reactor (readable when it fires;
    /// then [`drain_vector`](Self::drain_vector)); `None` if we do not hold it.
    pub fn own_vector_fd(&self, vector: u32) -> Option<BorrowedFd<'_>> {
        self.vectors
            .get(vector as usize)?
            .as_ref()
            .map(|v| v.as_fd())
    }

    /// The eventfds of the vectors we hold, with their vector numbers.
    pub fn own_vector_fds(&self) -> Vec<(u32, BorrowedFd<'_>)> {
        (0..self.info.vectors)
            .filter_map(|v| Some((v, self.own_vector_fd(v)?)))
            .collect()
    }

    /// The device fd: poll reports a hang-up (POLLHUP) once the device is gone.
    pub fn device_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }

    fn own_vector(&self, vector: u32) -> Result<&Vector, WaitError> {
        match self.vectors.get(vector as usize) {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(WaitError::VectorBusy(vector)),
            None if self.vectors.is_empty() => Err(WaitError::NoVectors),
            None => Err(WaitError::UnknownVector {
                vector,
                count: self.info.vectors,
            }),
        }
    }

    /// Polls the device fd and the given vectors until one fires, the device goes or the
    /// deadline passes; drains those that fired.
    fn wait_any(
        &self,
        vectors: &[u32],
        timeout: Option<Duration>,
    ) -> Result<Vec<Notification>, WaitError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut fds = vec![PollFd::new(self.device.as_fd(), PollFlags::POLLIN)];
            for &v in vectors {
                fds.push(PollFd::new(self.own_vector(v)?.as_fd(), PollFlags::POLLIN));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let poll_timeout = match left {
                None => PollTimeout::NONE,
                // Round up so sub-millisecond remainders do not spin.
                Some(left) => PollTimeout::try_from(
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
                )
                .unwrap_or(PollTimeout::MAX),
            };
            match poll(&mut fds, poll_timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(WaitError::Io(e.into())),
            }
            let hung_up = fds[0].revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
            });
            if hung_up {
                return Err(WaitError::Gone);
            }
            drop(fds);
            let mut fired = Vec::new();
            for &vector in vectors {
                let count = self.own_vector(vector)?.drain()?;
                if count > 0 {
                    fired.push(Notification { vector, count });
                }
            }
            if !fired.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(fired);
            }
        }
    }
}

fn read_info(device: BorrowedFd<'_>) -> io::Result<uapi::Info> {
    let mut info = uapi::Info::default();
    // SAFETY: `info` is a valid, writable `struct ivshmem_info`; the kernel writes exactly it.
    unsafe { uapi::ioctl_info(device.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// A fresh non-blocking eventfd bound to `vector`; `None` when another program holds it.
fn bind_vector(device: BorrowedFd<'_>, vector: u32) -> Result<Option<Vector>, OpenError> {
    let failed = |e: nix::errno::Errno| OpenError::BindVector {
        vector,
        source: e.into(),
    };
    let eventfd: OwnedFd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(failed)?
        .into();
    let binding = uapi::EventfdBinding {
        vector,
        fd: eventfd.as_raw_fd(),
    };
    // SAFETY: a valid `struct ivshmem_eventfd` the kernel only reads; the eventfd stays open
    // (the kernel takes its own reference).
    match unsafe { uapi::ioctl_set_eventfd(device.as_raw_fd(), &binding) } {
        Ok(_) => Ok(Some(Vector::new(eventfd))),
        Err(nix::errno::Errno::EBUSY) => {
            log::info!("vector {vector} is held by another program; not waiting on it");
            Ok(None)
        }
        Err(e) => Err(failed(e)),
    }
}

/// `ivshmem-guest-client`'s `wait` runs the host client's code over the device's vectors.
impl peer::vector::OwnVectors for GuestDevice {
    type Error = WaitError;

    fn wait_one(&mut self, vector: u32, timeout: Option<Duration>) -> Result<bool, WaitError> {
        Ok(self.wait_vector(vector, timeout)?.is_some())
    }

    fn wait_any(&mut self, timeout: Option<Duration>) -> Result<Vec<u32>, WaitError> {
        Ok(self.wait(timeout)?.into_iter().map(|n| n.vector).collect())
    }
}

/// Where the table is and which of our vectors the server rings on joins and leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTableConfig {
    /// Byte offset of the table in the shared memory (the server's `--state-table`).
    pub offset: usize,
    /// Our vector the server rings on each join and leave (its `--lifecycle-vector`).
    pub lifecycle: Option<u32>,
}
