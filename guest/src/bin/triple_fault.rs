//! Triple-faults the vCPU on purpose: run with `vmm --kernel FILE` (FILE from `vmm
//! --dump-builtin triple_fault`), i.e. entered in ring 0 like a kernel; it loads an empty IDT and
//! executes `ud2`, so #UD → #GP → #DF cannot be delivered and the CPU shuts down. The vmm must
//! report the triple fault (KVM_EXIT_SHUTDOWN) and exit with status 2.
#![no_std]
#![no_main]

fn main() -> i32 {
    guest::println!("triple_fault: loading an empty IDT");
    let idtr = [0u16; 5]; // limit 0, base 0
                          // SAFETY: deliberately fatal; that is what this program tests.
    unsafe {
        core::arch::asm!("lidt [{0}]", "ud2", in(reg) idtr.as_ptr(), options(noreturn));
    }
}

guest::entry!(main);
