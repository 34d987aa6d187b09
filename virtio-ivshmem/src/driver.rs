//! [`Driver`]: a host program drives a virtio device over ivshmem with the `peer` library.
//!
//! The device side (the bridge) publishes a header; the driver claims it, negotiates features,
//! lays its rings and buffers out in an arena of the shared memory it was given, and then talks
//! to the device only through the rings: a kick is `ring(device peer, kick vector)` (which is the
//! vhost-user backend's kick eventfd), and the backend's call is our own vector's eventfd.

use std::ops::Range;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use peer::{Peer, ServerEvent, SharedMemory};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::header::{BadHeaderBase, Header};
use crate::layout::{self, feature, field, queue_field, status, ErrorCode, QueueSetup};
use crate::virtqueue::{
    Buffer, DriverQueue, IndirectTables, QueueError, QueueStats, RingFeatures, Used,
};

/// How long a driver waits for the device side by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The ring features this driver implements and accepts when the caller asks for them in
/// [`Driver::negotiate`]: VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC.
pub const RING_FEATURES: u64 = feature::EVENT_IDX | feature::INDIRECT_DESC;

/// Descriptors per indirect table (the longest chain that takes one ring descriptor); longer
/// chains use the ring's descriptors directly.
pub const INDIRECT_ENTRIES: u16 = 16;

/// Busy polling looks at the ring this many times (with a spin-loop hint) after each yield of
/// the CPU: a device side on another CPU answers within a fraction of a system call's time, so
/// a yield per look would cost more than the wait; a device side on our CPU has had its turn
/// (the yield) and answers at the first look.
pub const SPINS_PER_YIELD: u32 = 32;

