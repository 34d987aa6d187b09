//! An AF_VSOCK client for the nested tests of the virtio transport (tests/nested/linux-virtio):
//! busybox has no vsock. Connects to CID:PORT, sends TEXT, reads the answer until the peer
//! closes or as many bytes as were sent came back, and prints `reply: ANSWER`.
//!
//!   vsock_echo CID PORT TEXT
//!   vsock_echo serve-uds PATH     the other end, for vhost-device-vsock's host side: accepts
//!                                 on the UNIX socket PATH and echoes each connection's bytes
//!
//! Exit status: 0 an answer came, 1 a socket error (printed), 2 bad arguments.
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

fn connect(cid: u32, port: u32) -> std::io::Result<std::fs::File> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value before the fields are set.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: addr is a valid sockaddr_vm of the size passed, fd a socket we own.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &addr as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::fs::File::from(fd))
}

/// Echoes every connection on the UNIX socket `path` (one thread each), forever.
fn serve_uds(path: &str) -> ExitCode {
    let _ = std::fs::remove_file(path);
    let listener = match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vsock_echo: bind {path}: {e}");
            return ExitCode::from(1);
        }
    };
    for conn in listener.incoming().map_while(Result::ok) {
        std::thread::spawn(move || {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-uds") {
        return match args.get(2) {
            Some(path) => serve_uds(path),
            None => ExitCode::from(2),
        };
    }
    let (Some(cid), Some(port), Some(text)) = (
        args.get(1).and_then(|a| a.parse().ok()),
        args.get(2).and_then(|a| a.parse().ok()),
        args.get(3),
    ) else {
        eprintln!("usage: vsock_echo CID PORT TEXT");
        return ExitCode::from(2);
    };
    let mut sock = match connect(cid, port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vsock_echo: connect {cid}:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = sock.write_all(text.as_bytes()) {
        eprintln!("vsock_echo: send: {e}");
        return ExitCode::from(1);
    }
    let mut reply = vec![0u8; text.len()];
    let mut got = 0;
    while got < reply.len() {
        match sock.read(&mut reply[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                eprintln!("vsock_echo: receive: {e}");
                return ExitCode::from(1);
            }
        }
    }
    println!("reply: {}", String::from_utf8_lossy(&reply[..got]));
    ExitCode::SUCCESS
}
