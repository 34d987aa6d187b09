//! ivshmem end to end: a real ivshmem-server, VMs running the built-in ivshmem guest programs
//! (`vmm --ivshmem doorbell,...`), and a host peer (the `peer` library) in this test, all at
//! once.

use std::time::{Duration, Instant};

use harness::qemu::QemuDoorbell;
use harness::vm::*;
use harness::{require_kvm, require_qemu, Scratch, Server};

/// Two VMs and a host peer on one server: each publishes a message in its directory slot, and
/// everybody sees everybody's message; the VMs ring each other and the host on vector 1, and
/// the host rings both VMs on vector 0: every doorbell arrives, on its vector, and no doorbell
/// took the VMM's slow path. (Separate vectors per sender because simultaneous doorbells on
/// one vector merge into one interrupt.)
#[test]
fn two_vms_and_a_host_peer_exchange_messages_and_doorbells() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-vms");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "2"]);
    let mut host = HostPeer::connect(&socket, 2);
    host.publish("hello from the host");

    let spec = [doorbell(&socket, 2)];
    let args = "peers=2 doorbells=2 vector=1 timeout_ms=60000";
    let vm_a = Vm::start("vm-a", "ivshmem_demo", &spec, args, &[]);
    let vm_b = Vm::start("vm-b", "ivshmem_demo", &spec, args, &[]);

    // Host side: answer each VM's slot with one doorbell on vector 1; collect theirs.
    let mut rung = Vec::new();
    let mut seen = Vec::new();
    let deadline = Instant::now() + VM_TIMEOUT;
    while (rung.len() < 2 || host.received[1] < 2) && Instant::now() < deadline {
        for (id, text) in host.directory() {
            if !rung.contains(&id) {
                host.ring(id, 0, Duration::from_secs(10));
                rung.push(id);
                seen.push((id, text));
            }
        }
        host.collect_doorbells(Duration::from_millis(20));
    }
    assert_eq!(rung.len(), 2, "host saw the VMs' slots: {seen:?}");
    assert_eq!(host.received, vec![0, 2], "host doorbells per vector");
    for (id, text) in &seen {
        assert_eq!(text, &format!("hello from VM {id}"));
    }

    let a = vm_a.finish(VM_TIMEOUT);
    let b = vm_b.finish(VM_TIMEOUT);
    for (vm, other) in [(&a, &b), (&b, &a)] {
        vm.assert_code(0);
        let other_id = demo_id(other);
        let out = &vm.stdout;
        assert!(
            out.contains(&format!("peer {} says: \"hello from the host\"", host.id())),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "peer {other_id} says: \"hello from VM {other_id}\""
            )),
            "{out}"
        );
        assert_eq!(out.matches("doorbell on vector 0").count(), 1, "{out}");
        assert_eq!(out.matches("doorbell on vector 1").count(), 1, "{out}");
        assert_eq!(vm.stat("ivshmem_slow_doorbells"), 0, "{}", vm.stderr);
    }
}

/// Two VMs play doorbell ping-pong (partners found through the directory), halting between
/// doorbells: every round trip completes and no doorbell exits to the VMM.
#[test]
fn two_vms_play_ping_pong() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-pingpong");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    let spec = [doorbell(&socket, 1)];
    let pong = Vm::start(
        "pong",
        "ivshmem_pingpong",
        &spec,
        "role=pong rounds=300 warmup=30",
        &[],
    );
    let ping = Vm::start(
        "ping",
        "ivshmem_pingpong",
        &spec,
        "role=ping rounds=300 warmup=30",
        &[],
    );
    let ping = ping.finish(VM_TIMEOUT);
    let pong = pong.finish(VM_TIMEOUT);
    ping.assert_code(0);
    pong.assert_code(0);
    let rtt = ping.number("rtt_ns");
    assert!(rtt > 0, "{}", ping.stdout);
    assert!(
        pong.stdout.contains("answered 330 rings"),
        "{}",
        pong.stdout
    );
    for vm in [&ping, &pong] {
        assert_eq!(vm.stat("ivshmem_slow_doorbells"), 0);
        // 330 doorbells each way; the exits are set-up (PCI config, console, clock).
        assert!(vm.stat("exits_mmio") < 300, "{}: {}", vm.name, vm.stderr);
    }
}

