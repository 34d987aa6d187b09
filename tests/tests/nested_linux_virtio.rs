//! Stock Linux virtio drivers over ivshmem (linux-guest/driver/virtio_ivshmem.c, the virtio
//! transport): the kernel's own `virtio-rng` driver reads `/dev/hwrng` from a device that
//! `vhost-bridge` publishes in the shared memory and rust-vmm's `vhost-device-rng` serves, and
//! the kernel's vsock transport connects to the host through a second device in the same memory
//! (`vhost-device-vsock`, its host side an echo).
//!
//! * In QEMU (L1 Linux on the nested bed, QEMU TCG): QEMU's own `ivshmem-doorbell` on our
//!   server outside the bed, with the bridge and the backend outside too; this test restarts
//!   the bridge while the guest reads (tests/nested/linux-virtio).
//! * In our VMM (L2 Linux): server, bridge and backend in L1 (tests/nested/linux-virtio-vmm).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::nested::{nested_available, Nested};
use harness::{bin, wait_until, Scratch, Server};
use peer::Peer;

/// Where the guest scenario writes its step marker (tests/nested/linux-virtio/virtio.sh MARK).
const MARK: usize = 0x7F_0000;
/// The vsock device's header (the entropy device's is at 0).
const VSOCK_HEADER: &str = "0x200000";
/// The port the guest connects to on the host (CID 2); the host side echoes.
const VSOCK_PORT: u32 = 1234;
/// The console device's header.
const CONSOLE_HEADER: &str = "0x400000";
/// The doorbell device's PCI slot in L1.
const DOORBELL_SLOT: &str = "05.0";
const WAIT: Duration = Duration::from_secs(30);

/// Builds both modules (scripts/build-guest-driver.sh); returns ivshmem.ko's directory and the
/// distribution modules' directory. None (skip) when that is impossible here, a failure under
/// IVSHMEM_REQUIRE_KVM=1.
fn build_modules(test: &str) -> Option<(PathBuf, PathBuf)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-guest-driver.sh");
    let out = Command::new(script)
        .output()
        .expect("run build-guest-driver.sh");
    if out.status.success() {
        let ko = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let dir = ko.parent().expect("module directory").to_path_buf();
        let distro = PathBuf::from(format!("{}-distro", dir.display()));
        return Some((dir, distro));
    }
    let why = String::from_utf8_lossy(&out.stderr);
    if std::env::var("IVSHMEM_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{test}: cannot build the guest modules: {why}");
    }
    eprintln!("SKIP {test}: cannot build the guest modules: {why}");
    None
}

/// A rust-vmm backend (`vhost-device-rng`, `vhost-device-vsock`) on PATH (scripts/test.sh
/// cargo-installs them).
fn vhost_device(test: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("IVSHMEM_REQUIRE_VHOST_DEVICE").as_deref() == Ok("1")
            || std::env::var("IVSHMEM_REQUIRE_KVM").as_deref() == Ok("1")
        {
            panic!("{test}: {name} not on PATH");
        }
        eprintln!("SKIP {test}: {name} not on PATH (cargo install {name})");
    }
    found
}

/// A backend only some parts need: None (that part is skipped, with a message) when it is not
/// on PATH, a failure under IVSHMEM_REQUIRE_VHOST_DEVICE=1.
fn optional_device(test: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("IVSHMEM_REQUIRE_VHOST_DEVICE").as_deref() == Ok("1") {
            panic!("{test}: {name} not on PATH and IVSHMEM_REQUIRE_VHOST_DEVICE=1");
        }
        eprintln!("SKIP part of {test}: {name} not on PATH (cargo install {name})");
    }
    found
}

/// The example vsock_echo (an AF_VSOCK client in the guest, the UNIX-socket echo on the host).
fn vsock_echo() -> PathBuf {
    let path = harness::bin_dir().join("examples/vsock_echo");
    assert!(
        path.exists(),
        "{} not found: cargo build -p ivshmem-guest --examples",
        path.display()
    );
    path
}

/// The distribution's modules the scenarios insmod, as (host path, path in the guest).
fn distro_modules(distro: &Path) -> Vec<(PathBuf, String)> {
    [
        "virtio",
        "virtio_ring",
        "virtio-rng",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "vmw_vsock_virtio_transport",
        "virtio_console",
    ]
    .iter()
    .map(|m| (distro.join(format!("{m}.ko")), format!("/vmods/{m}.ko")))
    .collect()
}

