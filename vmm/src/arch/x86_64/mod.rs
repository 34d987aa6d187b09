//! x86-64 guest set-up: the guest physical layout (`layout`), the tables and ring-0 code for
//! guest programs entered directly in 64-bit mode (`descriptors`, `stubs`, `paging`), per-vCPU
//! state (`cpu`), loading guest programs (`program`), the Linux boot protocol (`linux`, `acpi`)
//! and instructions the VMM completes for this project's KVM (`unemulated`).
pub mod acpi;
pub mod cpu;
pub mod descriptors;
pub mod layout;
pub mod linux;
pub mod paging;
pub mod program;
pub mod stubs;
pub mod unemulated;

/// Errors setting up a guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("guest memory access at {addr:#x} (+{len:#x}) outside RAM")]
    OutOfRam { addr: u64, len: u64 },
    #[error("cannot read guest image {path}: {source}")]
    ReadImage {
        path: String,
        source: std::io::Error,
    },
    #[error("guest program is not a usable static x86-64 ELF: {0}")]
    BadElf(String),
    #[error("loading the kernel: {0}")]
    Loader(#[from] linux_loader::loader::Error),
    #[error("loading the kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    #[error("KVM {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("{path} is neither a bzImage ({bzimage}) nor an ELF vmlinux ({elf})")]
    NotAKernel {
        path: String,
        bzimage: linux_loader::loader::Error,
        elf: linux_loader::loader::Error,
    },
    #[error("initrd {path} ({size} bytes) does not fit in {} MiB of RAM with the kernel; raise --memory", ram_size >> 20)]
    InitrdTooLarge {
        path: String,
        size: u64,
        ram_size: u64,
    },
    #[error("--guest-args: at most {} bytes and no NUL byte (got {len} bytes)", layout::ARGS_SIZE - 1)]
    BadGuestArgs { len: usize },
    #[error("building the MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BootError {
    move |source| BootError::Kvm { what, source }
}
