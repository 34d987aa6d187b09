//! The Linux guest side (linux-guest/: the ivshmem kernel module, ivshmem-guest-client) in a real
//! guest: the nested bed's L1 Linux runs in QEMU TCG with QEMU's own devices — two
//! ivshmem-plain on host files and one ivshmem-doorbell on our server — and this test is the
//! host peer on that server: memory both ways, doorbells both ways on every vector, and it
//! leaves while the guest waits. The guest's own checks are in tests/nested/linux-guest/l1.sh.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::nested::{nested_available, Nested};
use harness::{bin, bin_dir, Scratch, Server};
use peer::Peer;

const TEST: &str = "linux_guest_driver_and_client_in_qemu";
/// PCI slots of the three devices in L1.
const PLAIN_A: &str = "00:04.0";
const DOORBELL: &str = "00:05.0";
const PLAIN_B: &str = "00:06.0";
/// Offsets in the doorbell device's memory, as l1.sh uses them.
const HOST_GREETING: usize = 256;
const GUEST_GREETING: usize = 512;
const GUEST_STEP: usize = 768;

fn plain_file(path: &std::path::Path, size: u64, text: &[u8]) {
    let file = std::fs::File::create(path).expect("create plain backing file");
    file.set_len(size).expect("size plain backing file");
    std::os::unix::fs::FileExt::write_all_at(&file, text, 0).expect("write plain backing file");
}

