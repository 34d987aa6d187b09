//! How a VM ends: why it ended ([`ExitReason`], with the exception stub's [`CrashRecord`]) and
//! how any thread asks it to end ([`VmControl`]).
//!
//! A leaf module: devices, vCPU threads and the VM's wait loop all report through it, and it
//! depends on nothing else in the crate (the exit status of a guest crash is the shared
//! `layout::EXIT_STATUS_CRASH`).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::layout;

/// Why a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest wrote its exit code to the testdev.
    GuestExit(i32),
    /// i8042 reset (or a KVM reset event): a normal power-off for our purposes.
    Reset,
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    TripleFault {
        /// The vCPU that hit it.
        cpu: u32,
        /// Where it was (registers and code bytes; empty when KVM would not say).
        state: String,
    },
    /// The guest-program exception stub reported an unexpected exception.
    Crash(CrashRecord),
    /// SIGINT/SIGTERM.
    Signal(i32),
    /// The VMM could not continue running the guest.
    Error(VmFailure),
}

/// Why the VMM could not go on running a guest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmFailure {
    /// `KVM_RUN` itself failed.
    #[error("vcpu{cpu}: KVM_RUN: {}", std::io::Error::from_raw_os_error(*.errno))]
    KvmRun {
        /// The vCPU.
        cpu: u32,
        /// The error number KVM returned.
        errno: i32,
    },
    /// KVM stopped a vCPU on something it could not emulate, and neither could we.
    #[error("vcpu{cpu}: KVM internal error (emulation failure?){state}")]
    InternalError {
        /// The vCPU.
        cpu: u32,
        /// Where it was (registers and code bytes).
        state: String,
    },
    /// The hardware refused to enter the guest.
    #[error("vcpu{cpu}: VM entry failed (hardware reason {reason:#x}){state}")]
    EntryFailed {
        /// The vCPU.
        cpu: u32,
        /// The hardware's reason code.
        reason: u64,
        /// Where it was (registers and code bytes).
        state: String,
    },
    /// A vCPU thread could not be started.
    #[error("vcpu{cpu}: cannot start its thread: {}", std::io::Error::from_raw_os_error(*.errno))]
    SpawnVcpu {
        /// The vCPU.
        cpu: u32,
        /// The error number.
        errno: i32,
    },
    /// A thread could not enter its seccomp filter.
    #[error("{thread}: entering the seccomp filter: {reason}")]
    Seccomp {
        /// The thread (`main`, `vcpu0`, ...).
        thread: String,
        /// The sandbox's error, as it said it.
        reason: String,
    },
    /// The main loop's wait failed.
    #[error("waiting for events: {}", std::io::Error::from_raw_os_error(*.errno))]
    Wait {
        /// The error number.
        errno: i32,
    },
    /// The VM stopped and nobody said why (a VMM bug).
    #[error("VM stopped without a reason")]
    NoReason,
}

/// What the exception stub saved (see `layout::MAILBOX_CRASH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashRecord {
    /// The vCPU that faulted.
    pub cpu: u32,
    /// The exception vector (0..32).
    pub vector: u8,
    /// The error code the CPU pushed (0 for exceptions without one).
    pub error_code: u64,
    /// Where it happened.
    pub rip: u64,
    /// Code segment at the fault (its low bits: the privilege level).
    pub cs: u64,
    /// Flags at the fault.
    pub rflags: u64,
    /// Stack pointer at the fault.
    pub rsp: u64,
    /// Stack segment at the fault.
    pub ss: u64,
    /// The faulting address, for page faults.
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
            ExitReason::TripleFault { cpu, state } => Some(format!(
                "vmm: guest triple fault (KVM_EXIT_SHUTDOWN) on vcpu{cpu}{state}"
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
    /// A control with no exit requested; fails only if the eventfd cannot be created.
    pub fn new() -> std::io::Result<VmControl> {
        Ok(VmControl {
            reason: Mutex::new(None),
            stop: AtomicBool::new(false),
            event: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Asks the VM to end for `reason` (ignored when another reason came first) and wakes
    /// the main loop.
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

    /// Why the VM ended, once an exit was requested.
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
