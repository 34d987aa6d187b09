//! The virtual machine: KVM VM with in-kernel irqchip and PIT, the system memory and I/O address
//! spaces (`vmm::memory`, each followed by a `KvmMemoryListener`), guest RAM, the base devices
//! (testdev, i8042, serial), the vCPU threads and the main wait loop (exit requests, signals).
//!
//! Other parts of the VMM extend a `Vm` between `Vm::new` and `Vm::run` through its seams:
//! `vm_fd()` (interrupt routing, irqfds), `memory()`/`io()` (map device regions, then `commit()`),
//! `control()` (ask the VM to end), `guest_memory()` (load images).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout::{self, TESTDEV_PIO_BASE, TESTDEV_PIO_SIZE};
use crate::arch::x86_64::BootError;
use crate::devices::console::{Console, ConsoleSink};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_SIZE};
use crate::devices::serial::{SerialPort, COM1_BASE, COM1_GSI, COM1_SIZE};
use crate::devices::testdev::{TestDev, TestDevMmio, TestDevPio};
use crate::interrupts::InterruptRouter;
use crate::memory::{
    AddressSpace, IoAccess, KvmMemoryListener, MemoryError, MemoryRegion, SpaceKind,
};
use crate::vcpu::{self, ExitStats, VcpuContext, VcpuThread};

/// Why a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote its exit code to the testdev.
    GuestExit(i32),
    /// i8042 reset (or a KVM reset event): a normal power-off for our purposes.
    Reset,
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    TripleFault { cpu: u32 },
    /// The guest-program exception stub reported an unexpected exception.
    Crash(CrashRecord),
    /// SIGINT/SIGTERM.
    Signal(i32),
    /// The VMM could not continue running the guest.
    Error(String),
}

/// What the exception stub saved (see `layout::MAILBOX_CRASH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashRecord {
    pub cpu: u32,
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub cr2: u64,
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV",
    "#VC",
    "#SX",
    "reserved",
];

impl std::fmt::Display for CrashRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = EXCEPTION_NAMES.get(self.vector as usize).unwrap_or(&"?");
        write!(
            f,
            "guest exception on vcpu{}: vector {} ({name}) error_code={:#x} rip={:#x} cs={:#x} \
             rflags={:#x} rsp={:#x} ss={:#x}",
            self.cpu,
            self.vector,
            self.error_code,
            self.rip,
            self.cs,
            self.rflags,
            self.rsp,
            self.ss
        )?;
        if self.vector == 14 {
            write!(f, " cr2={:#x}", self.cr2)?;
        }
        Ok(())
    }
}

impl ExitReason {
    /// The vmm's process exit status for this reason.
    pub fn exit_status(&self) -> i32 {
        match self {
            ExitReason::GuestExit(code) => code & 0xFF,
            ExitReason::Reset | ExitReason::Signal(_) => 0,
            ExitReason::Crash(_) => layout::EXIT_STATUS_CRASH,
            ExitReason::TripleFault { .. } => 2,
            ExitReason::Error(_) => 1,
        }
    }

    /// A line for stderr, if this reason deserves one.
    pub fn message(&self) -> Option<String> {
        match self {
            ExitReason::GuestExit(_) | ExitReason::Reset => None,
            ExitReason::TripleFault { cpu } => Some(format!(
                "vmm: guest triple fault (KVM_EXIT_SHUTDOWN) on vcpu{cpu}"
            )),
            ExitReason::Crash(record) => Some(format!("vmm: {record}")),
            ExitReason::Signal(sig) => Some(format!("vmm: terminating on signal {sig}")),
            ExitReason::Error(e) => Some(format!("vmm: {e}")),
        }
    }
}

/// How a VM is asked to end, from any thread (devices, vCPUs, the signal loop). The first
/// request wins.
pub struct VmControl {
    reason: Mutex<Option<ExitReason>>,
    stop: AtomicBool,
    event: EventFd,
}

