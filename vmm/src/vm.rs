//! The virtual machine: KVM VM with in-kernel irqchip and PIT, the system memory and I/O address
//! spaces (`vmm::memory`, each followed by a `KvmMemoryListener`), guest RAM, its devices (a
//! `DeviceSet`: the machine's fixed devices are plugged at creation through the same path as
//! every other, `devices::plug`), the vCPU threads and the main wait loop (exit requests,
//! signals). Only `boot` and `machine` sit above it (docs/vmm.md).
//!
//! Other parts of the VMM extend a `Vm` between `Vm::new` and `Vm::run` through its seams:
//! `plug()` (devices), `memory()`/`io()` (map regions, then `commit()`), `guest_memory()`,
//! `vcpus()` (load and set up a guest), `set_exit_shortcut()` (benchmarks).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::arch::x86_64::layout;
use crate::background::BackgroundThreads;
use crate::devices::console::{Console, ConsoleSink};
use crate::devices::plug::{DeviceError, DeviceOptions, DeviceSet, Plugged, MACHINE_DEVICES};
use crate::devices::{DeviceContext, MachineInfo};
use crate::exit::{ExitReason, VmControl, VmFailure};
use crate::interrupts::InterruptRouter;
use crate::memory::{
    AddressSpace, GuestRam, GuestRamRegion, KvmMemoryListener, MemoryError, MemoryRegion, SpaceKind,
};
use crate::vcpu::{self, CoalescedRing, ExitShortcut, ExitStats, VcpuContext, VcpuThread};

/// Where the serial port's output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    /// The VMM's stdout.
    Stdio,
    /// Appended to this file.
    File(std::path::PathBuf),
    /// Discarded (no serial port device).
    None,
}

/// What `Vm::new` needs.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// How guest RAM is allocated (`--memory ...,shared=on,hugepages=on`).
    pub ram_backing: crate::memory::RamBacking,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Prefix for console lines (`[NAME] `).
    pub name: Option<String>,
    /// Where the serial port writes.
    pub serial: SerialConfig,
    /// Forward the vmm's stdin to the serial port (Linux consoles).
    pub serial_input: bool,
    /// Count exits by kind and port or address (`--stats`' `exits_by`): a map update per exit,
    /// so only when asked for.
    pub exit_breakdown: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            ram_size: layout::DEFAULT_RAM_SIZE,
            ram_backing: Default::default(),
            cpus: 1,
            name: None,
            serial: SerialConfig::Stdio,
            serial_input: false,
            exit_breakdown: false,
        }
    }
}