/// A host peer that joins while a VM runs is seen by the VM's device (the VM rings it, and is
/// rung back); when it leaves, the device drops it (a doorbell to it takes the slow path and
/// goes nowhere) and the VM keeps working with the peer that stayed.
#[test]
fn a_peer_joining_and_leaving_while_a_vm_runs_is_seen_by_its_device() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-join-leave");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    let mut stayer = HostPeer::connect(&socket, 1);
    stayer.write_u64(0x320, stayer.id() as u64);
    let ops = "ops=wid:0x300,nz:0x310,ringat:0x310:0,irq:0,until:0x318:1,ringat:0x310:0,\
               ringat:0x320:0,irq:0 timeout_ms=60000";
    let mut vm = Vm::start("vm", "ivshmem_script", &[doorbell(&socket, 1)], ops, &[]);
    assert!(
        vm.wait_output("ok wid:0x300", VM_TIMEOUT),
        "{}",
        vm.stdout()
    );
    let vm_id = stayer.read_u64(0x300) as u16;

    // A newcomer joins; the VM's device hears of it, then the VM rings it.
    let mut newcomer = HostPeer::connect(&socket, 1);
    let joined = format!("peer {} joined", newcomer.id());
    assert!(vm.wait_stderr(&joined, VM_TIMEOUT), "{}", vm.stderr());
    newcomer.write_u64(0x310, newcomer.id() as u64);
    newcomer.expect_doorbell(0, VM_TIMEOUT);
    newcomer.ring(vm_id, 0, Duration::from_secs(10));
    assert!(vm.wait_output("ok irq:0", VM_TIMEOUT), "{}", vm.stdout());

    // It leaves; once the device knows, the VM rings it again (goes nowhere) and then the
    // peer that stayed, which answers.
    let left = format!("peer {} left", newcomer.id());
    drop(newcomer);
    assert!(vm.wait_stderr(&left, VM_TIMEOUT), "{}", vm.stderr());
    stayer.write_u64(0x318, 1);
    stayer.expect_doorbell(0, VM_TIMEOUT);
    stayer.ring(vm_id, 0, Duration::from_secs(10));
    let vm = vm.finish(VM_TIMEOUT);
    vm.assert_code(0);
    assert_eq!(vm.stat("ivshmem_slow_doorbells"), 1, "{}", vm.stderr);
}

/// Killing a VM and a host peer process (SIGKILL) in the middle leaves the server, the other
/// VM and the other host peer working: they play 200 rounds of ping-pong afterwards, and a new
/// VM can still join.
#[test]
fn killing_a_vm_and_a_host_peer_leaves_the_others_working() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-kill");
    let socket = scratch.join("sock");
    let server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    let mut host = HostPeer::connect(&socket, 1);
    host.publish("pingpong ping");
    let spec = [doorbell(&socket, 1)];

    let mut client = std::process::Command::new(harness::bin("ivshmem-client"))
        .arg("-S")
        .arg(&socket)
        .args(["-c", "sleep 120000"]) // stays connected until killed
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn ivshmem-client");
    let victim = Vm::start(
        "victim",
        "ivshmem_script",
        &spec,
        "ops=show,sleep:120000",
        &[],
    );
    let mut pong = Vm::start(
        "pong",
        "ivshmem_pingpong",
        &spec,
        "role=pong rounds=200 warmup=0",
        &[],
    );
    let mut joined = Vec::new();
    while joined.len() < 3 {
        joined.push(host.wait_join(VM_TIMEOUT));
    }
    let mut victim = victim;
    assert!(victim.wait_output("ok show", VM_TIMEOUT));
    assert!(pong.wait_output("answering", VM_TIMEOUT));

    victim.kill();
    let _ = client.kill();
    let _ = client.wait();
    let left = [host.wait_left(VM_TIMEOUT), host.wait_left(VM_TIMEOUT)];

    // The survivors play.
    let pong_id = (0..256u16)
        .find(|&id| host.slot_text(id).as_deref() == Some("pingpong pong"))
        .expect("pong published its slot");
    assert!(
        left.iter().all(|id| joined.contains(id) && *id != pong_id),
        "joined {joined:?}, left {left:?}, pong {pong_id}; server log:\n{}",
        server.log_text()
    );
    for _ in 0..200 {
        host.ring(pong_id, 0, Duration::from_secs(10));
        host.expect_doorbell(0, Duration::from_secs(30));
    }
    let pong = pong.finish(VM_TIMEOUT);
    pong.assert_code(0);
    assert_eq!(pong.stat("ivshmem_slow_doorbells"), 0);

    // And newcomers are still welcome.
    run_vm("late", "ivshmem_check", &spec, "variant=doorbell", &[]).assert_code(0);
}

