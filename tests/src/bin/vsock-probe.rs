//! Both ends of a vsock conversation for the nested bed's vhost-user scenario: in L2 Linux it
//! speaks AF_VSOCK; in L1 it speaks to `vhost-device-vsock`'s UNIX sockets (the backend's
//! host side: a guest connecting to port P reaches `UDS_P`; a host connects to `UDS` and says
//! `CONNECT P`).
//!
//! ```text
//! vsock-probe vsock-connect CID PORT MESSAGE   # L2: connect, send a line, print the reply
//! vsock-probe vsock-serve PORT                 # L2: accept one, answer "pong <line>"
//! vsock-probe unix-serve PATH                  # L1: the same on a UNIX socket
//! vsock-probe unix-connect PATH PORT MESSAGE   # L1: CONNECT PORT through the backend
//! ```
//! Exit status 0 on success, 1 with a message otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

fn vsock_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn check(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// Reads one line, answers "pong <line>".
fn serve_one(stream: impl Read + Write) -> Result<String, String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end().to_string();
    writeln!(reader.get_mut(), "pong {line}").map_err(|e| e.to_string())?;
    Ok(line)
}

/// Sends one line, returns the answer line.
fn ask(stream: impl Read + Write, message: &str) -> Result<String, String> {
    let mut reader = BufReader::new(stream);
    writeln!(reader.get_mut(), "{message}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_string())
}

fn run(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or("missing argument (see the source)")
    };
    let number = |i: usize| -> Result<u32, String> {
        arg(i)?.parse().map_err(|e| format!("argument {i}: {e}"))
    };
    match arg(0)?.as_str() {
        "vsock-connect" => {
            let fd = vsock_socket().map_err(|e| format!("socket: {e}"))?;
            let addr = vsock_addr(number(1)?, number(2)?);
            // SAFETY: a valid sockaddr_vm of the size given.
            let rc = unsafe {
                libc::connect(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&addr as *const libc::sockaddr_vm).cast(),
                    std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                )
            };
            check(rc, "connect")?;
            let stream = std::fs::File::from(fd);
            println!("reply: {}", ask(&stream, &arg(3)?)?);
        }
        "vsock-serve" => {
            let fd = vsock_socket().map_err(|e| format!("socket: {e}"))?;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let addr = vsock_addr(libc::VMADDR_CID_ANY, number(1)?);
            // SAFETY: a valid sockaddr_vm of the size given.
            let rc = unsafe {
                libc::bind(
                    raw,
                    (&addr as *const libc::sockaddr_vm).cast(),
                    std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                )
            };
            check(rc, "bind")?;
            // SAFETY: listen on our socket.
            check(unsafe { libc::listen(raw, 1) }, "listen")?;
            println!("listening");
            // SAFETY: accept on our listening socket; the new fd is checked and owned.
            let conn = unsafe { libc::accept(raw, std::ptr::null_mut(), std::ptr::null_mut()) };
            check(conn, "accept")?;
            // SAFETY: a fresh fd we own.
            let stream = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(conn) });
            println!("got: {}", serve_one(&stream)?);
        }
        "unix-serve" => {
            let listener = UnixListener::bind(arg(1)?).map_err(|e| format!("bind: {e}"))?;
            println!("listening");
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            println!("got: {}", serve_one(&stream)?);
        }
        "unix-connect" => {
            let stream = UnixStream::connect(arg(1)?).map_err(|e| format!("connect: {e}"))?;
            let mut reader = BufReader::new(&stream);
            writeln!(&stream, "CONNECT {}", number(2)?).map_err(|e| e.to_string())?;
            let mut ok = String::new();
            reader.read_line(&mut ok).map_err(|e| e.to_string())?;
            if !ok.starts_with("OK") {
                return Err(format!("backend said {ok:?}"));
            }
            writeln!(&stream, "{}", arg(3)?).map_err(|e| e.to_string())?;
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            println!("reply: {}", line.trim_end());
        }
        other => return Err(format!("unknown mode {other:?}")),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("vsock-probe: {e}");
        std::process::exit(1);
    }
}
