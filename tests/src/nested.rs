//! The ordinary-KVM test bed from Rust: runs `scripts/nested-kvm.sh run tests/nested/<scenario>`
//! (QEMU TCG with an SVM CPU, a Debian kernel loading kvm_amd, our binaries inside) and hands
//! back what the scenario printed. Scenarios print one `RESULT <name> pass|fail ...` line per
//! check; see tests/nested/lib.sh and docs/nested-kvm.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bin_dir;

/// The repository's root (tests/ is one level down).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// True when the nested bed can run here: `qemu-system-x86_64`, `cpio` and `apt-get` (the
/// kernel and busybox are Debian packages fetched on first use). Without them the test skips
/// with a printed reason, unless `IVSHMEM_REQUIRE_KVM=1` (CI), where it fails. `IVSHMEM_NESTED=0`
/// skips the nested tests on purpose (quick local runs); CI does not set it.
pub fn nested_available(test: &str) -> bool {
    if std::env::var("IVSHMEM_NESTED").as_deref() == Ok("0") {
        eprintln!("SKIP {test}: IVSHMEM_NESTED=0");
        return false;
    }
    let missing: Vec<&str> = ["qemu-system-x86_64", "cpio", "apt-get"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("IVSHMEM_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{test}: the nested KVM bed needs {missing:?} and IVSHMEM_REQUIRE_KVM=1");
    }
    eprintln!("SKIP {test}: the nested KVM bed needs {missing:?} (scripts/test.sh installs them)");
    false
}