/// Two VMs with ivshmem-plain devices on the same file share it with each other and with the
/// host (which wrote a value into the file before they started and reads theirs afterwards).
#[test]
fn plain_devices_on_one_file_share_memory() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-plain-share");
    let path = scratch.join("shared");
    let mut contents = vec![0u8; 1 << 20];
    contents[0x110..0x118].copy_from_slice(&0xC3u64.to_le_bytes());
    std::fs::write(&path, &contents).unwrap();
    let spec = [format!("plain,path={}", path.display())];
    let a = Vm::start(
        "a",
        "ivshmem_script",
        &spec,
        "ops=id:0,until:0x110:0xC3,w64:0x100:0xA1,until:0x108:0xB2 timeout_ms=60000",
        &[],
    );
    let b = Vm::start(
        "b",
        "ivshmem_script",
        &spec,
        "ops=id:0,until:0x110:0xC3,w64:0x108:0xB2,until:0x100:0xA1 timeout_ms=60000",
        &[],
    );
    a.finish(VM_TIMEOUT).assert_code(0);
    b.finish(VM_TIMEOUT).assert_code(0);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), 1 << 20);
    assert_eq!(&after[0x100..0x108], &0xA1u64.to_le_bytes());
    assert_eq!(&after[0x108..0x110], &0xB2u64.to_le_bytes());
}

/// One VM with two doorbell devices on two servers: each device has its own id, memory and
/// peers; doorbells go to the right server's peer on the right vector, and come back on the
/// right device.
#[test]
fn one_vm_with_two_devices_on_two_servers() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-two-servers");
    let (sock1, sock2) = (scratch.join("s1"), scratch.join("s2"));
    let _s1 = Server::start(&sock1, &["--memfd", "-l", "1M", "-n", "2"]);
    let _s2 = Server::start(&sock2, &["--memfd", "-l", "2M", "-n", "1"]);
    let mut h1 = HostPeer::connect(&sock1, 2);
    let mut h2 = HostPeer::connect(&sock2, 1);
    for (h, marker) in [(&h1, 0x1111u64), (&h2, 0x2222)] {
        h.write_u64(0x200, h.id() as u64);
        h.write_u64(0x208, marker);
    }
    let ops = "ops=dev:0,until:0x208:0x1111,wid:0x210,ringat:0x200:1,irq:1,\
               dev:1,until:0x208:0x2222,wid:0x210,ringat:0x200:0,irq:0,dev:0,quiet:0:200,show,\
               dev:1,show timeout_ms=60000";
    let vm = Vm::start(
        "two-devices",
        "ivshmem_script",
        &[doorbell(&sock1, 2), doorbell(&sock2, 1)],
        ops,
        &[],
    );
    h1.expect_doorbell(1, VM_TIMEOUT);
    let id1 = h1.read_u64(0x210) as u16;
    h1.ring(id1, 1, Duration::from_secs(10));
    h2.expect_doorbell(0, VM_TIMEOUT);
    let id2 = h2.read_u64(0x210) as u16;
    h2.ring(id2, 0, Duration::from_secs(10));
    let vm = vm.finish(VM_TIMEOUT);
    vm.assert_code(0);
    assert!(
        vm.stdout
            .contains(&format!("dev=0 id={id1} shm_size=1048576 doorbell=1")),
        "{}",
        vm.stdout
    );
    assert!(
        vm.stdout
            .contains(&format!("dev=1 id={id2} shm_size=2097152 doorbell=1")),
        "{}",
        vm.stdout
    );
    assert_eq!(
        h1.peer.drain_vector(0).unwrap(),
        0,
        "nothing on server 1 vector 0"
    );
    assert_eq!(vm.stat("ivshmem_slow_doorbells"), 0);
}