impl VmControl {
    fn new() -> std::io::Result<VmControl> {
        Ok(VmControl {
            reason: Mutex::new(None),
            stop: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    pub fn request_exit(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.event.write(1);
    }

    /// True once an exit was requested: vCPU loops stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Readable when an exit was requested (for poll loops).
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

/// Where the serial port's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    Stdio,
    File(std::path::PathBuf),
    None,
}

/// What `Vm::new` needs.
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub ram_size: u64,
    pub cpus: u32,
    /// Prefix for console lines (`[NAME] `).
    pub name: Option<String>,
    pub serial: SerialConfig,
    /// Answer testdev NOP MMIO exits in the vCPU loop (benchmark floor).
    pub bare_nop_exits: bool,
    /// Forward the vmm's stdin to the serial port (Linux consoles).
    pub serial_input: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            ram_size: layout::DEFAULT_RAM_SIZE,
            cpus: 1,
            name: None,
            serial: SerialConfig::Stdio,
            bare_nop_exits: false,
            serial_input: false,
        }
    }
}

/// Errors creating or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    #[error("{0}")]
    Boot(#[from] BootError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

/// The signals the VM's wait loop handles: SIGINT, SIGTERM (end the VM), SIGUSR1 (memory
/// report).
pub fn control_signals() -> SigSet {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGUSR1);
    signals
}

/// Blocks `control_signals()` in the calling thread, so that threads it starts afterwards
/// inherit the mask and the signals are only ever read from `Vm::run`'s signalfd. Call it first
/// thing in `main`, before any thread exists: a thread without the mask would take SIGTERM's
/// default action and kill the process uncleanly. `Vm::run` calls it again (harmless).
pub fn block_control_signals() -> std::io::Result<SigSet> {
    let signals = control_signals();
    signals.thread_block().map_err(std::io::Error::from)?;
    Ok(signals)
}

/// A created VM, not yet running.
pub struct Vm {
    kvm: Kvm,
    vm_fd: Arc<VmFd>,
    config: VmConfig,
    memory: AddressSpace,
    io: AddressSpace,
    ram: MemoryRegion,
    guest_memory: GuestMemoryMmap,
    control: Arc<VmControl>,
    console: Arc<Console>,
    stats: Arc<ExitStats>,
    created: Instant,
    vcpus: Vec<VcpuFd>,
    serial: Option<Arc<SerialPort>>,
    interrupts: Arc<InterruptRouter>,
    pci: Arc<crate::pci::PciBus>,
}

impl Vm {
    /// Creates the VM with RAM, irqchip, PIT and the base devices, and its vCPUs (not yet
    /// configured: see `setup_program` / `arch::x86_64::linux`).
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        let created = Instant::now();
        if config.cpus == 0 || config.cpus > layout::MAX_CPUS {
            return Err(VmError::Config(format!(
                "--cpus must be 1..={}",
                layout::MAX_CPUS
            )));
        }
        if config.ram_size < (8 << 20) || config.ram_size > layout::DEVICE_AREA_ADDR {
            return Err(VmError::Config(format!(
                "--memory must be between 8M and {}M (RAM ends below the device area at {:#x})",
                layout::DEVICE_AREA_ADDR >> 20,
                layout::DEVICE_AREA_ADDR
            )));
        }
        if config.ram_size & ((2 << 20) - 1) != 0 {
            return Err(VmError::Config("--memory must be a multiple of 2M".into()));
        }

        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let vm_fd = Arc::new(kvm.create_vm().map_err(kvm_err("create VM"))?);
        vm_fd
            .set_tss_address(0xFFFB_D000)
            .map_err(kvm_err("set TSS address"))?;
        vm_fd.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd.create_pit2(pit).map_err(kvm_err("create PIT"))?;

        // Address spaces. The system-memory root spans the whole 64-bit space.
        let sysmem = MemoryRegion::container("system", u64::MAX);
        let ram = MemoryRegion::ram("ram", config.ram_size)?;
        sysmem.add_subregion(0, &ram, 0);
        let memory = AddressSpace::new("memory", sysmem, SpaceKind::Memory);
        memory.add_listener(Box::new(KvmMemoryListener::new(
            vm_fd.clone(),
            SpaceKind::Memory,
        )));
        let io_root = MemoryRegion::container("io", 0x1_0000);
        let io_space = AddressSpace::new("I/O", io_root, SpaceKind::Io);
        io_space.add_listener(Box::new(KvmMemoryListener::new(
            vm_fd.clone(),
            SpaceKind::Io,
        )));

        // One routing table per VM (KVM_SET_GSI_ROUTING replaces it whole); PCI bus 0 with its
        // config accessors (ECAM, conf1) maps BARs into the two spaces.
        let interrupts = InterruptRouter::new(vm_fd.clone());
        let pci = crate::pci::attach(&memory, &io_space, layout::PCI_ECAM_ADDR);

