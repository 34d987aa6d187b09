//! seccomp filters for the project's daemons (`vmm`, `ivshmem-server`), built with rust-vmm's
//! `seccompiler`.
//!
//! Each binary writes its own allow-lists ([`AllowList`]) from the syscalls its code really
//! makes, one list per kind of thread, and compiles them at start-up for the `--seccomp` mode the
//! user chose ([`Mode`]). A thread then calls [`enter`] first thing (or, for a single-threaded
//! daemon, once set-up is over): from then on a syscall outside its list
//!
//! - with `--seccomp=on` raises SIGSYS, whose handler ([`enter`] installs it) prints the thread's
//!   name and the syscall number on stderr and ends the process with status 159 (128 + SIGSYS);
//! - with `--seccomp=log` is allowed and logged by the kernel (`SECCOMP_RET_LOG`: an audit line
//!   `type=1326 ... syscall=N` in `dmesg` or the audit log), to find what a list lacks;
//! - with `--seccomp=off` is not filtered at all.
//!
//! Filters stack: a thread started by a filtered thread keeps its parent's filter too, so every
//! thread must be started before the thread starting it enters its own sandbox.
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Once, OnceLock};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Exit status of a process stopped for a forbidden syscall: 128 + SIGSYS, as a shell reports a
/// death by SIGSYS.
pub const VIOLATION_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// What `--seccomp=on|off|log` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Filters installed; a forbidden syscall ends the process with a message.
    #[default]
    On,
    /// No filter.
    Off,
    /// Filters installed; a syscall outside the list is allowed and logged by the kernel.
    Log,
}