/// When the server dies, the VM and the host peer keep the memory and the doorbells they
/// already had: they keep exchanging data and doorbells (and a VM can ring itself).
#[test]
fn vm_and_host_keep_working_after_the_server_dies() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-server-dies");
    let socket = scratch.join("sock");
    let server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "2"]);
    let mut host = HostPeer::connect(&socket, 2);
    host.write_u64(0x400, host.id() as u64);
    let ops = "ops=ringself:1,irq:1,wid:0x408,until:0x410:1,ringat:0x400:0,irq:1,ringself:0,irq:0,\
               show timeout_ms=60000";
    let mut vm = Vm::start(
        "survivor",
        "ivshmem_script",
        &[doorbell(&socket, 2)],
        ops,
        &[],
    );
    assert!(
        vm.wait_output("ok wid:0x408", VM_TIMEOUT),
        "{}",
        vm.stdout()
    );
    let vm_id = host.read_u64(0x408) as u16;
    host.news();

    drop(server);
    assert!(
        vm.wait_stderr("server connection ended", VM_TIMEOUT),
        "{}",
        vm.stderr()
    );
    host.write_u64(0x410, 1);
    host.expect_doorbell(0, VM_TIMEOUT);
    host.ring(vm_id, 1, Duration::from_secs(10));
    let vm = vm.finish(VM_TIMEOUT);
    vm.assert_code(0);
    assert_eq!(vm.stat("ivshmem_slow_doorbells"), 0, "{}", vm.stderr);
}

/// Two VMs with plain devices on one file play ping-pong through shared memory alone (both
/// spin on a word of BAR2; no doorbells, no exits).
#[test]
fn two_vms_play_ping_pong_through_plain_shared_memory() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-memory-pingpong");
    let spec = [format!(
        "plain,path={},size=1M",
        scratch.join("shared").display()
    )];
    let args = "transport=memory rounds=200 warmup=20 timeout_ms=60000";
    let pong = Vm::start(
        "pong",
        "ivshmem_pingpong",
        &spec,
        &format!("role=pong {args}"),
        &[],
    );
    let ping = Vm::start(
        "ping",
        "ivshmem_pingpong",
        &spec,
        &format!("role=ping {args}"),
        &[],
    );
    let ping = ping.finish(VM_TIMEOUT);
    let pong = pong.finish(VM_TIMEOUT);
    ping.assert_code(0);
    pong.assert_code(0);
    assert!(ping.value("rtt_ns").is_some(), "{}", ping.stdout);
    assert!(
        pong.stdout.contains("answered 220 rounds"),
        "{}",
        pong.stdout
    );
    assert!(ping.stat("exits_mmio") < 200, "{}", ping.stderr);
}

