//! The guest side of ivshmem for Linux programs, over the `ivshmem` kernel module
//! (`linux-guest/driver/`): open `/dev/ivshmemN`, use the shared memory, ring other peers'
//! doorbells and wait for our own vectors — the shape of [`peer::Peer`], inside a VM.
//!
//! ```no_run
//! use std::time::Duration;
//! use std::sync::atomic::Ordering;
//!
//! let dev = ivshmem_guest::GuestDevice::open(0)?;      // or open_pci("00:04.0")
//! println!("I am peer {:?} with {} vector(s)", dev.id(), dev.own_vector_count());
//! dev.shm().write(0, b"hello")?;                       // bounds-checked, as peer::SharedMemory
//! dev.shm().atomic_u64(64)?.store(1, Ordering::Release);
//! dev.ring(0, 1)?;                                     // peer 0, vector 1: one store, no syscall
//! for n in dev.wait(Some(Duration::from_secs(1)))? {
//!     println!("vector {} fired {} time(s)", n.vector, n.count);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules:
//! * [`device`] — [`GuestDevice`]: open, ring, wait, fds for event loops.
//! * [`discovery`] — the devices the module bound, by index and PCI address.
//! * [`peers`] — who is connected, from the server's state table (`--state-table`), woken by
//!   its lifecycle doorbell.
//! * [`registers`] — the mapped register page (doorbells without a system call).
//! * [`uapi`] — the module's ioctls and mmap offsets.
//! * [`error`] — the typed errors.

#![warn(missing_docs)]

pub mod device;
pub mod discovery;
pub mod error;
pub mod peers;
pub mod registers;
pub mod uapi;

pub use device::StateTableConfig;
pub use device::{DeviceInfo, GuestDevice};
pub use discovery::DeviceEntry;
pub use error::{OpenError, RingError, WaitError};
pub use peer::{Notification, PeerInfo, SharedMemory};
pub use peers::PeersError;
