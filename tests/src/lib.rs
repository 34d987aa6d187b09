//! Shared harness for the multi-process integration tests: finds the workspace's binaries,
//! makes scratch directories, starts and stops servers (real and fake), VMs and raw protocol
//! clients, decides whether KVM and QEMU tests run, and waits on conditions with deadlines.

pub mod eventfd;
pub mod fake_server;
pub mod fake_vhost_user;
pub mod nested;
pub mod qemu;
pub mod raw_client;
pub mod server;
pub mod virtio_host;
pub mod vm;

pub use server::Server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long the tests wait for something that normally takes milliseconds (a log line, a
/// message, a socket file) before calling it missing: generous, the machine is shared.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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
pub fn run_vmm(args: &[&str]) -> Output {
    Command::new(bin("vmm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmm")
}

/// Runs `ivshmem-client -S SOCKET -c SCRIPT` to completion (stdin closed).
pub fn run_client_script(socket: &Path, script: &str) -> Output {
    Command::new(bin("ivshmem-client"))
        .arg("-S")
        .arg(socket)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run ivshmem-client")
}

/// Asserts a finished process's exit status and that its stdout contains every string in
/// `want` (showing both streams otherwise); returns its stdout.
pub fn check_output(out: &Output, status: i32, want: &[&str]) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(status),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for w in want {
        assert!(
            stdout.contains(w),
            "expected {w:?} in stdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    stdout
}

/// The `vmm-stats: {JSON}` line that `vmm --stats` prints on stderr, parsed.
pub fn vmm_stats(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("vmm-stats: "))
        .unwrap_or_else(|| panic!("no vmm-stats line in stderr:\n{stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("vmm-stats is not JSON ({e}): {line}"))
}

/// A number from the `vmm-stats: {JSON}` line that `vmm --stats` prints on stderr.
pub fn vmm_stat(stderr: &str, key: &str) -> u64 {
    let stats = vmm_stats(stderr);
    stats
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no number {key:?} in {stats}"))
}

/// Lossy UTF-8 text of captured output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed on drop.
pub struct Scratch {
    /// The directory; unique per process and call.
    pub path: PathBuf,
}

impl Scratch {
    /// Creates a fresh, empty `ivshmem-test-TAG-PID-N` directory in the temp dir.
    pub fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ivshmem-test-{}-{}-{}", tag, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    /// A path inside the directory.
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
/// Tests say [`require_kvm!`] instead of calling this.
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
/// Tests say [`require_qemu!`] instead of calling this.
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

/// The test's name as libtest prints it (`module::test`, without the crate), from the
/// `std::any::type_name` of a function item declared inside the test by [`test_name!`].
#[doc(hidden)]
pub fn test_name_from_marker(marker_path: &str) -> &str {
    let mut path = marker_path.strip_suffix("::marker").unwrap_or(marker_path);
    // Inside a closure the path goes on with `::{{closure}}`: the test is what encloses it.
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path.split_once("::").map_or(path, |(_crate, rest)| rest)
}

/// The name of the test (or function) this is expanded in, e.g. `"two_cpus_run"`.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn marker() {}
        fn type_name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        $crate::test_name_from_marker(type_name_of(marker))
    }};
}

/// Returns from the test when /dev/kvm is not usable: skips with a printed reason, or fails
/// when `IVSHMEM_REQUIRE_KVM=1` (see [`kvm_available`]).
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::kvm_available($crate::test_name!()) {
            return;
        }
    };
}

/// Returns from the test when `qemu-system-x86_64` is missing: skips with a printed reason,
/// or fails when `IVSHMEM_REQUIRE_QEMU=1` (see [`qemu_available`]).
#[macro_export]
macro_rules! require_qemu {
    () => {
        if !$crate::qemu_available($crate::test_name!()) {
            return;
        }
    };
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes; the last answer counts.
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

/// CPU time a process has used (user + system), in clock ticks, from /proc/PID/stat; 0 when
/// it cannot be read.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses, may contain spaces): state is field 3, utime 14.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// True when the process uses (nearly) no CPU for half a second: an event loop that is not
/// spinning on an event it does not clear.
pub fn stays_idle(pid: u32) -> bool {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    // A spinning loop burns ~50 ticks (100 Hz) here; allow a little for a loaded machine.
    cpu_ticks(pid).saturating_sub(before) <= 10
}

/// Number of open fds of a process, from /proc/PID/fd.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Collects a child's output stream line by line on a background thread into `sink`, until
/// the stream ends (the thread's end means the pipe is closed).
pub fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    mut sink: impl FnMut(String) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    use std::io::BufRead;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            sink(line);
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_name_is_the_enclosing_test_as_libtest_prints_it() {
        assert_eq!(
            test_name!(),
            "tests::test_name_is_the_enclosing_test_as_libtest_prints_it"
        );
        let in_closure = || test_name!();
        assert_eq!(
            in_closure(),
            "tests::test_name_is_the_enclosing_test_as_libtest_prints_it"
        );
    }

    #[test]
    fn marker_paths_lose_the_crate_the_marker_and_closures() {
        use super::test_name_from_marker as name;
        assert_eq!(name("vmm_pci_guests::two_cpus_run::marker"), "two_cpus_run");
        assert_eq!(name("a::m::t::{{closure}}::{{closure}}::marker"), "m::t");
    }
}
