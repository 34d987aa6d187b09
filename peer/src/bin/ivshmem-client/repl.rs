//! Where commands come from: a `-c` script, or stdin — interactive with a prompt on a terminal,
//! a script otherwise.
//!
//! Interactive mode waits with `poll` on stdin, the server socket and our own vectors, so
//! notifications, joins and leaves are printed while the prompt is idle. Script mode (`-c` or
//! piped stdin) leaves our vectors alone between commands, so a ring that arrives before a `wait`
//! is still pending when the `wait` runs; it stops at the first failing command.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use peer::cli::commands::{self, Command};
use peer::Peer;

use crate::session::{flush_stdout, Flow, Session};
use crate::{complain, say};

const PROMPT: &str = "cmd> ";

/// Runs a parsed script; false when a command failed (after reporting it).
pub fn run_script(peer: Peer, commands: &[Command]) -> bool {
    let mut session = Session {
        peer,
        announce_server_news: false,
    };
    for command in commands {
        match session.execute(command) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                complain!("{}", e.0);
                return false;
            }
        }
    }
    true
}

/// Reads commands from stdin until EOF or `quit`; false when a script command failed.
pub fn run_stdin(peer: Peer) -> bool {
    let interactive = std::io::stdin().is_terminal();
    let mut session = Session {
        peer,
        announce_server_news: interactive,
    };
    let mut input = Vec::<u8>::new();
    let mut prompt_shown = false;
    loop {
        if interactive && !prompt_shown {
            let _ = write!(std::io::stdout().lock(), "{PROMPT}");
            flush_stdout();
            prompt_shown = true;
        }
        let ready = match wait_for_input(&session.peer, interactive) {
            Ok(ready) => ready,
            Err(e) => {
                complain!("waiting for input failed: {e}");
                return false;
            }
        };
        if ready.notifications || ready.server {
            if prompt_shown {
                say!();
                prompt_shown = false;
            }
            if ready.notifications {
                print_notifications(&session.peer);
            }
            if ready.server {
                session.process_server_news();
            }
        }
        if !ready.stdin {
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = match nix::unistd::read(std::io::stdin().as_fd(), &mut chunk) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                complain!("reading stdin failed: {e}");
                return false;
            }
        };
        let eof = n == 0;
        input.extend_from_slice(&chunk[..n]);
        // Run every complete line; at EOF also the unterminated rest.
        let complete = if eof {
            input.len()
        } else {
            input
                .iter()
                .rposition(|&b| b == b'\n' || b == b'\r')
                .map_or(0, |i| i + 1)
        };
        let text = String::from_utf8_lossy(&input[..complete]).into_owned();
        input.drain(..complete);
        prompt_shown = false;
        for line in commands::split_commands(&text) {
            let result = commands::parse(&line)
                .map_err(|e| e.0)
                .and_then(|command| session.execute(&command).map_err(|e| e.0));
            match result {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => return true,
                Err(message) => {
                    complain!("{message}");
                    if !interactive {
                        return false;
                    }
                }
            }
        }
        if eof {
            if interactive {
                say!();
            }
            return true;
        }
    }
}

/// Which inputs are ready.
struct Ready {
    stdin: bool,
    server: bool,
    notifications: bool,
}

/// Blocks until stdin, the server socket or (interactive only) one of our vectors is readable.
fn wait_for_input(peer: &Peer, with_vectors: bool) -> nix::Result<Ready> {
    let stdin_handle = std::io::stdin();
    let stdin: BorrowedFd<'_> = stdin_handle.as_fd();
    let server = peer.server_fd();
    let vectors = if with_vectors {
        peer.own_vector_fds()
    } else {
        Vec::new()
    };
    let mut fds = vec![PollFd::new(stdin, PollFlags::POLLIN)];
    if let Some(fd) = server {
        fds.push(PollFd::new(fd, PollFlags::POLLIN));
    }
    fds.extend(vectors.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let is_ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
    let server_ready = server.is_some() && is_ready(&fds[1]);
    let first_vector = if server.is_some() { 2 } else { 1 };
    Ok(Ready {
        stdin: is_ready(&fds[0]),
        server: server_ready,
        notifications: fds[first_vector..].iter().any(is_ready),
    })
}

/// Drains our vectors and prints one QEMU-style line per vector that fired.
fn print_notifications(peer: &Peer) {
    match peer.drain_all() {
        Ok(fired) => {
            for n in fired {
                say!(
                    "receive notification from peer_id={} vector={}",
                    peer.id(),
                    n.vector
                );
            }
        }
        Err(e) => complain!("reading our vectors failed: {e}"),
    }
    let _ = std::io::stdout().flush();
}
