//! The ivshmem PCI device (1af4:1110) for guest programs: find the N-th one, assign its BARs,
//! read its registers, use the shared memory (BAR2), ring peers and wait for their doorbells.
//!
//! Registers (BAR0, 32-bit): IntrMask 0x00, IntrStatus 0x04 (cleared on read), IVPosition 0x08
//! (own peer id, 0 for ivshmem-plain), Doorbell 0x0C (write `peer << 16 | vector`).
//! A doorbell device's vectors arrive through MSI-X (BAR1): entry `i` is programmed for CPU
//! vector `first_vector + i`, whose deliveries the interrupt mailbox counts (`interrupts`), so a
//! program waits for a peer's doorbell by halting until that counter moves.
//!
//! Several devices in one VM: open them with one [`BarAllocator`] and give each its own range of
//! CPU vectors ([`Ivshmem::open`] picks `0x40 + 0x20 * index` by default).
//!
//! [`directory`] is the small shared-memory convention the ivshmem programs (demo, tests) use to
//! find each other: one 64-byte slot per peer id at the start of the shared memory.
use crate::interrupts;
use crate::mmio;
use crate::pci::{self, BarAllocator, BarInfo, BarKind, Bdf, Msix};

/// Identity, BAR0 size and register offsets (`reg`): the VMM's device reads the same file.
pub use crate::abi::ivshmem::{
    doorbell_value, reg, BAR0_SIZE, DEVICE_ID, REVISION, SUBSYSTEM_ID, SUBSYSTEM_VENDOR_ID,
    VENDOR_ID,
};
/// Class code as `Bdf::class` reads it.
pub const CLASS: u32 = crate::abi::ivshmem::CLASS_CODE;

/// First CPU vector used for device `index`'s MSI-X entries (32 per device).
pub const fn default_first_vector(index: usize) -> u8 {
    0x40 + 0x20 * (index as u8 % 4)
}
/// Most MSI-X vectors the runtime programs per device (each takes a CPU vector).
pub const MAX_VECTORS: u16 = 32;

/// The `index`-th ivshmem device on bus 0 (slot order), if present.
pub fn find_nth(index: usize) -> Option<Bdf> {
    pci::devices()
        .filter(|bdf| bdf.vendor_id() == VENDOR_ID && bdf.device_id() == DEVICE_ID)
        .nth(index)
}

/// Number of ivshmem devices present.
pub fn count() -> usize {
    pci::devices()
        .filter(|bdf| bdf.vendor_id() == VENDOR_ID && bdf.device_id() == DEVICE_ID)
        .count()
}

/// An ivshmem device with its BARs assigned and memory decoding on.
#[derive(Clone, Copy, Debug)]
pub struct Ivshmem {
    /// Where the device sits.
    pub bdf: Bdf,
    /// BAR0 address (registers).
    pub regs: u64,
    /// BAR0 as assigned.
    pub bar0: BarInfo,
    /// BAR2 address (the shared memory) and size.
    pub shm: u64,
    /// BAR2 as assigned.
    pub bar2: BarInfo,
    /// Shared-memory size in bytes (BAR2's size).
    pub shm_size: u64,
    /// MSI-X (doorbell variant only), enabled with `vectors` entries programmed.
    pub msix: Option<Msix>,
    /// CPU vector of MSI-X entry 0.
    pub first_vector: u8,
    /// MSI-X entries in use (the device's vector count, at most [`MAX_VECTORS`]).
    pub vectors: u16,
}

impl Ivshmem {
    /// Opens the `index`-th ivshmem device: assigns its BARs from `allocator`, enables memory
    /// decoding and, for a doorbell device, MSI-X with entry `i` on CPU vector
    /// `default_first_vector(index) + i`.
    pub fn open(index: usize, allocator: &mut BarAllocator) -> Option<Ivshmem> {
        Self::open_with_vectors(index, allocator, default_first_vector(index))
    }

