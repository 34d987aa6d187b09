//! A real `ivshmem-server -F` on a scratch socket, with its stderr log collected.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{bin, collect_lines, wait_until, TIMEOUT};

/// A running `ivshmem-server -F`; killed (SIGKILL) on drop if still alive.
pub struct Server {
    /// The server process.
    pub child: Child,
    /// The socket it listens on.
    pub socket: PathBuf,
    /// Lines the server printed on stderr, collected by a background thread.
    pub log: Arc<Mutex<Vec<String>>>,
    log_reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the server with `-F -S <socket>` plus `args`, and waits until it accepts
    /// connections, proven by a probe connection: that probe is peer 0, which joined and left
    /// (its leave is in the log) before this returns, so the test's first peer gets id 1.
    pub fn start(socket: &Path, args: &[&str]) -> Server {
        let server = Server::spawn(socket, args);
        let up = wait_until(TIMEOUT, || {
            socket.exists() && UnixStream::connect(socket).is_ok()
        });
        assert!(up, "server did not start listening on {}", socket.display());
        assert!(
            server.wait_log("peer 0 left"),
            "the probe connection's leave was not logged:\n{}",
            server.log_text()
        );
        server
    }

    /// Starts the server and waits for its "listening on" line, without connecting: the
    /// test's first client gets id 0.
    pub fn start_without_probe(socket: &Path, args: &[&str]) -> Server {
        let server = Server::spawn(socket, args);
        assert!(
            server.wait_log("listening on"),
            "server did not start: {}",
            server.log_text()
        );
        server
    }

    fn spawn(socket: &Path, args: &[&str]) -> Server {
        let mut command = Command::new(bin("ivshmem-server"));
        command.arg("-F").arg("-S").arg(socket).args(args);
        Server::from_command(command, socket)
    }

    /// Runs `command` (a server, or a wrapper that becomes one, such as
    /// `systemd-socket-activate`) with its stderr collected; `socket` is where it listens.
    /// Does not wait for anything.
    pub fn from_command(mut command: Command, socket: &Path) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ivshmem-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("stderr piped");
        let log_reader = collect_lines(stderr, move |line| sink.lock().unwrap().push(line));
        Server {
            child,
            socket: socket.to_path_buf(),
            log,
            log_reader: Some(log_reader),
        }
    }

    /// The server's pid, to check the pid in its join/leave lines or signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to [`TIMEOUT`] until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(TIMEOUT, || self.log_text().contains(needle))
    }

    /// Sends SIGTERM, waits for the exit status and for the rest of the log: when this
    /// returns, `log` is complete and the pipe from the server's stderr is closed.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().expect("wait server");
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Server {
    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the server");
    }

    /// Waits for the server process to exit (the log keeps being collected: a successor
    /// writes to the same pipe).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.wait().expect("wait server")
    }

    /// Upgrades the server (SIGUSR2) and waits until the successor serves and this process
    /// has exited with status 0; returns the successor, which is killed when dropped.
    pub fn upgrade(&mut self) -> Successor {
        let before = self.log.lock().unwrap().len();
        self.signal(nix::sys::signal::Signal::SIGUSR2);
        let mut pid = None;
        let found = wait_until(TIMEOUT, || {
            let log = self.log.lock().unwrap();
            pid = log[before..].iter().find_map(|l| {
                let rest = l.split("upgraded: pid ").nth(1)?;
                rest.split(' ').next()?.parse::<i32>().ok()
            });
            pid.is_some()
        });
        assert!(found, "no upgrade in the log:\n{}", self.log_text());
        let status = self.wait_exit();
        assert!(status.success(), "the old server exited with {status}");
        Successor {
            pid: pid.expect("found"),
        }
    }
}

/// A server process that took over by an upgrade: not our child (it was started by the old
/// server's helper), so it is signalled by pid and watched through /proc. SIGKILLed on drop.
pub struct Successor {
    /// Its pid.
    pub pid: i32,
}

impl Successor {
    /// Whether the process still runs (a zombie waiting for init counts as gone).
    pub fn alive(&self) -> bool {
        process_alive(self.pid)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), signal);
    }

    /// SIGTERM, then waits until it is gone.
    pub fn terminate(self) -> bool {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_until(TIMEOUT, || !process_alive(self.pid))
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if process_alive(self.pid) {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
