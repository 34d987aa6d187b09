//! The VMM's seccomp filters: one allow-list per kind of thread, built from the syscalls each
//! really makes (traced with `strace -f` over the demo, the test suite and Linux boots), on by
//! default (`--seccomp=on|off|log`, see the `sandbox` crate for what each mode does).
//!
//! `main` calls [`configure`] before creating the VM; each thread then calls [`enter`] with its
//! kind at its entry point: vCPU threads and background threads first thing, the MSI-X watcher
//! when its loop starts, the main thread once every other thread has been started (filters are
//! inherited by threads started later, and stack). Without [`configure`] (unit tests, library
//! use) [`enter`] does nothing.
//!
//! The groups, from widest to narrowest use:
//!
//! - `sandbox::runtime()`: what any Rust thread does (allocation, futex, thread exit, signal
//!   return, clocks, stderr, closing and fcntl on its own fds).
//! - [`device_work`]: what device emulation does from whichever thread drives it (a vCPU's exit,
//!   a server link's peer update, the watcher's pending bit, the main loop's serial input):
//!   eventfd reads and writes, `poll` of a ready fd, epoll registration of masked vectors, and the
//!   VM-level KVM ioctls that follow a BAR move or an MSI-X change (memory slots, ioeventfds,
//!   irqfds, GSI routes, direct MSIs).
//! - per thread: vCPU `KVM_RUN` and the register ioctls of exception reports and of the
//!   instructions the VMM completes for the nested KVM; the server link's `recvmsg` and
//!   `FIONREAD`; a vhost-user watcher's `shutdown` of a silent backend's socket; vCPU threads'
//!   `sendmsg`/`recvmsg` of vhost-user requests (a virtio-pci register access) and the
//!   vhost-net ioctls of a virtio-net device's DRIVER_OK and reset ([`VHOST_NET_RUNTIME`]:
//!   features, rings, attaching and detaching the TAP; opening `/dev/vhost-net` and the TAP,
//!   `VHOST_SET_OWNER` and `VHOST_SET_MEM_TABLE` happen at creation, before the filters); the MSI-X
//!   watcher's `epoll_wait`; the main loop's signalfd and stdin reads, kicks (`tgkill`) and
//!   peak RSS (`getrusage`).
//!
//! Nothing may open files, create sockets, map new fds, fork or exec once its filter is on.
use std::mem::size_of;
use std::sync::OnceLock;

use kvm_bindings::{
    kvm_fpu, kvm_ioeventfd, kvm_irq_routing, kvm_irqfd, kvm_msi, kvm_regs, kvm_sregs,
    kvm_userspace_memory_region, kvm_vcpu_events, KVMIO,
};
use sandbox::{AllowList, Filter};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

pub use sandbox::{Mode, SandboxError, VIOLATION_EXIT_STATUS};

/// The kinds of threads, each with its own allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// `Vm::run`'s wait loop, once the vCPUs are started.
    Main,
    /// A vCPU thread.
    Vcpu,
    /// A device's background thread (an ivshmem doorbell device's server link).
    Background,
    /// The process-wide MSI-X watcher of masked vectors.
    MsixWatcher,
}

const fn kvm_write<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_WRITE, KVMIO, nr, size_of::<T>() as u32)
}
const fn kvm_read<T>(nr: u32) -> u64 {
    ioctl_expr(_IOC_READ, KVMIO, nr, size_of::<T>() as u32)
}

const KVM_RUN: u64 = ioctl_expr(_IOC_NONE, KVMIO, 0x80, 0);
const KVM_GET_REGS: u64 = kvm_read::<kvm_regs>(0x81);
const KVM_SET_REGS: u64 = kvm_write::<kvm_regs>(0x82);
const KVM_GET_SREGS: u64 = kvm_read::<kvm_sregs>(0x83);
const KVM_GET_FPU: u64 = kvm_read::<kvm_fpu>(0x8c);
const KVM_GET_VCPU_EVENTS: u64 = kvm_read::<kvm_vcpu_events>(0x9f);
const KVM_SET_VCPU_EVENTS: u64 = kvm_write::<kvm_vcpu_events>(0xa0);
const KVM_SET_USER_MEMORY_REGION: u64 = kvm_write::<kvm_userspace_memory_region>(0x46);
const KVM_SET_GSI_ROUTING: u64 = kvm_write::<kvm_irq_routing>(0x6a);
const KVM_IRQFD: u64 = kvm_write::<kvm_irqfd>(0x76);
const KVM_IOEVENTFD: u64 = kvm_write::<kvm_ioeventfd>(0x79);
const KVM_SIGNAL_MSI: u64 = kvm_write::<kvm_msi>(0xa5);

