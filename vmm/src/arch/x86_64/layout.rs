//! Guest physical layout and the guest ABI.
//!
//! One file for both sides: the guest runtime compiles this same file as `guest::layout`
//! (`#[path]` in guest/src/lib.rs), so it must stay plain `core`-only constants.
//!
//! ```text
//! 0x0000_0000  page 0: not present (catches null pointers)
//! 0x0000_1000  GDT            (ring-0/ring-3 code+data, one TSS per vCPU)
//! 0x0000_2000  IDT            (256 gates)
//! 0x0000_3000  interrupt mailbox (user-readable): u64 counter per vector, crash record
//! 0x0000_4000  ring-0 stubs   (interrupt/exception/syscall-gate code written by the VMM)
//! 0x0000_8000  TSS array      (TSS_STRIDE per vCPU)
//! 0x0000_A000  I/O permission bitmap (shared by the TSSes)
//! 0x0001_0000  guest arguments (--guest-args, NUL-terminated, user-readable)
//! 0x0002_0000  page tables    (PML4, PDPT, PDs, the PT for the first 2 MiB)
//! 0x0008_0000  ring-0 stacks  (KERNEL_STACK_SIZE per vCPU, RSP0 of its TSS)
//! 0x0040_0000  guest program  (static ELF, linked here)
//! top of RAM   ring-3 stacks  (USER_STACK_SIZE per vCPU, vCPU 0 highest)
//! 0xB000_0000  PCI ECAM, bus 0 (1 MiB)
//! 0xC000_0000  32-bit PCI MMIO window .. 0xFE00_0000
//! 0xFEB0_0000  testdev (debug/exit/console, MMIO, 4 KiB)
//! 0xFEC0_0000  IOAPIC   0xFEE0_0000 LAPIC
//! 0x10_0000_0000  64-bit PCI window (64 GiB)
//! ```
//! Everything listed is identity-mapped and user-accessible; RAM and the 64-bit window are
//! write-back, 0xB000_0000..4 GiB is uncached.

/// Default guest RAM for guest programs.
pub const DEFAULT_RAM_SIZE: u64 = 64 << 20;

/// Global descriptor table.
pub const GDT_ADDR: u64 = 0x1000;
/// Interrupt descriptor table (256 gates).
pub const IDT_ADDR: u64 = 0x2000;
/// Interrupt mailbox and crash record, written by the ring-0 stubs.
pub const MAILBOX_ADDR: u64 = 0x3000;
/// Ring-0 exception and interrupt stubs.
pub const STUBS_ADDR: u64 = 0x4000;
/// Room for the stubs.
pub const STUBS_SIZE: u64 = 0x4000;
/// First vCPU's task state segment.
pub const TSS_ADDR: u64 = 0x8000;
/// Bytes between consecutive vCPUs' TSSes.
pub const TSS_STRIDE: u64 = 0x80;
/// One I/O permission bitmap shared by all TSSes (each TSS's I/O map base points here): all
/// ports allowed, because this project's KVM drops RFLAGS.IOPL for ring 3.
pub const IO_BITMAP_ADDR: u64 = 0xA000;
/// 65536 bits and the 0xFF byte that must follow the bitmap.
pub const IO_BITMAP_SIZE: u64 = 0x2001; // 65536 bits + the 0xFF terminator byte
/// Page tables (identity map) start here.
pub const PAGE_TABLES_ADDR: u64 = 0x2_0000;
/// End of the page-table area.
pub const PAGE_TABLES_END: u64 = 0x8_0000;
/// Ring-0 stacks, one per vCPU.
pub const KERNEL_STACKS_ADDR: u64 = 0x8_0000;
/// Each vCPU's ring-0 stack size.
pub const KERNEL_STACK_SIZE: u64 = 0x2000;
/// Lowest address a guest program may load at; everything below belongs to the VMM.
pub const PROGRAM_MIN_ADDR: u64 = 0x40_0000;
/// Each vCPU's ring-3 stack, at the top of RAM (vCPU 0 highest).
pub const USER_STACK_SIZE: u64 = 256 << 10;
/// Most vCPUs the fixed areas above have room for (kernel stacks, TSSes, GDT).
pub const MAX_CPUS: u32 = ((IO_BITMAP_ADDR - TSS_ADDR) / TSS_STRIDE) as u32;
const _: () = assert!(KERNEL_STACKS_ADDR + MAX_CPUS as u64 * KERNEL_STACK_SIZE <= PROGRAM_MIN_ADDR);
const _: () = assert!(IO_BITMAP_ADDR + IO_BITMAP_SIZE <= PAGE_TABLES_ADDR);
/// Guest arguments (`vmm --guest-args STRING`): the string, NUL-terminated, written by the VMM
/// at program setup; all zero when none were given. Read with the guest runtime's `args` module.
pub const ARGS_ADDR: u64 = 0x1_0000;
/// Room for the argument string, NUL included.
pub const ARGS_SIZE: u64 = 0x1000;
const _: () = assert!(IO_BITMAP_ADDR + IO_BITMAP_SIZE <= ARGS_ADDR);
const _: () = assert!(ARGS_ADDR + ARGS_SIZE <= PAGE_TABLES_ADDR);

