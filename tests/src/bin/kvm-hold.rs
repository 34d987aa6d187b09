//! `kvm-hold`: test equipment for the nested ordinary-KVM bed (docs/nested-kvm.md). Run by the
//! L1 kernel's /init, it creates one KVM VM with an in-kernel irqchip and one vCPU that never
//! runs, and keeps them until killed.
//!
//! Why: KVM flips static keys in the host kernel when the first VM or the first in-kernel LAPIC
//! appears and when the last one goes (the scheduler's preempt notifiers, the LAPIC's
//! "software disabled" key), and each flip patches L1's kernel text while the other CPU runs.
//! QEMU 7.2's multi-threaded TCG, which emulates L1, sometimes leaves the other CPU executing
//! the breakpoint of a half-done patch forever (measured: L1 hung about once in 50 VM starts,
//! one CPU looping on the int3 at a scheduler patch site, the other spinning on the run-queue
//! lock it held). With one VM always alive, the keys never flip while the tests run.
use std::process::ExitCode;

fn main() -> ExitCode {
    match hold() {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("kvm-hold: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hold() -> Result<std::convert::Infallible, kvm_ioctls::Error> {
    let kvm = kvm_ioctls::Kvm::new()?;
    let vm = kvm.create_vm()?;
    vm.create_irq_chip()?;
    // Named, not `_`: the VM and its vCPU live as long as this function, which never returns.
    let _vcpu = vm.create_vcpu(0)?;
    println!("kvm-hold: holding a VM with an in-kernel LAPIC");
    loop {
        // SAFETY: pause(2) only blocks until a signal arrives; it touches no memory.
        unsafe { libc::pause() };
    }
}