/// A child process killed on drop; its output goes to a file in the scratch directory.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn");
        Proc { child, log }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_rng(binary: &Path, dir: &Scratch, run: u32) -> (Proc, PathBuf) {
    let base = dir.join("rng.sock");
    let socket = dir.join("rng.sock0");
    let _ = std::fs::remove_file(&socket);
    let proc = Proc::spawn(
        Command::new(binary).arg("--socket-path").arg(&base),
        dir.join(&format!("rng{run}.log")),
    );
    assert!(
        wait_until(WAIT, || socket.exists()),
        "vhost-device-rng did not listen"
    );
    (proc, socket)
}

fn start_bridge(server: &Path, backend: &Path, dir: &Scratch, run: u32) -> Proc {
    spawn_bridge(
        server,
        backend,
        &["--device", "entropy"],
        dir,
        &format!("bridge{run}"),
    )
}

fn spawn_bridge(server: &Path, backend: &Path, args: &[&str], dir: &Scratch, name: &str) -> Proc {
    let proc = Proc::spawn(
        Command::new(bin("vhost-bridge"))
            .arg("-S")
            .arg(server)
            .arg("--backend")
            .arg(backend)
            .args(args),
        dir.join(&format!("{name}.log")),
    );
    assert!(
        wait_until(WAIT, || proc.text().contains("serving virtio device")),
        "the bridge did not start:\n{}",
        proc.text()
    );
    proc
}

