//! Our VMM on ordinary KVM (the nested bed: QEMU TCG, an SVM CPU, kvm_amd in L1), where guest
//! ring 0 runs natively: the guest programs for exits, faults, SMP, interrupts, PCI/MSI-X and
//! ivshmem (plain, and doorbell with a server, two VMs and a host peer), in one L1 boot; and 50
//! VMs started and ended back to back with the bed's kvm-hold running (docs/nested-kvm.md).
use harness::nested::{nested_available, Nested};

#[test]
fn guest_programs_pass_on_ordinary_kvm() {
    if !nested_available("guest_programs_pass_on_ordinary_kvm") {
        return;
    }
    let outcome = Nested::scenario("guest-programs").run();
    outcome.assert_passed(&[
        "hello",
        "kvm_hold_running",
        "vm_churn",
        "exit_code",
        "fault",
        "string_pio",
        "smp",
        "irq_selftest",
        "reset",
        "pci_enum",
        "pci_bar",
        "pci_ram",
        "pci_msix",
        "ivshmem_plain",
        "demo_vm-a_no_slow_doorbells",
        "demo_vm-a_hears_host",
        "demo_vm-b_no_slow_doorbells",
        "demo_vm-b_hears_host",
        "demo_host",
        "ivshmem_doorbell_check",
        "server_shutdown",
    ]);
    assert_eq!(outcome.status, Some(0));
}
