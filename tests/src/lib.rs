//! Shared harness for the multi-process integration tests: finds the workspace's binaries,
//! makes scratch directories, starts and stops servers, and decides whether KVM tests run.

pub mod nested;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Directory holding the workspace's built binaries (`target/<profile>`), found from the
/// running test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    deps.parent()
        .expect("deps has a parent directory")
        .to_path_buf()
}

/// Path of a workspace binary; panics with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs `vmm ARGS` to completion (stdin closed) and returns its output.
pub fn run_vmm(args: &[&str]) -> std::process::Output {
    Command::new(bin("vmm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmm")
}

/// Lossy UTF-8 text of captured output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ivshmem-test-{}-{}-{}", tag, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// True when KVM tests should run. Without /dev/kvm they skip with a printed reason,
/// unless `IVSHMEM_REQUIRE_KVM=1`, in which case the missing device is a failure.
pub fn kvm_available(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var("IVSHMEM_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("{test}: /dev/kvm is not usable and IVSHMEM_REQUIRE_KVM=1");
        }
        eprintln!(
            "SKIP {test}: /dev/kvm is not usable (set IVSHMEM_REQUIRE_KVM=1 to fail instead)"
        );
    }
    ok
}

/// True when `qemu-system-x86_64` runs. Without it QEMU tests skip with a printed reason,
/// unless `IVSHMEM_REQUIRE_QEMU=1` (scripts/test.sh installs Debian's qemu-system-x86).
pub fn qemu_available(test: &str) -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("IVSHMEM_REQUIRE_QEMU").as_deref() == Ok("1") {
            panic!("{test}: qemu-system-x86_64 is not available and IVSHMEM_REQUIRE_QEMU=1");
        }
        eprintln!(
            "SKIP {test}: qemu-system-x86_64 not found on PATH (install qemu-system-x86, or set \
             IVSHMEM_REQUIRE_QEMU=1 to fail instead)"
        );
    }
    found
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Number of open fds of a process, from /proc/PID/fd.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A running `ivshmem-server -F` on a scratch socket; killed (SIGKILL) on drop if still alive.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    /// Lines the server printed on stderr, collected by a background thread.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with `-F -S <socket>` plus `args`, and waits until it accepts connections.
    pub fn start(socket: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin("ivshmem-server"));
        cmd.arg("-F").arg("-S").arg(socket).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ivshmem-server");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let up = wait_until(Duration::from_secs(10), || {
            socket.exists() && UnixStream::connect(socket).is_ok()
        });
        assert!(up, "server did not start listening on {}", socket.display());
        // The probe connection above counts as a peer that joined and left; let it settle.
        std::thread::sleep(Duration::from_millis(50));
        Server {
            child,
            socket: socket.to_path_buf(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit status. (Drop then finds the child reaped.)
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
