//! An abusive guest (`builtin:abuse`: random config writes, BARs over RAM, over each other and
//! at absurd addresses, BARs sized while live, doorbell floods to unknown peers and vectors,
//! MSI-X table and PBA garbage, BAR0 swept at every offset and size) against a real VMM on a
//! real server, while a VM and a host peer play ping-pong on the same server: the abuser's VMM
//! keeps running (the program reaches its end and exits 0 after checking the device still
//! works), the ping-pong is unaffected, the VMM leaks no fd, and what it logs stays bounded
//! (problems are logged rate-limited).

use std::time::{Duration, Instant};

use harness::vm::*;
use harness::{fd_count, kvm_available, wait_until, Scratch, Server};

const SHM_SIZE: usize = 1 << 20;
/// The guest's `STOP_FLAG`, written 128 bytes before the end of the shared memory.
const STOP_FLAG: u64 = 0x5354_4F50_4142_5553;
/// Log lines the VMM may print per second of abuse (the dispatch's rate limit is 10/s) plus a
/// constant for set-up and shutdown.
const LOG_LINES_PER_SECOND: u64 = 12;
const LOG_LINES_BASE: u64 = 20;

/// Lines on the VMM's stderr that are problems (not join/leave notices or the stats line).
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            !l.contains(" joined (") && !l.ends_with(" left") && !l.starts_with("vmm-stats")
        })
        .collect()
}

fn assert_bounded_log(stderr: &str, started: Instant) {
    let lines = problem_lines(stderr);
    let bound = LOG_LINES_BASE + LOG_LINES_PER_SECOND * (started.elapsed().as_secs() + 1);
    assert!(
        lines.len() as u64 <= bound,
        "{} problem lines in {:?} (bound {bound}):\n{}",
        lines.len(),
        started.elapsed(),
        lines.join("\n")
    );
}

fn abuser(socket: &std::path::Path, args: &str) -> Vm {
    Vm::start_logging(
        "abuser",
        "abuse",
        &[doorbell(socket, 4)],
        args,
        &["--device", "pci-testdev"],
        "warn,vmm::devices::ivshmem=info",
    )
}

#[test]
fn an_abusive_guest_neither_crashes_its_vmm_nor_disturbs_the_other_peers() {
    if !kvm_available("an_abusive_guest_neither_crashes_its_vmm_nor_disturbs_the_other_peers") {
        return;
    }
    let scratch = Scratch::new("abusive-guest");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "4"]);
    let started = Instant::now();

    // The abuser joins first (peer 0) and rings only itself and ids from 1000 up.
    let mut abuser = abuser(&socket, "seed=7 rounds=300 until_stop=1 unknown_from=1000");
    assert!(
        abuser.wait_output("abuse: start", VM_TIMEOUT),
        "{}\n{}",
        abuser.stdout(),
        abuser.stderr()
    );

    // The baseline: the abuser's VMM alone on the server, its device set up.
    let fds_before = fd_count(abuser.pid());
    let host = HostPeer::connect(&socket, 4);
    let host_id = host.id();
    assert!(abuser.wait_stderr(&format!("peer {host_id} joined"), VM_TIMEOUT));

    // A VM plays ping-pong with the host peer while the abuse goes on.
    let rounds = 2000;
    let (_, echo) = spawn_host_echo(host, rounds + 200);
    let ping = run_vm(
        "ping",
        "ivshmem_pingpong",
        &[doorbell(&socket, 4)],
        &format!("role=ping peer={host_id} rounds={rounds} warmup=200"),
        &[],
    );
    ping.assert_code(0);
    assert_eq!(
        echo.join().unwrap(),
        rounds + 200,
        "host echo answered every ring"
    );
    let ping_id = joined_as(&abuser, host_id + 1);

    // Both left; the abuser's VMM is back at its baseline fd count (their vectors closed).
    assert!(abuser.wait_stderr(&format!("peer {host_id} left"), VM_TIMEOUT));
    assert!(abuser.wait_stderr(&format!("peer {ping_id} left"), VM_TIMEOUT));
    let settled = wait_until(Duration::from_secs(10), || {
        fd_count(abuser.pid()) == fds_before
    });
    assert!(
        settled,
        "abuser's VMM: {fds_before} fds before, {} after the other peers left",
        fd_count(abuser.pid())
    );
    assert!(
        !abuser.stdout().contains("abuse: done"),
        "the abuse must outlast the ping-pong"
    );

    // Tell it to stop; it checks its device still works and exits 0.
    let stopper = HostPeer::connect(&socket, 1);
    stopper.write_u64(SHM_SIZE - 128, STOP_FLAG);
    let outcome = abuser.finish(VM_TIMEOUT);
    outcome.assert_code(0);
    assert!(outcome.stdout.contains("abuse: done"), "{}", outcome.stdout);
    assert_bounded_log(&outcome.stderr, started);
}

/// The id the ping VM got: the abuser's device logged its join right after the host's.
fn joined_as(abuser: &Vm, expected: u16) -> u16 {
    let stderr = abuser.stderr();
    assert!(
        stderr.contains(&format!("peer {expected} joined")),
        "the ping VM should be peer {expected}:\n{stderr}"
    );
    expected
}

#[test]
fn several_seeds_of_abuse_end_cleanly_with_bounded_logs() {
    if !kvm_available("several_seeds_of_abuse_end_cleanly_with_bounded_logs") {
        return;
    }
    let scratch = Scratch::new("abusive-seeds");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["--memfd", "-l", "1M", "-n", "4"]);
    for seed in 1..=3 {
        let started = Instant::now();
        let outcome = abuser(&socket, &format!("seed={seed} rounds=250")).finish(VM_TIMEOUT);
        outcome.assert_code(0);
        assert!(outcome.stdout.contains("abuse: done"), "{}", outcome.stdout);
        assert_bounded_log(&outcome.stderr, started);
    }
}