/// Interrupt mailbox: `MAILBOX_COUNTERS + 8 * vector` is a u64 counting deliveries.
pub const MAILBOX_COUNTERS: u64 = MAILBOX_ADDR;
/// Crash record written by the exception stub (u64 fields, in this order).
pub const MAILBOX_CRASH: u64 = MAILBOX_ADDR + 0x800;
/// Names of the crash record's fields, in order, for the crash report.
pub const CRASH_FIELDS: [&str; 8] = [
    "vector",
    "error_code",
    "rip",
    "cs",
    "rflags",
    "rsp",
    "ss",
    "cr2",
];

/// PCI ECAM (configuration space by MMIO) for bus 0.
pub const PCI_ECAM_ADDR: u64 = 0xB000_0000;
/// ECAM size for one bus.
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
/// 32-bit PCI BAR window start.
pub const PCI_MMIO32_ADDR: u64 = 0xC000_0000;
/// 32-bit PCI BAR window end.
pub const PCI_MMIO32_END: u64 = 0xFE00_0000;
/// testdev MMIO registers (see [`testdev`]).
pub const TESTDEV_ADDR: u64 = 0xFEB0_0000;
/// testdev MMIO size.
pub const TESTDEV_SIZE: u64 = 0x1000;
/// IOAPIC registers.
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// Local APIC registers.
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// 64-bit PCI BAR window start (64 GiB in).
pub const PCI_MMIO64_ADDR: u64 = 0x10_0000_0000;
/// 64-bit PCI BAR window size.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;
/// Start of the uncached device area (ECAM up to 4 GiB).
pub const DEVICE_AREA_ADDR: u64 = PCI_ECAM_ADDR;
/// End of the uncached device area.
pub const DEVICE_AREA_END: u64 = 1 << 32;

/// testdev registers (offsets from TESTDEV_ADDR). Any access size 1..=8.
pub mod testdev {
    /// w: the VM ends; the value's low 8 bits are the vmm's exit status.
    pub const EXIT: u64 = 0x00;
    /// w: one byte to the console.
    pub const CONSOLE_BYTE: u64 = 0x08;
    /// w (8 bytes): `addr | len << 48` — `len` bytes at guest-physical `addr` to the console.
    pub const CONSOLE_STR: u64 = 0x10;
    /// r: index of the vCPU doing the read.
    pub const CPU_ID: u64 = 0x18;
    /// r: number of vCPUs.
    pub const NCPUS: u64 = 0x20;
    /// r: guest RAM size in bytes.
    pub const RAM_SIZE: u64 = 0x28;
    /// r: monotonic nanoseconds since the VM was created.
    pub const CLOCK_NS: u64 = 0x30;
    /// r/w: does nothing (reads 0); for exit round-trip benchmarks.
    pub const NOP: u64 = 0x38;
    /// w: the exception stub reports a crash (value = vector; details in MAILBOX_CRASH).
    pub const CRASH: u64 = 0x40;
}

/// Port-I/O side of the testdev (for string PIO and PIO benchmarks), base and registers.
pub const TESTDEV_PIO_BASE: u16 = 0x500;
/// Ports the testdev's PIO side decodes.
pub const TESTDEV_PIO_SIZE: u16 = 0x10;
/// testdev port registers (offsets from [`TESTDEV_PIO_BASE`]).
pub mod testdev_pio {
    /// out (1 byte): console byte; `rep outsb` writes a string.
    pub const CONSOLE: u16 = 0x0;
    /// out (4 bytes): exit code, as testdev::EXIT.
    pub const EXIT: u16 = 0x4;
    /// in/out: does nothing (reads 0).
    pub const NOP: u16 = 0x8;
    /// in (4 bytes): a counter incremented by every read (`rep insd` sees 1, 2, 3, ...).
    pub const SEQ: u16 = 0xC;
}

/// Exit status the vmm uses when the guest took an unexpected exception.
pub const EXIT_STATUS_CRASH: i32 = 3;
/// Exit status the guest runtime uses on panic.
pub const EXIT_STATUS_PANIC: i32 = 101;

/// GDT selectors.
pub const SEL_KERNEL_CODE: u16 = 0x08;
/// Ring-0 data selector.
pub const SEL_KERNEL_DATA: u16 = 0x10;
/// Ring-3 code selector (RPL 3).
pub const SEL_USER_CODE: u16 = 0x18 | 3;
/// Ring-3 data selector (RPL 3).
pub const SEL_USER_DATA: u16 = 0x20 | 3;
/// First TSS descriptor (16 bytes each, one per vCPU).
pub const SEL_TSS0: u16 = 0x28;

/// Vectors.
pub const VECTOR_FIRST_IRQ: u8 = 32;
/// LAPIC timer (the runtime uses it for wait timeouts).
pub const VECTOR_TIMER: u8 = 0x20;
// Ring-3 "halt until interrupt" gate: `hlt` in ring 3 with rdi = vector to watch, rsi = the count
// last seen. The #GP handler returns after the `hlt` at once if the counter differs, else halts
// until any interrupt arrives. Preserves all registers. (`int n` from ring 3 raises #UD on this
// project's KVM and `syscall` does not leave ring 3, so neither can be the gate.)
/// LAPIC spurious vector.
pub const VECTOR_SPURIOUS: u8 = 0xFF;
