//! seccomp in the real binaries: every thread of a running VMM (main, vCPUs, the ivshmem server
//! link, the MSI-X watcher) and the server after set-up run under a filter by default, none with
//! `--seccomp=off`. (Every other test runs both binaries with the default, so the whole suite
//! checks that normal work needs nothing outside the lists. The filters refusing what they should is tested by
//! the unit tests of `sandbox` and `vmm::seccomp`, in forked children.)
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{bin, kvm_available, run_vmm, text, wait_until, Scratch, Server};

/// `(thread name, seccomp mode)` of every thread of `pid`, from /proc (mode 2 = filter).
fn thread_seccomp(pid: u32) -> Vec<(String, u32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            Some((field("Name:")?, field("Seccomp:")?.parse().ok()?))
        })
        .collect()
}

/// A VM with an ivshmem doorbell device (server link thread) and a pci-testdev (MSI-X watcher)
/// running `idle`, started with `seccomp` and waited for until the guest runs.
fn idle_vm(server: &Server, seccomp: &str) -> Child {
    let mut child = Command::new(bin("vmm"))
        .args([
            "--guest",
            "builtin:idle",
            "--cpus",
            "2",
            "--seccomp",
            seccomp,
        ])
        .arg("--ivshmem")
        .arg(format!(
            "doorbell,socket={},vectors=2",
            server.socket.display()
        ))
        .args(["--device", "pci-testdev"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "idle: waiting\n");
    child
}

fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

const VMM_THREADS: [&str; 4] = ["vmm", "vcpu0", "vcpu1", "msix-watcher"];

#[test]
fn every_vmm_thread_runs_under_a_filter_by_default() {
    if !kvm_available("every_vmm_thread_runs_under_a_filter_by_default") {
        return;
    }
    let scratch = Scratch::new("seccomp-vmm");
    let server = Server::start(&scratch.join("sock"), &["-n", "2"]);
    for (flag, expected) in [("on", 2), ("log", 2), ("off", 0)] {
        let vm = idle_vm(&server, flag);
        let pid = vm.id();
        // The main thread enters its filter once the vCPUs are started: poll until every
        // expected thread shows the expected mode.
        let settled = wait_until(Duration::from_secs(10), || {
            let threads = thread_seccomp(pid);
            VMM_THREADS
                .iter()
                .all(|name| threads.iter().any(|(n, _)| n == name))
                && threads.iter().any(|(n, _)| n.starts_with("ivshmem0"))
                && threads.iter().all(|(_, mode)| *mode == expected)
        });
        let threads = thread_seccomp(pid);
        let (status, stderr) = terminate(vm);
        assert!(settled, "--seccomp={flag}: threads {threads:?}");
        assert_eq!(status.code(), Some(0), "--seccomp={flag}: {stderr}");
    }
}

#[test]
fn bad_seccomp_values_are_refused() {
    let out = run_vmm(&["--guest", "builtin:hello", "--seccomp", "maybe"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("expected on, off or log"));
    let out = Command::new(bin("ivshmem-server"))
        .args(["-F", "--seccomp=maybe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("expected on, off or log"));
}

#[test]
fn the_server_runs_under_its_filter_after_set_up() {
    let scratch = Scratch::new("seccomp-server");
    for (flag, expected) in [
        (None, 2),
        (Some("--seccomp=log"), 2),
        (Some("--seccomp=off"), 0),
    ] {
        let socket = scratch.join(&format!("sock-{expected}-{}", flag.is_some()));
        let args: Vec<&str> = flag.into_iter().collect();
        let server = Server::start(&socket, &[&["--memfd"], &args[..]].concat());
        // The harness's probe connection proved the event loop runs: the filter is on by then.
        let threads = thread_seccomp(server.pid());
        assert!(
            threads.iter().all(|(_, mode)| *mode == expected) && !threads.is_empty(),
            "{flag:?}: {threads:?}"
        );
        // Joins, leaves (eventfds, fds passed, SO_PEERCRED) and shutdown all within the list.
        let peers: Vec<_> = (0..3)
            .map(|_| peer::Peer::connect(&socket).expect("connect"))
            .collect();
        drop(peers);
        assert!(wait_until(Duration::from_secs(10), || server
            .log_text()
            .matches(" left ")
            .count()
            >= 4));
        let log = server.log.clone();
        let status = server.terminate();
        // The log reader thread ends with the server's stderr.
        wait_until(Duration::from_secs(5), || {
            log.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("shutting down"))
        });
        let log = log.lock().unwrap().join("\n");
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(!socket.exists(), "socket file left behind");
        assert!(!log.contains("filter forbids"), "{log}");
    }
}