/// Errors creating or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm could not be opened (absent, or no permission).
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// A memory region could not be created.
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    /// A device could not be created.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A vCPU count the machine cannot have.
    #[error("{0} vCPUs: the machine has 1 to {max}", max = layout::MAX_CPUS)]
    CpuCount(u32),
    /// A RAM size outside what the guest address space holds below the device area.
    #[error(
        "{size:#x} bytes of RAM: must be between 8 MiB and {max} MiB (RAM ends below the device area at {area:#x})",
        size = .0,
        max = layout::DEVICE_AREA_ADDR >> 20,
        area = layout::DEVICE_AREA_ADDR
    )]
    RamSize(u64),
    /// A RAM size that is not a whole number of 2 MiB pages.
    #[error("{0:#x} bytes of RAM: must be a multiple of 2 MiB")]
    RamAlignment(u64),
    /// Guest RAM could not be described for the loaders.
    #[error("guest RAM view: {0}")]
    RamView(#[from] vm_memory::mmap::MmapRegionError),
    /// Guest RAM could not be described for the loaders.
    #[error("guest RAM view: {0}")]
    RamRegions(#[from] vm_memory::GuestRegionCollectionError),
    /// Guest RAM is not backed by host memory (a VMM bug).
    #[error("guest RAM has no host mapping")]
    RamUnmapped,
    /// The RAM size does not fit the guest-physical address space.
    #[error("guest RAM of {0:#x} bytes does not fit the guest address space")]
    RamTooLarge(u64),
    /// A host system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
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
    /// Keeps the RAM mapping that `guest_memory` views alive.
    _ram: MemoryRegion,
    guest_memory: GuestMemoryMmap,
    control: Arc<VmControl>,
    console: Arc<Console>,
    stats: Arc<ExitStats>,
    created: Instant,
    vcpus: Vec<VcpuFd>,
    devices: DeviceSet,
    threads: Arc<BackgroundThreads>,
    exit_shortcut: Option<Arc<dyn ExitShortcut>>,
    coalesced: Option<Arc<CoalescedRing>>,
}

/// Ports whose writes KVM buffers instead of exiting (`vcpu::CoalescedRing`): PCI conf1's
/// address register, which Linux writes before every config access through the data port
/// (twice 8,192 times at boot on AMD family 0Fh CPUs, where it looks for an AGP bridge on
/// every bus: docs/boot-time.md). Its value matters only to the next data-port access, which
/// exits and applies it first. Byte writes to 0xCF9 (a reset register we do not model) land in
/// the same 4 bytes and are ignored as before.
const COALESCED_PORTS: &[(u16, u32)] = &[(crate::pci::bus::CONF1_ADDRESS_PORT as u16, 4)];

impl Vm {
    /// Creates the VM with RAM, irqchip, PIT and the base devices, and its vCPUs (not yet
    /// configured: see `boot`).
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        let created = Instant::now();
        if config.cpus == 0 || config.cpus > layout::MAX_CPUS {
            return Err(VmError::CpuCount(config.cpus));
        }
        if config.ram_size < (8 << 20) || config.ram_size > layout::DEVICE_AREA_ADDR {
            return Err(VmError::RamSize(config.ram_size));
        }
        if config.ram_size & ((2 << 20) - 1) != 0 {
            return Err(VmError::RamAlignment(config.ram_size));
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
        let ram = config.ram_backing.create("ram", config.ram_size)?;
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

        let guest_memory = ram_view(&ram, config.ram_size)?;

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

        let threads = BackgroundThreads::new();
        let devices = DeviceSet::new(DeviceContext {
            pci,
            interrupts,
            memory: memory.clone(),
            io: io_space.clone(),
            threads: threads.clone(),
            control: control.clone(),
            console: console.clone(),
            guest_memory: guest_memory.clone(),
            machine: MachineInfo {
                cpus: config.cpus,
                ram_size: config.ram_size,
                created,
            },
            ram: GuestRam::new(vec![GuestRamRegion {
                guest_addr: 0,
                region: ram.clone(),
            }]),
        });
        let stats = ExitStats::new(config.exit_breakdown);
        let mut vm = Vm {
            kvm,
            vm_fd,
            config,
            memory,
            io: io_space,
            _ram: ram,
            guest_memory,
            control,
            console,
            stats: Arc::new(stats),
            created,
            vcpus: Vec::new(),
            devices,
            threads,
            exit_shortcut: None,
            coalesced: None,
        };
        for device in MACHINE_DEVICES {
            vm.devices.plug(&DeviceOptions::Fixed(device))?;
        }
        for cpu in 0..vm.config.cpus {
            let fd = vm
                .vm_fd
                .create_vcpu(cpu as u64)
                .map_err(kvm_err("create vCPU"))?;
            vm.vcpus.push(fd);
        }
        vm.coalesced =
            CoalescedRing::set_up(&vm.kvm, &vm.vm_fd, &vm.vcpus[0], COALESCED_PORTS).map(Arc::new);
        vm.memory.commit();
        vm.io.commit();
        Ok(vm)
    }

    /// The /dev/kvm handle (capability checks).
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
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
    /// Ask the VM to end, from any thread.
    pub fn control(&self) -> &Arc<VmControl> {
        &self.control
    }
    /// Exit counters for `--stats`.
    pub fn stats(&self) -> &Arc<ExitStats> {
        &self.stats
    }
    /// The configuration the VM was created with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }
    /// The vCPUs' fds, in index order.
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }
    /// What device models get instead of the `Vm`: bus 0, the interrupt router, the address
    /// spaces, the VM's background threads, control, console and RAM.
    pub fn device_context(&self) -> &DeviceContext {
        self.devices.context()
    }

    /// Creates a device and plugs it into this VM (the one creation path: `devices::plug`).
    pub fn plug(&mut self, options: &DeviceOptions) -> Result<&Plugged, VmError> {
        let plugged = self.devices.plug(options)?;
        Ok(plugged)
    }

    /// The devices plugged so far.
    pub fn devices(&self) -> &DeviceSet {
        &self.devices
    }

    /// Lets `shortcut` answer exits before the memory-model dispatch (benchmark floors).
    pub fn set_exit_shortcut(&mut self, shortcut: Arc<dyn ExitShortcut>) {
        self.exit_shortcut = Some(shortcut);
    }

    /// Moves what stdin has to the serial port's receive FIFO; false once stdin is closed.
    fn forward_stdin(&self) -> bool {
        let mut buf = [0u8; 64];
        match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                if let Some(serial) = self.devices.serial() {
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
                shortcut: self.exit_shortcut.clone(),
                coalesced: self.coalesced.clone(),
            };
            match VcpuThread::spawn(fd, ctx) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.control
                        .request_exit(ExitReason::Error(VmFailure::SpawnVcpu {
                            cpu: cpu as u32,
                            errno: e.raw_os_error().unwrap_or(0),
                        }));
                    break;
                }
            }
        }

        // Every thread of the VM exists now (vCPUs, device threads, the MSI-X watcher).
        if let Err(e) = crate::seccomp::enter(crate::seccomp::ThreadKind::Main) {
            self.control
                .request_exit(ExitReason::Error(VmFailure::Seccomp {
                    thread: "main".into(),
                    reason: e.to_string(),
                }));
        }
        let stdin = std::io::stdin();
        let mut stdin_open = self.config.serial_input && self.devices.serial().is_some();
        while !self.control.stopping() {
            let mut fds = vec![
                PollFd::new(
                    // SAFETY: the eventfd outlives this borrow (owned by `self.control`).
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
                        .request_exit(ExitReason::Error(VmFailure::Wait { errno: e as i32 }));
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
        // Device threads (ivshmem server links) end with the vCPUs.
        self.threads.shutdown();
        self.console.flush();
        Ok(self
            .control
            .reason()
            .unwrap_or(ExitReason::Error(VmFailure::NoReason)))
    }
}

/// Guest RAM as a vm-memory view over the RAM region's own mapping (for loaders and devices
/// reading guest memory).
pub(crate) fn ram_view(ram: &MemoryRegion, size: u64) -> Result<GuestMemoryMmap, VmError> {
    let host = ram.host_addr().ok_or(VmError::RamUnmapped)?;
    // SAFETY: `host` is the RAM region's live mapping of `size` bytes. The view does not own it
    // (`build_raw`: never unmapped by the view); `Vm` keeps the region alive as long as it hands
    // out the view, and the devices holding clones of the view are dropped with the VM.
    let mapping = unsafe {
        MmapRegion::build_raw(
            host,
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
    }?;
    let region =
        GuestRegionMmap::new(mapping, GuestAddress(0)).ok_or(VmError::RamTooLarge(size))?;
    Ok(GuestMemoryMmap::from_regions(vec![region])?)
}
