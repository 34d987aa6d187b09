//! The Linux-guest virtio benchmark's scenario (tests/nested/linux-virtio-bench, the rows of
//! `scripts/bench.sh`'s `nested_linux_virtio` section) in its quick mode, so that it is not
//! bench-only: inside one L1, L2 Linux in QEMU `-accel kvm` boots once with QEMU's
//! `vhost-user-rng-pci` and `vhost-user-vsock-pci` and once with QEMU's `ivshmem-doorbell`,
//! `virtio_ivshmem.ko` and two `vhost-bridge`s, on the same backend binaries
//! (`vhost-device-rng`, `vhost-device-vsock`); both boots must deliver `/dev/hwrng` bytes and
//! vsock round trips to an echo in L1, with a kernel log free of warnings.
use harness::nested::{
    backends_present, build_guest_driver, missing_tools, nested_available, Nested,
};

/// What l1.sh checks in MODE=test, for each transport.
const CHECKS: &[&str] = &[
    "l2_ran",
    "hwrng_delivered",
    "vsock_round_trips",
    "no_kernel_problems",
];

#[test]
fn linux_virtio_over_ivshmem_and_vhost_user_pci_both_deliver() {
    const TEST: &str = "linux_virtio_over_ivshmem_and_vhost_user_pci_both_deliver";
    // Three Linux boots on the bed (several minutes) for what linux_virtio_in_qemu and
    // linux_virtio_in_our_vmm already cover function by function: opt-in, so that CI stays
    // within its time; `SECTIONS=nested_linux_virtio scripts/bench.sh` runs the full scenario.
    if std::env::var("IVSHMEM_NESTED_BENCH").as_deref() != Ok("1") {
        eprintln!(
            "SKIP {TEST}: set IVSHMEM_NESTED_BENCH=1 to run the benchmark scenario's quick mode"
        );
        return;
    }
    if !nested_available(TEST)
        || !backends_present(
            TEST,
            &missing_tools(&["vhost-device-rng", "vhost-device-vsock"]),
        )
        || build_guest_driver(TEST).is_none()
    {
        return;
    }
    // One round, 1 s of /dev/hwrng and 100 round trips per transport: two L2 boots in one L1.
    let outcome = Nested::scenario("linux-virtio-bench")
        .arg("MODE=test")
        .arg("ROUNDS=1")
        .arg("RNG_SECS=1")
        .arg("PINGS=100")
        .run();
    for line in outcome.console.lines() {
        if line.starts_with("BENCH") || line.contains("FACT") {
            eprintln!("{line}");
        }
    }
    for transport in ["pci", "ivshmem"] {
        let names: Vec<String> = CHECKS.iter().map(|c| format!("{transport}_{c}")).collect();
        outcome.assert_passed(&names.iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert_eq!(outcome.status, Some(0), "{}", outcome.console);
}
