//! A scripted vhost-user backend that misbehaves on purpose: it answers the few requests a
//! generic device needs (features VERSION_1 only, no protocol features) until the chosen
//! request, where it closes the socket, stops answering, or answers garbage. It records every
//! request code it received.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// vhost-user request codes (the specification's numbering).
pub mod request {
    /// VHOST_USER_GET_FEATURES.
    pub const GET_FEATURES: u32 = 1;
    /// VHOST_USER_SET_FEATURES.
    pub const SET_FEATURES: u32 = 2;
    /// VHOST_USER_SET_OWNER.
    pub const SET_OWNER: u32 = 3;
    /// VHOST_USER_SET_MEM_TABLE.
    pub const SET_MEM_TABLE: u32 = 5;
    /// VHOST_USER_GET_VRING_BASE.
    pub const GET_VRING_BASE: u32 = 11;
}

/// What the fake does when the fault triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Close the connection.
    Close,
    /// Keep the connection open and never answer again.
    Silent,
    /// Answer with a reply for another request.
    Garbage,
}

/// The fault: `action` at the `nth` (1-based) occurrence of request `request`.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// Request code.
    pub request: u32,
    /// Which occurrence.
    pub nth: usize,
    /// What to do.
    pub action: Action,
}

/// The fake backend, serving one connection on its own thread.
pub struct FakeVhostUser {
    path: PathBuf,
    requests: Arc<Mutex<Vec<u32>>>,
    thread: Option<JoinHandle<()>>,
}

fn reply(stream: &mut impl Write, request: u32, payload: &[u8]) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(12 + payload.len());
    message.extend_from_slice(&request.to_le_bytes());
    message.extend_from_slice(&(0x1u32 | 0x4).to_le_bytes()); // version 1, reply
    message.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    message.extend_from_slice(payload);
    stream.write_all(&message)
}

impl FakeVhostUser {
    /// Listens on `path` and serves the first connection with `fault`.
    pub fn start(path: &Path, fault: Fault) -> FakeVhostUser {
        let listener = UnixListener::bind(path).expect("bind the fake backend's socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let thread = std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut silent = false;
            loop {
                let mut header = [0u8; 12];
                if stream.read_exact(&mut header).is_err() {
                    return; // the frontend went away
                }
                let code = u32::from_le_bytes(header[0..4].try_into().unwrap());
                let size = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
                let mut payload = vec![0u8; size];
                if stream.read_exact(&mut payload).is_err() {
                    return;
                }
                let occurrence = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(code);
                    seen.iter().filter(|&&c| c == code).count()
                };
                if silent {
                    continue;
                }
                if code == fault.request && occurrence == fault.nth {
                    match fault.action {
                        Action::Close => return,
                        Action::Silent => {
                            silent = true;
                            continue;
                        }
                        Action::Garbage => {
                            let _ = reply(&mut stream, code + 40, &[0xFF; 8]);
                            continue;
                        }
                    }
                }
                let answer = match code {
                    request::GET_FEATURES => reply(&mut stream, code, &(1u64 << 32).to_le_bytes()),
                    request::GET_VRING_BASE => {
                        let index = payload.get(0..4).unwrap_or(&[0; 4]);
                        let mut state = index.to_vec();
                        state.extend_from_slice(&0u32.to_le_bytes());
                        reply(&mut stream, code, &state)
                    }
                    // Everything else needs no reply without REPLY_ACK.
                    _ => Ok(()),
                };
                if answer.is_err() {
                    return;
                }
            }
        });
        FakeVhostUser {
            path: path.to_path_buf(),
            requests,
            thread: Some(thread),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The request codes received so far, in order.
    pub fn requests(&self) -> Vec<u32> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeVhostUser {
    fn drop(&mut self) {
        // The thread ends when the frontend closes its side (the machine's drop).
        if let Some(thread) = self.thread.take() {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
