//! The server's control socket (`ivshmem_server::control`, `<socket>.ctl`: `--status`,
//! `--upgrade`) fed arbitrary requests through a real socket pair: the request parser is
//! private, so the target drives the public `Control` as the event loop does.
//!
//! Input: the bytes a client sends (then it shuts its write side). Checked: no panic; the
//! connection ends within a bounded number of events; a request is recognized exactly as
//! docs/server-operations.md says (first line, at most `MAX_REQUEST` bytes, UTF-8, words
//! `status [json]` / `status text` / `upgrade`, empty = status) and anything else is answered
//! with `{"error":...}`; the client reads every answer. The listening socket is
//! `$TMPDIR/ivshmem-fuzz-ctl-PID/sock.ctl` (left behind when the run ends).
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use ivshmem_server::control::{Control, Event, Request, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static CONTROL: std::cell::RefCell<(Control, std::path::PathBuf)> = {
        let dir = std::env::temp_dir().join(format!("ivshmem-fuzz-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock.ctl");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the control socket");
        let uid = nix::unistd::geteuid().as_raw();
        std::cell::RefCell::new((Control::new(listener, uid).expect("control"), path))
    };
}

/// What the documentation says `line` asks for (`None`: an error answer).
fn expected(data: &[u8]) -> Option<Request> {
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(end) if end <= MAX_REQUEST => &data[..end],
        Some(_) => return None,
        None if data.len() > MAX_REQUEST => return None,
        None => data,
    };
    let text = std::str::from_utf8(line).ok()?;
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        [] | ["status"] | ["status", "json"] => Some(Request::Status),
        ["status", "text"] => Some(Request::StatusText),
        ["upgrade"] => Some(Request::Upgrade { allowed: true }),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    CONTROL.with(|cell| {
        let (control, path) = &mut *cell.borrow_mut();
        let mut client = UnixStream::connect(&*path).expect("connect");
        // Bounded by libFuzzer's input size; the socket buffer takes it without blocking.
        let data = &data[..data.len().min(16 * 1024)];
        client.write_all(data).expect("send the request");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let (slot, _, _) = control.accept().expect("a pending connection");
        let mut got = None;
        let mut closed = false;
        for _ in 0..64 {
            match control.on_event(slot) {
                Event::Nothing => continue,
                Event::Request(r) => {
                    got = Some(r);
                    assert_eq!(control.answer(slot, "ok\n".into()), Event::Closed);
                    closed = true;
                    break;
                }
                Event::Closed => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed, "the connection did not end");
        assert_eq!(got, expected(data), "request {data:?}");
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer);
        match got {
            Some(_) => assert_eq!(answer, "ok\n"),
            None => assert!(answer.starts_with("{\"error\":"), "{answer:?}"),
        }
    });
});