    /// Opens the `index`-th device the way a program using only that one must: every device
    /// before it first (from one allocator), so in a multi-device VM each device gets its own
    /// BAR addresses and CPU vectors whichever one a program picks.
    pub fn open_nth(index: usize) -> Option<Ivshmem> {
        let mut allocator = BarAllocator::new();
        for earlier in 0..index {
            let _ = Self::open(earlier, &mut allocator);
        }
        Self::open(index, &mut allocator)
    }

    /// As [`Ivshmem::open`] with an explicit first CPU vector (>= 0x30).
    pub fn open_with_vectors(
        index: usize,
        allocator: &mut BarAllocator,
        first_vector: u8,
    ) -> Option<Ivshmem> {
        let bdf = find_nth(index)?;
        let bars = pci::assign_bars(bdf, allocator);
        let (bar0, regs) = bars[0]?;
        let (bar2, shm) = bars[2]?;
        let msix = Msix::find(bdf);
        let mut vectors = 0;
        if let Some(msix) = &msix {
            vectors = msix
                .vectors
                .min(MAX_VECTORS)
                .min(0xFF - first_vector as u16);
            for i in 0..vectors {
                msix.setup_vector(i, first_vector + i as u8);
            }
            msix.enable(true);
        }
        Some(Ivshmem {
            bdf,
            regs,
            bar0,
            shm,
            bar2,
            shm_size: bar2.size,
            msix,
            first_vector,
            vectors,
        })
    }

    /// Moves BAR `index` (0, 1 or 2) to a fresh address from `allocator`, with memory decoding
    /// left on (the VMM remaps at the config write, as a guest OS may do at any time). Returns
    /// the new address.
    pub fn move_bar(&mut self, index: u8, allocator: &mut BarAllocator) -> Option<u64> {
        let bar = match index {
            0 => self.bar0,
            2 => self.bar2,
            1 => pci::size_bar(self.bdf, 1)?,
            _ => return None,
        };
        let address = allocator.allocate(bar.kind, bar.size)?;
        pci::set_bar_address(self.bdf, &bar, address);
        match index {
            0 => self.regs = address,
            2 => self.shm = address,
            _ => self.msix = Msix::find(self.bdf),
        }
        Some(address)
    }

    /// True for ivshmem-doorbell (it has MSI-X), false for ivshmem-plain.
    pub fn is_doorbell(&self) -> bool {
        self.msix.is_some()
    }

    /// Reads a BAR0 register (`abi::ivshmem::reg`).
    pub fn read_reg(&self, offset: u64) -> u32 {
        // SAFETY: BAR0 was assigned by `open`; identity-mapped for ring 3.
        unsafe { mmio::read32(self.regs + offset) }
    }

    /// Writes a BAR0 register (`abi::ivshmem::reg`).
    pub fn write_reg(&self, offset: u64, value: u32) {
        // SAFETY: as read_reg.
        unsafe { mmio::write32(self.regs + offset, value) }
    }

    /// Our peer id (IVPosition; 0 for ivshmem-plain).
    pub fn id(&self) -> u16 {
        self.read_reg(reg::IV_POSITION) as u16
    }

    /// Rings `vector` of `peer` (Doorbell register). With ioeventfd this never leaves KVM.
    #[inline(always)]
    pub fn ring(&self, peer: u16, vector: u16) {
        self.write_reg(reg::DOORBELL, doorbell_value(peer, vector as u32))
    }

    /// CPU vector on which our MSI-X entry `vector` arrives.
    pub fn cpu_vector(&self, vector: u16) -> u8 {
        self.first_vector + vector as u8
    }

    /// Doorbells received on `vector` so far (the interrupt mailbox counter).
    #[inline(always)]
    pub fn received(&self, vector: u16) -> u64 {
        interrupts::count(self.cpu_vector(vector))
    }