/// The demo as scripts/demo.sh runs it: `ivshmem-client` as the host peer writes its slot and
/// rings everyone (`int all`) once a VM has rung it; two VMs run `ivshmem_demo peers=2`.
#[test]
fn demo_with_ivshmem_client_and_two_vms() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-demo");
    let socket = scratch.join("sock");
    let server = Server::start(&socket, &["--memfd", "-l", "1M"]);
    // The harness's readiness probe was peer 0, so the client is peer 1: slot 1 at offset 64.
    // Each VM's doorbell comes from the other VM, which rings it once it has seen its slot
    // (written after the guest enabled MSI-X): the host's `int all` is extra, so it needs no
    // second try after a pause for a VM that was not ready yet.
    let client = std::process::Command::new(harness::bin("ivshmem-client"))
        .arg("-S")
        .arg(&socket)
        .args([
            "-c",
            "write 80 hello from the host\\0; write 64 IVSH; wait 0 60000; int all",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ivshmem-client");
    assert!(
        harness::wait_until(VM_TIMEOUT, || server.log_text().contains("peer 1 joined")),
        "{}",
        server.log_text()
    );
    let spec = [doorbell(&socket, 1)];
    let args = "peers=2 timeout_ms=60000";
    let vm1 = Vm::start("vm1", "ivshmem_demo", &spec, args, &[]);
    let vm2 = Vm::start("vm2", "ivshmem_demo", &spec, args, &[]);
    let (vm1, vm2) = (vm1.finish(VM_TIMEOUT), vm2.finish(VM_TIMEOUT));
    let host = client.wait_with_output().expect("ivshmem-client output");
    assert!(host.status.success(), "ivshmem-client: {host:?}");
    let host_out = String::from_utf8_lossy(&host.stdout);
    // Both VMs ring the host; two rings close together are one notification (eventfd).
    assert!(
        host_out.contains("receive notification from peer_id=1 vector=0"),
        "{host_out}"
    );
    for (vm, other) in [(&vm1, &vm2), (&vm2, &vm1)] {
        vm.assert_code(0);
        let other_id = demo_id(other);
        assert!(
            vm.stdout.contains("peer 1 says: \"hello from the host\""),
            "{}",
            vm.stdout
        );
        assert!(
            vm.stdout.contains(&format!(
                "peer {other_id} says: \"hello from VM {other_id}\""
            )),
            "{}",
            vm.stdout
        );
        assert!(vm.stdout.contains("ivshmem-demo: done"), "{}", vm.stdout);
    }
}

/// A server that completes the handshake correctly and then sends nonsense (values out of
/// range, a leave for a peer nobody announced, a second shared memory): the VM reports the
/// first bad message once, ignores them all, and keeps its memory and its doorbells.
#[test]
fn a_misbehaving_server_is_reported_once_and_ignored() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    use std::os::unix::net::UnixListener;

    use nix::sys::eventfd::{EfdFlags, EventFd};
    use protocol::fdpass::send_message_all;

    require_kvm!();
    let scratch = Scratch::new("ivshmem-bad-server");
    let socket = scratch.join("sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let shm = std::fs::File::from(
        nix::sys::memfd::memfd_create(c"bad-server", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap(),
    );
    shm.set_len(1 << 20).unwrap();
    let own: Vec<EventFd> = (0..2)
        .map(|_| EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap())
        .collect();

    let mut vm = Vm::start(
        "victim",
        "ivshmem_script",
        &[doorbell(&socket, 2)],
        "ops=id:1,show,irq:0,w64:0:7 timeout_ms=60000",
        &[],
    );
    let (sock, _) = listener.accept().unwrap();
    let send = |value: i64, fd: Option<std::os::fd::BorrowedFd<'_>>| {
        send_message_all(sock.as_fd(), value, fd).unwrap()
    };
    send(0, None);
    send(1, None);
    send(-1, Some(shm.as_fd()));
    for fd in &own {
        send(1, Some(fd.as_fd()));
    }
    assert!(vm.wait_output("ok show", VM_TIMEOUT), "{}", vm.stdout());

    for _ in 0..20 {
        send(-5, None);
    }
    send(70_000, None);
    send(7, None);
    send(-1, Some(shm.as_fd()));
    assert!(
        vm.wait_stderr("bad message from the server", VM_TIMEOUT),
        "{}",
        vm.stderr()
    );
    own[0].write(1).unwrap();
    let vm = vm.finish(VM_TIMEOUT);
    vm.assert_code(0);
    assert_eq!(
        vm.stderr.matches("bad message from the server").count(),
        1,
        "reported once: {}",
        vm.stderr
    );
    let mut word = [0u8; 8];
    shm.read_exact_at(&mut word, 0).unwrap();
    assert_eq!(
        u64::from_le_bytes(word),
        7,
        "the VM's write reached the memory"
    );
    drop(sock);
}

