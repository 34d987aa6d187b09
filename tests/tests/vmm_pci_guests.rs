//! PCI from inside real VMs: the guest programs pci_enum, pci_bar, pci_ram and pci_msix run on
//! the vmm with `--device pci-testdev` and report through their exit status (see each program's
//! doc comment for the codes): enumeration through ECAM, BAR sizing and programming, BAR moves
//! taking effect, exit-free RAM BAR access (counted with `--stats`), MSI-X delivery through
//! irqfd with mask/pending/unmask, an exit-free doorbell (ioeventfd -> irqfd), and several VMs
//! at once.
use std::process::{Command, Stdio};

use harness::{check_output as check, require_kvm, run_vmm as vmm, text, vmm_stat, vmm_stats};

#[test]
fn enumeration_finds_host_bridge_and_testdev() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:pci_enum", "--device", "pci-testdev"]);
    check(
        &out,
        0,
        &[
            "pci: 00:00.0 8086:29c0 class 060000",
            "pci: 00:01.0 1b36:0005 class 00ff00",
            "BAR0 mem32 size 0x1000",
            "BAR1 mem32 size 0x1000",
            "BAR2 mem64-pref size 0x100000",
            "pci: 2 device(s)",
            "pci: conf1 agrees with ECAM",
            "MSI-X cap at 0x40 with 4 vectors",
        ],
    );
}

/// Conf1's address register (0xCF8) is coalesced: KVM buffers the writes and the VMM applies
/// them at the next exit (the data port's), so the cross-check through conf1 still agrees with
/// ECAM while only the data-port accesses exit.
#[test]
fn conf1_address_writes_are_coalesced_not_exits() {
    require_kvm!();
    let out = vmm(&[
        "--guest",
        "builtin:pci_enum",
        "--device",
        "pci-testdev",
        "--stats",
    ]);
    check(&out, 0, &["pci: conf1 agrees with ECAM"]);
    let stats = vmm_stats(&text(&out.stderr));
    let line = stats.to_string();
    let by = &stats["exits_by"];
    let coalesced = by["coalesced pio_out 0xcf8 (no exit)"]
        .as_u64()
        .unwrap_or(0);
    assert!(coalesced > 0, "no coalesced conf1 writes: {line}");
    assert!(
        by.get("pio_out 0xcf8").is_none(),
        "conf1 writes exited: {line}"
    );
    assert!(by["pio_in 0xcfc"].as_u64().unwrap_or(0) > 0, "{line}");
}

#[test]
fn enumeration_without_devices_sees_only_the_host_bridge() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:pci_enum"]);
    check(&out, 0, &["pci: 1 device(s)", "no pci-testdev"]);
}

#[test]
fn device_options_change_bar_sizes_and_vector_count() {
    require_kvm!();
    let out = vmm(&[
        "--guest",
        "builtin:pci_enum",
        "--device",
        "pci-testdev,vectors=300,ram=64M",
    ]);
    // 300 vectors: table 4800 bytes, PBA at 4800, BAR 8 KiB (QEMU's exclusive-BAR layout).
    check(
        &out,
        0,
        &[
            "BAR1 mem32 size 0x2000",
            "BAR2 mem64-pref size 0x4000000",
            "with 300 vectors",
        ],
    );
    // Two devices take two slots.
    let out = vmm(&[
        "--guest",
        "builtin:pci_enum",
        "--device",
        "pci-testdev",
        "--device",
        "pci-testdev",
    ]);
    check(&out, 0, &["00:02.0 1b36:0005", "pci: 3 device(s)"]);
}

#[test]
fn bars_are_programmed_and_moves_take_effect() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:pci_bar", "--device", "pci-testdev"]);
    check(
        &out,
        0,
        &[
            "BAR0 at 0xc0000000, BAR2 (0x100000 bytes) at 0x1000000000",
            "BAR2 moved 0x1000000000 -> 0x1000200000 -> 0x1000000000",
            "BAR0 moved 0xc0000000 -> 0xc0002000",
            "pci_bar: ok",
        ],
    );
}

#[test]
fn ram_bar_access_does_not_exit() {
    require_kvm!();
    let out = vmm(&[
        "--guest",
        "builtin:pci_ram",
        "--device",
        "pci-testdev",
        "--stats",
    ]);
    let stdout = check(
        &out,
        0,
        &["pci_ram: ok: 16777216 accesses", "BAR0 exits 1 "],
    );
    let stderr = text(&out.stderr);
    // 16 M RAM BAR accesses; the few hundred exits are enumeration, BAR programming, the clock
    // and the console. A trapped BAR would show millions.
    let mmio_exits = vmm_stat(&stderr, "exits_mmio");
    assert!(
        mmio_exits < 1000,
        "{mmio_exits} MMIO exits\n{stdout}\n{stderr}"
    );
}

#[test]
fn msix_interrupts_mask_pending_and_unmask() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:pci_msix", "--device", "pci-testdev"]);
    check(
        &out,
        0,
        &[
            "table at 0xc0001000, PBA at 0xc0001800",
            "200 unmasked deliveries ok",
            "mask/pending/unmask ok",
            "function mask ok",
            "200 exit-free doorbell deliveries ok",
            "pci_msix: ok",
        ],
    );
}

#[test]
fn programs_need_the_device() {
    require_kvm!();
    for (program, status) in [("pci_bar", 20), ("pci_ram", 30), ("pci_msix", 40)] {
        let out = vmm(&["--guest", &format!("builtin:{program}")]);
        check(&out, status, &["no pci-testdev"]);
    }
}

#[test]
fn bad_device_options_are_reported() {
    require_kvm!();
    for (spec, message) in [
        ("pci-testdev,vectors=0", "vectors=\"0\""),
        ("pci-testdev,vectors=5000", "a number from 1 to 2048"),
        ("pci-testdev,ram=3M", "power of two"),
        (
            "pci-testdev,colour=red",
            "unknown key `colour` (have: ram, vectors)",
        ),
        ("pci-testdev,vectors=2,vectors=4", "`vectors` given twice"),
        ("floppy", "unknown device `floppy`"),
    ] {
        let out = vmm(&["--guest", "builtin:hello", "--device", spec]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{spec}: {stderr}");
        assert!(stderr.contains(message), "{spec}: {stderr}");
        assert!(!stderr.contains("panicked"), "{spec}: {stderr}");
    }
}

#[test]
fn several_vms_in_parallel() {
    require_kvm!();
    let programs = [
        "pci_msix", "pci_bar", "pci_ram", "pci_msix", "pci_enum", "pci_msix",
    ];
    let children: Vec<_> = programs
        .iter()
        .enumerate()
        .map(|(i, program)| {
            let child = Command::new(harness::bin("vmm"))
                .args([
                    "--guest",
                    &format!("builtin:{program}"),
                    "--device",
                    "pci-testdev",
                    "--name",
                    &format!("vm{i}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn vmm");
            (program, child)
        })
        .collect();
    for (program, child) in children {
        let out = child.wait_with_output().unwrap();
        check(&out, 0, &[&format!("{program}: ok")]);
    }
}