/// `VHOST_VIRTIO` (<linux/vhost.h>).
const VHOST: u32 = 0xaf;
const fn vhost(dir: u32, nr: u32, size: usize) -> u64 {
    ioctl_expr(dir, VHOST, nr, size as u32)
}
/// `struct vhost_vring_state` and `struct vhost_vring_file`: two 32-bit fields.
const VRING_STATE: usize = 8;
/// `struct vhost_vring_addr`: index, flags, four 64-bit addresses.
const VRING_ADDR: usize = 40;
const VHOST_SET_FEATURES: u64 = vhost(_IOC_WRITE, 0x00, 8);
const VHOST_SET_VRING_NUM: u64 = vhost(_IOC_WRITE, 0x10, VRING_STATE);
const VHOST_SET_VRING_ADDR: u64 = vhost(_IOC_WRITE, 0x11, VRING_ADDR);
const VHOST_SET_VRING_BASE: u64 = vhost(_IOC_WRITE, 0x12, VRING_STATE);
const VHOST_GET_VRING_BASE: u64 = vhost(_IOC_READ | _IOC_WRITE, 0x12, VRING_STATE);
const VHOST_SET_VRING_KICK: u64 = vhost(_IOC_WRITE, 0x20, VRING_STATE);
const VHOST_SET_VRING_CALL: u64 = vhost(_IOC_WRITE, 0x21, VRING_STATE);
const VHOST_SET_VRING_ERR: u64 = vhost(_IOC_WRITE, 0x22, VRING_STATE);
const VHOST_NET_SET_BACKEND: u64 = vhost(_IOC_WRITE, 0x30, VRING_STATE);

/// What a vCPU asks of vhost-net when a virtio-net driver sets DRIVER_OK or resets the device
/// (`devices::virtio_net`): no owner, memory table or new fd.
pub const VHOST_NET_RUNTIME: &[u64] = &[
    VHOST_SET_FEATURES,
    VHOST_SET_VRING_NUM,
    VHOST_SET_VRING_ADDR,
    VHOST_SET_VRING_BASE,
    VHOST_GET_VRING_BASE,
    VHOST_SET_VRING_KICK,
    VHOST_SET_VRING_CALL,
    VHOST_SET_VRING_ERR,
    VHOST_NET_SET_BACKEND,
];

/// Device emulation from any thread (see the module docs).
fn device_work() -> AllowList {
    sandbox::runtime()
        .allow(&[
            libc::SYS_read,
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_epoll_ctl,
        ])
        .allow_ioctls(&[
            KVM_SET_USER_MEMORY_REGION,
            KVM_IOEVENTFD,
            KVM_IRQFD,
            KVM_SET_GSI_ROUTING,
            KVM_SIGNAL_MSI,
        ])
}

/// A vhost-user frontend's requests: messages with fds attached, over a socket made before
/// the filters (never a new one).
fn vhost_user_requests(list: AllowList) -> AllowList {
    list.allow(&[libc::SYS_sendmsg, libc::SYS_recvmsg])
}

/// The allow-list of one kind of thread.
pub fn allow_list(kind: ThreadKind) -> AllowList {
    match kind {
        // vhost-user requests (a virtio-pci register access) talk to the backend's socket.
        // A virtio-net device's DRIVER_OK and reset talk to vhost-net.
        ThreadKind::Vcpu => vhost_user_requests(device_work())
            .allow_ioctls(VHOST_NET_RUNTIME)
            .allow_ioctls(&[
                KVM_RUN,
                KVM_GET_REGS,
                KVM_SET_REGS,
                KVM_GET_SREGS,
                KVM_GET_FPU,
                KVM_GET_VCPU_EVENTS,
                KVM_SET_VCPU_EVENTS,
            ]),
        // A vhost-user watcher cuts off a backend that does not answer in time.
        ThreadKind::Background => device_work()
            .allow(&[libc::SYS_recvmsg, libc::SYS_recvfrom, libc::SYS_shutdown])
            .allow_ioctls(&[libc::FIONREAD]),
        ThreadKind::MsixWatcher => {
            device_work().allow(&[libc::SYS_epoll_wait, libc::SYS_epoll_pwait])
        }
        ThreadKind::Main => device_work().allow(&[libc::SYS_tgkill, libc::SYS_getrusage]),
    }
}