/// How the driver uses the shared memory and its own vectors.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Offset of the device's header.
    pub header: u64,
    /// Where this driver may put rings and buffers (offsets; outside every header).
    pub arena: Range<u64>,
    /// Our vector the device side rings after answering a request. Queue call vectors must
    /// differ from it.
    pub config_vector: u32,
    /// How long to wait for the device side to answer.
    pub timeout: Duration,
    /// Adaptive busy polling: before arming a call and sleeping, a wait for a used chain keeps
    /// looking at the used ring for up to this long, yielding the CPU between looks (so a
    /// device side on the same CPU gets to run). Zero (the default) sleeps at once. A few
    /// microseconds save the wake-ups of small requests at depth (like vhost-net's
    /// `busyloop_timeout`).
    pub busy_poll: Duration,
}

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The header offset is impossible.
    #[error(transparent)]
    HeaderBase(#[from] BadHeaderBase),
    /// No device side has published a header there.
    #[error("no virtio-over-ivshmem header (version 1) at offset {0:#x}")]
    NoHeader(u64),
    /// The device side is not (or no longer) a peer of the server.
    #[error("the device peer {0} is not connected")]
    DeviceGone(u32),
    /// Another peer drives this device.
    #[error("the device is driven by peer {0}")]
    Busy(u32),
    /// The arena is outside the shared memory or overlaps the header.
    #[error("the arena {0:#x?} must lie inside the shared memory and outside the header")]
    BadArena(Range<u64>),
    /// The arena has no room left.
    #[error("the arena has no room for {0} more bytes")]
    ArenaFull(u64),
    /// The device side did not answer in time.
    #[error("the device side did not answer within {0:?}")]
    Timeout(Duration),
    /// The device side refused a request.
    #[error("the device side refused the request: {0:?}")]
    Refused(ErrorCode),
    /// The device side reset the device on its own, or needs a reset (backend lost).
    #[error("the device was reset or needs a reset (status {status:#x}); open it again")]
    NeedsReset {
        /// The device status found.
        status: u32,
    },
    /// VIRTIO_F_VERSION_1 is not offered.
    #[error("the device does not offer VIRTIO_F_VERSION_1")]
    NotModern,
    /// A queue index or vector that does not fit.
    #[error("queue {queue}: {what}")]
    BadQueue {
        /// The queue.
        queue: u32,
        /// What is wrong.
        what: String,
    },
    /// A ring operation failed (or the device broke the ring).
    #[error("queue {queue}: {source}")]
    Queue {
        /// The queue.
        queue: u32,
        /// The ring error.
        #[source]
        source: QueueError,
    },
    /// Ringing the device's doorbell failed.
    #[error("ringing the device: {0}")]
    Ring(#[from] peer::RingError),
    /// Waiting on or draining our own vector failed.
    #[error("waiting for the device: {0}")]
    Wait(#[from] peer::WaitError),
    /// The server never gave us this vector.
    #[error("we have no own vector {0}")]
    NoOwnVector(u32),
    /// Polling our vector and the server socket failed.
    #[error("polling our vector: {0}")]
    Poll(nix::errno::Errno),
    /// The shared memory could not be described for vm-memory.
    #[error("cannot wrap the shared memory: {0}")]
    MemoryView(#[from] vm_memory::mmap::MmapRegionError),
    /// The shared memory does not fit the guest address space vm-memory models.
    #[error("the shared memory ({0} bytes) does not fit a guest memory region")]
    MemoryTooLarge(usize),
    /// vm-memory refused the region.
    #[error("cannot wrap the shared memory: {0}")]
    MemoryRegions(#[from] vm_memory::GuestRegionCollectionError),
}

/// A virtio device over ivshmem, driven by this process.
pub struct Driver {
    // Declared before `peer`: it borrows the peer's mapping and must be dropped first.
    mem: GuestMemoryMmap,
    queues: Vec<Option<QueueState>>,
    peer: Peer,
    base: u64,
    device_peer: u32,
    generation: u32,
    features: u64,
    options: DriverOptions,
    arena_next: u64,
    device_left: bool,
}

/// `queue`'s state, or the error for a queue the driver has not set up. A free function so
/// callers can hold the shared-memory view while they use the queue.
fn set_up_queue(
    queues: &mut [Option<QueueState>],
    queue: u32,
) -> Result<&mut QueueState, DriverError> {
    queues
        .get_mut(queue as usize)
        .and_then(Option::as_mut)
        // Built only on failure: this runs on every request.
        .ok_or_else(|| DriverError::BadQueue {
            queue,
            what: "not set up".into(),
        })
}

struct QueueState {
    ring: DriverQueue,
    call_vector: u32,
    kick_vector: u32,
}

/// vm-memory's view of the whole shared memory at guest address 0.
fn guest_memory(shm: &SharedMemory) -> Result<GuestMemoryMmap, DriverError> {
    // SAFETY: the pointer and length describe the peer's live MAP_SHARED read/write mapping,
    // which outlives this view (the Driver drops `mem` before `peer`); a region built from a raw
    // pointer is not unmapped by vm-memory. Concurrent writers are expected: vm-memory accesses
    // it with volatile copies and atomics only.
    let region = unsafe {
        MmapRegion::build_raw(
            shm.as_ptr(),
            shm.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
    }?;
    let region = GuestRegionMmap::new(region, GuestAddress(0))
        .ok_or(DriverError::MemoryTooLarge(shm.len()))?;
    Ok(GuestMemoryMmap::from_regions(vec![region])?)
}

impl Driver {
    /// Claims the device whose header is at `options.header` and resets it, leaving it at
    /// ACKNOWLEDGE | DRIVER: next [`negotiate`](Self::negotiate), then
    /// [`setup_queue`](Self::setup_queue) for each queue, then [`start`](Self::start).
    pub fn open(mut peer: Peer, options: DriverOptions) -> Result<Driver, DriverError> {
        let shm_size = peer.shm().len() as u64;
        let header = Header::new(peer.shm(), options.header).map_err(DriverError::HeaderBase)?;
        if !header.is_published() {
            return Err(DriverError::NoHeader(options.header));
        }
        let header_end = options.header + layout::HEADER_SIZE as u64;
        let arena = options.arena.clone();
        if arena.start >= arena.end
            || arena.end > shm_size
            || (arena.start < header_end && arena.end > options.header)
        {
            return Err(DriverError::BadArena(arena));
        }
        let device_peer = header.get(field::DEVICE_PEER);
        let known =
            u16::try_from(device_peer).is_ok_and(|id| peer.await_peer(id, Some(options.timeout)));
        if !known {
            return Err(DriverError::DeviceGone(device_peer));
        }
        let me = peer.id() as u32;
        let header = Header::new(peer.shm(), options.header).map_err(DriverError::HeaderBase)?;
        match header.compare_exchange(field::DRIVER_PEER, layout::NO_PEER, me) {
            Ok(_) => {}
            Err(holder) if holder == me => {}
            Err(holder) => return Err(DriverError::Busy(holder)),
        }
        header.set(field::DRIVER_CONFIG_VECTOR, options.config_vector);
        let generation = header.get(field::GENERATION);
        let mem = guest_memory(peer.shm())?;
        let mut driver = Driver {
            mem,
            queues: Vec::new(),
            peer,
            base: options.header,
            device_peer,
            generation,
            features: 0,
            arena_next: arena.start,
            options,
            device_left: false,
        };
        driver.request(0)?;
        driver.request(status::ACKNOWLEDGE | status::DRIVER)?;
        Ok(driver)
    }

    fn header(&self) -> Header<'_> {
        Header::new(self.peer.shm(), self.base).expect("checked in open")
    }

    /// The virtio device id (4: entropy source, ...).
    pub fn device_id(&self) -> u32 {
        self.header().get(field::DEVICE_ID)
    }

    /// Queues the device has.
    pub fn num_queues(&self) -> u32 {
        self.header().get(field::NUM_QUEUES).min(layout::MAX_QUEUES)
    }

    /// Features the device offers.
    pub fn device_features(&self) -> u64 {
        self.header().get64(field::DEVICE_FEATURES)
    }

    /// Features negotiated.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// The shared memory (to fill and read buffers).
    pub fn shm(&self) -> &SharedMemory {
        self.peer.shm()
    }

    /// The peer connection.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Reads device configuration space.
    pub fn read_config(&self, offset: usize, buf: &mut [u8]) {
        self.header().read_config(offset, buf)
    }

    /// Accepts the offered features among `wanted` (plus VIRTIO_F_VERSION_1, which is
    /// required) and sets FEATURES_OK. Returns the accepted set. Of `wanted`, device-type bits
    /// ([`feature::DEVICE_SPECIFIC`]) and the ring features this driver implements
    /// ([`RING_FEATURES`]: EVENT_IDX, INDIRECT_DESC) count; other ring and transport bits
    /// (packed rings, ...) are never accepted.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, DriverError> {
        let offered = self.device_features();
        if offered & feature::VERSION_1 == 0 {
            return Err(DriverError::NotModern);
        }
        // Only what we implement: bits the caller asked for, and VERSION_1.
        let accepted = feature::accepted(offered, wanted, RING_FEATURES);
        self.header().set64(field::DRIVER_FEATURES, accepted);
        let st = self.request(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK)?;
        if st & status::FEATURES_OK == 0 {
            return Err(DriverError::Refused(ErrorCode::FeaturesRefused));
        }
        self.features = accepted;
        Ok(accepted)
    }

    /// Sets queue `queue` up with `size` entries (0: the device's maximum, capped at 256),
    /// rings allocated from the arena, the device calling our vector `call_vector`. With
    /// INDIRECT_DESC negotiated, the queue's indirect tables ([`INDIRECT_ENTRIES`] descriptors
    /// per ring entry) come from the arena too.
    pub fn setup_queue(
        &mut self,
        queue: u32,
        size: u32,
        call_vector: u32,
    ) -> Result<(), DriverError> {
        let bad = |what: String| DriverError::BadQueue { queue, what };
        if queue >= self.num_queues() {
            return Err(bad(format!("the device has {} queues", self.num_queues())));
        }
        if call_vector == self.options.config_vector || call_vector >= self.peer.own_vector_count()
        {
            return Err(bad(format!(
                "call vector {call_vector} must be one of our {} vectors other than the config \
                 vector {}",
                self.peer.own_vector_count(),
                self.options.config_vector
            )));
        }
        let header = self.header();
        let max = header.queue_get(queue, queue_field::MAX_SIZE);
        let size = if size == 0 { max.min(256) } else { size };
        let desc = self.alloc(layout::ring_size::desc(size), 16)?;
        let avail = self.alloc(layout::ring_size::avail(size), 2)?;
        let used = self.alloc(layout::ring_size::used(size), 4)?;
        let indirect = if self.features & feature::INDIRECT_DESC != 0 {
            let bytes = IndirectTables::bytes(size, INDIRECT_ENTRIES);
            Some(IndirectTables {
                base: self.alloc(bytes, 16)?,
                entries: INDIRECT_ENTRIES,
            })
        } else {
            None
        };
        let ring_features = RingFeatures {
            event_idx: self.features & feature::EVENT_IDX != 0,
            indirect,
        };
        let setup = QueueSetup {
            size,
            desc,
            avail,
            used,
        };
        let shm_size = self.shm().len() as u64;
        setup
            .validate(max, shm_size, self.base)
            .map_err(|e| bad(format!("{e:?} (device maximum {max})")))?;
        let ring = DriverQueue::new(&self.mem, setup, ring_features)
            .map_err(|source| DriverError::Queue { queue, source })?;
        let header = self.header();
        header.queue_set(queue, queue_field::SIZE, size);
        header.queue_set(queue, queue_field::CALL_VECTOR, call_vector);
        header.queue_set64(queue, queue_field::DESC, desc);
        header.queue_set64(queue, queue_field::AVAIL, avail);
        header.queue_set64(queue, queue_field::USED, used);
        let kick_vector = header.queue_get(queue, queue_field::KICK_VECTOR);
        if self.queues.len() <= queue as usize {
            self.queues.resize_with(queue as usize + 1, || None);
        }
        self.queues[queue as usize] = Some(QueueState {
            ring,
            call_vector,
            kick_vector,
        });
        Ok(())
    }

    /// Sets DRIVER_OK: the device side hands the rings to the backend.
    pub fn start(&mut self) -> Result<(), DriverError> {
        let st = self.request(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        )?;
        if st & status::DRIVER_OK == 0 {
            return Err(DriverError::NeedsReset { status: st });
        }
        Ok(())
    }

    /// Takes `len` bytes aligned to `align` (a power of two) from the arena, for rings or
    /// buffers; returns the offset.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64, DriverError> {
        let align = align.max(1).next_power_of_two();
        let start = self
            .arena_next
            .checked_add(align - 1)
            .map(|a| a & !(align - 1))
            .ok_or(DriverError::ArenaFull(len))?;
        let end = start.checked_add(len).ok_or(DriverError::ArenaFull(len))?;
        if end > self.options.arena.end {
            return Err(DriverError::ArenaFull(len));
        }
        self.arena_next = end;
        Ok(start)
    }

    fn queue_mut(&mut self, queue: u32) -> Result<&mut QueueState, DriverError> {
        set_up_queue(&mut self.queues, queue)
    }

    /// Offers a chain (`readable` then `writable` buffers, all inside the shared memory) on
    /// `queue` and kicks the device if it wants it. Returns the chain's token.
    pub fn submit(
        &mut self,
        queue: u32,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> Result<u16, DriverError> {
        let token = self.add(queue, readable, writable)?;
        self.kick(queue)?;
        Ok(token)
    }

    /// Offers a chain like [`submit`](Self::submit) but does not kick: add several, then
    /// [`kick`](Self::kick) once.
    pub fn add(
        &mut self,
        queue: u32,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> Result<u16, DriverError> {
        let mem = &self.mem;
        let q = set_up_queue(&mut self.queues, queue)?;
        q.ring
            .add(mem, readable, writable)
            .map_err(|source| DriverError::Queue { queue, source })
    }

    /// Kicks the device for the chains added since the last kick, if it wants a kick (with
    /// EVENT_IDX: if our avail index crossed its `avail_event`). Returns whether it rang.
    pub fn kick(&mut self, queue: u32) -> Result<bool, DriverError> {
        let device_peer = self.device_peer as u16;
        let mem = &self.mem;
        let q = set_up_queue(&mut self.queues, queue)?;
        if !q.ring.needs_kick(mem) {
            return Ok(false);
        }
        let kick = q.kick_vector;
        self.peer.ring(device_peer, kick)?;
        Ok(true)
    }

    /// With INDIRECT_DESC: chains of at least `buffers` buffers (default 2) on `queue` go into
    /// an indirect table; 1 sends every chain through one.
    pub fn set_indirect_min(&mut self, queue: u32, buffers: usize) -> Result<(), DriverError> {
        self.queue_mut(queue)?.ring.set_indirect_min(buffers);
        Ok(())
    }

    /// Chains out on `queue` (added and not yet used).
    pub fn outstanding(&self, queue: u32) -> usize {
        self.queue_ref(queue).map_or(0, |q| q.ring.outstanding())
    }

    /// Free descriptors of `queue`'s ring.
    pub fn free_descriptors(&self, queue: u32) -> usize {
        self.queue_ref(queue)
            .map_or(0, |q| q.ring.free_descriptors())
    }

    /// `queue`'s counters: chains added (indirect ones), kicks rung and suppressed, calls.
    pub fn stats(&self, queue: u32) -> QueueStats {
        self.queue_ref(queue)
            .map_or_else(QueueStats::default, |q| q.ring.stats())
    }

    fn queue_ref(&self, queue: u32) -> Option<&QueueState> {
        self.queues.get(queue as usize).and_then(Option::as_ref)
    }

    /// Takes the next used chain of `queue` without waiting.
    pub fn try_used(&mut self, queue: u32) -> Result<Option<Used>, DriverError> {
        let mem = &self.mem;
        let q = set_up_queue(&mut self.queues, queue)?;
        q.ring
            .pop_used(mem)
            .map_err(|source| DriverError::Queue { queue, source })
    }

    /// Waits up to `timeout` for the next used chain of `queue`. Fails early when the device
    /// peer leaves or the device needs a reset.
    pub fn wait_used(&mut self, queue: u32, timeout: Duration) -> Result<Used, DriverError> {
        self.wait_used_after(queue, 1, timeout)
    }

    /// Like [`wait_used`](Self::wait_used), but with EVENT_IDX the device is asked to call only
    /// once `count` more chains are used (one call for a batch; without EVENT_IDX it calls
    /// after each batch it completes). Returns the first used chain; take the others with
    /// [`try_used`](Self::try_used). `count` above what is outstanding waits for all of it.
    pub fn wait_used_after(
        &mut self,
        queue: u32,
        count: u16,
        timeout: Duration,
    ) -> Result<Used, DriverError> {
        let deadline = Instant::now() + timeout;
        let call_vector = self.queue_mut(queue)?.call_vector;
        loop {
            if let Some(used) = self.poll_used(queue)? {
                return Ok(used);
            }
            {
                let mem = &self.mem;
                let q = set_up_queue(&mut self.queues, queue)?;
                let count = count.min(q.ring.outstanding().clamp(1, u16::MAX as usize) as u16);
                q.ring
                    .arm_call(mem, count)
                    .map_err(|source| DriverError::Queue { queue, source })?;
            }
            // A chain used before the device saw used_event brings no call: look again.
            if let Some(used) = self.try_used(queue)? {
                return Ok(used);
            }
            self.check_device()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout(timeout));
            }
            self.queue_mut(queue)?.ring.count_sleep();
            let calls = self.wait_vector_or_server(call_vector, left)?;
            self.queue_mut(queue)?.ring.count_calls(calls);
        }
    }

    /// Takes the next used chain of `queue`, looking for it for up to
    /// [`busy_poll`](DriverOptions::busy_poll) (once when that is zero). Between looks the CPU
    /// is yielded: when the device side shares our CPU, it is what makes progress.
    fn poll_used(&mut self, queue: u32) -> Result<Option<Used>, DriverError> {
        if let Some(used) = self.try_used(queue)? {
            return Ok(Some(used));
        }
        let budget = self.options.busy_poll;
        if budget.is_zero() {
            return Ok(None);
        }
        let start = Instant::now();
        while start.elapsed() < budget {
            std::thread::yield_now();
            for _ in 0..SPINS_PER_YIELD {
                if let Some(used) = self.try_used(queue)? {
                    self.queue_mut(queue)?.ring.count_polled();
                    return Ok(Some(used));
                }
                std::hint::spin_loop();
            }
        }
        Ok(None)
    }

    /// Waits until our `vector` or the server socket is readable (or `timeout`), then drains the
    /// vector and, if the server socket was readable, takes in server news. Returns the
    /// vector's count (rings received).
    fn wait_vector_or_server(
        &mut self,
        vector: u32,
        timeout: Duration,
    ) -> Result<u64, DriverError> {
        let server_readable = {
            let vector_fd = self
                .peer
                .own_vector_fd(vector)
                .ok_or(DriverError::NoOwnVector(vector))?;
            let vector_fd = vector_fd.as_fd();
            let server = self.peer.server_fd();
            let mut all = [
                PollFd::new(vector_fd, PollFlags::POLLIN),
                PollFd::new(server.unwrap_or(vector_fd), PollFlags::POLLIN),
            ];
            let fds = &mut all[..1 + usize::from(server.is_some())];
            let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(fds, ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(DriverError::Poll(e)),
            }
            // Only a readable (or hung-up) server socket has news; not asking it otherwise
            // saves a system call per wait.
            fds.get(1)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let count = self.peer.drain_vector(vector)?;
        if server_readable {
            self.take_server_news();
        }
        Ok(count)
    }

    fn take_server_news(&mut self) {
        for event in self.peer.process_server_messages() {
            match event {
                ServerEvent::Left { peer } if peer as u32 == self.device_peer => {
                    self.device_left = true
                }
                ServerEvent::ServerGone { .. } => {}
                _ => {}
            }
        }
    }

    /// Fails when the device peer left, or the device side reset the device or flagged
    /// DEVICE_NEEDS_RESET.
    fn check_device(&mut self) -> Result<(), DriverError> {
        if self.device_left {
            return Err(DriverError::DeviceGone(self.device_peer));
        }
        let header = self.header();
        let st = header.get(field::DEVICE_STATUS);
        if header.get(field::GENERATION) != self.generation
            || st & status::DEVICE_NEEDS_RESET != 0
            || !header.is_published()
        {
            return Err(DriverError::NeedsReset { status: st });
        }
        Ok(())
    }

    /// Asks for device status `wanted` and waits for the device side's answer; returns the
    /// status it applied.
    fn request(&mut self, wanted: u32) -> Result<u32, DriverError> {
        let timeout = self.options.timeout;
        let deadline = Instant::now() + timeout;
        let header = self.header();
        header.set(field::DRIVER_STATUS, wanted);
        let seq = header.bump(field::REQUEST);
        self.peer
            .ring(self.device_peer as u16, layout::DEVICE_REQUEST_VECTOR)?;
        let config_vector = self.options.config_vector;
        while self.header().get(field::ACK) != seq {
            if self.device_left {
                return Err(DriverError::DeviceGone(self.device_peer));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout(timeout));
            }
            self.wait_vector_or_server(config_vector, left)?;
        }
        // A reset we asked for is the one generation change that is ours.
        self.generation = self.header().get(field::GENERATION);
        let header = self.header();
        match ErrorCode::from_raw(header.get(field::ERROR)) {
            Some(ErrorCode::None) => Ok(header.get(field::DEVICE_STATUS)),
            Some(code) => Err(DriverError::Refused(code)),
            None => Err(DriverError::Refused(ErrorCode::BadStatusSequence)),
        }
    }

    /// Resets the device (the backend stops using the rings) and forgets the queues.
    pub fn reset(&mut self) -> Result<(), DriverError> {
        self.queues.clear();
        self.request(0).map(|_| ())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Best effort: stop the backend using our rings, then let another driver claim it.
        self.options.timeout = self.options.timeout.min(Duration::from_secs(1));
        if !self.device_left && self.header().get(field::DEVICE_STATUS) != 0 {
            let _ = self.request(0);
        }
        let me = self.peer.id() as u32;
        let _ = self
            .header()
            .compare_exchange(field::DRIVER_PEER, me, layout::NO_PEER);
    }
}
