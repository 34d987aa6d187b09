//! The ivshmem PCI device as a guest sees it (the `ivshmem_check` guest program walks
//! docs/protocol.md, "The device": identity, BARs, MSI-X, registers, shared memory), what reaches
//! the VMM (exit counters from `vmm --stats`), and `--ivshmem` errors.

use std::time::Duration;

use harness::vm::*;
use harness::{require_kvm, Scratch, Server};

#[test]
fn plain_device_passes_the_register_check() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-check-plain");
    let file = scratch.join("mem");
    let spec = [format!("plain,path={},size=2M", file.display())];
    let out = run_vm(
        "plain",
        "ivshmem_check",
        &spec,
        "variant=plain size=2097152",
        &[],
    );
    out.assert_code(0);
    assert!(out.stdout.contains("ok: plain device #0"), "{}", out.stdout);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 << 20);

    // memfd, and the legacy `shm=NAME,size=MB` spelling (/dev/shm/NAME).
    run_vm(
        "memfd",
        "ivshmem_check",
        &["plain,memfd,size=1M".to_string()],
        "variant=plain size=1048576",
        &[],
    )
    .assert_code(0);
    let name = format!("ivshmem-test-legacy-{}", std::process::id());
    let out = run_vm(
        "legacy",
        "ivshmem_check",
        &[format!("shm={name},size=1")],
        "variant=plain size=1048576",
        &[],
    );
    let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
    out.assert_code(0);
}

#[test]
fn doorbell_device_passes_the_register_check_with_its_server_id() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-check-doorbell");
    let socket = scratch.join("sock");
    // -l 3M is rounded up to 4M by the server.
    let _server = Server::start(&socket, &["--memfd", "-l", "3M", "-n", "4"]);
    let mut host = HostPeer::connect(&socket, 4);
    let vm = Vm::start(
        "doorbell",
        "ivshmem_check",
        &[doorbell(&socket, 4)],
        "variant=doorbell size=4194304 vectors=4",
        &[],
    );
    let vm_id = host.wait_join(VM_TIMEOUT);
    let out = vm.finish(VM_TIMEOUT);
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!("id={vm_id} shm_size=4194304")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("msix_vectors=4"), "{}", out.stdout);
}

/// A plain and a doorbell device in one VM: each is checked as what it is.
#[test]
fn mixed_devices_in_one_vm_each_pass_the_check() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-check-mixed");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "2"]);
    let specs = ["plain,memfd,size=8M".to_string(), doorbell(&socket, 2)];
    run_vm(
        "mixed0",
        "ivshmem_check",
        &specs,
        "index=0 variant=plain size=8388608",
        &[],
    )
    .assert_code(0);
    run_vm(
        "mixed1",
        "ivshmem_check",
        &specs,
        "index=1 variant=doorbell size=1048576 vectors=2",
        &[],
    )
    .assert_code(0);
    // A check that expects the wrong variant fails with its documented code.
    run_vm(
        "wrong",
        "ivshmem_check",
        &specs,
        "index=0 variant=doorbell",
        &[],
    )
    .assert_code(24);
}

/// Runs `rounds` doorbell round trips between a VM (ping) and a host echo; returns the VM.
fn ping_host(socket: &std::path::Path, rounds: u64, spec: String) -> VmOutcome {
    let host = HostPeer::connect(socket, 1);
    let (host_id, echo) = spawn_host_echo(host, rounds);
    let out = run_vm(
        "ping",
        "ivshmem_pingpong",
        &[spec],
        &format!("role=ping peer={host_id} rounds={rounds} warmup=0 timeout_ms=30000"),
        &[],
    );
    assert_eq!(echo.join().unwrap(), rounds, "host echo answered");
    out.assert_code(0);
    out
}