struct Filters {
    main: Option<Filter>,
    vcpu: Option<Filter>,
    background: Option<Filter>,
    watcher: Option<Filter>,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

/// Compiles every thread's filter for `mode`; call once, before the VM and its threads exist.
pub fn configure(mode: Mode) -> Result<(), SandboxError> {
    let filters = Filters {
        main: allow_list(ThreadKind::Main).compile("vmm-main", mode)?,
        vcpu: allow_list(ThreadKind::Vcpu).compile("vmm-vcpu", mode)?,
        background: allow_list(ThreadKind::Background).compile("vmm-background", mode)?,
        watcher: allow_list(ThreadKind::MsixWatcher).compile("vmm-msix-watcher", mode)?,
    };
    // A second call keeps the first configuration (main calls this once).
    let _ = FILTERS.set(filters);
    Ok(())
}

/// Puts the calling thread under the filter of `kind` (nothing when not configured or off).
pub fn enter(kind: ThreadKind) -> Result<(), SandboxError> {
    let Some(filters) = FILTERS.get() else {
        return Ok(());
    };
    let filter = match kind {
        ThreadKind::Main => &filters.main,
        ThreadKind::Vcpu => &filters.vcpu,
        ThreadKind::Background => &filters.background,
        ThreadKind::MsixWatcher => &filters.watcher,
    };
    sandbox::enter(filter.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_abi() {
        // Values from <linux/kvm.h> on x86-64.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(KVM_SIGNAL_MSI, 0x4020_aea5);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        // <linux/vhost.h>, as the vhost crate (which makes the calls) has them.
        use vhost::vhost_kern::vhost_binding as v;
        assert_eq!(VHOST_SET_FEATURES, v::VHOST_SET_FEATURES() as u64);
        assert_eq!(VHOST_SET_VRING_NUM, v::VHOST_SET_VRING_NUM() as u64);
        assert_eq!(VHOST_SET_VRING_ADDR, v::VHOST_SET_VRING_ADDR() as u64);
        assert_eq!(VHOST_SET_VRING_BASE, v::VHOST_SET_VRING_BASE() as u64);
        assert_eq!(VHOST_GET_VRING_BASE, v::VHOST_GET_VRING_BASE() as u64);
        assert_eq!(VHOST_SET_VRING_KICK, v::VHOST_SET_VRING_KICK() as u64);
        assert_eq!(VHOST_SET_VRING_CALL, v::VHOST_SET_VRING_CALL() as u64);
        assert_eq!(VHOST_SET_VRING_ERR, v::VHOST_SET_VRING_ERR() as u64);
        assert_eq!(VHOST_NET_SET_BACKEND, v::VHOST_NET_SET_BACKEND() as u64);
        assert_eq!(VHOST_NET_SET_BACKEND, 0x4008_af30);
    }

    /// Runs `setup`, then `body` under the vCPU filter, in a forked child; returns the child's
    /// wait status.
    fn under_vcpu_filter<S>(setup: impl FnOnce() -> S, body: impl FnOnce(S)) -> i32 {
        let filter = allow_list(ThreadKind::Vcpu)
            .compile("vmm-vcpu", Mode::On)
            .unwrap();
        // SAFETY: the child installs the filter, makes raw syscalls and leaves with _exit; it
        // takes no lock another thread of the test process could have held at fork.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                let state = setup();
                if sandbox::enter(filter.as_ref()).is_err() {
                    libc::_exit(1);
                }
                body(state);
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    #[test]
    fn the_vcpu_filter_refuses_opening_a_file() {
        let status = under_vcpu_filter(
            || (),
            |()| {
                // SAFETY: a NUL-terminated path; the call never reaches the kernel's open.
                unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            },
        );
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), VIOLATION_EXIT_STATUS);
    }

    #[test]
    fn the_vcpu_filter_refuses_creating_a_vm() {
        let status = under_vcpu_filter(
            || (),
            |()| {
                // KVM_CREATE_VM (_IO(KVMIO, 0x01)) on any fd: refused by request number.
                // SAFETY: an ioctl without a pointer argument.
                unsafe { libc::ioctl(0, ioctl_expr(_IOC_NONE, KVMIO, 0x01, 0), 0) };
            },
        );
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), VIOLATION_EXIT_STATUS);
    }

    #[test]
    fn the_vcpu_filter_lets_device_work_through() {
        // An eventfd made before the filter, as a vCPU's are: signal it, poll it, drain it.
        let make = || vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).ok();
        let status = under_vcpu_filter(make, |fd| {
            let Some(fd) = fd else {
                // SAFETY: leaving the forked child at once.
                unsafe { libc::_exit(1) }
            };
            let _ = fd.write(1);
            let mut poll = [libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(poll.as_mut_ptr(), 1, 0) };
            let _ = fd.read();
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn the_vcpu_filter_lets_vhost_net_runtime_ioctls_through_but_not_set_owner() {
        // On fd -1: the kernel answers EBADF, if the filter lets the call reach it.
        let status = under_vcpu_filter(
            || (),
            |()| {
                for &request in VHOST_NET_RUNTIME {
                    // SAFETY: an invalid fd: the kernel reads nothing through the pointer.
                    unsafe { libc::ioctl(-1, request as _, std::ptr::null_mut::<u8>()) };
                }
            },
        );
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
        let status = under_vcpu_filter(
            || (),
            |()| {
                // VHOST_SET_OWNER: made at device creation, never by a vCPU.
                // SAFETY: an ioctl without a pointer argument, on an invalid fd.
                unsafe { libc::ioctl(-1, ioctl_expr(_IOC_NONE, VHOST, 0x01, 0) as _, 0) };
            },
        );
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), VIOLATION_EXIT_STATUS);
    }
}
