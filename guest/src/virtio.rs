//! Virtio over ivshmem from a guest program: the driver side of docs/virtio-over-ivshmem.md,
//! driving a device that a `vhost-bridge` peer publishes in the shared memory (BAR2) and an
//! ordinary vhost-user backend serves.
//!
//! The header layout and its checks are the host driver's own file
//! (`virtio-ivshmem/src/layout.rs`, compiled here as [`crate::virtio_layout`]), so both drivers
//! agree by construction. Addresses in rings and descriptors are offsets into the shared
//! memory, as for every peer. The data path never leaves KVM: a kick is a doorbell write to
//! (device peer, kick vector), a KVM ioeventfd on the bridge's vector eventfd, which the backend
//! holds; the backend's call lands in our vector's eventfd, a KVM irqfd raising the MSI-X
//! vector we wait on.
//!
//! No allocator: each queue's bookkeeping is a fixed array of [`MAX_QUEUE_SIZE`] entries, and
//! nothing the device side writes is trusted (a used element naming a descriptor that is not
//! out, or a used index moving past what is out, is an error).
use core::fmt;
use core::sync::atomic::{compiler_fence, fence, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::interrupts;
use crate::ivshmem::{Deadline, Ivshmem};
use crate::virtio_layout::{
    self as layout, feature, field, queue_field, status, ErrorCode, QueueSetup,
};
pub use crate::virtio_layout::{Buffer, Used};

/// Largest queue this driver sets up (its bookkeeping arrays have this many entries).
pub const MAX_QUEUE_SIZE: usize = 256;
/// Most queues one driver sets up.
pub const MAX_DRIVER_QUEUES: usize = 8;

/// VRING_DESC_F_NEXT: the chain continues at `next`.
const DESC_F_NEXT: u16 = 1;
/// VRING_DESC_F_WRITE: the device writes this buffer.
const DESC_F_WRITE: u16 = 2;
/// VRING_DESC_F_INDIRECT: the buffer is a table of descriptors holding the chain.
const DESC_F_INDIRECT: u16 = 4;
/// Descriptors per indirect table (the longest chain that takes one ring descriptor), as the
/// host driver's; longer chains use the ring's descriptors directly.
pub const INDIRECT_ENTRIES: u16 = 16;
/// VRING_USED_F_NO_NOTIFY: the device does not want kicks right now.
const USED_F_NO_NOTIFY: u16 = 1;
/// VRING_AVAIL_F_NO_INTERRUPT: we do not want calls (we poll the used ring).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The ring features this driver implements and accepts when asked: VIRTIO_F_EVENT_IDX
/// (interrupt waits only; a polling queue asks for no calls with the flag instead) and
/// VIRTIO_F_INDIRECT_DESC (a chain of two or more buffers takes one ring descriptor, pointing
/// at a table of its own in the arena).
pub const RING_FEATURES: u64 = feature::EVENT_IDX | feature::INDIRECT_DESC;

/// Whether moving an index from `old` to `new` crossed `event` (virtio 1.2 §2.7.10).
fn event_crossed(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Writes one split-ring descriptor (virtio 1.2 §2.7.5) at shared-memory offset `at`.
fn write_descriptor(dev: &Ivshmem, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    dev.write_u64(at, addr);
    dev.write_u32(at + 8, len);
    dev.write_u32(at + 12, flags as u32 | (next as u32) << 16);
}

/// What went wrong driving the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// The header offset is not 4 KiB aligned inside the shared memory.
    BadHeaderBase,
    /// No device side has published a version-1 header there.
    NoHeader,
    /// The header names a device peer that cannot be one.
    BadDevicePeer(u32),
    /// Another peer drives the device.
    Busy(u32),
    /// The arena is outside the shared memory or overlaps the header.
    BadArena,
    /// The arena has no room left.
    ArenaFull,
    /// The device side did not answer in time.
    Timeout,
    /// The device side refused a request (its error code; `None` for an unknown one).
    Refused(Option<ErrorCode>),
    /// The device was reset on its side or flagged DEVICE_NEEDS_RESET (the status found).
    NeedsReset(u32),
    /// The device does not offer VIRTIO_F_VERSION_1.
    NotModern,
    /// A queue index, size or vector that does not fit (what is wrong).
    BadQueue(&'static str),
    /// The queue has too few free descriptors for the chain.
    QueueFull,
    /// The device returned a descriptor that is not an outstanding chain head.
    BadUsedId(u32),
    /// The device's used index moved past what is out (by how much, with how many out).
    BadUsedIndex {
        /// How far it moved since we last looked.
        moved: u16,
        /// Chains out.
        outstanding: u16,
    },
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioError::BadHeaderBase => write!(f, "the header offset is not a header's place"),
            VirtioError::NoHeader => write!(f, "no virtio-over-ivshmem header (version 1)"),
            VirtioError::BadDevicePeer(p) => write!(f, "the header names device peer {p}"),
            VirtioError::Busy(p) => write!(f, "the device is driven by peer {p}"),
            VirtioError::BadArena => write!(f, "the arena must lie in the memory, off the header"),
            VirtioError::ArenaFull => write!(f, "the arena is full"),
            VirtioError::Timeout => write!(f, "the device side did not answer in time"),
            VirtioError::Refused(code) => write!(f, "the device side refused: {code:?}"),
            VirtioError::NeedsReset(st) => write!(f, "the device needs a reset (status {st:#x})"),
            VirtioError::NotModern => write!(f, "VIRTIO_F_VERSION_1 is not offered"),
            VirtioError::BadQueue(what) => write!(f, "queue: {what}"),
            VirtioError::QueueFull => write!(f, "the queue is full"),
            VirtioError::BadUsedId(id) => write!(f, "the device returned descriptor {id}"),
            VirtioError::BadUsedIndex { moved, outstanding } => write!(
                f,
                "the device's used index moved by {moved} with {outstanding} chains out"
            ),
        }
    }
}