    /// Waits (halting, not spinning) until `vector` has been received more than `seen` times or
    /// about `timeout_ns` passed; the new count, or `None` on timeout. Costs no exit to the VMM
    /// (see [`Deadline`]).
    pub fn wait(&self, vector: u16, seen: u64, timeout_ns: u64) -> Option<u64> {
        self.wait_with(vector, seen, timeout_ns, false)
    }

    /// Like [`Ivshmem::wait`] but spins on the counter (lowest latency, burns the vCPU).
    pub fn wait_spin(&self, vector: u16, seen: u64, timeout_ns: u64) -> Option<u64> {
        self.wait_with(vector, seen, timeout_ns, true)
    }

    fn wait_with(&self, vector: u16, seen: u64, timeout_ns: u64, spin: bool) -> Option<u64> {
        let now = self.received(vector);
        if now != seen {
            return Some(now);
        }
        let cpu_vector = self.cpu_vector(vector);
        let deadline = Deadline::start(timeout_ns);
        loop {
            let now = interrupts::count(cpu_vector);
            if now != seen {
                return Some(now);
            }
            if deadline.passed() {
                return None;
            }
            if spin {
                // No `pause` (spin_loop hint): under a hypervisor it may trap and yield the vCPU.
            } else {
                interrupts::halt_until_changed(cpu_vector, seen);
            }
        }
    }

    /// Address of shared-memory byte `offset` (panics outside BAR2).
    pub fn addr(&self, offset: u64, len: u64) -> u64 {
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.shm_size),
            "ivshmem: access {offset:#x}+{len:#x} outside the {:#x}-byte shared memory",
            self.shm_size
        );
        self.shm + offset
    }

    /// Reads the byte at `offset` in the shared memory (panics outside it).
    pub fn read_u8(&self, offset: u64) -> u8 {
        // SAFETY: inside BAR2 (checked by `addr`), identity-mapped write-back RAM.
        unsafe { mmio::read8(self.addr(offset, 1)) }
    }
    /// Reads a u32 at `offset` in the shared memory (panics outside it).
    pub fn read_u32(&self, offset: u64) -> u32 {
        // SAFETY: as read_u8.
        unsafe { mmio::read32(self.addr(offset, 4)) }
    }
    /// Reads a u64 at `offset` in the shared memory (panics outside it).
    pub fn read_u64(&self, offset: u64) -> u64 {
        // SAFETY: as read_u8.
        unsafe { mmio::read64(self.addr(offset, 8)) }
    }
    /// Writes a byte at `offset` in the shared memory (panics outside it).
    pub fn write_u8(&self, offset: u64, value: u8) {
        // SAFETY: as read_u8.
        unsafe { mmio::write8(self.addr(offset, 1), value) }
    }
    /// Writes a u32 at `offset` in the shared memory (panics outside it).
    pub fn write_u32(&self, offset: u64, value: u32) {
        // SAFETY: as read_u8.
        unsafe { mmio::write32(self.addr(offset, 4), value) }
    }
    /// Writes a u64 at `offset` in the shared memory (panics outside it).
    pub fn write_u64(&self, offset: u64, value: u64) {
        // SAFETY: as read_u8.
        unsafe { mmio::write64(self.addr(offset, 8), value) }
    }

    /// Copies shared memory at `offset` into `buf` (volatile byte reads).
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) {
        let base = self.addr(offset, buf.len() as u64);
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: inside BAR2 (checked above).
            *b = unsafe { mmio::read8(base + i as u64) };
        }
    }

    /// Copies `data` into shared memory at `offset` (volatile byte writes).
    pub fn write_bytes(&self, offset: u64, data: &[u8]) {
        let base = self.addr(offset, data.len() as u64);
        for (i, b) in data.iter().enumerate() {
            // SAFETY: inside BAR2 (checked above).
            unsafe { mmio::write8(base + i as u64, *b) };
        }
    }

    /// BAR2 as a mutable byte slice, for bulk copies (bandwidth measurements).
    ///
    /// # Safety
    /// Other peers write the same memory concurrently: the caller must not rely on the contents
    /// staying the same and must not create other references to the same bytes.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn shm_slice(&self) -> &mut [u8] {
        core::slice::from_raw_parts_mut(self.shm as *mut u8, self.shm_size as usize)
    }
}

