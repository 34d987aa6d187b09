//! Who is there, seen from a guest program: `ivshmem_peers` (guest/src/bin) reads the server's
//! state table (`--state-table`) through `guest::peers` and sleeps on the lifecycle doorbell
//! (`--lifecycle-vector`) while host peers join and leave; without a table it says so.

use std::time::Duration;

use harness::vm::*;
use harness::{require_kvm, Scratch, Server};

/// Where the server keeps the table in these tests (the memory is 4 MiB).
const TABLE: &str = "2M";
const TABLE_ARG: &str = "table=0x200000";
const WAIT: Duration = Duration::from_secs(30);

fn server(socket: &std::path::Path, table: bool) -> Server {
    let mut args = vec!["--memfd", "-l", "4M", "-n", "2"];
    if table {
        args.extend(["--state-table", TABLE, "--lifecycle-vector", "1"]);
    }
    Server::start(socket, &args)
}

#[test]
fn guest_program_lists_waits_for_and_watches_peers() {
    require_kvm!();
    let scratch = Scratch::new("guest-peers");
    let socket = scratch.join("sock");
    let _server = server(&socket, true);
    // The server hands out ids in order: host a, the VM, then hosts b and c.
    let a = HostPeer::connect(&socket, 2);
    let (ida, idvm, idb, idc) = (a.id(), a.id() + 1, a.id() + 2, a.id() + 3);
    let mut vm = Vm::start(
        "peers",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        &format!("{TABLE_ARG} lifecycle=1 wait={idb} watch=2 timeout_ms=30000"),
        &[],
    );
    assert!(
        vm.wait_output("ivshmem-peers: 1 other peer(s)", WAIT),
        "{}",
        vm.stdout()
    );
    let listed = vm.stdout();
    let me = format!("I am peer {idvm} (table at 0x200000, lifecycle vector 1)");
    assert!(listed.contains(&me), "{listed}");
    assert!(
        listed.contains(&format!("peer_id={ida} vectors=2\n")),
        "{listed}"
    );

    // wait=B: peer b joins, the guest wakes on the lifecycle doorbell and prints it.
    let b = HostPeer::connect(&socket, 2);
    assert_eq!(b.id(), idb);
    assert!(
        vm.wait_output("ivshmem-peers: watching for 2 change(s)", WAIT),
        "{}",
        vm.stdout()
    );
    let line = format!("peer_id={idb} vectors=2\n");
    assert!(vm.stdout().contains(&line), "{}", vm.stdout());

    // watch=2: a leave and a join.
    drop(a);
    let line = format!("peer_id={ida} left");
    assert!(vm.wait_output(&line, WAIT), "{}", vm.stdout());
    let c = HostPeer::connect(&socket, 2);
    assert_eq!(c.id(), idc);
    let out = vm.finish(WAIT);
    out.assert_code(0);
    let line = format!("peer_id={idc} joined with 2 vector(s)");
    assert!(out.stdout.contains(&line), "{}", out.stdout);
    assert!(
        out.stdout.contains("ivshmem-peers: done: 2 change(s)"),
        "{}",
        out.stdout
    );
    let line = format!("peer_id={idb} left");
    assert!(!out.stdout.contains(&line), "{}", out.stdout);
    drop((b, c));
}

#[test]
fn guest_program_without_lifecycle_vector_polls_sees_joins_and_times_out() {
    require_kvm!();
    let scratch = Scratch::new("guest-peers-poll");
    let socket = scratch.join("sock");
    let _server = server(&socket, true);
    let host = HostPeer::connect(&socket, 2);
    // Peer `host` is there at once (any other peer); peer 9 never comes: exit 1 after 300 ms.
    let out = run_vm(
        "peers-poll",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        &format!("{TABLE_ARG} wait=any"),
        &[],
    );
    out.assert_code(0);
    assert!(out.stdout.contains("no lifecycle vector"), "{}", out.stdout);
    let line = format!("peer_id={} vectors=2", host.id());
    assert_eq!(out.stdout.matches(&line).count(), 2, "{}", out.stdout);
    let out = run_vm(
        "peers-timeout",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        &format!("{TABLE_ARG} wait=9 timeout_ms=300"),
        &[],
    );
    out.assert_code(1);
    assert!(
        out.stdout.contains("peer 9 did not connect in time"),
        "{}",
        out.stdout
    );

    // A join noticed by re-reading the table at the timer tick.
    let mut vm = Vm::start(
        "peers-poll-join",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        &format!("{TABLE_ARG} wait=any watch=1"),
        &[],
    );
    assert!(
        vm.wait_output("watching for 1 change(s)", WAIT),
        "{}",
        vm.stdout()
    );
    let newcomer = HostPeer::connect(&socket, 2);
    let out = vm.finish(WAIT);
    out.assert_code(0);
    let line = format!("peer_id={} joined with 2 vector(s)", newcomer.id());
    assert!(out.stdout.contains(&line), "{}", out.stdout);
}

/// A server upgrade rewrites the table (every row gets a new generation) and rings nobody: the
/// watching guest reports no change, and still sees the next join.
#[test]
fn guest_program_watches_across_a_server_upgrade() {
    require_kvm!();
    let scratch = Scratch::new("guest-peers-upgrade");
    let socket = scratch.join("sock");
    let mut server = server(&socket, true);
    let a = HostPeer::connect(&socket, 2);
    let mut vm = Vm::start(
        "peers-upgrade",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        &format!("{TABLE_ARG} lifecycle=1 watch=1"),
        &[],
    );
    assert!(
        vm.wait_output("watching for 1 change(s)", WAIT),
        "{}",
        vm.stdout()
    );
    let _successor = server.upgrade();
    let b = HostPeer::connect(&socket, 2);
    let out = vm.finish(WAIT);
    out.assert_code(0);
    let line = format!("peer_id={} joined with 2 vector(s)", b.id());
    assert!(out.stdout.contains(&line), "{}", out.stdout);
    let line = format!("peer_id={} left", a.id());
    assert!(!out.stdout.contains(&line), "{}", out.stdout);
}

#[test]
fn guest_program_without_a_state_table_says_so() {
    require_kvm!();
    let scratch = Scratch::new("guest-peers-none");
    let socket = scratch.join("sock");
    let _server = server(&socket, false);
    // A server without --state-table: nothing valid at the offset (exit 13).
    let out = run_vm(
        "peers-none",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        TABLE_ARG,
        &[],
    );
    out.assert_code(13);
    assert!(
        out.stdout.contains("no state table there"),
        "{}",
        out.stdout
    );
    // No table= at all, or one that does not fit: exit 12.
    let out = run_vm(
        "peers-noarg",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        "",
        &[],
    );
    out.assert_code(12);
    assert!(out.stdout.contains("no table=OFFSET"), "{}", out.stdout);
    let out = run_vm(
        "peers-nofit",
        "ivshmem_peers",
        &[doorbell(&socket, 2)],
        "table=0x300000",
        &[],
    );
    out.assert_code(12);
    assert!(
        out.stdout.contains("no room for a state table"),
        "{}",
        out.stdout
    );
}