/// Doorbells matched by an ioeventfd and MSI-X deliveries through irqfd never exit to the VMM:
/// 1000 round trips cost (almost) no more MMIO exits than 10. With `ioeventfd=off` every
/// doorbell is an exit served by the VMM's slow path.
#[test]
fn doorbells_do_not_exit_to_the_vmm() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-exits-doorbell");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    let few = ping_host(&socket, 10, doorbell(&socket, 1));
    let many = ping_host(&socket, 1000, doorbell(&socket, 1));
    let (e_few, e_many) = (few.stat("exits_mmio"), many.stat("exits_mmio"));
    assert!(
        e_many < e_few + 50,
        "exits_mmio: {e_few} for 10 round trips, {e_many} for 1000"
    );
    assert_eq!(many.stat("ivshmem_slow_doorbells"), 0);

    let slow = ping_host(
        &socket,
        200,
        format!("doorbell,socket={},ioeventfd=off", socket.display()),
    );
    assert_eq!(slow.stat("ivshmem_slow_doorbells"), 200);
    assert!(
        slow.stat("exits_mmio") >= e_few + 200 - 50,
        "{}",
        slow.stderr
    );
}

/// Writing 256 MiB into BAR2 costs no exits when it is a memory slot (`mapping=slot`, the
/// default), and one exit per store with `mapping=trap`.
#[test]
fn shared_memory_traffic_exits_only_with_mapping_trap() {
    require_kvm!();
    let small = run_vm(
        "slot-4M",
        "ivshmem_bandwidth",
        &["plain,memfd,size=4M".to_string()],
        "total_mb=4 window_mb=1",
        &[],
    );
    let big = run_vm(
        "slot-256M",
        "ivshmem_bandwidth",
        &["plain,memfd,size=4M".to_string()],
        "total_mb=256 window_mb=1 max_ms=20000",
        &[],
    );
    small.assert_code(0);
    big.assert_code(0);
    assert_eq!(
        big.value("bar2_bytes").as_deref(),
        Some("268435456"),
        "{}",
        big.stdout
    );
    let (e_small, e_big) = (small.stat("exits_mmio"), big.stat("exits_mmio"));
    assert!(
        e_big < e_small + 20,
        "exits_mmio: {e_small} for 4 MiB, {e_big} for 256 MiB"
    );

    let trap = run_vm(
        "trap",
        "ivshmem_bandwidth",
        &["plain,memfd,size=4M,mapping=trap".to_string()],
        "total_mb=1 window_mb=1 max_ms=200",
        &[],
    );
    trap.assert_code(0);
    let stores = trap.value("bar2_bytes").unwrap().parse::<u64>().unwrap() / 8;
    assert!(stores > 0, "{}", trap.stdout);
    assert!(
        trap.stat("exits_mmio") >= e_small + stores,
        "{} stores but exits_mmio={} (slot: {e_small})\n{}",
        stores,
        trap.stat("exits_mmio"),
        trap.stdout
    );
}

/// Bad `--ivshmem` values and an absent server end the vmm with status 1 and a message naming
/// the problem, before the guest runs.
#[test]
fn bad_ivshmem_options_are_reported() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-bad-options");
    let missing = scratch.join("no-such-socket");
    let cases = [
        ("plain,memfd,size=3M".to_string(), "a power of two"),
        ("plain,memfd".to_string(), "needs size="),
        ("doorbell".to_string(), "needs socket="),
        ("virtio".to_string(), "--ivshmem"),
        (doorbell(&missing, 1), "no-such-socket"),
    ];
    for (spec, message) in cases {
        let out = Vm::start("bad", "ivshmem_check", std::slice::from_ref(&spec), "", &[])
            .finish(Duration::from_secs(30));
        assert_eq!(out.code, Some(1), "{spec}: {out:?}");
        assert!(out.stderr.contains(message), "{spec}: {}", out.stderr);
        assert!(!out.stdout.contains("ivshmem_check"), "{spec}: guest ran");
    }
}

