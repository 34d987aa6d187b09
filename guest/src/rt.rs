//! Entry (`_start`), parking idle vCPUs, and the panic handler.
use crate::layout::EXIT_STATUS_PANIC;

// The VMM enters here in ring 3 with rsp = this vCPU's stack (16-byte aligned), rdi = cpu id,
// rsi = number of cpus, rdx = RAM size.
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "call {start}",
    "ud2",
    start = sym rust_start,
);

extern "C" {
    fn __guest_main() -> i32;
    fn __guest_ap_main(cpu: u32);
}

static mut BOOT_INFO: BootInfo = BootInfo {
    ncpus: 1,
    ram_size: 0,
};

static mut ENTRY_ARGS: [u64; 3] = [0; 3];

#[derive(Clone, Copy)]
struct BootInfo {
    ncpus: u32,
    ram_size: u64,
}

extern "C" fn rust_start(cpu: u64, ncpus: u64, ram_size: u64) -> ! {
    if cpu == 0 {
        // SAFETY: written once by vCPU 0 before main; the other vCPUs never write it.
        unsafe {
            ENTRY_ARGS = [cpu, ncpus, ram_size];
            BOOT_INFO = BootInfo {
                ncpus: ncpus as u32,
                ram_size,
            };
        }
        // SAFETY: defined by the program through `entry!`.
        let code = unsafe { __guest_main() };
        crate::testdev::exit(code)
    } else {
        // SAFETY: defined by the program through `entry!`.
        unsafe { __guest_ap_main(cpu as u32) };
        park()
    }
}

/// Number of vCPUs (as passed at entry; valid on vCPU 0, use `testdev::ncpus` elsewhere).
pub fn ncpus() -> u32 {
    // SAFETY: plain read of a value written before main.
    unsafe { (*core::ptr::addr_of!(BOOT_INFO)).ncpus }
}

/// The raw rdi, rsi, rdx vCPU 0 was entered with (for programs started by other boot
/// protocols, e.g. the Linux one, where rsi is the zero page).
pub fn entry_args() -> [u64; 3] {
    // SAFETY: plain read of a value written before main.
    unsafe { *core::ptr::addr_of!(ENTRY_ARGS) }
}

/// Guest RAM size (as passed at entry; valid on vCPU 0, use `testdev::ram_size` elsewhere).
pub fn ram_size() -> u64 {
    // SAFETY: plain read of a value written before main.
    unsafe { (*core::ptr::addr_of!(BOOT_INFO)).ram_size }
}

/// End of the program image (start of free RAM), from the linker.
pub fn image_end() -> u64 {
    extern "C" {
        static _end: u8;
    }
    // SAFETY: only the symbol's address is taken.
    core::ptr::addr_of!(_end) as u64
}

/// Free RAM `[start, end)`: after the program image, below the vCPU stacks.
pub fn free_ram() -> (u64, u64) {
    let ram = crate::testdev::ram_size();
    let stacks = crate::testdev::ncpus() as u64 * crate::layout::USER_STACK_SIZE;
    let start = (image_end() + 0xFFFF) & !0xFFFF;
    (start, ram - stacks)
}

pub use crate::interrupts::park;

/// The precompiled `core` for the host target refers to this symbol (it was built with
/// unwinding); with panic=abort it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("guest panic: {}", info);
    crate::testdev::exit(EXIT_STATUS_PANIC)
}
