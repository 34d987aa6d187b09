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
    /// A load or set-up write would fall outside guest RAM.
    OutOfRam {
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The guest image could not be read.
    #[error("cannot read guest image {path}: {source}")]
    ReadImage {
        /// Its path.
        path: String,
        /// The read error.
        source: std::io::Error,
    },
    /// The ELF is not one we can enter (dynamic, not x86-64, overlapping the VMM's area...).
    #[error("guest program is not a usable static x86-64 ELF: {0}")]
    BadElf(String),
    /// linux-loader refused the kernel.
    #[error("loading the kernel: {0}")]
    Loader(#[from] linux_loader::loader::Error),
    /// The command line does not fit or has a bad character.
    #[error("loading the kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    /// A KVM ioctl setting up vCPU state failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// What was being set up.
        what: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// The `--kernel` file is neither a bzImage nor an ELF vmlinux.
    #[error("{path} is neither a bzImage ({bzimage}) nor an ELF vmlinux ({elf})")]
    NotAKernel {
        /// Its path.
        path: String,
        /// Why it is not a bzImage.
        bzimage: linux_loader::loader::Error,
        /// Why it is not an ELF.
        elf: linux_loader::loader::Error,
    },
    /// The initrd does not fit between the kernel and the top of RAM.
    #[error("initrd {path} ({size} bytes) does not fit in {} MiB of RAM with the kernel; raise --memory", ram_size >> 20)]
    InitrdTooLarge {
        /// Its path.
        path: String,
        /// Its size.
        size: u64,
        /// Guest RAM.
        ram_size: u64,
    },
    #[error("--guest-args: at most {} bytes and no NUL byte (got {len} bytes)", layout::ARGS_SIZE - 1)]
    /// The `--guest-args` string does not fit its page or contains a NUL byte.
    BadGuestArgs {
        /// Its length in bytes.
        len: usize,
    },
    /// KVM's MSR list could not be built.
    #[error("building the MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BootError {
    move |source| BootError::Kvm { what, source }
}
