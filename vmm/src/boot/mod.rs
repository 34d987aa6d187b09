//! Loading a guest into a created [`Vm`]: a guest program (`program`: a static ELF entered in
//! ring 3, with its arguments) or a Linux kernel (`linux`, with the ACPI tables of `acpi`, its
//! kernel and initramfs copied into guest RAM by several threads in `image`). This
//! floor sits above `vm` and uses the CPU-level pieces of `arch`; nothing below names it.
//! [`load`] is the one entry point.
pub mod acpi;
pub mod image;
pub mod linux;
pub mod program;

use std::path::PathBuf;

use crate::arch::x86_64::layout;
use crate::arch::x86_64::CpuError;
use crate::vm::Vm;

/// What a VM runs.
#[derive(Clone, Debug)]
pub enum Guest {
    /// A guest program (static x86-64 ELF) with its argument string.
    Program {
        /// The ELF image.
        image: Vec<u8>,
        /// Read by the guest runtime's `args` module; at most `layout::ARGS_SIZE - 1` bytes.
        args: Option<String>,
    },
    /// A Linux kernel.
    Linux {
        /// bzImage or ELF vmlinux.
        kernel: PathBuf,
        /// Initramfs.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
        /// Append [`linux::MACHINE_CMDLINE`] (what Linux should know about this machine).
        machine_params: bool,
    },
}

/// Errors loading a guest.
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
    BadElf(&'static str),
    /// A PT_LOAD segment outside the area between the VMM's tables and the vCPU stacks.
    #[error("guest program segment {start:#x}..{end:#x} lies outside the program area {:#x}..{area_end:#x} (more RAM or fewer vCPUs leave more room)", layout::PROGRAM_MIN_ADDR)]
    SegmentOutsideProgramArea {
        /// Segment start (guest-physical).
        start: u64,
        /// Segment end.
        end: u64,
        /// Where the program area ends (below the stacks).
        area_end: u64,
    },
    /// linux-loader refused the kernel.
    #[error("loading the kernel: {0}")]
    Loader(#[from] linux_loader::loader::Error),
    /// The command line does not fit or has a bad character.
    #[error("loading the kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    /// vCPU state could not be set.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// The kernel file is neither a bzImage nor an ELF vmlinux.
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
    #[error("initrd {path} ({size} bytes) does not fit in {} MiB of RAM with the kernel", ram_size >> 20)]
    InitrdTooLarge {
        /// Its path.
        path: String,
        /// Its size.
        size: u64,
        /// Guest RAM.
        ram_size: u64,
    },
    #[error("guest arguments: at most {} bytes and no NUL byte (got {len} bytes)", layout::ARGS_SIZE - 1)]
    /// The guest argument string does not fit its page or contains a NUL byte.
    BadGuestArgs {
        /// Its length in bytes.
        len: usize,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BootError {
    move |source| BootError::Cpu(CpuError::Kvm { what, source })
}

/// Loads `guest` into `vm` and sets up every vCPU to start it.
pub fn load(vm: &Vm, guest: &Guest) -> Result<(), BootError> {
    match guest {
        Guest::Program { image, args } => {
            program::setup(vm, image)?;
            if let Some(text) = args {
                program::write_args(vm.guest_memory(), text)?;
            }
            Ok(())
        }
        Guest::Linux {
            kernel,
            initrd,
            cmdline,
            machine_params,
        } => {
            let line = if *machine_params {
                linux::with_machine_params(cmdline)
            } else {
                cmdline.clone()
            };
            linux::boot(vm, kernel, initrd.as_deref(), &line)
        }
    }
}
