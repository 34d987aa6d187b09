//! The command line and the shared memory it asks for: QEMU's flags and errors, sizes above
//! 4 GiB, memfd and directory backings, power-of-two rounding, permissions, daemon mode.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::raw_client::{map_shm, shm_size, RawClient};
use harness::{bin, wait_until, Scratch, Server};

fn run_server(args: &[&str]) -> std::process::Output {
    Command::new(bin("ivshmem-server"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ivshmem-server")
}

#[test]
fn server_rejects_bad_arguments() {
    let cases: &[(&[&str], &str)] = &[
        (&["-F", "-x"], "unknown option '-x'"),
        (&["-F", "--nope"], "unknown option '--nope'"),
        (&["-F", "-l"], "requires an argument"),
        (&["-F", "-l", "abc"], "cannot parse size 'abc'"),
        (&["-F", "-l", "0"], "greater than 0"),
        (&["-F", "-l", "-4M"], "cannot parse size"),
        (&["-F", "-l", "99999999T"], "too large"),
        (&["-F", "-n", "1025"], "exceeds the maximum of 1024"),
        (&["-F", "-n", "two"], "cannot parse number of vectors 'two'"),
        (&["-v"], "cannot use verbose (-v) in daemon mode"),
        (&["-F", "--mode", "999"], "cannot parse mode '999'"),
        (&["-F", "--group", "no-such-group-here"], "unknown group"),
        (
            &["-F", "--memfd", "--unlink-shm"],
            "--unlink-shm applies only",
        ),
        (&["-F", "stray"], "unexpected argument 'stray'"),
        (
            &[
                "-F",
                "-m",
                "/nonexistent-dir-xyz",
                "-S",
                "/tmp/ivshmem-never-bound",
            ],
            "/nonexistent-dir-xyz",
        ),
    ];
    for (args, needle) in cases {
        let out = run_server(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn server_help_exits_zero() {
    let out = run_server(&["-h"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Usage: ivshmem-server"), "{text}");
    for flag in [
        "-F", "-p", "-S", "-M", "-m", "-l", "-n", "--memfd", "--mode", "--group",
    ] {
        assert!(text.contains(flag), "{flag}");
    }
}

#[test]
fn server_memfd_above_4gib_is_sparse_and_sized() {
    let dir = Scratch::new("srv-big");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-l", "5G"]);
    assert!(
        server.log_text().contains("rounded up to 8589934592"),
        "{}",
        server.log_text()
    );
    let c = RawClient::connect(&sock, 1);
    assert_eq!(shm_size(c.shm.as_ref().unwrap()), 8 << 30);
    // Sparse: touching the last page works without allocating the rest.
    let m = map_shm(c.shm.as_ref().unwrap());
    m.write(m.len() - 1, &[7]).unwrap();
}

#[test]
fn server_posix_shm_above_4gib() {
    let dir = Scratch::new("srv-big-posix");
    let sock = dir.join("sock");
    let name = format!("ivshmem-test-big-{}", std::process::id());
    let server = Server::start_without_probe(
        &sock,
        &["-M", &name, "--unlink-shm", "-l", "4G", "-n", "0x2"],
    );
    let path = format!("/dev/shm/{name}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 4 << 30);
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "owner-only shm by default"
    );
    let c = RawClient::connect(&sock, 2);
    assert_eq!(shm_size(c.shm.as_ref().unwrap()), 4 << 30);
    assert_eq!(c.vectors[&c.id].len(), 2, "-n 0x2 means 2 vectors");
    assert!(server.terminate().success());
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn server_shm_in_a_directory() {
    let dir = Scratch::new("srv-dir");
    let sock = dir.join("sock");
    let shm_dir = dir.join("shm");
    std::fs::create_dir(&shm_dir).unwrap();
    let _server =
        Server::start_without_probe(&sock, &["-m", shm_dir.to_str().unwrap(), "-l", "2M"]);
    let a = RawClient::connect(&sock, 1);
    let b = RawClient::connect(&sock, 1);
    assert_eq!(shm_size(a.shm.as_ref().unwrap()), 2 << 20);
    assert_eq!(
        std::fs::read_dir(&shm_dir).unwrap().count(),
        0,
        "file unlinked right away"
    );
    let (ma, mb) = (
        map_shm(a.shm.as_ref().unwrap()),
        map_shm(b.shm.as_ref().unwrap()),
    );
    ma.write(12345, &[0xab]).unwrap();
    let mut byte = [0u8];
    mb.read(12345, &mut byte).unwrap();
    assert_eq!(byte[0], 0xab);
}

#[test]
fn server_rounds_size_up_with_a_notice() {
    let dir = Scratch::new("srv-round");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["--memfd", "-l3000000"]);
    assert!(
        server
            .log_text()
            .contains("size 3000000 is not a power of two, rounded up to 4194304"),
        "{}",
        server.log_text()
    );
    let c = RawClient::connect(&sock, 1);
    assert_eq!(shm_size(c.shm.as_ref().unwrap()), 4194304);
}

#[test]
fn server_permissions_default_owner_only_and_widen() {
    let dir = Scratch::new("srv-perm");
    let sock = dir.join("sock");
    let name = format!("ivshmem-test-perm-{}", std::process::id());
    let server = Server::start_without_probe(&sock, &["-M", &name, "--unlink-shm"]);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(format!("/dev/shm/{name}"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(server.terminate().success());

    let gid = nix::unistd::getgid().as_raw().to_string();
    let server = Server::start_without_probe(
        &sock,
        &[
            "-M",
            &name,
            "--unlink-shm",
            "--mode",
            "0660",
            "--group",
            &gid,
        ],
    );
    let sock_meta = std::fs::metadata(&sock).unwrap();
    let shm_meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(sock_meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(shm_meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(sock_meta.gid().to_string(), gid);
    assert!(server.terminate().success());
}

#[test]
fn server_daemonizes_with_a_pid_file() {
    let dir = Scratch::new("srv-daemon");
    let sock = dir.join("sock");
    let pid_file = dir.join("server.pid");
    let out = Command::new(bin("ivshmem-server"))
        .args(["--memfd", "-S"])
        .arg(&sock)
        .arg("-p")
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success(), "launcher exits 0 once the daemon runs");
    // The launcher waited for the daemon: the PID file is there already.
    assert!(std::fs::read_to_string(&pid_file).unwrap().ends_with('\n'));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Its own session, and the socket is ready.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))
        .unwrap()
        .as_raw();
    assert_ne!(sid, pid, "double fork: the daemon is not a session leader");
    let c = RawClient::connect(&sock, 1);
    assert_eq!(c.id, 0);
    drop(c);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(
        Duration::from_secs(10),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    ));
    assert!(
        wait_until(Duration::from_secs(5), || !pid_file.exists()),
        "PID file removed"
    );
    assert!(!sock.exists(), "socket removed");
}

/// A writable hugetlbfs mount from /proc/mounts, if the machine has one.
fn hugetlbfs_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == "hugetlbfs").then(|| std::path::PathBuf::from(f[1]))
        })
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok())
}

#[test]
fn server_shm_on_hugetlbfs_grows_to_the_page_size() {
    let Some(mount) = hugetlbfs_mount() else {
        eprintln!(
            "SKIP server_shm_on_hugetlbfs_grows_to_the_page_size: no writable hugetlbfs mount"
        );
        return;
    };
    let dir = Scratch::new("srv-huge");
    let sock = dir.join("sock");
    let server = Server::start_without_probe(&sock, &["-m", mount.to_str().unwrap(), "-l", "4K"]);
    let c = RawClient::connect(&sock, 1);
    let size = shm_size(c.shm.as_ref().unwrap());
    assert!(size >= 4096 && size.is_power_of_two(), "size {size}");
    if size > 4096 {
        assert!(server.log_text().contains("could not hold 4096 bytes"));
    }
}

#[test]
fn server_daemon_failure_is_reported_by_the_launcher() {
    let dir = Scratch::new("srv-daemon-fail");
    let sock = dir.join("sock");
    let status = Command::new(bin("ivshmem-server"))
        .args(["--memfd", "-S"])
        .arg(&sock)
        .arg("-p")
        .arg(dir.join("no-such-dir/server.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "PID file cannot be written");
    assert!(
        wait_until(Duration::from_secs(5), || !sock.exists()),
        "the failed daemon removed its socket"
    );
}
