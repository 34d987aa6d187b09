//! ivshmem end to end: a real ivshmem-server, VMs running the built-in ivshmem guest programs
//! (`vmm --ivshmem doorbell,...`), and a host peer (the `peer` library) in this test, all at
//! once.

mod ivshmem_support;

use std::time::{Duration, Instant};

use harness::{kvm_available, Scratch, Server};
use ivshmem_support::*;

/// Two VMs and a host peer on one server: each publishes a message in its directory slot, and
/// everybody sees everybody's message; the VMs ring each other and the host on vector 1, and
/// the host rings both VMs on vector 1: every doorbell arrives, on vector 1 only, and no
/// doorbell took the VMM's slow path.
#[test]
fn two_vms_and_a_host_peer_exchange_messages_and_doorbells() {
    if !kvm_available("two_vms_and_a_host_peer_exchange_messages_and_doorbells") {
        return;
    }
    let scratch = Scratch::new("ivshmem-vms");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "2"]);
    let mut host = HostPeer::connect(&socket);
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
                host.ring(id, 1, Duration::from_secs(10));
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
        assert_eq!(out.matches("doorbell on vector 1").count(), 2, "{out}");
        assert!(!out.contains("doorbell on vector 0"), "{out}");
        assert_eq!(vm.stat("ivshmem_slow_doorbells"), 0, "{}", vm.stderr);
    }
}