/// A timeout counted in ticks of the LAPIC timer, which runs periodically (every
/// [`TICK_NS`], vector `VECTOR_TIMER`) from the first `Deadline` on:
/// - no exit to the VMM, and no LAPIC access per wait: LAPIC register accesses are expensive on
///   this project's KVM (a start/stop pair of a one-shot timer measured ~60-120 µs), so the
///   timer is programmed once and a deadline is just a tick count;
/// - periodic rather than one-shot because the halt gate only re-checks the vector it waits
///   for: a one-shot expiry landing between our check and the `hlt` would be lost and the halt
///   would never end; with ticks the next one ends it.
///
/// A deadline passes between `timeout` and `timeout + 2 ticks` after it started. Do not mix with
/// `interrupts::arm_timer` / `wait_interrupt_timeout` (they reprogram the same timer to one-shot);
/// call [`restart_ticks`] after using them.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    start_ticks: u64,
    ticks: u64,
}

const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INITIAL: u64 = 0x380;
const LAPIC_TIMER_DIVIDE: u64 = 0x3E0;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Period of the tick behind [`Deadline`] (KVM's LAPIC timer counts nanoseconds with
/// divide-by-1).
pub const TICK_NS: u64 = 10_000_000;
static TICKING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// (Re)programs the LAPIC timer as the periodic tick.
pub fn restart_ticks() {
    TICKING.store(true, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: LAPIC registers, identity-mapped for ring 3.
    unsafe {
        mmio::write32(crate::layout::LAPIC_ADDR + LAPIC_TIMER_DIVIDE, 0xB);
        mmio::write32(
            crate::layout::LAPIC_ADDR + LAPIC_LVT_TIMER,
            crate::layout::VECTOR_TIMER as u32 | LVT_TIMER_PERIODIC,
        );
        mmio::write32(
            crate::layout::LAPIC_ADDR + LAPIC_TIMER_INITIAL,
            TICK_NS as u32,
        );
    }
}

/// Starts the tick unless it is running.
pub fn start_ticks() {
    if !TICKING.load(core::sync::atomic::Ordering::Relaxed) {
        restart_ticks();
    }
}

/// Stops the tick (e.g. before a measurement that must not be interrupted).
pub fn stop_ticks() {
    TICKING.store(false, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: LAPIC register; an initial count of 0 stops the timer.
    unsafe { mmio::write32(crate::layout::LAPIC_ADDR + LAPIC_TIMER_INITIAL, 0) };
}

impl Deadline {
    /// A deadline `timeout_ns` from now (starts the tick if it is not running).
    pub fn start(timeout_ns: u64) -> Deadline {
        start_ticks();
        Deadline {
            start_ticks: interrupts::count(crate::layout::VECTOR_TIMER),
            // +1: we may start just before a tick.
            ticks: timeout_ns.div_ceil(TICK_NS) + 1,
        }
    }

    /// True once the timeout has passed (counted in LAPIC timer ticks).
    pub fn passed(&self) -> bool {
        interrupts::count(crate::layout::VECTOR_TIMER) - self.start_ticks >= self.ticks
    }

    /// Halts until the deadline passes (waking at each tick).
    pub fn sleep(self) {
        loop {
            let seen = interrupts::count(crate::layout::VECTOR_TIMER);
            if self.passed() {
                return;
            }
            interrupts::halt_until_changed(crate::layout::VECTOR_TIMER, seen);
        }
    }
}

/// Halts for about `ns` nanoseconds (at tick granularity, at least one tick).
pub fn sleep_ns(ns: u64) {
    Deadline::start(ns).sleep()
}

/// Whether a BAR is 64-bit prefetchable memory (what BAR2 must be).
pub fn is_64bit_prefetchable(bar: &BarInfo) -> bool {
    bar.kind == BarKind::Memory64 { prefetchable: true }
}

/// The peer directory at the start of the shared memory: slot `id` (64 bytes at `64 * id`)
/// belongs to peer `id`:
///
/// | off | size | field                                                        |
/// |-----|------|--------------------------------------------------------------|
/// | 0   | 4    | magic `IVSH` (written last: the slot is valid once it is set) |
/// | 4   | 4    | peer id (u32 LE; informative, the index is what counts)      |
/// | 8   | 8    | counter (u64 LE; free for the owner, e.g. doorbells seen)    |
/// | 16  | 48   | text, NUL-terminated or NUL-padded (UTF-8)                   |
///
/// A host peer can fill its slot with `ivshmem-client`:
/// `write <16+64*ID> hello from the host\0; write <64*ID> IVSH`.
pub mod directory {
    use super::Ivshmem;

    /// Bytes per slot.
    pub const SLOT_SIZE: u64 = 64;
    /// What a published slot starts with.
    pub const MAGIC: [u8; 4] = *b"IVSH";
    /// Offset of the owner's id (u32).
    pub const ID: u64 = 4;
    /// Offset of the counter (u64).
    pub const COUNTER: u64 = 8;
    /// Offset of the text.
    pub const TEXT: u64 = 16;
    /// Room for the text, NUL included.
    pub const TEXT_LEN: usize = 48;
    /// Most slots (ids) the directory has (16 KiB), fewer if the memory is smaller.
    pub const MAX_SLOTS: u64 = 256;

    /// How many slots this device's memory holds.
    pub fn slots(dev: &Ivshmem) -> u64 {
        MAX_SLOTS.min(dev.shm_size / SLOT_SIZE)
    }

    /// Where slot `id` starts.
    pub fn slot_offset(id: u16) -> u64 {
        id as u64 * SLOT_SIZE
    }

    /// Publishes our slot: text (truncated to 47 bytes), id, counter 0, then the magic.
    pub fn publish(dev: &Ivshmem, id: u16, text: &str) -> bool {
        if id as u64 >= slots(dev) {
            return false;
        }
        let at = slot_offset(id);
        let mut buf = [0u8; TEXT_LEN];
        let n = text.len().min(TEXT_LEN - 1);
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        dev.write_u32(at, 0);
        dev.write_bytes(at + TEXT, &buf);
        dev.write_u32(at + ID, id as u32);
        dev.write_u64(at + COUNTER, 0);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
        dev.write_u32(at, u32::from_le_bytes(MAGIC));
        true
    }

    /// Clears our slot's magic (we are leaving).
    pub fn withdraw(dev: &Ivshmem, id: u16) {
        if (id as u64) < slots(dev) {
            dev.write_u32(slot_offset(id), 0);
        }
    }

    /// True when slot `id` exists and is published.
    pub fn is_valid(dev: &Ivshmem, id: u16) -> bool {
        (id as u64) < slots(dev) && dev.read_u32(slot_offset(id)) == u32::from_le_bytes(MAGIC)
    }

    /// Copies slot `id`'s text into `buf` and returns it (up to the first NUL; invalid UTF-8
    /// is cut at the first bad byte).
    pub fn text<'a>(dev: &Ivshmem, id: u16, buf: &'a mut [u8; TEXT_LEN]) -> &'a str {
        dev.read_bytes(slot_offset(id) + TEXT, buf);
        let len = buf.iter().position(|&b| b == 0).unwrap_or(TEXT_LEN);
        match core::str::from_utf8(&buf[..len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Slot `id`'s counter.
    pub fn counter(dev: &Ivshmem, id: u16) -> u64 {
        dev.read_u64(slot_offset(id) + COUNTER)
    }

    /// Sets slot `id`'s counter.
    pub fn set_counter(dev: &Ivshmem, id: u16, value: u64) {
        dev.write_u64(slot_offset(id) + COUNTER, value)
    }
}
