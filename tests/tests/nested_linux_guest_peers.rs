//! Who is there, from a Linux guest: L2 Linux booted by our VMM on the nested bed reads the
//! server's peer state table with `ivshmem-guest-client --state-table 2M --lifecycle-vector 2`
//! (`peers`, `wait-peer`, `int all`), waits for a host peer that joins while it waits, and
//! refuses the commands without a table (tests/nested/linux-guest-peers).
use std::path::PathBuf;

use harness::bin;
use harness::nested::{nested_available, Nested};

const TEST: &str = "linux_guest_client_reads_the_state_table";

#[test]
fn linux_guest_client_reads_the_state_table() {
    if !nested_available(TEST) {
        return;
    }
    let Some(module) = harness::nested::build_guest_driver(TEST) else {
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
