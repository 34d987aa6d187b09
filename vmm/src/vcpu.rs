//! vCPU threads: one per vCPU, each running the `KVM_RUN` loop.
//!
//! Every exit is handled exactly once: `KVM_EXIT_IO` goes to the I/O address space (string I/O
//! with `count > 1` is dispatched element by element, in order), `KVM_EXIT_MMIO` to system
//! memory. Exits are counted per kind (`ExitStats`) for `--stats`. A benchmark may put an
//! [`ExitShortcut`] ahead of dispatch; the loop itself knows no device.
//!
//! Stopping: `VmControl::request_exit` sets the stop flag; the thread that handled the exit
//! returns by itself, the others may be blocked in `KVM_RUN` (e.g. in HLT), so `kick` sends them
//! a real-time signal whose handler sets `kvm_run.immediate_exit`: `KVM_RUN` then returns EINTR
//! at once, whether the signal arrived during the run or just before it.
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::arch::x86_64::unemulated;
use crate::exit::{ExitReason, VmControl, VmFailure};
use crate::memory::AddressSpace;
use crate::seccomp::{self, ThreadKind};

thread_local! {
    static CURRENT_CPU: Cell<Option<u32>> = const { Cell::new(None) };
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// Index of the vCPU whose thread is calling (None outside vCPU threads). Devices use it to
/// answer "which CPU am I" registers.
pub fn current_cpu() -> Option<u32> {
    CURRENT_CPU.with(|c| c.get())
}

/// Exit counters, shared by all vCPUs.
#[derive(Default)]
pub struct ExitStats {
    /// MMIO exits.
    pub mmio: AtomicU64,
    /// Port I/O exits.
    pub pio: AtomicU64,
    /// Every other exit.
    pub other: AtomicU64,
    /// Nanoseconds from VM creation to the first exit of any vCPU (0 = none yet).
    pub first_exit_ns: AtomicU64,
    /// Exits by kind and port or address (`ExitKey`), for `--stats`' breakdown.
    by_key: Mutex<HashMap<ExitKey, u64>>,
    /// Whether the vCPUs keep that breakdown (a map update per exit).
    breakdown: bool,
}

/// What one exit was, for the breakdown: the kind and, for I/O, the port or address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitKey {
    /// `in` from a port.
    PioIn(u16),
    /// `out` to a port.
    PioOut(u16),
    /// MMIO read at an address.
    MmioRead(u64),
    /// MMIO write at an address.
    MmioWrite(u64),
    /// MMIO at an address past the breakdown's limit (`MAX_KEYS`).
    MmioOther,
    /// A port write KVM kept in the coalesced ring instead of exiting (not an exit: applied at
    /// the next exit of any vCPU, see `CoalescedRing`).
    CoalescedPioOut(u16),
    /// Any other exit, by its name.
    Other(&'static str),
}

impl ExitKey {
    fn label(&self) -> String {
        match self {
            ExitKey::PioIn(port) => format!("pio_in {port:#x}"),
            ExitKey::PioOut(port) => format!("pio_out {port:#x}"),
            ExitKey::MmioRead(addr) => format!("mmio_read {addr:#x}"),
            ExitKey::MmioWrite(addr) => format!("mmio_write {addr:#x}"),
            ExitKey::MmioOther => "mmio (other addresses)".to_string(),
            ExitKey::CoalescedPioOut(port) => format!("coalesced pio_out {port:#x} (no exit)"),
            ExitKey::Other(name) => (*name).to_string(),
        }
    }
}

/// Distinct MMIO addresses the breakdown keeps apart; beyond them, `ExitKey::MmioOther`.
const MAX_KEYS: usize = 4096;

/// The exit counters at one moment, as `--stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExitCounts {
    /// MMIO exits.
    pub exits_mmio: u64,
    /// Port I/O exits.
    pub exits_pio: u64,
    /// Every other exit.
    pub exits_other: u64,
    /// Microseconds from VM creation to the first exit (0 = none).
    pub first_exit_us: u64,
}

impl ExitStats {
    /// Counters for a VM; `breakdown`: also count exits by kind and port or address.
    pub fn new(breakdown: bool) -> ExitStats {
        ExitStats {
            breakdown,
            ..ExitStats::default()
        }
    }