/// How [`VirtioDriver::wait_used`] waits for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Halt until the queue's call vector (an MSI-X interrupt) or a timer tick.
    Interrupt,
    /// Spin on the used ring; the queue asks the device not to call (no interrupts at all).
    Poll,
}

/// The driver's half of one split virtqueue in the shared memory.
struct Queue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    kick_vector: u16,
    call_vector: u16,
    /// Free descriptor indices (a stack of `free_len`).
    free: [u16; MAX_QUEUE_SIZE],
    free_len: usize,
    /// For a head that is out, its chain's length; 0 otherwise.
    chain_len: [u16; MAX_QUEUE_SIZE],
    /// Our own copy of each descriptor's `next` (the shared copy may be scribbled on).
    next: [u16; MAX_QUEUE_SIZE],
    outstanding: u16,
    next_avail: u16,
    last_used: u16,
    /// VIRTIO_F_EVENT_IDX: kick when the avail index crosses `avail_event`, ask for a call
    /// with `used_event` before halting.
    event_idx: bool,
    /// The avail index when we last decided whether to kick.
    kicked_avail: u16,
    kicks: u64,
    kicks_suppressed: u64,
    /// With VIRTIO_F_INDIRECT_DESC, where the tables are: ring descriptor i's table holds
    /// [`INDIRECT_ENTRIES`] descriptors at `tables + i * 16 * INDIRECT_ENTRIES`.
    tables: Option<u64>,
    /// Chains of at least this many buffers go into a table (when there are tables).
    indirect_min: usize,
    /// Chains placed in an indirect table.
    indirect_chains: u64,
}

/// The queues [`VirtioDriver::bring_up`] sets up: `0..count`, each `size` entries, waited on
/// as `wait`, with the features `wanted` (EVENT_IDX only for interrupt waits).
#[derive(Debug, Clone, Copy)]
pub struct QueuePlan {
    /// Features asked for (device-type bits and [`RING_FEATURES`]).
    pub wanted: u64,
    /// How many queues, from queue 0.
    pub count: u32,
    /// Entries per queue (a power of two the device accepts).
    pub size: u32,
    /// How the program waits for answers on every queue.
    pub wait: Wait,
}