/// The guest moves all three BARs while the device is live (decoding on): the shared memory,
/// the doorbell (still an ioeventfd: no slow path) and MSI-X delivery all follow.
#[test]
fn bars_moved_by_the_guest_keep_memory_doorbells_and_interrupts_working() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-move-bars");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    let mut host = HostPeer::connect(&socket, 1);
    host.write_u64(0x500, host.id() as u64);
    host.write_u64(0x508, 0x77);
    let ops = "ops=until:0x508:0x77,wid:0x518,move:2,until:0x508:0x77,w64:0x510:0x88,move:0,\
               ringat:0x500:0,move:1,irq:0 timeout_ms=60000";
    let mut vm = Vm::start("mover", "ivshmem_script", &[doorbell(&socket, 1)], ops, &[]);
    assert!(
        vm.wait_output("rang peer", VM_TIMEOUT),
        "{}\n{}",
        vm.stdout(),
        vm.stderr()
    );
    host.expect_doorbell(0, VM_TIMEOUT);
    assert_eq!(host.read_u64(0x510), 0x88, "written through the moved BAR2");
    let vm_id = host.read_u64(0x518) as u16;
    host.ring(vm_id, 0, Duration::from_secs(10));
    let out = vm.finish(VM_TIMEOUT);
    out.assert_code(0);
    assert_eq!(out.stdout.matches("now at").count(), 3, "{}", out.stdout);
    assert_eq!(out.stat("ivshmem_slow_doorbells"), 0, "{}", out.stderr);
}

/// A doorbell to a masked MSI-X vector is held: no interrupt, the PBA bit is set; unmasking
/// delivers it once and clears the bit (QEMU's mask/unmask/poll behaviour).
#[test]
fn a_doorbell_to_a_masked_vector_is_held_pending_until_unmask() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-masked");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    let mut host = HostPeer::connect(&socket, 1);
    let ops = "ops=wid:0x600,mask:0,w64:0x608:1,until:0x610:1,quiet:0:300,pending:0:1,unmask:0,\
               irq:0,pending:0:0,quiet:0:100 timeout_ms=60000";
    let mut vm = Vm::start(
        "masked",
        "ivshmem_script",
        &[doorbell(&socket, 1)],
        ops,
        &[],
    );
    assert!(
        vm.wait_output("ok w64:0x608:1", VM_TIMEOUT),
        "{}\n{}",
        vm.stdout(),
        vm.stderr()
    );
    let vm_id = host.read_u64(0x600) as u16;
    host.ring(vm_id, 0, Duration::from_secs(10));
    host.write_u64(0x610, 1);
    vm.finish(VM_TIMEOUT).assert_code(0);
}

/// `--guest-args` reaches the program (here: which device to check), a malformed number is
/// reported by the guest (exit 2), and arguments longer than the 4 KiB page are refused by the
/// vmm before the guest runs.
#[test]
fn guest_args_reach_the_program() {
    require_kvm!();
    let spec = ["plain,memfd,size=1M".to_string()];
    let out = run_vm("args", "ivshmem_check", &spec, "index=3", &[]);
    out.assert_code(10);
    assert!(
        out.stdout.contains("no ivshmem device #3"),
        "{}",
        out.stdout
    );
    let out = run_vm("args", "ivshmem_check", &spec, "size=lots", &[]);
    out.assert_code(2);
    assert!(
        out.stdout.contains("size=lots is not a number"),
        "{}",
        out.stdout
    );
    let long = format!("x={}", "y".repeat(5000));
    let out = run_vm("args", "ivshmem_check", &spec, &long, &[]);
    out.assert_code(1);
    assert!(out.stderr.contains("--guest-args"), "{}", out.stderr);
}

/// A 4 GiB BAR2 (more than a 32-bit BAR can describe): a 4 GiB plain device (sparse
/// memfd) next to a 1 GiB one; both pass the check and their last words are usable.
#[test]
fn a_4_gib_shared_memory_is_a_64_bit_bar() {
    require_kvm!();
    let specs = [
        "plain,memfd,size=4G".to_string(),
        "plain,memfd,size=1G".to_string(),
    ];
    run_vm(
        "big",
        "ivshmem_check",
        &specs,
        "index=0 size=4294967296",
        &[],
    )
    .assert_code(0);
    let out = run_vm(
        "big",
        "ivshmem_script",
        &specs,
        "ops=w64:0xFFFFFFF8:5,dev:1,w64:0x3FFFFFF8:7,dev:0,until:0xFFFFFFF8:5,dev:1,\
         until:0x3FFFFFF8:7,show",
        &[],
    );
    out.assert_code(0);
    assert!(
        out.stdout.contains("dev=1 id=0 shm_size=1073741824"),
        "{}",
        out.stdout
    );
}