/// 50 host peers join and leave while a VM with a doorbell device runs: the VMM follows every
/// one (ioeventfds added and removed, eventfds closed) and ends with the fds it started with.
#[test]
fn peers_coming_and_going_leak_no_fds_in_the_vmm() {
    require_kvm!();
    let scratch = Scratch::new("ivshmem-vmm-fds");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "2"]);
    let mut vm = Vm::start("idler", "idle", &[doorbell(&socket, 2)], "", &[]);
    assert!(
        vm.wait_output("idle: waiting", VM_TIMEOUT),
        "{}",
        vm.stdout()
    );
    // The baseline once the VMM has its whole handshake: the server may announce our own later
    // vectors after the device is up (there is no end marker), but always before the next peer's
    // join, so one peer coming and going first makes sure they are in.
    let warm_up = HostPeer::connect(&socket, 2);
    let warm_up_id = warm_up.id();
    drop(warm_up);
    assert!(
        vm.wait_stderr(&format!("peer {warm_up_id} left"), VM_TIMEOUT),
        "{}",
        vm.stderr()
    );
    let before = harness::fd_count(vm.pid());
    let mut last = 0;
    for _ in 0..50 {
        let peer = HostPeer::connect(&socket, 2);
        last = peer.id();
        drop(peer);
    }
    assert!(
        vm.wait_stderr(&format!("peer {last} left"), VM_TIMEOUT),
        "{}",
        vm.stderr()
    );
    let settled = harness::wait_until(Duration::from_secs(10), || {
        harness::fd_count(vm.pid()) == before
    });
    assert!(
        settled,
        "VMM fds: {before} before, {} after 50 peers came and went",
        harness::fd_count(vm.pid())
    );
    vm.kill();
}

/// A VM and a real QEMU `ivshmem-doorbell` device (Debian's QEMU, paused: it connects while the
/// device is created) on one server: the VM's device sees QEMU join with its 2 vectors, rings
/// both through ioeventfds (no slow doorbell), and sees QEMU leave when it is killed.
#[test]
fn a_vm_and_a_qemu_device_share_a_server() {
    require_kvm!();
    require_qemu!();
    let scratch = Scratch::new("ivshmem-vm-qemu");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "2"]);
    // The VM publishes its id, waits to be told QEMU's, rings both of QEMU's vectors, reports,
    // then waits for our doorbell.
    let ops = "ops=wid:0x408,nz:0x400,ringat:0x400:0,ringat:0x400:1,w64:0x410:1,irq:0 \
               timeout_ms=60000";
    let mut vm = Vm::start(
        "with-qemu",
        "ivshmem_script",
        &[doorbell(&socket, 2)],
        ops,
        &[],
    );
    assert!(
        vm.wait_output("ok wid:0x408", VM_TIMEOUT),
        "{}",
        vm.stdout()
    );

    let qemu = QemuDoorbell::spawn(&socket, 2);
    let joined = vm.wait_stderr("joined (2 vectors)", VM_TIMEOUT);
    let mut host = HostPeer::connect(&socket, 2);
    let vm_id = host.read_u64(0x408) as u16;
    // Ids are handed out in connect order: QEMU came right after the VM.
    let qemu_id = vm_id + 1;
    let told = joined
        && vm
            .stderr()
            .contains(&format!("peer {qemu_id} joined (2 vectors)"));
    if told {
        host.write_u64(0x400, qemu_id as u64);
    }
    let rang = told && vm.wait_output("ok w64:0x410:1", VM_TIMEOUT);
    drop(qemu);
    assert!(rang, "{}\n{}", vm.stdout(), vm.stderr());
    assert!(
        vm.wait_stderr(&format!("peer {qemu_id} left"), VM_TIMEOUT),
        "{}",
        vm.stderr()
    );
    host.ring(vm_id, 0, Duration::from_secs(10));
    let vm = vm.finish(VM_TIMEOUT);
    vm.assert_code(0);
    assert_eq!(vm.stat("ivshmem_slow_doorbells"), 0, "{}", vm.stderr);
}
