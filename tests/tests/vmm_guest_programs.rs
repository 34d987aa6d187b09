//! The vmm running the built-in guest programs: output, exit codes, exceptions, string PIO,
//! SMP, interrupts, signals, several VMs at once, and command-line errors.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{
    bin, check_output as check, require_kvm, run_vmm as vmm, text, vmm_stat, wait_until, Scratch,
};

/// Writes built-in guest `name` (an ELF, from `vmm --dump-builtin`) into `scratch` as
/// `name.elf` and returns its path.
fn dump_builtin(scratch: &Scratch, name: &str) -> String {
    let elf = vmm(&["--dump-builtin", name]);
    assert!(elf.status.success(), "--dump-builtin {name} failed");
    assert_eq!(&elf.stdout[..4], b"\x7fELF");
    let path = scratch.join(&format!("{name}.elf"));
    std::fs::write(&path, &elf.stdout).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn hello_prints_and_exits_zero() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:hello"]);
    check(&out, 0, &["Hello from guest\n"]);
}

#[test]
fn guest_exit_code_becomes_the_vmm_status() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:exit_code"]);
    check(&out, 42, &[""]);
}

#[test]
fn guest_from_an_elf_file() {
    require_kvm!();
    let scratch = Scratch::new("vmm-elf");
    let path = dump_builtin(&scratch, "hello");
    let out = vmm(&["--guest", &path]);
    check(&out, 0, &["Hello from guest"]);
}

#[test]
fn faulting_guest_is_reported() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:fault"]);
    check(&out, 3, &["about to fault"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("vector 14 (#PF page fault)") && stderr.contains("cr2=0x0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cs=0x1b"),
        "fault came from ring 3: {stderr}"
    );
}

#[test]
fn string_pio_dispatches_every_element() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:string_pio"]);
    check(&out, 0, &["string pio: rep outsb ok\n"]);
    assert!(text(&out.stdout).contains("rep insd ok [1, 2, 3, 4, 5, 6, 7, 8]"));
}

#[test]
fn two_cpus_run() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:smp", "--cpus", "2"]);
    check(&out, 0, &["smp: all 2 cpus up"]);
    assert!(text(&out.stdout).contains("smp: cpu 1 up (testdev says 1)"));
}

#[test]
fn interrupts_reach_the_guest_and_halt_waits() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:irq_selftest"]);
    check(&out, 0, &["irq_selftest: ok"]);
}

#[test]
fn i8042_reset_ends_the_vm_with_zero() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:reset"]);
    check(&out, 0, &["reset: pulsing"]);
    assert!(!text(&out.stdout).contains("still running"));
}

#[test]
fn stats_line_counts_exits() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:string_pio", "--stats"]);
    check(&out, 0, &[""]);
    let stderr = text(&out.stderr);
    let field = |name: &str| vmm_stat(&stderr, name);
    // rep outsb (25 bytes) and rep insd (8 dwords) are at least 2 PIO exits; console lines and
    // the exit are MMIO.
    assert!(field("exits_pio") >= 2, "{stderr}");
    assert!(field("exits_mmio") >= 2, "{stderr}");
    let _ = field("exits_other");
}

#[test]
fn dump_memory_shows_the_memory_map() {
    require_kvm!();
    let out = vmm(&["--guest", "builtin:hello", "--dump-memory"]);
    check(&out, 0, &["Hello from guest"]);
    let stderr = text(&out.stderr);
    for needle in ["testdev", "ram", "i8042", "serial"] {
        assert!(stderr.contains(needle), "{needle} missing in\n{stderr}");
    }
}

#[test]
fn several_vms_in_parallel() {
    require_kvm!();
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(bin("vmm"))
                .args(["--guest", "builtin:hello", "--name", &format!("vm{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn vmm")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        check(&out, 0, &[&format!("[vm{i}] Hello from guest\n")]);
    }
}

#[test]
fn sigterm_ends_a_running_vm() {
    require_kvm!();
    for cpus in ["1", "2"] {
        let mut child = Command::new(bin("vmm"))
            .args(["--guest", "builtin:idle", "--cpus", cpus])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "idle: waiting\n");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut status = None;
        wait_until(Duration::from_secs(10), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.expect("vmm ignored SIGTERM");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("terminating on signal 15"), "{stderr}");
    }
}