impl std::str::FromStr for Mode {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Mode, SandboxError> {
        match s {
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            "log" => Ok(Mode::Log),
            _ => Err(SandboxError::BadMode(s.to_string())),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::On => "on",
            Mode::Off => "off",
            Mode::Log => "log",
        })
    }
}

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A `--seccomp` value other than on, off or log.
    #[error("--seccomp {0:?}: expected on, off or log")]
    BadMode(String),
    /// seccompiler refused the list (a bug in the list, found at start-up).
    #[error("seccomp filter {name}: {source}")]
    Build {
        /// The list's name.
        name: &'static str,
        /// What seccompiler said.
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter (no seccomp support, or a sandbox that forbids it).
    #[error("installing the seccomp filter {name}: {source}")]
    Install {
        /// The list's name.
        name: &'static str,
        /// What the kernel said.
        source: seccompiler::Error,
    },
    /// sigaction(SIGSYS) failed.
    #[error("installing the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// The syscalls one kind of thread may make, with argument conditions for some (`ioctl` by
/// request number, `fcntl` by command).
#[derive(Clone, Default)]
pub struct AllowList {
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    /// Syscalls allowed whatever their arguments (they override conditions given elsewhere).
    unconditional: std::collections::BTreeSet<i64>,
}

impl AllowList {
    /// An empty list.
    pub fn new() -> AllowList {
        AllowList::default()
    }

    /// Allows `syscalls` with any arguments.
    pub fn allow(mut self, syscalls: &[libc::c_long]) -> AllowList {
        for &nr in syscalls {
            self.unconditional.insert(nr);
            self.rules.insert(nr, Vec::new());
        }
        self
    }

    /// Allows `syscall` when its argument `arg` (0-based) equals one of `values` (compared as
    /// 32-bit values: ioctl requests and fcntl commands are `unsigned int`/`int` in the kernel).
    pub fn allow_arg(mut self, syscall: libc::c_long, arg: u8, values: &[u64]) -> AllowList {
        if self.unconditional.contains(&syscall) {
            return self;
        }
        let chain = self.rules.entry(syscall).or_default();
        for &value in values {
            // Only fails for an argument index above 5, which callers never pass.
            let condition =
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                    .and_then(|c| SeccompRule::new(vec![c]))
                    .expect("argument index below 6");
            chain.push(condition);
        }
        self
    }

    /// Allows `ioctl` with these request numbers.
    pub fn allow_ioctls(self, requests: &[u64]) -> AllowList {
        self.allow_arg(libc::SYS_ioctl, 1, requests)
    }

    /// Everything in `other` too.
    pub fn merge(mut self, other: &AllowList) -> AllowList {
        for &nr in &other.unconditional {
            self.unconditional.insert(nr);
            self.rules.insert(nr, Vec::new());
        }
        for (&nr, chain) in &other.rules {
            if !self.unconditional.contains(&nr) {
                self.rules
                    .entry(nr)
                    .or_default()
                    .extend(chain.iter().cloned());
            }
        }
        self
    }

    /// True when `syscall` is in the list (with or without argument conditions).
    pub fn contains(&self, syscall: libc::c_long) -> bool {
        self.rules.contains_key(&syscall)
    }

    /// The BPF program for `mode` (None for `Mode::Off`). `name` names the list in errors.
    /// What the SIGSYS report needs (`write`, `exit_group`) is always added.
    pub fn compile(&self, name: &'static str, mode: Mode) -> Result<Option<Filter>, SandboxError> {
        let mismatch = match mode {
            Mode::Off => return Ok(None),
            Mode::On => SeccompAction::Trap,
            Mode::Log => SeccompAction::Log,
        };
        let list = self.clone().merge(&report_needs());
        let build = |source| SandboxError::Build { name, source };
        let filter = SeccompFilter::new(
            list.rules,
            mismatch,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(build)?;
        let program = BpfProgram::try_from(filter).map_err(build)?;
        Ok(Some(Filter { name, program }))
    }
}

/// What the SIGSYS handler itself calls.
fn report_needs() -> AllowList {
    AllowList::new().allow(&[libc::SYS_write, libc::SYS_exit_group])
}

/// Syscalls every Rust thread makes in ordinary work, whatever it does: memory allocation,
/// locks (futex), thread exit (stack unmapping, robust list), signal return and masks, sleeping,
/// clocks, random seeds of hash maps, log lines on stderr, closing fds it owns, and the fcntl
/// commands std and nix use on fds they own (CLOEXEC checks, dup with CLOEXEC, O_NONBLOCK).
pub fn runtime() -> AllowList {
    AllowList::new()
        .allow(&[
            // memory
            libc::SYS_brk,
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            // locks, scheduling, time
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_sched_getaffinity,
            libc::SYS_nanosleep,
            libc::SYS_clock_nanosleep,
            libc::SYS_clock_gettime,
            libc::SYS_gettimeofday,
            libc::SYS_getrandom,
            // identity, signals, thread exit
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_exit,
            libc::SYS_exit_group,
            // output and fds the thread owns
            libc::SYS_write,
            libc::SYS_writev,
            libc::SYS_close,
        ])
        .allow_arg(
            libc::SYS_fcntl,
            1,
            &[
                libc::F_GETFD as u64,
                libc::F_SETFD as u64,
                libc::F_GETFL as u64,
                libc::F_SETFL as u64,
                libc::F_DUPFD_CLOEXEC as u64,
            ],
        )
}

/// What a new thread does before its body runs (glibc: robust list, rseq registration; Rust: the
/// thread's name, its CPU affinity, the signal stack). Needed by [`enter_all_threads`]'s callers:
/// the filter reaches a thread that is still starting.
pub fn thread_start() -> AllowList {
    AllowList::new()
        .allow(&[
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sched_getaffinity,
            libc::SYS_sigaltstack,
            libc::SYS_mprotect,
            libc::SYS_rt_sigprocmask,
        ])
        .allow_arg(libc::SYS_prctl, 0, &[libc::PR_SET_NAME as u64])
}

/// A compiled filter, ready for [`enter`].
#[derive(Clone, Debug)]
pub struct Filter {
    name: &'static str,
    program: BpfProgram,
}

impl Filter {
    /// The list's name, as errors and the SIGSYS report give it.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

thread_local! {
    /// The filter the calling thread entered, for the SIGSYS report.
    static ENTERED: Cell<&'static str> = const { Cell::new("") };
}

/// The filter [`enter_all_threads`] gave every thread (the report's name for threads that did
/// not enter one themselves).
static PROCESS_FILTER: OnceLock<&'static str> = OnceLock::new();

/// Installs `filter` on the calling thread (and the SIGSYS report, once per process). A `None`
/// filter (`--seccomp=off`) does nothing.
pub fn enter(filter: Option<&Filter>) -> Result<(), SandboxError> {
    let Some(filter) = filter else {
        return Ok(());
    };
    install_sigsys_report()?;
    ENTERED.with(|e| e.set(filter.name));
    seccompiler::apply_filter(&filter.program).map_err(|source| SandboxError::Install {
        name: filter.name,
        source,
    })
}

/// Installs `filter` on every thread of the process at once (seccomp's TSYNC), for a process
/// whose helper threads (a log writer) started before its set-up ended. `None` does nothing.
pub fn enter_all_threads(filter: Option<&Filter>) -> Result<(), SandboxError> {
    let Some(filter) = filter else {
        return Ok(());
    };
    install_sigsys_report()?;
    let _ = PROCESS_FILTER.set(filter.name);
    ENTERED.with(|e| e.set(filter.name));
    seccompiler::apply_filter_all_threads(&filter.program).map_err(|source| SandboxError::Install {
        name: filter.name,
        source,
    })
}

fn install_sigsys_report() -> Result<(), SandboxError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe
        // functions (write, _exit) and reads a const-initialised thread-local.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = report_violation as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
                result = Err(SandboxError::Handler(std::io::Error::last_os_error()));
            }
        }
    });
    result
}

/// The `_sigsys` member of `siginfo_t` (x86-64 layout), which libc does not expose.
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