fn text_at(bytes: &[u8], offset: usize, len: usize) -> String {
    let field = &bytes[offset..offset + len];
    let end = field.iter().position(|&b| b == 0).unwrap_or(len);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The host peer's half of the conversation; returns what went wrong, if anything.
struct HostSide {
    peer: Peer,
    guest_done: Arc<AtomicBool>,
}

impl HostSide {
    /// Polls `cond` until it holds, the guest's run ended or 10 minutes passed.
    fn until(&mut self, what: &str, mut cond: impl FnMut(&mut Peer) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline && !self.guest_done.load(Ordering::Relaxed) {
            if cond(&mut self.peer) {
                return Ok(());
            }
            self.peer.poll_server(Some(Duration::from_millis(100)));
        }
        Err(format!("host: gave up waiting for {what}"))
    }

    fn shm_text(peer: &Peer, offset: usize, len: usize) -> String {
        let mut buf = vec![0u8; len];
        peer.shm().read(offset, &mut buf).expect("read shm");
        text_at(&buf, 0, len)
    }

    /// Answers each vector the guest rings by ringing the same vector back; returns the
    /// vectors in the order they arrived.
    fn echo(&mut self, guest: u16, rounds: usize) -> Result<Vec<u32>, String> {
        let mut seen = Vec::new();
        while seen.len() < rounds {
            let fired = self
                .peer
                .wait(Some(Duration::from_secs(300)))
                .map_err(|e| format!("host: wait: {e}"))?;
            if fired.is_empty() {
                return Err(format!("host: no doorbell from the guest after {seen:?}"));
            }
            for n in fired {
                self.peer
                    .ring(guest, n.vector)
                    .map_err(|e| format!("host: ring: {e}"))?;
                seen.push(n.vector);
            }
        }
        Ok(seen)
    }

    fn run(mut self, guest: u16) -> Result<Vec<u32>, String> {
        self.until("the guest to join", |p| {
            p.peers().iter().any(|i| i.id == guest)
        })?;
        self.until("the guest's greeting", |p| {
            HostSide::shm_text(p, GUEST_GREETING, 32) == "hello from the guest"
        })?;
        self.until("the guest to be ready for doorbells", |p| {
            HostSide::shm_text(p, GUEST_STEP, 8) == "READY"
        })?;
        // By store, then by ioctl: vector 0, then 1, each answered before the next.
        let seen = self.echo(guest, 4)?;
        self.until("the guest to wait", |p| {
            HostSide::shm_text(p, GUEST_STEP, 8) == "WAITING"
        })?;
        drop(self.peer); // leave while the guest waits
        Ok(seen)
    }
}

#[test]
fn linux_guest_driver_and_client_in_qemu() {
    if !nested_available(TEST) {
        return;
    }
    let Some(module) = harness::nested::build_guest_driver(TEST) else {
        return;
    };
    let checks = bin_dir().join("examples/driver_checks");
    assert!(
        checks.exists(),
        "{} not found: cargo test --workspace builds it (or cargo build -p ivshmem-guest --examples)",
        checks.display()
    );
    let scratch = Scratch::new("nested-linux-guest");
    let socket = scratch.join("sock");
    let server = Server::start(&socket, &["-l", "4M", "-n", "2"]);
    let host = Peer::connect(&socket).expect("host peer connects");
    let host_id = host.id();
    // QEMU's device joins right after us; ids increase.
    let guest_id = host_id + 1;
    host.shm()
        .write(HOST_GREETING, b"hello from the host\0")
        .unwrap();
    let (plain_a, plain_b) = (scratch.join("plain-a"), scratch.join("plain-b"));
    plain_file(&plain_a, 4 << 20, b"host to plain A\0");
    plain_file(&plain_b, 1 << 20, b"host to plain B\0");

    let guest_done = Arc::new(AtomicBool::new(false));
    let nested = {
        let done = guest_done.clone();
        let qemu_args = [
            "-object".to_string(),
            format!(
                "memory-backend-file,id=pa,share=on,mem-path={},size=4M",
                plain_a.display()
            ),
            "-device".into(),
            format!("ivshmem-plain,memdev=pa,addr={}", &PLAIN_A[3..]),
            "-chardev".into(),
            format!("socket,path={},id=db", socket.display()),
            "-device".into(),
            format!(
                "ivshmem-doorbell,chardev=db,vectors=2,addr={}",
                &DOORBELL[3..]
            ),
            "-object".into(),
            format!(
                "memory-backend-file,id=pb,share=on,mem-path={},size=1M",
                plain_b.display()
            ),
            "-device".into(),
            format!("ivshmem-plain,memdev=pb,addr={}", &PLAIN_B[3..]),
        ];
        let run = Nested::scenario("linux-guest")
            .arg(&format!("PLAIN_A={PLAIN_A}"))
            .arg(&format!("DOORBELL={DOORBELL}"))
            .arg(&format!("PLAIN_B={PLAIN_B}"))
            .arg(&format!("HOST_ID={host_id}"))
            .arg(&format!("GUEST_ID={guest_id}"))
            .file(&module, "/ivshmem.ko")
            .file(
                &bin("ivshmem-guest-client"),
                "/usr/local/bin/ivshmem-guest-client",
            )
            .file(&checks, "/usr/local/bin/driver_checks")
            .qemu_args(&qemu_args.iter().map(String::as_str).collect::<Vec<_>>());
        std::thread::spawn(move || {
            let outcome = run.run();
            done.store(true, Ordering::Relaxed);
            outcome
        })
    };
    let host_result = HostSide {
        peer: host,
        guest_done: guest_done.clone(),
    }
    .run(guest_id);
    let outcome = nested.join().expect("nested run thread");

    outcome.assert_passed(&[
        "insmod",
        "list_three_devices",
        "sysfs_attributes",
        "sysfs_device_link",
        "plain_a_reads_host",
        "plain_b_reads_host",
        "plain_a_writes",
        "plain_b_writes",
        "plain_has_no_vectors",
        "doorbell_dump",
        "doorbell_reads_host",
        "doorbell_writes",
        "cli_vector_out_of_range",
        "cli_unknown_vector",
        "cli_read_outside",
        "cli_no_peer_list",
        "cli_no_device",
        "cli_no_pci_device",
        "driver_edges",
        "unbind_while_open",
        "removal_seen_by_holder",
        "removal_wakes_waiter",
        "removal_waiter_status",
        "rebind",
        "rebind_reads_host",
        "ring_by_store",
        "ring_by_ioctl",
        "rmmod_while_open",
        "open_program_unharmed",
        "rmmod_after_close",
        "reinsmod",
        "peer_leaves_while_waiting",
        "after_peer_left",
        "no_oops",
    ]);
    assert_eq!(outcome.status, Some(0), "{}", outcome.console);
    let seen = host_result.unwrap_or_else(|e| panic!("{e}\n--- console ---\n{}", outcome.console));
    assert_eq!(seen, [0, 1, 0, 1], "the guest's doorbells, in order");
    let a = std::fs::read(&plain_a).unwrap();
    let b = std::fs::read(&plain_b).unwrap();
    assert_eq!(text_at(&a, 64, 32), "guest to plain A");
    assert_eq!(text_at(&b, 64, 32), "guest to plain B");
    assert!(
        server
            .log_text()
            .contains(&format!("peer {guest_id} joined")),
        "{}",
        server.log_text()
    );
}

/// The same driver and CLI in Linux booted by our VMM on ordinary KVM (L2 on the bed), with our
/// ivshmem-doorbell and ivshmem-plain: a host peer and a guest-program VM on one server in L1
/// (tests/nested/linux-guest-vmm). Doorbells go through KVM ioeventfds and irqfds both ways.
#[test]
fn linux_guest_driver_and_client_in_our_vmm() {
    if !nested_available("linux_guest_driver_and_client_in_our_vmm") {
        return;
    }
    let Some(module) = harness::nested::build_guest_driver(TEST) else {
        return;
    };
    let checks = bin_dir().join("examples/driver_checks");
    assert!(checks.exists(), "{} not found", checks.display());
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nested/lib.sh");
    let outcome = Nested::scenario("linux-guest-vmm")
        .l2_file(&module, "/ivshmem.ko")
        .l2_file(&lib, "/lib.sh")
        .l2_binary(
            &bin("ivshmem-guest-client"),
            "/usr/local/bin/ivshmem-guest-client",
        )
        .l2_binary(&checks, "/usr/local/bin/driver_checks")
        .run();
    outcome.assert_passed(&[
        // in L2
        "insmod",
        "list_two_devices",
        "sysfs_attributes",
        "dump_our_id",
        "reads_host",
        "writes_for_host",
        "plain_reads_host",
        "plain_writes",
        "doorbells_with_host",
        "vm_to_vm_round_trips",
        "driver_edges",
        "no_oops",
        // in L1
        "l2_ran",
        "l2_no_slow_doorbells",
        "host_got_both_vectors",
        "host_reads_linux",
        "plain_file_has_linux",
        "pong_answered_all",
        "pong_no_slow_doorbells",
    ]);
    assert_eq!(outcome.status, Some(0));
}
