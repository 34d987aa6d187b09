//! A stock Debian kernel (the one the nested bed's L1 runs) booted by our VMM on ordinary KVM:
//! to a usable userspace with the console both ways, the UART's interrupt on the IOAPIC, the
//! CMOS RTC (read, and set by the guest), write-combining, PCI, and a clean end (power-off, or a
//! reboot through the BIOS reset vector). Scenario: tests/nested/linux-boot. And the same kernel
//! sees our ivshmem devices as it sees QEMU's: tests/nested/device-conformance.
use std::collections::HashMap;

use harness::nested::{nested_available, Nested, NestedOutcome};
use harness::{Scratch, Server};

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
    "machine_cmdline",
    "no_early_pci_probe",
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
fn bzimage_boots_on_two_cpus() {
    if !nested_available("bzimage_boots_on_two_cpus") {
        return;
    }
    let outcome = Nested::scenario("linux-boot")
        .arg("KERNEL=vmlinuz")
        .arg("CPUS=2")
        .run();
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

/// Config-space bytes that legitimately differ between two machines: command and status
/// (0x04..0x08: each kernel's enumeration; QEMU's firmware also sets SERR), the BARs' addresses
/// (each machine's allocator: their low flag bits, which say I/O or memory, 32 or 64 bits and
/// prefetchable, must match; the upper half of a 64-bit BAR is all address) and the interrupt
/// line (0x3C: firmware's choice).
fn masked(config: &[u8]) -> Vec<u8> {
    let mut out = config.to_vec();
    out[0x04..0x08].fill(0);
    for bar in (0x10..0x28).step_by(4) {
        out[bar] &= 0x0F;
        out[bar + 1..bar + 4].fill(0);
    }
    for bar in (0x10..0x24).step_by(4) {
        if config[bar] & 0x07 == 0x04 {
            out[bar + 4..bar + 8].fill(0);
        }
    }
    out[0x3C] = 0;
    out
}

/// The `CONFIG <label> <hex>` dumps a scenario printed, by label.
fn config_dumps(outcome: &NestedOutcome) -> HashMap<String, Vec<u8>> {
    outcome
        .console
        .lines()
        .filter_map(|line| {
            let rest = line.trim_end_matches('\r');
            let rest = &rest[rest.find("CONFIG ")? + "CONFIG ".len()..];
            let (label, hex) = rest.split_once(' ')?;
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((label.to_string(), bytes))
        })
        .collect()
}

#[test]
fn linux_sees_our_ivshmem_devices_as_it_sees_qemus() {
    if !nested_available("linux_sees_our_ivshmem_devices_as_it_sees_qemus") {
        return;
    }
    // QEMU's own devices in L1: ivshmem-plain at 00:04.0 on a file, ivshmem-doorbell at
    // 00:05.0 on a server here (the scenario runs its own server for our VM inside L1).
    let scratch = Scratch::new("nested-conformance");
    let server = Server::start(&scratch.join("sock"), &["-l", "4M", "-n", "2"]);
    let plain = scratch.join("plain");
    std::fs::write(&plain, vec![0u8; 4 << 20]).expect("plain memory file");
    let memdev = format!(
        "memory-backend-file,id=plainmem,mem-path={},size=4M,share=on",
        plain.display()
    );
    let chardev = format!("socket,path={},id=doorbell", server.socket.display());
    let outcome = Nested::scenario("device-conformance")
        .qemu_args(&[
            "-object",
            &memdev,
            "-device",
            "ivshmem-plain,memdev=plainmem,addr=4",
            "-chardev",
            &chardev,
            "-device",
            "ivshmem-doorbell,chardev=doorbell,vectors=2,addr=5",
        ])
        .run();
    outcome.assert_passed(&["host_writes", "l2_reads_host_data", "host_reads_l2_data"]);
    let dumps = config_dumps(&outcome);
    for kind in ["plain", "doorbell"] {
        let (qemu, ours) = (format!("qemu-{kind}"), format!("ours-{kind}"));
        let (Some(qemu_config), Some(our_config)) = (dumps.get(&qemu), dumps.get(&ours)) else {
            panic!("{qemu} or {ours} config dump missing:\n{}", outcome.console);
        };
        assert_eq!(qemu_config.len(), 256, "{qemu}");
        assert_eq!(our_config.len(), 256, "{ours}");
        let differences: Vec<String> = masked(qemu_config)
            .iter()
            .zip(masked(our_config))
            .enumerate()
            .filter(|(_, (theirs, mine))| **theirs != *mine)
            .map(|(at, (theirs, mine))| format!("{at:#04x}: QEMU {theirs:#04x}, ours {mine:#04x}"))
            .collect();
        assert!(
            differences.is_empty(),
            "ivshmem-{kind}: Linux reads our config space differently from QEMU's:\n{}",
            differences.join("\n")
        );
    }
    assert_eq!(outcome.status, Some(0));
    drop(server);
}
