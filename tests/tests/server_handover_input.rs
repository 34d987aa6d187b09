//! The state a successor reads (`IVSHMEM_SERVER_STATE_FD`) and the other environment the
//! server takes fds from are outside input: anything wrong there is a clear error and exit 1,
//! never a panic, and nothing is created (no socket file).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use harness::{bin, text, Scratch};

/// A memfd holding `bytes`, inheritable (no close-on-exec).
fn state_fd(bytes: &[u8]) -> OwnedFd {
    let fd = nix::sys::memfd::memfd_create(c"state", nix::sys::memfd::MFdFlags::empty()).unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes).unwrap();
    f.into()
}

/// Runs the server with `var=value` (fds without close-on-exec are inherited); returns (exit
/// code, stderr).
fn run_with(dir: &Scratch, var: &str, value: &str) -> (Option<i32>, String) {
    let out = Command::new(bin("ivshmem-server"))
        .args(["-F", "--memfd", "-S"])
        .arg(dir.join("sock"))
        .env(var, value)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("sock").exists(), "a socket file was created");
    (out.status.code(), err)
}

fn blob(version: u32, fds: &[u32], body: &[u8]) -> Vec<u8> {
    let mut b = b"IVSHMSRV".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes()); // no ready fd
    b.extend_from_slice(&(fds.len() as u32).to_le_bytes());
    for f in fds {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b.extend_from_slice(body);
    b
}

#[test]
fn server_refuses_bad_handover_state_clearly() {
    let dir = Scratch::new("srv-bad-state");
    let var = "IVSHMEM_SERVER_STATE_FD";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "truncated"),
        (b"NOTMAGICxxxxxxxxxxxxxxxx".to_vec(), "bad magic"),
        (blob(99, &[], &[]), "state version 99 is not supported"),
        (blob(1, &[], &[1, 2, 3]), "truncated"),
        (blob(1, &[1], &[]), "standard stream"),
        (blob(1, &[900, 900], &[]), "listed twice"),
    ];
    for (bytes, want) in cases {
        let fd = state_fd(&bytes);
        let (code, err) = run_with(&dir, var, &fd.as_raw_fd().to_string());
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("cannot take over from the previous server"),
            "{err}"
        );
        assert!(err.contains(want), "wanted {want:?}: {err}");
    }
    // A table naming fds this process does not have.
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_le_bytes()); // listener = index 0
    let fd = state_fd(&blob(1, &[900], &body));
    let (code, err) = run_with(&dir, var, &fd.as_raw_fd().to_string());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("truncated") || err.contains("not open"),
        "{err}"
    );
    for value in ["", "abc", "-1", "2", "99999"] {
        let (code, err) = run_with(&dir, var, value);
        assert_eq!(code, Some(1), "{value}: {err}");
        assert!(err.contains(var), "{value}: {err}");
    }
}

#[test]
fn server_refuses_bad_keeper_and_activation_fds_clearly() {
    let dir = Scratch::new("srv-bad-env");
    // LISTEN_PID naming us with a bad LISTEN_FDS; LISTEN_PID of another process is ignored.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=many exec {} -F --memfd -S {}",
            bin("ivshmem-server").display(),
            dir.join("sock").display()
        ))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("LISTEN_FDS=many is not a number"), "{err}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=2 exec {} -F --memfd -S {}",
            bin("ivshmem-server").display(),
            dir.join("sock").display()
        ))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("expected exactly 1 socket"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("sock").exists());
}