    /// Adds one vCPU's breakdown (kept by its thread while it runs, so counting costs no lock).
    fn merge(&self, local: &HashMap<ExitKey, u64>) {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in local {
            let key = match key {
                ExitKey::MmioRead(_) | ExitKey::MmioWrite(_)
                    if map.len() >= MAX_KEYS && !map.contains_key(key) =>
                {
                    ExitKey::MmioOther
                }
                key => *key,
            };
            *map.entry(key).or_insert(0) += n;
        }
    }

    /// The breakdown now: `"pio_out 0x3f8"`, `"mmio_read 0xb0000000"`, `"hlt"`, ... → count.
    pub fn breakdown(&self) -> BTreeMap<String, u64> {
        let map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(key, n)| (key.label(), *n)).collect()
    }

    /// The counters now.
    pub fn counts(&self) -> ExitCounts {
        ExitCounts {
            exits_mmio: self.mmio.load(Ordering::Relaxed),
            exits_pio: self.pio.load(Ordering::Relaxed),
            exits_other: self.other.load(Ordering::Relaxed),
            first_exit_us: self.first_exit_ns.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// The signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only an async-signal-safe store: a thread-local read and a volatile byte write.
    let ptr = IMMEDIATE_EXIT.with(|p| p.get());
    if !ptr.is_null() {
        // SAFETY: `ptr` points at `immediate_exit` in this thread's mapped `kvm_run`, which
        // stays mapped while the pointer is set (cleared before the VcpuFd is dropped).
        unsafe { std::ptr::write_volatile(ptr, 1) };
    }
}

/// Installs the kick signal handler (once per process).
pub fn install_kick_handler() -> std::io::Result<()> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    register_signal_handler(kick_signal(), kick_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// One side of an exit's data: what the guest reads (to fill) or writes.
pub enum ExitData<'a> {
    /// Bytes for the guest to read, to fill.
    Read(&'a mut [u8]),
    /// Bytes the guest wrote.
    Write(&'a [u8]),
}

/// A hook ahead of the memory-model dispatch that may answer an exit itself (the
/// `--bench-bare-exits` floor, `bench::BareNopExits`). Exits are counted before it is asked.
pub trait ExitShortcut: Send + Sync {
    /// True when it answered the MMIO access at `addr` (reads: `data` filled).
    fn answer_mmio(&self, addr: u64, data: ExitData<'_>) -> bool;
    /// True when it answered the port access at `port` (all of a string I/O's elements).
    fn answer_pio(&self, port: u16, data: ExitData<'_>) -> bool;
}

/// What a vCPU thread needs.
pub struct VcpuContext {
    /// The vCPU's index (its APIC id).
    pub cpu: u32,
    /// Where MMIO exits are dispatched.
    pub memory: AddressSpace,
    /// Where port I/O exits are dispatched.
    pub io: AddressSpace,
    /// Ends the VM and tells the vCPU to stop.
    pub control: Arc<VmControl>,
    /// Counters this vCPU adds to.
    pub stats: Arc<ExitStats>,
    /// When the VM was created, for the first-exit time.
    pub created: Instant,
    /// Answers some exits before dispatch (benchmarks); None for every real VM.
    pub shortcut: Option<Arc<dyn ExitShortcut>>,
    /// The VM's coalesced-write ring, when KVM has one (see `CoalescedRing`).
    pub coalesced: Option<Arc<CoalescedRing>>,
}

/// A running vCPU thread.
pub struct VcpuThread {
    /// The vCPU's index.
    pub cpu: u32,
    handle: JoinHandle<()>,
}

impl VcpuThread {
    /// Starts a `vcpuN` thread running `fd` until the VM stops.
    pub fn spawn(fd: VcpuFd, ctx: VcpuContext) -> std::io::Result<VcpuThread> {
        let cpu = ctx.cpu;
        let handle = crate::threads::named(format!("vcpu{cpu}")).spawn(move || run(fd, ctx))?;
        Ok(VcpuThread { cpu, handle })
    }

    /// True when the thread returned.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Interrupts `KVM_RUN` (see module docs).
    pub fn kick(&self) {
        if !self.handle.is_finished() {
            let _ = self.handle.kill(kick_signal());
        }
    }

    /// Waits for the thread; a panic in it is logged.
    pub fn join(self) {
        if self.handle.join().is_err() {
            log::error!("vcpu{} thread panicked", self.cpu);
        }
    }
}

fn run(mut fd: VcpuFd, ctx: VcpuContext) {
    CURRENT_CPU.with(|c| c.set(Some(ctx.cpu)));
    if let Err(e) = seccomp::enter(ThreadKind::Vcpu) {
        ctx.control
            .request_exit(ExitReason::Error(VmFailure::Seccomp {
                thread: format!("vcpu{}", ctx.cpu),
                reason: e.to_string(),
            }));
        return;
    }
    // The kick signal must be deliverable to this thread even if the spawner blocked it.
    let _ = vmm_sys_util::signal::unblock_signal(kick_signal());
    let immediate_exit: *mut u8 = &mut fd.get_kvm_run().immediate_exit;
    IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));

    let reason = run_loop(&mut fd, &ctx);

    IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
    // A VM stopped from outside (SIGTERM from a user or a test's watchdog) was often stuck:
    // say where each vCPU was, so a hung guest can be told from a hung VMM.
    if reason.is_none() && matches!(ctx.control.reason(), Some(ExitReason::Signal(_))) {
        eprintln!(
            "vmm: vcpu{} stopped{}",
            ctx.cpu,
            describe_regs(&fd, &ctx.memory)
        );
    }
    if let Some(reason) = reason {
        ctx.control.request_exit(reason);
    }
}

/// Runs until the VM stops; returns a reason if this vCPU ended the VM itself.
fn run_loop(fd: &mut VcpuFd, ctx: &VcpuContext) -> Option<ExitReason> {
    let mut counts = ctx.stats.breakdown.then(HashMap::new);
    let reason = exit_loop(fd, ctx, &mut counts);
    if let Some(counts) = &counts {
        ctx.stats.merge(counts);
    }
    reason
}

/// Counts one exit in this vCPU's breakdown. MMIO addresses come from the guest, so past
/// `MAX_KEYS` distinct keys a new address counts as `MmioOther`: the map stays bounded however
/// many addresses a guest touches.
fn tally(counts: &mut Option<HashMap<ExitKey, u64>>, key: ExitKey) {
    let Some(counts) = counts else {
        return;
    };
    let key = match key {
        ExitKey::MmioRead(_) | ExitKey::MmioWrite(_)
            if counts.len() >= MAX_KEYS && !counts.contains_key(&key) =>
        {
            ExitKey::MmioOther
        }
        key => key,
    };
    *counts.entry(key).or_insert(0) += 1;
}

fn exit_loop(
    fd: &mut VcpuFd,
    ctx: &VcpuContext,
    counts: &mut Option<HashMap<ExitKey, u64>>,
) -> Option<ExitReason> {
    let kvm_run: *const kvm_bindings::kvm_run = fd.get_kvm_run();
    let shortcut = ctx.shortcut.as_deref();
    let mut first = true;
    while !ctx.control.stopping() {
        let exit = fd.run();
        if first {
            first = false;
            let ns = ctx.created.elapsed().as_nanos() as u64;
            let _ = ctx.stats.first_exit_ns.compare_exchange(
                0,
                ns.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        // Writes KVM held back in the coalesced ring happened before this exit: apply them
        // first (a conf1 data access must see the address written just before it).
        if let Some(ring) = &ctx.coalesced {
            ring.drain(|port, data| {
                tally(counts, ExitKey::CoalescedPioOut(port));
                ctx.io.write(port as u64, data);
            });
        }
        match exit {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                ctx.stats.mmio.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::MmioRead(addr));
                if !shortcut.is_some_and(|s| s.answer_mmio(addr, ExitData::Read(&mut *data))) {
                    ctx.memory.read(addr, data);
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ctx.stats.mmio.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::MmioWrite(addr));
                if !shortcut.is_some_and(|s| s.answer_mmio(addr, ExitData::Write(data))) {
                    ctx.memory.write(addr, data);
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                ctx.stats.pio.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::PioIn(port));
                if shortcut.is_some_and(|s| s.answer_pio(port, ExitData::Read(&mut *data))) {
                    continue;
                }
                let size = io_element_size(kvm_run);
                for element in data.chunks_mut(size) {
                    ctx.io.read(port as u64, element);
                }
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.stats.pio.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::PioOut(port));
                if shortcut.is_some_and(|s| s.answer_pio(port, ExitData::Write(data))) {
                    continue;
                }
                let size = io_element_size(kvm_run);
                for element in data.chunks(size) {
                    ctx.io.write(port as u64, element);
                }
            }
            Ok(VcpuExit::Shutdown) => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("shutdown"));
                return Some(ExitReason::TripleFault {
                    cpu: ctx.cpu,
                    state: describe_regs(fd, &ctx.memory),
                });
            }
            Ok(VcpuExit::Hlt) => {
                // Only without an in-kernel LAPIC; with it KVM blocks in the kernel.
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("hlt"));
            }
            Ok(VcpuExit::Intr) => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("intr"));
                fd.set_kvm_immediate_exit(0);
            }
            Ok(VcpuExit::InternalError) => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("internal_error"));
                if unemulated::complete(fd, &ctx.memory) {
                    continue;
                }
                return Some(ExitReason::Error(VmFailure::InternalError {
                    cpu: ctx.cpu,
                    state: describe_regs(fd, &ctx.memory),
                }));
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("fail_entry"));
                return Some(ExitReason::Error(VmFailure::EntryFailed {
                    cpu: ctx.cpu,
                    reason,
                    state: describe_regs(fd, &ctx.memory),
                }));
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("system_event"));
                return Some(match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => ExitReason::Reset,
                    _ => ExitReason::GuestExit(0),
                });
            }
            Ok(other) => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("unhandled"));
                log::warn!("vcpu{}: unhandled exit {other:?}", ctx.cpu);
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                ctx.stats.other.fetch_add(1, Ordering::Relaxed);
                tally(counts, ExitKey::Other("eintr"));
                fd.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                return Some(ExitReason::Error(VmFailure::KvmRun {
                    cpu: ctx.cpu,
                    errno: e.errno(),
                }));
            }
        }
    }
    None
}