/// A virtio device over ivshmem, driven by this guest program.
pub struct VirtioDriver<'a> {
    dev: &'a Ivshmem,
    base: u64,
    device_peer: u16,
    me: u16,
    config_vector: u16,
    generation: u32,
    timeout_ns: u64,
    arena_next: u64,
    arena_end: u64,
    features: u64,
    queues: [Option<Queue>; MAX_DRIVER_QUEUES],
}

impl<'a> VirtioDriver<'a> {
    /// The whole bring-up a program does before its first request: claim the device at `header`
    /// (rings and buffers in `arena`, config vector 0), print which device it is, accept the
    /// features `queues.wanted` asks for, set up the queues `queues` describes (queue q calls
    /// our vector q + 1)
    /// and set DRIVER_OK. On failure it prints `program: step: error`
    /// and returns the program's exit status for that step: 20 open, 21 negotiate, 22 a queue,
    /// 23 DRIVER_OK.
    pub fn bring_up(
        program: &str,
        dev: &'a Ivshmem,
        header: u64,
        arena: core::ops::Range<u64>,
        timeout_ns: u64,
        queues: QueuePlan,
    ) -> Result<VirtioDriver<'a>, i32> {
        let mut d = VirtioDriver::open(dev, header, arena, 0, timeout_ns).map_err(|e| {
            crate::println!("{program}: open: {e}");
            20
        })?;
        crate::println!(
            "{program}: device {:#x} of peer {} with {} queue(s), I am peer {}",
            d.device_id(),
            d.device_peer(),
            d.num_queues(),
            dev.id()
        );
        let wanted = match queues.wait {
            Wait::Poll => queues.wanted & !feature::EVENT_IDX,
            Wait::Interrupt => queues.wanted,
        };
        d.negotiate(wanted).map_err(|e| {
            crate::println!("{program}: negotiate: {e}");
            21
        })?;
        for q in 0..queues.count {
            d.setup_queue(q, queues.size, q as u16 + 1, queues.wait)
                .map_err(|e| {
                    crate::println!("{program}: queue {q}: {e}");
                    22
                })?;
        }
        d.start().map_err(|e| {
            crate::println!("{program}: DRIVER_OK: {e}");
            23
        })?;
        Ok(d)
    }

    /// Claims the device whose header is at `header` in `dev`'s shared memory and resets it,
    /// leaving it at ACKNOWLEDGE | DRIVER. Rings and buffers go in `arena` (offsets). The device
    /// side rings our `config_vector` after each answer; waits end after `timeout_ns`.
    pub fn open(
        dev: &'a Ivshmem,
        header: u64,
        arena: core::ops::Range<u64>,
        config_vector: u16,
        timeout_ns: u64,
    ) -> Result<VirtioDriver<'a>, VirtioError> {
        if !layout::valid_header_base(header, dev.shm_size) {
            return Err(VirtioError::BadHeaderBase);
        }
        let header_end = header + layout::HEADER_SIZE as u64;
        if arena.start >= arena.end
            || arena.end > dev.shm_size
            || (arena.start < header_end && arena.end > header)
        {
            return Err(VirtioError::BadArena);
        }
        if config_vector >= dev.vectors {
            return Err(VirtioError::BadQueue(
                "the config vector is not one of ours",
            ));
        }
        let mut driver = VirtioDriver {
            dev,
            base: header,
            device_peer: 0,
            me: dev.id(),
            config_vector,
            generation: 0,
            timeout_ns,
            arena_next: arena.start,
            arena_end: arena.end,
            features: 0,
            queues: Default::default(),
        };
        if !driver.is_published() {
            return Err(VirtioError::NoHeader);
        }
        let device_peer = driver.get(field::DEVICE_PEER);
        driver.device_peer = u16::try_from(device_peer)
            .ok()
            .filter(|&p| p != driver.me)
            .ok_or(VirtioError::BadDevicePeer(device_peer))?;
        let me = driver.me as u32;
        match driver.u32_at(field::DRIVER_PEER).compare_exchange(
            layout::NO_PEER,
            me,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {}
            Err(holder) if holder == me => {}
            Err(holder) => return Err(VirtioError::Busy(holder)),
        }
        driver.set(field::DRIVER_CONFIG_VECTOR, config_vector as u32);
        driver.generation = driver.get(field::GENERATION);
        driver.request(0)?;
        driver.request(status::ACKNOWLEDGE | status::DRIVER)?;
        Ok(driver)
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        let addr = self.dev.addr(self.base + offset as u64, 4);
        // SAFETY: `base` was checked to hold a whole header inside BAR2 and every layout field
        // is a naturally aligned u32 inside it; BAR2 is identity-mapped write-back memory that
        // lives as long as the program, and other peers access it only atomically.
        unsafe { &*(addr as *const AtomicU32) }
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        let addr = self.dev.addr(self.base + offset as u64, 8);
        // SAFETY: as in `u32_at`, for a naturally aligned u64 field.
        unsafe { &*(addr as *const AtomicU64) }
    }

    fn get(&self, offset: usize) -> u32 {
        self.u32_at(offset).load(Ordering::Acquire)
    }

    fn set(&self, offset: usize, value: u32) {
        self.u32_at(offset).store(value, Ordering::Release)
    }

    fn queue_get(&self, q: u32, f: usize) -> u32 {
        self.get(layout::queue_offset(q, f))
    }

    fn is_published(&self) -> bool {
        self.u64_at(field::MAGIC).load(Ordering::Acquire) == layout::MAGIC
            && self.get(field::VERSION) == layout::VERSION
            && self.get(field::HEADER_SIZE) == layout::HEADER_SIZE
    }

    /// The virtio device id.
    pub fn device_id(&self) -> u32 {
        self.get(field::DEVICE_ID)
    }

    /// Queues the device has.
    pub fn num_queues(&self) -> u32 {
        self.get(field::NUM_QUEUES).min(layout::MAX_QUEUES)
    }

    /// The device side's peer id.
    pub fn device_peer(&self) -> u16 {
        self.device_peer
    }

    /// Features negotiated.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Copies device configuration space from `offset` into `buf` (bytes past the 1 KiB
    /// window read as 0).
    pub fn read_config(&self, offset: usize, buf: &mut [u8]) {
        buf.fill(0);
        let end = offset.saturating_add(buf.len()).min(field::CONFIG_MAX);
        if offset < end {
            let at = self.base + (field::CONFIG + offset) as u64;
            self.dev.read_bytes(at, &mut buf[..end - offset]);
        }
    }

    /// Halts until `done()` holds, waking on `vector`'s interrupts and the timer ticks; false
    /// when the timeout passed first.
    fn wait_until(&self, vector: u16, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Deadline::start(self.timeout_ns);
        let cpu_vector = self.dev.cpu_vector(vector);
        loop {
            let seen = interrupts::count(cpu_vector);
            if done() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            interrupts::halt_until_changed(cpu_vector, seen);
        }
    }

    /// Asks for device status `wanted` and waits for the device side's answer; returns the
    /// status it applied.
    fn request(&mut self, wanted: u32) -> Result<u32, VirtioError> {
        self.set(field::DRIVER_STATUS, wanted);
        let seq = self
            .u32_at(field::REQUEST)
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1);
        self.dev
            .ring(self.device_peer, layout::DEVICE_REQUEST_VECTOR as u16);
        if !self.wait_until(self.config_vector, || self.get(field::ACK) == seq) {
            return Err(VirtioError::Timeout);
        }
        // A reset we asked for is the one generation change that is ours.
        self.generation = self.get(field::GENERATION);
        match ErrorCode::from_raw(self.get(field::ERROR)) {
            Some(ErrorCode::None) => Ok(self.get(field::DEVICE_STATUS)),
            code => Err(VirtioError::Refused(code)),
        }
    }

    /// Accepts the offered features among `wanted` (plus the required VIRTIO_F_VERSION_1) and
    /// sets FEATURES_OK. Returns the accepted set. Of `wanted`, device-type bits and the ring
    /// features this driver implements ([`RING_FEATURES`]: EVENT_IDX, INDIRECT_DESC) count; the
    /// other ring and transport bits are never accepted.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, VirtioError> {
        let offered = self.u64_at(field::DEVICE_FEATURES).load(Ordering::Acquire);
        if offered & feature::VERSION_1 == 0 {
            return Err(VirtioError::NotModern);
        }
        let accepted = feature::accepted(offered, wanted, RING_FEATURES);
        self.u64_at(field::DRIVER_FEATURES)
            .store(accepted, Ordering::Release);
        let st = self.request(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK)?;
        if st & status::FEATURES_OK == 0 {
            return Err(VirtioError::Refused(Some(ErrorCode::FeaturesRefused)));
        }
        self.features = accepted;
        Ok(accepted)
    }

    /// Takes `len` bytes aligned to `align` (a power of two) from the arena; returns the offset.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64, VirtioError> {
        let align = align.max(1).next_power_of_two();
        let start = self
            .arena_next
            .checked_add(align - 1)
            .ok_or(VirtioError::ArenaFull)?
            & !(align - 1);
        let end = start.checked_add(len).ok_or(VirtioError::ArenaFull)?;
        if end > self.arena_end {
            return Err(VirtioError::ArenaFull);
        }
        self.arena_next = end;
        Ok(start)
    }

    /// Sets queue `queue` up with `size` entries (0: the device's maximum, capped at
    /// [`MAX_QUEUE_SIZE`]), rings from the arena, the device calling our `call_vector`.
    /// With `wait` = [`Wait::Poll`] the queue asks the device not to call at all.
    pub fn setup_queue(
        &mut self,
        queue: u32,
        size: u32,
        call_vector: u16,
        wait: Wait,
    ) -> Result<(), VirtioError> {
        if queue >= self.num_queues() || queue as usize >= MAX_DRIVER_QUEUES {
            return Err(VirtioError::BadQueue("no such queue"));
        }
        if call_vector == self.config_vector || call_vector >= self.dev.vectors {
            return Err(VirtioError::BadQueue(
                "the call vector must be one of ours, not the config vector",
            ));
        }
        let max = self.queue_get(queue, queue_field::MAX_SIZE);
        let size = if size == 0 {
            max.min(MAX_QUEUE_SIZE as u32)
        } else {
            size
        };
        if size as usize > MAX_QUEUE_SIZE {
            return Err(VirtioError::BadQueue(
                "larger than this driver's bookkeeping",
            ));
        }
        let kick_vector = u16::try_from(self.queue_get(queue, queue_field::KICK_VECTOR))
            .map_err(|_| VirtioError::BadQueue("the device's kick vector is out of range"))?;
        let setup = QueueSetup {
            size,
            desc: self.alloc(layout::ring_size::desc(size), 16)?,
            avail: self.alloc(layout::ring_size::avail(size), 2)?,
            used: self.alloc(layout::ring_size::used(size), 4)?,
        };
        // The same check the bridge applies, so a refusal is found here with its reason.
        setup
            .validate(max, self.dev.shm_size, self.base)
            .map_err(|_| VirtioError::BadQueue("size or ring placement refused"))?;
        self.zero(setup.desc, layout::ring_size::desc(size));
        self.zero(setup.avail, layout::ring_size::avail(size));
        self.zero(setup.used, layout::ring_size::used(size));
        let event_idx = self.features & feature::EVENT_IDX != 0;
        if wait == Wait::Poll {
            if event_idx {
                // With EVENT_IDX the device ignores the flag: polling is refused.
                return Err(VirtioError::BadQueue("polling does not go with EVENT_IDX"));
            }
            self.ring16(setup.avail)
                .store(AVAIL_F_NO_INTERRUPT, Ordering::Release);
        }
        // One table per ring descriptor, so every chain out can have one.
        let tables = if self.features & feature::INDIRECT_DESC != 0 {
            Some(self.alloc(16 * INDIRECT_ENTRIES as u64 * size as u64, 16)?)
        } else {
            None
        };
        let mut free = [0u16; MAX_QUEUE_SIZE];
        for (i, slot) in free.iter_mut().take(size as usize).enumerate() {
            *slot = (size as usize - 1 - i) as u16;
        }
        let q = Queue {
            size: size as u16,
            desc: setup.desc,
            avail: setup.avail,
            used: setup.used,
            kick_vector,
            call_vector,
            free,
            free_len: size as usize,
            chain_len: [0; MAX_QUEUE_SIZE],
            next: [0; MAX_QUEUE_SIZE],
            outstanding: 0,
            next_avail: 0,
            last_used: 0,
            event_idx,
            kicked_avail: 0,
            kicks: 0,
            kicks_suppressed: 0,
            tables,
            indirect_min: 2,
            indirect_chains: 0,
        };
        let at = |f| layout::queue_offset(queue, f);
        self.set(at(queue_field::SIZE), size);
        self.set(at(queue_field::CALL_VECTOR), call_vector as u32);
        self.u64_at(at(queue_field::DESC))
            .store(setup.desc, Ordering::Release);
        self.u64_at(at(queue_field::AVAIL))
            .store(setup.avail, Ordering::Release);
        self.u64_at(at(queue_field::USED))
            .store(setup.used, Ordering::Release);
        self.queues[queue as usize] = Some(q);
        Ok(())
    }

    /// Sets DRIVER_OK: the device side hands the rings to the backend.
    pub fn start(&mut self) -> Result<(), VirtioError> {
        let st = self.request(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        )?;
        if st & status::DRIVER_OK == 0 {
            return Err(VirtioError::NeedsReset(st));
        }
        Ok(())
    }

    fn zero(&self, offset: u64, len: u64) {
        let mut at = offset;
        while at < offset + len {
            self.dev.write_u8(at, 0);
            at += 1;
        }
    }

    /// A 16-bit ring field (flags or index) at shared-memory `offset`.
    fn ring16(&self, offset: u64) -> &AtomicU16 {
        let addr = self.dev.addr(offset, 2);
        // SAFETY: ring fields lie in BAR2 (checked by `addr`) at even offsets (rings are at
        // least 2-byte aligned, fields at even offsets in them); identity-mapped memory that
        // outlives the driver.
        unsafe { &*(addr as *const AtomicU16) }
    }

    fn queue_mut(&mut self, queue: u32) -> Result<&mut Queue, VirtioError> {
        self.queues
            .get_mut(queue as usize)
            .and_then(Option::as_mut)
            .ok_or(VirtioError::BadQueue("not set up"))
    }

    /// Offers a chain (`readable` then `writable` buffers, inside the shared memory) on
    /// `queue` and kicks the device if it wants it. Returns the chain's token.
    pub fn submit(
        &mut self,
        queue: u32,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> Result<u16, VirtioError> {
        let dev = self.dev;
        let device_peer = self.device_peer;
        let q = self.queue_mut(queue)?;
        let needed = readable.len() + writable.len();
        if needed == 0 {
            return Err(VirtioError::BadQueue("a chain needs a buffer"));
        }
        // A chain of `indirect_min` (2) or more buffers goes into the head's own table when
        // there are tables and it fits one; it then takes a single ring descriptor.
        let table = q
            .tables
            .filter(|_| needed >= q.indirect_min && needed <= INDIRECT_ENTRIES as usize);
        let ring_descriptors = if table.is_some() { 1 } else { needed };
        if ring_descriptors > q.free_len {
            return Err(VirtioError::QueueFull);
        }
        let buffers = readable
            .iter()
            .map(|b| (b, 0))
            .chain(writable.iter().map(|b| (b, DESC_F_WRITE)));
        // The chain's descriptors: in the head's table (slot i is entry i), or the top
        // `needed` of the free stack (slot i is the ith from the top).
        let top = q.free_len - 1;
        let head = q.free[top];
        let (base, in_table) = match table {
            Some(tables) => (tables + 16 * INDIRECT_ENTRIES as u64 * head as u64, true),
            None => (q.desc, false),
        };
        let free = &q.free;
        let slot = |i: usize| if in_table { i as u16 } else { free[top - i] };
        for (i, (buffer, write_flag)) in buffers.enumerate() {
            let (flags, next) = if i + 1 == needed {
                (write_flag, 0)
            } else {
                (write_flag | DESC_F_NEXT, slot(i + 1))
            };
            let at = base + 16 * slot(i) as u64;
            write_descriptor(dev, at, buffer.offset, buffer.len, flags, next);
        }
        if in_table {
            let ring_at = q.desc + 16 * head as u64;
            write_descriptor(dev, ring_at, base, 16 * needed as u32, DESC_F_INDIRECT, 0);
            q.indirect_chains += 1;
        } else {
            // Our own copy of the links, to free the chain without trusting the shared one.
            for i in 0..needed - 1 {
                q.next[slot(i) as usize] = slot(i + 1);
            }
        }
        q.free_len -= ring_descriptors;
        q.chain_len[head as usize] = ring_descriptors as u16;
        q.outstanding += 1;
        let slot = q.avail + 4 + 2 * (q.next_avail % q.size) as u64;
        let (avail, used, size) = (q.avail, q.used, q.size);
        q.next_avail = q.next_avail.wrapping_add(1);
        let next_avail = q.next_avail;
        let old = core::mem::replace(&mut q.kicked_avail, next_avail);
        let (kick, event_idx) = (q.kick_vector, q.event_idx);
        self.ring16(slot).store(head, Ordering::Relaxed);
        // Descriptors and the slot must be visible before the index that publishes them.
        compiler_fence(Ordering::Release);
        self.ring16(avail + 2).store(next_avail, Ordering::Release);
        // Our index store before reading the device's side (virtio 1.2 §2.7.13.3.1).
        fence(Ordering::SeqCst);
        let wanted = if event_idx {
            // avail_event, after the used ring's elements.
            let event = self
                .ring16(used + 4 + 8 * size as u64)
                .load(Ordering::Acquire);
            event_crossed(event, next_avail, old)
        } else {
            self.ring16(used).load(Ordering::Acquire) & USED_F_NO_NOTIFY == 0
        };
        let q = self.queue_mut(queue)?;
        if wanted {
            q.kicks += 1;
            dev.ring(device_peer, kick);
        } else {
            q.kicks_suppressed += 1;
        }
        Ok(head)
    }

    /// Takes the next chain the device has used on `queue`, if any.
    pub fn try_used(&mut self, queue: u32) -> Result<Option<Used>, VirtioError> {
        let used_ring = self.queue_mut(queue)?.used;
        let used_idx = self.ring16(used_ring + 2).load(Ordering::Acquire);
        let dev = self.dev;
        let q = self.queue_mut(queue)?;
        let moved = used_idx.wrapping_sub(q.last_used);
        if moved == 0 {
            return Ok(None);
        }
        if moved > q.outstanding {
            return Err(VirtioError::BadUsedIndex {
                moved,
                outstanding: q.outstanding,
            });
        }
        let at = q.used + 4 + 8 * (q.last_used % q.size) as u64;
        let id = dev.read_u32(at);
        let len = dev.read_u32(at + 4);
        let chain = q
            .chain_len
            .get(id as usize)
            .copied()
            .filter(|&n| n != 0 && id < q.size as u32)
            .ok_or(VirtioError::BadUsedId(id))?;
        q.chain_len[id as usize] = 0;
        let mut desc = id as u16;
        for _ in 0..chain {
            q.free[q.free_len] = desc;
            q.free_len += 1;
            desc = q.next[desc as usize];
        }
        q.outstanding -= 1;
        q.last_used = q.last_used.wrapping_add(1);
        Ok(Some(Used {
            token: id as u16,
            len,
        }))
    }

    /// Waits for the next used chain of `queue`: halting for its call vector, or spinning
    /// ([`Wait::Poll`]). Fails when the device side reset the device, or after the timeout.
    pub fn wait_used(&mut self, queue: u32, wait: Wait) -> Result<Used, VirtioError> {
        if let Some(used) = self.try_used(queue)? {
            return Ok(used);
        }
        let q = self.queue_mut(queue)?;
        let (call_vector, event_idx, avail, size) = (q.call_vector, q.event_idx, q.avail, q.size);
        let cpu_vector = self.dev.cpu_vector(call_vector);
        let deadline = Deadline::start(self.timeout_ns);
        loop {
            // Read before looking at the ring: a call landing after the look moves the counter
            // and ends the halt at once.
            let seen = interrupts::count(cpu_vector);
            if event_idx && wait == Wait::Interrupt {
                // Ask for a call once the next chain is used (used_event, after the avail
                // ring's slots), before the last look at the ring.
                let last_used = self.queue_mut(queue)?.last_used;
                self.ring16(avail + 4 + 2 * size as u64)
                    .store(last_used, Ordering::Release);
                fence(Ordering::SeqCst);
            }
            if let Some(used) = self.try_used(queue)? {
                return Ok(used);
            }
            self.check_device()?;
            if deadline.passed() {
                return Err(VirtioError::Timeout);
            }
            if wait == Wait::Interrupt {
                interrupts::halt_until_changed(cpu_vector, seen);
            }
        }
    }

    /// Kicks rung and kicks the device did not want (VRING_USED_F_NO_NOTIFY or, with
    /// EVENT_IDX, `avail_event` not crossed) on `queue`.
    pub fn kicks(&self, queue: u32) -> (u64, u64) {
        self.queue(queue)
            .map_or((0, 0), |q| (q.kicks, q.kicks_suppressed))
    }

    /// With INDIRECT_DESC: chains of at least `buffers` buffers (default 2) on `queue` go into
    /// a table; 1 sends every chain through one (a single buffer gains nothing from it, but it
    /// shows whether a backend follows tables), as the host driver's `set_indirect_min`.
    pub fn set_indirect_min(&mut self, queue: u32, buffers: usize) -> Result<(), VirtioError> {
        self.queue_mut(queue)?.indirect_min = buffers.max(1);
        Ok(())
    }

    /// Chains placed in an indirect table on `queue`.
    pub fn indirect_chains(&self, queue: u32) -> u64 {
        self.queue(queue).map_or(0, |q| q.indirect_chains)
    }

    /// Chains out on `queue`.
    pub fn outstanding(&self, queue: u32) -> u16 {
        self.queue(queue).map_or(0, |q| q.outstanding)
    }

    fn queue(&self, queue: u32) -> Option<&Queue> {
        self.queues.get(queue as usize).and_then(Option::as_ref)
    }

    /// Fails when the device side reset the device on its own or flagged DEVICE_NEEDS_RESET.
    fn check_device(&self) -> Result<(), VirtioError> {
        let st = self.get(field::DEVICE_STATUS);
        if self.get(field::GENERATION) != self.generation
            || st & status::DEVICE_NEEDS_RESET != 0
            || !self.is_published()
        {
            return Err(VirtioError::NeedsReset(st));
        }
        Ok(())
    }

    /// Resets the device (the backend stops using our rings) and gives up the claim, so the
    /// next driver can open it.
    pub fn close(mut self) -> Result<(), VirtioError> {
        self.queues = Default::default();
        let reset = self.request(0).map(|_| ());
        let me = self.me as u32;
        let _ = self.u32_at(field::DRIVER_PEER).compare_exchange(
            me,
            layout::NO_PEER,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        reset
    }
}
