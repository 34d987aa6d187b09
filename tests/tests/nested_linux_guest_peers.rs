//! Who is there, from a Linux guest: L2 Linux booted by our VMM on the nested bed reads the
//! server's peer state table with `ivshmem-guest-client --state-table 2M --lifecycle-vector 2`
//! (`peers`, `wait-peer`, `int all`), waits for a host peer that joins while it waits, and
//! refuses the commands without a table (tests/nested/linux-guest-peers).
use std::path::PathBuf;
use std::process::Command;

use harness::bin;
use harness::nested::{nested_available, Nested};

const TEST: &str = "linux_guest_client_reads_the_state_table";

/// Builds the module (scripts/build-guest-driver.sh); None (skip) when that is impossible here,
/// a failure under IVSHMEM_REQUIRE_KVM=1.
fn build_driver() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-guest-driver.sh");
    let out = Command::new(script)
        .output()
        .expect("run build-guest-driver.sh");
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let why = String::from_utf8_lossy(&out.stderr);
    if std::env::var("IVSHMEM_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{TEST}: cannot build the guest driver: {why}");
    }
    eprintln!(
        "SKIP {TEST}: cannot build the guest driver (scripts/test.sh installs the headers): {why}"
    );
    None
}

#[test]
fn linux_guest_client_reads_the_state_table() {
    if !nested_available(TEST) {
        return;
    }
    let Some(module) = build_driver() else {
        return;
    };
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nested/lib.sh");
    let outcome = Nested::scenario("linux-guest-peers")
        .l2_file(&module, "/ivshmem.ko")
        .l2_file(&lib, "/lib.sh")
        .l2_binary(
            &bin("ivshmem-guest-client"),
            "/usr/local/bin/ivshmem-guest-client",
        )
        .run();
    outcome.assert_passed(&[
        // in L2
        "insmod",
        "refused_without_table",
        "peers_lists_the_host",
        "wait_peer_present",
        "wait_peer_times_out",
        "table_not_there",
        "offset_does_not_fit",
        "wait_peer_wakes_on_join",
        "peers_after_join",
        "int_all",
        "no_oops",
        // in L1
        "l2_ran",
        "host_rung_by_int_all",
    ]);
    assert_eq!(outcome.status, Some(0));
}