/// KVM's coalesced I/O ring (`KVM_REGISTER_COALESCED_MMIO` with `KVM_COALESCED_PIO`): guest
/// writes to a registered port do not exit; KVM appends them to one page shared by the VM's
/// vCPUs, and the VMM applies them, in order, at the next exit of any vCPU. For a register whose
/// writes only matter to the next access of another register (PCI conf1's address port: the data
/// port's access exits anyway), that halves the exits. Each vCPU thread drains it before handling
/// its exit; the lock keeps two drains from applying one entry twice.
pub struct CoalescedRing {
    page: std::ptr::NonNull<u8>,
    page_size: usize,
    drain: Mutex<()>,
}

// SAFETY: the page is a MAP_SHARED mapping owned by this value; the entries and `first` are
// only accessed under `drain`, `last` (written by KVM) through an atomic load.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above: every shared access is synchronised.
unsafe impl Sync for CoalescedRing {}

const RING_HEADER: usize = std::mem::size_of::<kvm_bindings::kvm_coalesced_mmio_ring>();
const RING_ENTRY: usize = std::mem::size_of::<kvm_bindings::kvm_coalesced_mmio>();

impl CoalescedRing {
    /// Registers `ports` (`(first port, length)`) for coalescing and maps the ring through
    /// `vcpu` (the page is the VM's, whichever vCPU maps it). None when KVM lacks
    /// `KVM_CAP_COALESCED_PIO` or refuses: the writes then exit as before.
    pub fn set_up(
        kvm: &kvm_ioctls::Kvm,
        vm: &kvm_ioctls::VmFd,
        vcpu: &VcpuFd,
        ports: &[(u16, u32)],
    ) -> Option<CoalescedRing> {
        use std::os::fd::AsRawFd;
        if !kvm.check_extension(kvm_ioctls::Cap::CoalescedPio) {
            return None;
        }
        // SAFETY: sysconf with a valid name has no other effect.
        let page_size = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let offset = kvm_bindings::KVM_COALESCED_MMIO_PAGE_OFFSET as usize * page_size;
        // SAFETY: a new shared mapping of one page of the vCPU fd at KVM's ring offset; no
        // existing memory is affected. MAP_FAILED is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            log::debug!(
                "coalesced I/O ring: mmap: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let ring = CoalescedRing {
            page: std::ptr::NonNull::new(addr.cast())?,
            page_size,
            drain: Mutex::new(()),
        };
        for (i, &(port, len)) in ports.iter().enumerate() {
            let zone = kvm_ioctls::IoEventAddress::Pio(port as u64);
            if let Err(e) = vm.register_coalesced_mmio(zone, len) {
                log::debug!("coalesced I/O at port {port:#x}: {e}");
                // Without the ring nobody would apply the writes KVM keeps for the zones
                // already registered: take them back, so those ports exit as before.
                for &(port, len) in &ports[..i] {
                    let zone = kvm_ioctls::IoEventAddress::Pio(port as u64);
                    let _ = vm.unregister_coalesced_mmio(zone, len);
                }
                return None;
            }
        }
        Some(ring)
    }

    fn index(&self, at: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: `first` (offset 0) and `last` (offset 4) are aligned u32s at the start of the
        // mapped page, which lives as long as `self`.
        unsafe {
            &*self
                .page
                .as_ptr()
                .add(at)
                .cast::<std::sync::atomic::AtomicU32>()
        }
    }

    /// Applies every pending write, oldest first, as `apply(port, bytes)`; returns how many.
    pub fn drain(&self, mut apply: impl FnMut(u16, &[u8])) -> usize {
        let (first, last) = (self.index(0), self.index(4));
        if first.load(Ordering::Relaxed) == last.load(Ordering::Acquire) {
            return 0;
        }
        let _guard = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        let slots = (self.page_size - RING_HEADER) / RING_ENTRY;
        let mut applied = 0;
        loop {
            let at = first.load(Ordering::Relaxed) as usize;
            if at == last.load(Ordering::Acquire) as usize || at >= slots {
                break;
            }
            // SAFETY: `at < slots`, so the entry lies inside the page; KVM wrote it before
            // publishing `last` (the Acquire load above), and does not touch it until `first`
            // moves past it.
            let entry: kvm_bindings::kvm_coalesced_mmio = unsafe {
                std::ptr::read_volatile(
                    self.page.as_ptr().add(RING_HEADER + at * RING_ENTRY).cast(),
                )
            };
            let len = (entry.len as usize).min(entry.data.len());
            apply(entry.phys_addr as u16, &entry.data[..len]);
            first.store(((at + 1) % slots) as u32, Ordering::Release);
            applied += 1;
        }
        applied
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: unmaps the page `set_up` mapped; nothing refers to it after `self`.
        unsafe { libc::munmap(self.page.as_ptr().cast(), self.page_size) };
    }
}

