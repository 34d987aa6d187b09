//! A stock Debian kernel (the one the nested bed's L1 runs) booted by our VMM on ordinary KVM:
//! to a usable userspace with the console both ways, the UART's interrupt on the IOAPIC, the
//! CMOS RTC (read, and set by the guest), write-combining, PCI, and a clean end (power-off, or a
//! reboot through the BIOS reset vector). Scenario: tests/nested/linux-boot.
use harness::nested::{nested_available, Nested};

/// The checks every boot must pass (see tests/nested/linux-boot/l1.sh).
const BOOT_CHECKS: &[&str] = &[
    "boots_to_init",
    "vmm_exit_status",
    "powers_off",
    "console_output",
    "console_input",
    "cpus",
    "memory",
    "uart_on_ioapic",
    "rtc",
    "rtc_time",
    "rtc_hwclock",
    "rtc_set_by_guest",
    "write_combining",
    "pci_ivshmem",
    "no_boot_complaints",
];

#[test]
fn bzimage_boots_to_userspace_and_powers_off() {
    if !nested_available("bzimage_boots_to_userspace_and_powers_off") {
        return;
    }
    let outcome = Nested::scenario("linux-boot").arg("KERNEL=vmlinuz").run();
    outcome.assert_passed(BOOT_CHECKS);
    assert_eq!(outcome.status, Some(0));
}

#[test]
fn elf_vmlinux_boots_on_two_cpus_and_reboots() {
    if !nested_available("elf_vmlinux_boots_on_two_cpus_and_reboots") {
        return;
    }
    let outcome = Nested::scenario("linux-boot")
        .with_vmlinux()
        .arg("KERNEL=vmlinux")
        .arg("CPUS=2")
        .arg("CMDLINE_EXTRA=scenario_end=reboot")
        .run();
    let mut checks = BOOT_CHECKS.to_vec();
    checks.push("reboots");
    outcome.assert_passed(&checks);
    assert_eq!(outcome.status, Some(0));
}