/// The programs in `tools` that a scenario's host.sh would not find: it looks on PATH, in
/// cargo's bin directory (where `cargo install` puts the rust-vmm backends) and in /sbin and
/// /usr/sbin.
pub fn missing_tools(tools: &[&str]) -> Vec<String> {
    let cargo_bin = std::env::var("CARGO_HOME")
        .map(|home| format!("{home}/bin"))
        .or_else(|_| std::env::var("HOME").map(|home| format!("{home}/.cargo/bin")))
        .unwrap_or_default();
    let path = format!(
        "{}:{cargo_bin}:/sbin:/usr/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    tools
        .iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .env("PATH", &path)
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(|tool| tool.to_string())
        .collect()
}

/// True when nothing is `missing`; else the test skips with a reason, or fails when
/// IVSHMEM_REQUIRE_VHOST_DEVICE=1 (scripts/test.sh sets that in CI once it installed them).
pub fn backends_present(test: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    if std::env::var("IVSHMEM_REQUIRE_VHOST_DEVICE").as_deref() == Ok("1") {
        panic!("{test}: the backends {missing:?} are missing and IVSHMEM_REQUIRE_VHOST_DEVICE=1");
    }
    eprintln!("SKIP {test}: the backends {missing:?} are missing (scripts/test.sh installs them)");
    false
}

/// One run of a scenario on the bed.
pub struct Nested {
    scenario: String,
    options: Vec<String>,
    qemu_args: Vec<String>,
}

impl Nested {
    /// The scenario in `tests/nested/<name>`.
    pub fn scenario(name: &str) -> Nested {
        Nested {
            scenario: name.to_string(),
            options: Vec::new(),
            qemu_args: Vec::new(),
        }
    }

    /// `KEY=VALUE`, exported to the scenario's l1.sh.
    pub fn arg(mut self, key_value: &str) -> Nested {
        self.options.extend(["--arg".into(), key_value.into()]);
        self
    }

    /// An extra file in the L1 initramfs: `src` on the host at `dst` in L1.
    pub fn file(mut self, src: &Path, dst: &str) -> Nested {
        self.options
            .extend(["--file".into(), format!("{}:{dst}", src.display())]);
        self
    }

    /// An extra program in L1 at the same path, with the libraries it links (e.g. a
    /// vhost-user backend).
    pub fn binary(mut self, path: &Path) -> Nested {
        self.options
            .extend(["--binary".into(), path.display().to_string()]);
        self
    }

    /// An extra program in L1 at `dst` (with the libraries ldd lists). For programs whose own
    /// path L1 would hide: L1 mounts a tmpfs on /tmp, where a checkout (and its target/) may be.
    pub fn binary_at(mut self, src: &Path, dst: &str) -> Nested {
        self.options
            .extend(["--binary".into(), format!("{}:{dst}", src.display())]);
        self
    }

    /// An extra file in the L2 initramfs (the Linux our VMM boots inside L1).
    pub fn l2_file(mut self, src: &Path, dst: &str) -> Nested {
        self.options
            .extend(["--l2-file".into(), format!("{}:{dst}", src.display())]);
        self
    }

    /// An extra program in the L2 initramfs, with the libraries it links.
    pub fn l2_binary(mut self, src: &Path, dst: &str) -> Nested {
        self.options
            .extend(["--l2-binary".into(), format!("{}:{dst}", src.display())]);
        self
    }

    /// Also ship the ELF vmlinux to L1 (at /l2/vmlinux).
    pub fn with_vmlinux(mut self) -> Nested {
        self.options.push("--vmlinux".into());
        self
    }

    /// Extra arguments for the L1 QEMU (e.g. QEMU's own ivshmem devices).
    pub fn qemu_args(mut self, args: &[&str]) -> Nested {
        self.qemu_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs the scenario to the end (the script's own timeout bounds it).
    pub fn run(self) -> NestedOutcome {
        let scenario = repo_root().join("tests/nested").join(&self.scenario);
        let mut cmd = Command::new(repo_root().join("scripts/nested-kvm.sh"));
        cmd.arg("run")
            .arg(&scenario)
            .arg("--bins")
            .arg(bin_dir())
            .args(&self.options)
            .arg("--")
            .args(&self.qemu_args)
            .stdin(Stdio::null());
        let out = cmd.output().expect("run scripts/nested-kvm.sh");
        let console = String::from_utf8_lossy(&out.stdout);
        NestedOutcome {
            scenario: self.scenario,
            status: out.status.code(),
            console: last_attempt(&console).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The console of the bed's last attempt: when L1 failed under the scenario, the script prints
/// `NESTED-BED-RETRY` and runs it again, and only that run's lines are its verdict.
fn last_attempt(console: &str) -> &str {
    const RETRY: &str = "NESTED-BED-RETRY\n";
    match console.rfind(RETRY) {
        Some(at) => &console[at + RETRY.len()..],
        None => console,
    }
}

/// What a scenario run printed.
pub struct NestedOutcome {
    /// The scenario's name, for failure messages.
    pub scenario: String,
    /// l1.sh's exit status; 125 when the bed itself failed.
    pub status: Option<i32>,
    /// Everything L1 (and L2 through our VMM's console) printed.
    pub console: String,
    /// The script's own messages.
    pub stderr: String,
}

impl NestedOutcome {
    /// The `RESULT name ...` line's verdict: Some(true) for pass.
    pub fn result(&self, name: &str) -> Option<bool> {
        self.console.lines().find_map(|line| {
            let rest = line.trim_end_matches('\r').strip_prefix("RESULT ")?;
            let (check, verdict) = rest.split_once(' ')?;
            (check == name).then(|| verdict.starts_with("pass"))
        })
    }

    /// Asserts the run completed and every named check printed `pass`.
    pub fn assert_passed(&self, names: &[&str]) {
        assert_ne!(
            self.status,
            Some(125),
            "the nested bed failed for {}:\n{}\n{}",
            self.scenario,
            self.stderr,
            self.console
        );
        let failed: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| self.result(name) != Some(true))
            .collect();
        assert!(
            failed.is_empty(),
            "{}: checks failed or missing: {failed:?}\n--- console ---\n{}\n--- stderr ---\n{}",
            self.scenario,
            self.console,
            self.stderr
        );
    }

    /// The console lines between a line containing `begin` and the next containing `end`.
    pub fn section(&self, begin: &str, end: &str) -> Option<Vec<String>> {
        let mut lines = self.console.lines().map(|l| l.trim_end_matches('\r'));
        lines.by_ref().find(|l| l.contains(begin))?;
        let mut body = Vec::new();
        for line in lines {
            if line.contains(end) {
                return Some(body);
            }
            body.push(line.to_string());
        }
        None
    }
}

/// Builds the guest kernel module against the bed kernel's headers
/// (scripts/build-guest-driver.sh) and returns its directory; None (skip) when that is impossible
/// here, a failure under IVSHMEM_REQUIRE_KVM=1. `test` names the caller in the message.
pub fn build_guest_driver(test: &str) -> Option<std::path::PathBuf> {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/build-guest-driver.sh");
    let out = std::process::Command::new(script)
        .output()
        .expect("run build-guest-driver.sh");
    if out.status.success() {
        return Some(std::path::PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        ));
    }
    let why = String::from_utf8_lossy(&out.stderr);
    if std::env::var("IVSHMEM_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{test}: cannot build the guest driver: {why}");
    }
    eprintln!(
        "SKIP {test}: cannot build the guest driver (scripts/test.sh installs the headers): {why}"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::last_attempt;

    #[test]
    fn only_the_last_attempt_is_the_verdict() {
        let two =
            "NESTED-L1-READY\nRESULT a fail\nNESTED-BED-RETRY\nNESTED-L1-READY\nRESULT a pass\n";
        assert_eq!(last_attempt(two), "NESTED-L1-READY\nRESULT a pass\n");
        assert_eq!(last_attempt("RESULT a pass\n"), "RESULT a pass\n");
    }
}