#[test]
fn sigusr1_prints_the_memory_map_while_running() {
    require_kvm!();
    let mut child = Command::new(bin("vmm"))
        .args(["--guest", "builtin:idle"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "idle: waiting\n");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut report = String::new();
    let start = Instant::now();
    while !report.contains("testdev") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no report: {report}"
        );
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        report.push_str(&line);
    }
    assert!(report.contains("testdev"), "{report}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGUSR1 must not stop the VM"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn bad_guests_and_arguments_are_errors_not_panics() {
    require_kvm!();
    let scratch = Scratch::new("vmm-bad");
    let junk = scratch.join("junk.elf");
    std::fs::write(&junk, b"\x7fELF\x02\x01\x01 this is not a program").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--guest".into(), "builtin:nope".into()],
            "no built-in guest program",
        ),
        (
            vec![
                "--guest".into(),
                scratch.join("missing").display().to_string(),
            ],
            "reading --guest",
        ),
        (
            vec!["--guest".into(), junk.display().to_string()],
            "not a usable static x86-64 ELF",
        ),
        (
            vec![
                "--guest".into(),
                "builtin:hello".into(),
                "--memory".into(),
                "3M".into(),
            ],
            "--memory",
        ),
        (
            vec![
                "--guest".into(),
                "builtin:hello".into(),
                "--cpus".into(),
                "0".into(),
            ],
            "--cpus",
        ),
    ];
    for (args, message) in cases {
        let out = Command::new(bin("vmm")).args(&args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `--kernel` with an ELF "vmlinux" that checks the boot protocol (no real Linux needed): the
/// zero page, command line, initrd, e820 map and ACPI tables arrive, and the serial port works.
#[test]
fn linux_boot_protocol_reaches_the_kernel() {
    require_kvm!();
    let scratch = Scratch::new("vmm-linux");
    let kernel = dump_builtin(&scratch, "linux_boot_probe");
    let initrd = scratch.join("initrd");
    std::fs::write(&initrd, b"initrd-marker-4711\n").unwrap();
    let out = vmm(&[
        "--kernel",
        &kernel,
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 probe=yes",
        "--cpus",
        "2",
    ]);
    check(&out, 0, &["probe: serial ok, boot protocol ok\n"]);
    let stdout = text(&out.stdout);
    for needle in [
        // The machine model's parameter follows the user's (boot::linux::MACHINE_CMDLINE).
        "probe: cmdline \"console=ttyS0 probe=yes pci=noearly\"",
        "bytes \"initrd-marker-4711\\n\"",
        "probe: e820 0x0000100000-0x0004000000 type 1",
        "probe: acpi FACP APIC MCFG",
        "cs 0x10",
    ] {
        assert!(stdout.contains(needle), "{needle} missing in\n{stdout}");
    }
}

/// `--no-auto-cmdline`: the kernel gets the command line exactly as given.
#[test]
fn no_auto_cmdline_passes_the_command_line_as_given() {
    require_kvm!();
    let scratch = Scratch::new("vmm-raw-cmdline");
    let kernel = dump_builtin(&scratch, "linux_boot_probe");
    let out = vmm(&[
        "--kernel",
        &kernel,
        "--cmdline",
        "console=ttyS0 probe=yes",
        "--no-auto-cmdline",
    ]);
    check(&out, 0, &["probe: cmdline \"console=ttyS0 probe=yes\"\n"]);
}

#[test]
fn triple_fault_is_reported() {
    require_kvm!();
    let scratch = Scratch::new("vmm-triple");
    let kernel = dump_builtin(&scratch, "triple_fault");
    let out = vmm(&["--kernel", &kernel]);
    check(&out, 2, &["triple_fault: loading an empty IDT"]);
    assert!(text(&out.stderr).contains("triple fault (KVM_EXIT_SHUTDOWN) on vcpu0"));
}