/// The console's host side: connects to the backend's TCP port, answers the guest's line with
/// one of its own, and returns what it read (until the backend closes, or 20 minutes).
fn console_answer(port: u32) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port as u16)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return format!("no connection: {e}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let (mut got, mut answered) = (Vec::new(), false);
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if !answered && String::from_utf8_lossy(&got).contains("hello from hvc0") {
            answered = conn.write_all(b"hello to hvc0\n").is_ok();
        }
        if answered && String::from_utf8_lossy(&got).contains("hello to hvc0") {
            break; // the guest's tty echoed our line: it arrived
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn marker(peer: &Peer) -> String {
    let mut buf = [0u8; 16];
    peer.shm().read(MARK, &mut buf).expect("read shm");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The checks every run makes (tests/nested/linux-virtio/virtio.sh).
const BASICS: &[&str] = &[
    "insmod_virtio",
    "insmod_ivshmem",
    "insmod_transport",
    "header_discovered",
    "virtio_device_id",
    "virtio_features_access_platform",
    "insmod_virtio_rng",
    "rng_current_is_virtio",
    "hwrng_reads",
    "hwrng_reads_more",
];
const VSOCK: &[&str] = &[
    "insmod_vsock",
    "vsock_header",
    "vsock_device_id",
    "vsock_echo",
    "vsock_echo_large",
    "rng_still_reads",
];
const CONSOLE: &[&str] = &[
    "insmod_console",
    "console_header",
    "hvc0_appears",
    "hvc0_writes",
    "hvc0_reads",
];
const RESTART: &[&str] = &[
    "reader_started",
    "ask_for_restart",
    "device_removed_on_restart",
    "device_registered_again",
    "rng_current_again",
    "reader_reads_after_restart",
    "reader_stops",
    "hwrng_reads_after_restart",
];
const UNBIND: &[&str] = &[
    "unbind_removes_virtio",
    "rng_gone_after_unbind",
    "rebind",
    "rng_after_rebind",
    "hwrng_reads_after_rebind",
    "rmmod_transport",
    "rng_gone_after_rmmod",
    "rmmod_ivshmem",
];
const DEAD_BRIDGE: &[&str] = &[
    "reinsmod",
    "rng_after_reinsmod",
    "dead_reader_started",
    "ask_for_kill",
    "reads_stop",
    "rmmod_with_dead_bridge",
    "dead_reader_ends",
    "rng_gone_after_dead_bridge",
    "no_oops",
    "no_arena_exhaustion",
];

/// The guest's kernel messages about the transport (the scenario prints them as DMESG lines).
fn print_dmesg(console: &str) {
    for line in console.lines().filter(|l| l.contains("DMESG")) {
        eprintln!("{line}");
    }
}

#[test]
fn linux_virtio_in_qemu() {
    const TEST: &str = "linux_virtio_in_qemu";
    if !nested_available(TEST) {
        return;
    }
    let Some(rng_bin) = vhost_device(TEST, "vhost-device-rng") else {
        return;
    };
    let vsock_bin = optional_device(TEST, "vhost-device-vsock");
    let console_bin = optional_device(TEST, "vhost-device-console");
    let Some((modules, distro)) = build_modules(TEST) else {
        return;
    };
    let scratch = Scratch::new("nested-linux-virtio");
    let socket = scratch.join("sock");
    let _server = Server::start(&socket, &["-l", "8M", "-n", "8"]);
    let host = Peer::connect(&socket).expect("host peer connects");
    let (rng, backend) = start_rng(&rng_bin, &scratch, 0);
    let bridge = start_bridge(&socket, &backend, &scratch, 0);
    // The second device in the same memory: vsock, its host side an echo on VSOCK_PORT.
    let mut extra = Vec::new();
    let mut parts: Vec<&[&str]> = vec![BASICS];
    if let Some(vsock_bin) = &vsock_bin {
        let uds = scratch.join("vm.vsock");
        extra.push(Proc::spawn(
            Command::new(vsock_echo())
                .arg("serve-uds")
                .arg(format!("{}_{VSOCK_PORT}", uds.display())),
            scratch.join("echo.log"),
        ));
        let vsock_socket = scratch.join("vsock.sock");
        extra.push(Proc::spawn(
            Command::new(vsock_bin).arg("--vm").arg(format!(
                "guest-cid=3,socket={},uds-path={}",
                vsock_socket.display(),
                uds.display()
            )),
            scratch.join("vsock.log"),
        ));
        assert!(
            wait_until(WAIT, || vsock_socket.exists()),
            "vhost-device-vsock did not listen"
        );
        extra.push(spawn_bridge(
            &socket,
            &vsock_socket,
            &[
                "--device",
                "19",
                "--queues",
                "3",
                "--config-size",
                "8",
                "--header",
                VSOCK_HEADER,
            ],
            &scratch,
            "vsock-bridge",
        ));
        parts.push(VSOCK);
    }
    // The third: a console; its host side a TCP client that answers the guest's line.
    let mut console_host = None;
    if let Some(console_bin) = &console_bin {
        let port = 20000 + std::process::id() % 20000;
        let console_socket = scratch.join("console.sock0");
        extra.push(Proc::spawn(
            Command::new(console_bin)
                .arg("-s")
                .arg(scratch.join("console.sock"))
                .args(["-b", "network", "-p", &port.to_string()]),
            scratch.join("console.log"),
        ));
        assert!(
            wait_until(WAIT, || console_socket.exists()),
            "vhost-device-console did not listen"
        );
        extra.push(spawn_bridge(
            &socket,
            &console_socket,
            &[
                "--device",
                "3",
                "--config-size",
                "12",
                "--header",
                CONSOLE_HEADER,
            ],
            &scratch,
            "console-bridge",
        ));
        console_host = Some(std::thread::spawn(move || console_answer(port)));
        parts.push(CONSOLE);
    }
    parts.extend([RESTART, UNBIND, DEAD_BRIDGE]);
    let vsock_on = scratch.join("vsock.on");
    std::fs::write(&vsock_on, "").unwrap();
    let console_on = scratch.join("console.on");
    std::fs::write(&console_on, "").unwrap();
    let guest_done = Arc::new(AtomicBool::new(false));
    let nested = {
        let done = guest_done.clone();
        let qemu_args = [
            "-chardev".to_string(),
            format!("socket,path={},id=db", socket.display()),
            "-device".into(),
            format!("ivshmem-doorbell,chardev=db,vectors=8,addr={DOORBELL_SLOT}"),
        ];
        let mut run = Nested::scenario("linux-virtio")
            .file(&vsock_echo(), "/usr/local/bin/vsock_echo")
            .file(&modules.join("ivshmem.ko"), "/ivshmem.ko")
            .file(&modules.join("virtio_ivshmem.ko"), "/virtio_ivshmem.ko")
            .file(
                &bin("ivshmem-guest-client"),
                "/usr/local/bin/ivshmem-guest-client",
            )
            .qemu_args(&qemu_args.iter().map(String::as_str).collect::<Vec<_>>());
        for (src, dst) in distro_modules(&distro) {
            run = run.file(&src, &dst);
        }
        if vsock_bin.is_some() {
            run = run.file(&vsock_on, "/vsock.on");
        }
        if console_bin.is_some() {
            run = run.file(&console_on, "/console.on");
        }
        std::thread::spawn(move || {
            let outcome = run.run();
            done.store(true, Ordering::Relaxed);
            outcome
        })
    };

    // The host side: when the guest asks (RESTART at MARK), kill the bridge while the guest
    // reads, and start another (and a new backend if the old one left with its frontend).
    let (mut rng, mut bridge) = (rng, bridge);
    let deadline = Instant::now() + Duration::from_secs(1200);
    let (mut restarted, mut killed) = (false, false);
    while !guest_done.load(Ordering::Relaxed) && Instant::now() < deadline {
        if !restarted && marker(&host) == "RESTART" {
            eprintln!("host: the guest asked for a restart: killing the bridge");
            drop(bridge);
            std::thread::sleep(Duration::from_millis(200)); // let the backend see its frontend go
            if !rng.alive() {
                rng = start_rng(&rng_bin, &scratch, 1).0;
            }
            bridge = start_bridge(&socket, &backend, &scratch, 1);
            eprintln!("host: a new bridge serves");
            restarted = true;
        }
        if restarted && !killed && marker(&host) == "KILL" {
            eprintln!("host: the guest asked for the bridge to go for good");
            bridge.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let outcome = nested.join().expect("nested run thread");
    let mut logs = format!(
        "--- bridge ---\n{}\n--- rng ---\n{}",
        bridge.text(),
        rng.text()
    );
    for p in &extra {
        logs += &format!("\n--- {} ---\n{}", p.log.display(), p.text());
    }
    eprintln!("{logs}");
    print_dmesg(&outcome.console);
    for names in parts {
        outcome.assert_passed(names);
    }
    if let Some(host) = console_host {
        let got = host.join().expect("console thread");
        assert!(
            got.contains("hello from hvc0"),
            "the host's console side got {got:?}"
        );
    }
    assert!(restarted, "the guest never asked for the restart\n{logs}");
    assert!(killed, "the guest never asked for the bridge to go\n{logs}");
    assert_eq!(outcome.status, Some(0), "{}", outcome.console);
}

/// The same in L2 Linux in our VMM: the server, the bridge and the backend run in L1
/// (tests/nested/linux-virtio-vmm/l1.sh restarts the bridge when L2 asks).
#[test]
fn linux_virtio_in_our_vmm() {
    const TEST: &str = "linux_virtio_in_our_vmm";
    if !nested_available(TEST) {
        return;
    }
    let Some(rng_bin) = vhost_device(TEST, "vhost-device-rng") else {
        return;
    };
    let Some(vsock_bin) = vhost_device(TEST, "vhost-device-vsock") else {
        return;
    };
    let console_bin = optional_device(TEST, "vhost-device-console");
    let Some((modules, distro)) = build_modules(TEST) else {
        return;
    };
    let scratch = Scratch::new("nested-linux-virtio-vmm");
    let on = scratch.join("on");
    std::fs::write(&on, "").unwrap();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nested");
    let mut run = Nested::scenario("linux-virtio-vmm")
        .file(&rng_bin, "/usr/local/bin/vhost-device-rng")
        .file(&bin("vhost-bridge"), "/usr/local/bin/vhost-bridge")
        .file(&vsock_bin, "/usr/local/bin/vhost-device-vsock")
        .file(&vsock_echo(), "/usr/local/bin/vsock_echo")
        .l2_binary(&vsock_echo(), "/usr/local/bin/vsock_echo")
        .l2_file(&on, "/vsock.on")
        .l2_file(&modules.join("ivshmem.ko"), "/ivshmem.ko")
        .l2_file(&modules.join("virtio_ivshmem.ko"), "/virtio_ivshmem.ko")
        .l2_file(&here.join("lib.sh"), "/lib.sh")
        .l2_file(&here.join("linux-virtio/virtio.sh"), "/virtio.sh")
        .l2_binary(
            &bin("ivshmem-guest-client"),
            "/usr/local/bin/ivshmem-guest-client",
        );
    for (src, dst) in distro_modules(&distro) {
        run = run.l2_file(&src, &dst);
    }
    if let Some(console_bin) = &console_bin {
        run = run
            .file(console_bin, "/usr/local/bin/vhost-device-console")
            .l2_file(&on, "/console.on");
    }
    let outcome = run.run();
    print_dmesg(&outcome.console);
    for names in [BASICS, VSOCK, RESTART, UNBIND, DEAD_BRIDGE] {
        outcome.assert_passed(names);
    }
    if console_bin.is_some() {
        outcome.assert_passed(CONSOLE);
        outcome.assert_passed(&["host_got_hvc0_line"]);
    }
    outcome.assert_passed(&["l2_ran", "bridge_restarted", "bridge_killed"]);
    assert_eq!(outcome.status, Some(0), "{}", outcome.console);
}