        let host = ram
            .host_addr()
            .ok_or_else(|| VmError::Config("RAM region has no host mapping".into()))?;
        // SAFETY: `host` is the RAM region's live mapping of `ram_size` bytes; `Vm` keeps the
        // region (and so the mapping) alive for as long as it hands out this view, and the
        // devices holding clones are dropped with the VM.
        let mapping = unsafe {
            MmapRegion::build_raw(
                host,
                config.ram_size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            )
        }
        .map_err(|e| VmError::Config(format!("RAM view: {e}")))?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(0))
            .ok_or_else(|| VmError::Config("RAM view overflows".into()))?;
        let guest_memory = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| VmError::Config(format!("RAM view: {e}")))?;

        let control = Arc::new(VmControl::new().map_err(io("eventfd"))?);
        let sink = match &config.serial {
            SerialConfig::File(path) => ConsoleSink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io("open --serial file"))?,
            ),
            SerialConfig::None => ConsoleSink::Discard,
            SerialConfig::Stdio => ConsoleSink::Stdout,
        };
        let console = Arc::new(Console::new(config.name.as_deref(), sink));

        let mut vm = Vm {
            kvm,
            vm_fd,
            config,
            memory,
            io: io_space,
            ram,
            guest_memory,
            control,
            console,
            stats: Arc::new(ExitStats::default()),
            created,
            vcpus: Vec::new(),
            serial: None,
            interrupts,
            pci,
        };
        vm.add_base_devices()?;
        for cpu in 0..vm.config.cpus {
            let fd = vm
                .vm_fd
                .create_vcpu(cpu as u64)
                .map_err(kvm_err("create vCPU"))?;
            vm.vcpus.push(fd);
        }
        vm.memory.commit();
        vm.io.commit();
        Ok(vm)
    }

    fn add_base_devices(&mut self) -> Result<(), VmError> {
        let testdev = Arc::new(TestDev::new(
            self.control.clone(),
            self.console.clone(),
            self.guest_memory.clone(),
            self.config.cpus,
            self.config.ram_size,
            self.created,
        ));
        let mmio = MemoryRegion::io(
            "testdev",
            layout::TESTDEV_SIZE,
            Arc::new(TestDevMmio(testdev.clone())),
            IoAccess::sizes(1, 8),
        );
        self.memory
            .root()
            .add_subregion(layout::TESTDEV_ADDR, &mmio, 0);
        let pio = MemoryRegion::io(
            "testdev-pio",
            TESTDEV_PIO_SIZE as u64,
            Arc::new(TestDevPio(testdev)),
            IoAccess::sizes(1, 4),
        );
        self.io
            .root()
            .add_subregion(TESTDEV_PIO_BASE as u64, &pio, 0);

        let i8042 = MemoryRegion::io(
            "i8042",
            I8042_SIZE as u64,
            Arc::new(I8042::new(self.control.clone())),
            IoAccess::sizes(1, 1),
        );
        self.io.root().add_subregion(I8042_BASE as u64, &i8042, 0);

        let irq = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"))?);
        self.vm_fd
            .register_irqfd(&irq, COM1_GSI)
            .map_err(kvm_err("irqfd for COM1"))?;
        let serial = Arc::new(SerialPort::new(irq, self.console.clone()));
        let region = MemoryRegion::io(
            "serial",
            COM1_SIZE as u64,
            serial.clone(),
            IoAccess::sizes(1, 1),
        );
        self.io.root().add_subregion(COM1_BASE as u64, &region, 0);
        self.serial = Some(serial);
        Ok(())
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }
    /// The KVM VM (interrupt routing, irqfds, ioeventfds).
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm_fd
    }
    /// System memory address space: map device regions under `memory().root()`, then `commit()`.
    pub fn memory(&self) -> &AddressSpace {
        &self.memory
    }
    /// Port I/O address space (64 KiB).
    pub fn io(&self) -> &AddressSpace {
        &self.io
    }
    /// Guest RAM as a vm-memory view (for loaders).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.guest_memory
    }
    pub fn ram(&self) -> &MemoryRegion {
        &self.ram
    }
    pub fn control(&self) -> &Arc<VmControl> {
        &self.control
    }
    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }
    pub fn stats(&self) -> &Arc<ExitStats> {
        &self.stats
    }
    pub fn config(&self) -> &VmConfig {
        &self.config
    }
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }
    /// The VM's GSI routing table and irqfds (MSI-X vectors of PCI devices).
    pub fn interrupts(&self) -> &Arc<InterruptRouter> {
        &self.interrupts
    }
    /// PCI bus 0: plug devices with `pci().add_device(..)`.
    pub fn pci(&self) -> &Arc<crate::pci::PciBus> {
        &self.pci
    }
    pub fn serial(&self) -> Option<&Arc<SerialPort>> {
        self.serial.as_ref()
    }
    /// When `Vm::new` started.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Loads a guest program (static ELF) and puts every vCPU at its entry in ring 3.
    pub fn setup_program(&self, image: &[u8]) -> Result<(), VmError> {
        use crate::arch::x86_64::program;
        let ram_size = self.config.ram_size;
        let ncpus = self.config.cpus;
        let loaded = program::load(&self.guest_memory, image, ram_size, ncpus)?;
        for (cpu, fd) in self.vcpus.iter().enumerate() {
            program::setup_vcpu(&self.kvm, fd, cpu as u32, ncpus, ram_size, &loaded)?;
        }
        Ok(())
    }

    /// Moves what stdin has to the serial port's receive FIFO; false once stdin is closed.
    fn forward_stdin(&self) -> bool {
        let mut buf = [0u8; 64];
        match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                if let Some(serial) = &self.serial {
                    // A full FIFO drops input, as a real UART would.
                    serial.enqueue_input(&buf[..n]);
                }
                true
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => true,
            Err(e) => {
                log::warn!("stdin: {e}; no more serial input");
                false
            }
        }
    }

    /// `info mtree` followed by `info flatview` of both address spaces.
    pub fn memory_report(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.memory.info_mtree(),
            self.io.info_mtree(),
            self.memory.info_flatview(),
            self.io.info_flatview()
        )
    }

    /// Runs the vCPUs until the VM ends; SIGINT/SIGTERM end it, SIGUSR1 prints the memory
    /// report on stderr. Returns why it ended.
    pub fn run(mut self) -> Result<ExitReason, VmError> {
        vcpu::install_kick_handler().map_err(io("kick signal handler"))?;
        let signals = block_control_signals().map_err(io("block signals"))?;
        let signal_fd = SignalFd::with_flags(&signals, nix::sys::signalfd::SfdFlags::SFD_NONBLOCK)
            .map_err(|e| io("signalfd")(e.into()))?;

        let mut threads = Vec::new();
        for (cpu, fd) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let ctx = VcpuContext {
                cpu: cpu as u32,
                memory: self.memory.clone(),
                io: self.io.clone(),
                control: self.control.clone(),
                stats: self.stats.clone(),
                created: self.created,
                bare_nop_exits: self.config.bare_nop_exits,
            };
            match VcpuThread::spawn(fd, ctx) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.control
                        .request_exit(ExitReason::Error(format!("spawn vcpu{cpu}: {e}")));
                    break;
                }
            }
        }

        let stdin = std::io::stdin();
        let mut stdin_open = self.config.serial_input && self.serial.is_some();
        while !self.control.stopping() {
            let mut fds = vec![
                // SAFETY: the eventfd outlives this borrow (owned by `self.control`).
                PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(self.control.event().as_raw_fd()) },
                    PollFlags::POLLIN,
                ),
                PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
            ];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    self.control
                        .request_exit(ExitReason::Error(format!("poll: {e}")));
                }
            }
            let stdin_ready = stdin_open
                && fds[2]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
            drop(fds);
            while let Ok(Some(info)) = signal_fd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGUSR1 {
                    eprintln!("{}", self.memory_report());
                } else {
                    self.control.request_exit(ExitReason::Signal(signo));
                }
            }
            if stdin_ready {
                stdin_open = self.forward_stdin();
            }
        }

        // Kick until every vCPU thread has left KVM_RUN (a kick can race with entry; the
        // immediate_exit flag covers most of that window, repeating covers the rest).
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            for t in &threads {
                t.kick();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for t in threads {
            if t.is_finished() {
                t.join();
            } else {
                log::error!("vcpu{} did not stop", t.cpu);
            }
        }
        self.console.flush();
        Ok(self
            .control
            .reason()
            .unwrap_or(ExitReason::Error("VM stopped without a reason".into())))
    }
}