extern "C" fn report_violation(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS; SigsysInfo is a prefix of it.
    let syscall = unsafe { (*(info as *const SigsysInfo)).syscall };
    let mut message = MessageBuf::new();
    message.push(b"seccomp: thread with filter '");
    let own = ENTERED.with(|e| e.get());
    let name = match own {
        "" => PROCESS_FILTER.get().copied().unwrap_or("?"),
        _ => own,
    };
    message.push(name.as_bytes());
    message.push(b"' made syscall ");
    message.push_number(syscall as i64);
    message.push(
        b", which the filter forbids; stopping (see the README's Robustness section: rerun with \
          --seccomp=log to list such calls)\n",
    );
    // SAFETY: write(2) on stderr and _exit(2) are async-signal-safe; the buffer is live.
    unsafe {
        libc::write(2, message.bytes.as_ptr().cast(), message.len);
        libc::_exit(VIOLATION_EXIT_STATUS);
    }
}

/// A fixed-size message assembled without allocating (signal handler).
struct MessageBuf {
    bytes: [u8; 384],
    len: usize,
}

impl MessageBuf {
    fn new() -> MessageBuf {
        MessageBuf {
            bytes: [0; 384],
            len: 0,
        }
    }

    fn push(&mut self, text: &[u8]) {
        let n = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut rest = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [Mode::On, Mode::Off, Mode::Log] {
            assert_eq!(mode.to_string().parse::<Mode>().unwrap(), mode);
        }
        assert!(matches!(
            "yes".parse::<Mode>(),
            Err(SandboxError::BadMode(_))
        ));
    }

    #[test]
    fn off_compiles_to_no_filter() {
        assert!(runtime().compile("t", Mode::Off).unwrap().is_none());
    }

    #[test]
    fn conditions_do_not_narrow_an_unconditional_syscall() {
        let list = AllowList::new()
            .allow(&[libc::SYS_ioctl])
            .allow_ioctls(&[1]);
        assert!(list.rules[&libc::SYS_ioctl].is_empty());
        let list = AllowList::new()
            .allow_ioctls(&[1, 2])
            .merge(&AllowList::new().allow(&[libc::SYS_ioctl]));
        assert!(list.rules[&libc::SYS_ioctl].is_empty());
    }

    #[test]
    fn numbers_format_without_allocating() {
        let mut m = MessageBuf::new();
        m.push_number(0);
        m.push(b" ");
        m.push_number(16);
        m.push(b" ");
        m.push_number(-1);
        assert_eq!(&m.bytes[..m.len], b"0 16 -1");
    }

    /// Runs `body` in a forked child and returns its wait status (the test process keeps no
    /// filter).
    fn in_child(body: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `body` (no locks held by other threads are needed: it
        // installs a filter and makes raw syscalls) and leaves with _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let code = body();
                libc::_exit(code);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    #[test]
    fn a_forbidden_syscall_ends_the_process_with_the_violation_status() {
        let filter = runtime().compile("unit", Mode::On).unwrap();
        let status = in_child(|| {
            if enter(filter.as_ref()).is_err() {
                return 1;
            }
            // getppid is in no list: the handler exits with VIOLATION_EXIT_STATUS.
            // SAFETY: a plain syscall without arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
            2
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), VIOLATION_EXIT_STATUS);
    }

    #[test]
    fn ioctl_requests_outside_the_list_are_refused_and_listed_ones_pass() {
        let list = runtime().allow_ioctls(&[libc::FIONREAD]);
        let filter = list.compile("unit-ioctl", Mode::On).unwrap();
        let allowed = in_child(|| {
            if enter(filter.as_ref()).is_err() {
                return 1;
            }
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD on stdin's fd writes one int (fails harmlessly on a non-socket).
            unsafe { libc::ioctl(0, libc::FIONREAD, &mut n) };
            0
        });
        assert!(libc::WIFEXITED(allowed) && libc::WEXITSTATUS(allowed) == 0);
        let refused = in_child(|| {
            if enter(filter.as_ref()).is_err() {
                return 1;
            }
            let mut n: libc::c_int = 0;
            // SAFETY: FIONBIO reads one int; it never gets that far.
            unsafe { libc::ioctl(0, libc::FIONBIO, &mut n) };
            0
        });
        assert!(libc::WIFEXITED(refused), "status {refused:#x}");
        assert_eq!(libc::WEXITSTATUS(refused), VIOLATION_EXIT_STATUS);
    }

    #[test]
    fn a_filter_for_all_threads_reaches_threads_started_before_it() {
        let filter = runtime().compile("unit-all", Mode::On).unwrap();
        let status = in_child(|| {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let helper = std::thread::spawn(move || {
                let _ = ready_tx.send(());
                let _ = go_rx.recv();
                // SAFETY: a plain syscall without arguments, outside the list.
                unsafe { libc::syscall(libc::SYS_getppid) };
            });
            let _ = ready_rx.recv();
            if enter_all_threads(filter.as_ref()).is_err() {
                return 1;
            }
            let _ = go_tx.send(());
            let _ = helper.join();
            2
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), VIOLATION_EXIT_STATUS);
    }

    #[test]
    fn log_mode_allows_what_the_list_lacks() {
        let filter = runtime().compile("unit-log", Mode::Log).unwrap();
        let status = in_child(|| {
            if enter(filter.as_ref()).is_err() {
                return 1;
            }
            // SAFETY: a plain syscall without arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
            0
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
