//! A scripted fake ivshmem server for the peer tests: it accepts one connection and sends exactly
//! what the test says — a correct handshake, late joins and leaves, or garbage — built on
//! `protocol::send_message` so the bytes on the wire are the real protocol's.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

/// What one step sends.
#[derive(Debug, Clone)]
pub enum Step {
    /// A message without an fd.
    Value(i64),
    /// A message with a new shared-memory fd (a memfd of this size).
    Shm(i64, u64),
    /// A message with a new eventfd for (peer value); the eventfd is also kept for the test.
    Vector(i64),
    /// Raw bytes, no fd (for partial or misaligned messages).
    Raw(Vec<u8>),
    /// Pause: a server that is slow or stalls on purpose (the behaviour under test).
    Sleep(Duration),
    /// Wait until the test sends on the control channel.
    AwaitGo,
    /// Close the connection now (the remaining steps are not run).
    Close,
}

/// The version, id and shared memory of a correct handshake.
pub fn welcome(id: i64, shm_size: u64) -> Vec<Step> {
    vec![Step::Value(0), Step::Value(id), Step::Shm(-1, shm_size)]
}

/// `count` vector messages for `peer`.
pub fn vectors(peer: i64, count: u32) -> Vec<Step> {
    (0..count).map(|_| Step::Vector(peer)).collect()
}

/// An eventfd the fake server handed out, with the peer it was sent for.
pub struct SentVector {
    /// The peer id of the vector message it came with.
    pub peer: i64,
    /// The server's end of the eventfd, to ring the client or check it was closed.
    pub fd: OwnedFd,
}

/// The fake server: runs its script on the first connection, then keeps the connection open
/// until dropped (unless the script closed it).
pub struct FakeServer {
    /// The socket the fake server listens on.
    pub path: PathBuf,
    go: mpsc::Sender<()>,
    thread: Option<JoinHandle<Vec<SentVector>>>,
    shm_rx: mpsc::Receiver<OwnedFd>,
    vectors_rx: mpsc::Receiver<SentVector>,
    stop: mpsc::Sender<()>,
}

impl FakeServer {
    /// Listens on `path` and serves `steps` to the first client.
    pub fn start(path: &Path, steps: Vec<Step>) -> FakeServer {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind fake server socket");
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (shm_tx, shm_rx) = mpsc::channel::<OwnedFd>();
        let (vec_tx, vec_rx) = mpsc::channel::<SentVector>();
        let thread = std::thread::spawn(move || {
            let (stream, _) = match listener.accept() {
                Ok(conn) => conn,
                Err(_) => return Vec::new(),
            };
            if run_steps(&stream, &steps, &go_rx, &shm_tx, &vec_tx) {
                // Keep the connection open until the test is done with it.
                let _ = stop_rx.recv();
            }
            drop(stream);
            Vec::new()
        });
        FakeServer {
            path: path.to_path_buf(),
            go: go_tx,
            thread: Some(thread),
            shm_rx,
            vectors_rx: vec_rx,
            stop: stop_tx,
        }
    }

    /// Lets a script waiting at [`Step::AwaitGo`] continue.
    pub fn go(&self) {
        let _ = self.go.send(());
    }

    /// The next shared-memory fd the script sent (waits up to 5 s).
    pub fn shm(&self) -> OwnedFd {
        self.shm_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fake server sent no shared memory")
    }

    /// The next eventfd the script sent (waits up to 5 s).
    pub fn next_vector(&self) -> SentVector {
        self.vectors_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fake server sent no more vectors")
    }

    /// Waits until a script that ends with [`Step::Close`] has run to its end and closed the
    /// connection (it must end so: a script left open would wait for `finish`).
    pub fn wait_closed(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Closes the connection (if the script left it open) and waits for the thread.
    pub fn finish(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        let _ = std::fs::remove_file(&self.path);
        // Don't join: a script may still wait for a client that never came.
    }
}

/// Runs the steps; false when the script closed the connection.
fn run_steps(
    stream: &UnixStream,
    steps: &[Step],
    go: &mpsc::Receiver<()>,
    shm_tx: &mpsc::Sender<OwnedFd>,
    vec_tx: &mpsc::Sender<SentVector>,
) -> bool {
    let sock = stream.as_fd();
    for step in steps {
        match step {
            Step::Value(v) => {
                let _ = protocol::fdpass::send_message_all(sock, *v, None);
            }
            Step::Shm(v, size) => {
                let fd = nix::sys::memfd::memfd_create(
                    "fake-ivshmem",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .expect("memfd_create");
                nix::unistd::ftruncate(&fd, *size as i64).expect("ftruncate");
                let _ = protocol::fdpass::send_message_all(sock, *v, Some(fd.as_fd()));
                let _ = shm_tx.send(fd);
            }
            Step::Vector(peer) => {
                let fd: OwnedFd =
                    EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                        .expect("eventfd")
                        .into();
                let _ = protocol::fdpass::send_message_all(sock, *peer, Some(fd.as_fd()));
                let _ = vec_tx.send(SentVector { peer: *peer, fd });
            }
            Step::Raw(bytes) => {
                let _ = protocol::fdpass::send_bytes(sock, bytes, None);
            }
            Step::Sleep(d) => std::thread::sleep(*d),
            Step::AwaitGo => {
                let _ = go.recv();
            }
            Step::Close => return false,
        }
    }
    true
}