/// Element size of the current `KVM_EXIT_IO` (`VcpuExit` only gives the `size * count` bytes).
fn io_element_size(run: *const kvm_bindings::kvm_run) -> usize {
    // SAFETY: `run` is this vCPU's mapped kvm_run; the exit reason is KVM_EXIT_IO, so the `io`
    // member of the union is the valid one. Read by value, no reference is kept.
    let size = unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io.size).read_volatile() };
    match size {
        1 | 2 | 4 => size as usize,
        _ => 1,
    }
}

fn describe_regs(fd: &VcpuFd, memory: &AddressSpace) -> String {
    match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => {
            let mut text = format!(
                ": rip={:#x} rsp={:#x} rflags={:#x} cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                r.rip, r.rsp, r.rflags, s.cs.selector, s.cr0, s.cr3, s.cr4, s.efer
            );
            if r.rip == 0xFFF0 && s.cs.selector == 0xF000 {
                // KVM on AMD reinitializes the vCPU before it reports a shutdown: these are
                // power-on registers, not the fault's.
                text.push_str(" (the vCPU's reset state: KVM on AMD reinitializes it on a shutdown; the faulting rip is in the host's kvm:kvm_exit trace)");
                return text;
            }
            if let Some(pa) = unemulated::translate(memory, unemulated::PageTables::of(&s), r.rip) {
                let mut code = [0u8; 16];
                memory.read(pa, &mut code);
                let bytes: Vec<String> = code.iter().map(|b| format!("{b:02x}")).collect();
                text.push_str(&format!(" code@rip: {}", bytes.join(" ")));
            }
            text
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_touching_many_mmio_addresses_keeps_the_breakdown_bounded() {
        let mut counts = Some(HashMap::new());
        for addr in 0..(MAX_KEYS as u64 + 1000) {
            tally(&mut counts, ExitKey::MmioRead(addr * 8));
        }
        tally(&mut counts, ExitKey::MmioRead(0)); // a known address still counts as itself
        let counts = counts.unwrap();
        assert!(counts.len() <= MAX_KEYS + 1);
        assert_eq!(counts[&ExitKey::MmioRead(0)], 2);
        assert_eq!(counts[&ExitKey::MmioOther], 1000);
    }

    #[test]
    fn without_the_breakdown_nothing_is_counted() {
        let mut counts = None;
        tally(&mut counts, ExitKey::PioOut(0x3f8));
        assert!(counts.is_none());
        assert!(ExitStats::new(false).breakdown().is_empty());
    }
}
