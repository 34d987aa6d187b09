//! The front end both clients share: argument errors, logging, where commands come from and the
//! exit code.
//!
//! Commands come from a `-c` script, or from stdin — interactively with a `cmd> ` prompt on a
//! terminal (the session's news printed while the prompt is idle), or as a script when stdin is
//! not a terminal. Scripts stop at the first failing command; a person at the prompt goes on.
//!
//! Script mode leaves the session's vectors alone between commands (only interactive mode asks
//! for [`Session::news_fds`] with `interactive` set), so a ring that arrives before a `wait` is
//! still pending when the `wait` runs.

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::commands::{self, Command};
use super::output::{complain, prompt};
use super::session::{Flow, Session};
use crate::say;

/// Exit status when a command failed or the arguments were bad.
pub const EXIT_COMMAND_FAILED: u8 = 1;
/// Exit status when the session could not be set up (no connection, no device).
pub const EXIT_SETUP_FAILED: u8 = 2;

/// The interactive prompt.
pub const PROMPT: &str = "cmd> ";

/// Parses the command line; on `--help`/`--version` or an error, prints clap's text and returns
/// the exit code to end with (success for help and version, [`EXIT_COMMAND_FAILED`] otherwise).
pub fn parse_args<A: clap::Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        let _ = e.print();
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
            _ => ExitCode::from(EXIT_COMMAND_FAILED),
        }
    })
}

/// Logs warnings on stderr, or everything from debug up when `verbose`; no timestamps.
pub fn init_logging(verbose: bool) {
    env_logger::Builder::new()
        .filter_level(if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        })
        .format_timestamp(None)
        .init();
}

/// Where the commands come from.
#[derive(Debug)]
pub enum Input {
    /// A `-c` script, already parsed.
    Script(Vec<Command>),
    /// Stdin, with a prompt when `interactive` (stdin is a terminal).
    Stdin {
        /// Stdin is a terminal: prompt, print news while idle, go on after errors.
        interactive: bool,
    },
}

impl Input {
    /// Chooses the input from the `-c` argument, parsing a script completely before anything is
    /// connected or opened: a typo costs nothing and touches nothing. On a parse error, complains
    /// as `program` and returns the exit code.
    pub fn from_arg(program: &str, command: Option<&str>) -> Result<Input, ExitCode> {
        match command {
            Some(text) => match commands::parse_script(text) {
                Ok(commands) => Ok(Input::Script(commands)),
                Err(e) => {
                    complain(program, e);
                    Err(ExitCode::from(EXIT_COMMAND_FAILED))
                }
            },
            None => Ok(Input::Stdin {
                interactive: std::io::stdin().is_terminal(),
            }),
        }
    }

    /// A person is at a prompt.
    pub fn is_interactive(&self) -> bool {
        matches!(self, Input::Stdin { interactive: true })
    }
}

/// Runs the commands of `input` on `session`, complaining as `program`; success unless a script
/// command failed (or stdin could not be read).
pub fn run<S: Session>(program: &str, session: &mut S, input: Input) -> ExitCode {
    let ok = match input {
        Input::Script(commands) => run_script(program, session, &commands),
        Input::Stdin { interactive } => run_stdin(program, session, interactive),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_COMMAND_FAILED)
    }
}

/// Runs a parsed script; false when a command failed (after reporting it).
fn run_script<S: Session>(program: &str, session: &mut S, commands: &[Command]) -> bool {
    for command in commands {
        match session.execute(command) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                complain(program, e);
                return false;
            }
        }
    }
    true
}

/// Reads commands from stdin until EOF or `quit`; false when a script command failed.
fn run_stdin<S: Session>(program: &str, session: &mut S, interactive: bool) -> bool {
    let mut input = Vec::<u8>::new();
    let mut prompt_shown = false;
    loop {
        if interactive && !prompt_shown {
            prompt(PROMPT);
            prompt_shown = true;
        }
        let (stdin_ready, news) = match wait_for_input(session, interactive) {
            Ok(ready) => ready,
            Err(e) => {
                complain(program, format_args!("waiting for input failed: {e}"));
                return false;
            }
        };
        if !news.is_empty() {
            // News goes on its own lines, not after the prompt.
            if prompt_shown {
                say!();
                prompt_shown = false;
            }
            session.take_news(&news);
        }
        if !stdin_ready {
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = match nix::unistd::read(std::io::stdin().as_fd(), &mut chunk) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                complain(program, format_args!("reading stdin failed: {e}"));
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
                    complain(program, message);
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

/// Blocks until stdin or one of the session's news fds is readable; whether stdin is, and the
/// ready news sources (each once).
fn wait_for_input<S: Session>(
    session: &S,
    interactive: bool,
) -> nix::Result<(bool, Vec<S::NewsSource>)> {
    let stdin_handle = std::io::stdin();
    let stdin: BorrowedFd<'_> = stdin_handle.as_fd();
    let sources = session.news_fds(interactive);
    let mut fds = vec![PollFd::new(stdin, PollFlags::POLLIN)];
    fds.extend(
        sources
            .iter()
            .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN)),
    );
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    let is_ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
    let mut news = Vec::new();
    for ((source, _), fd) in sources.iter().zip(&fds[1..]) {
        if is_ready(fd) && !news.contains(source) {
            news.push(*source);
        }
    }
    Ok((is_ready(&fds[0]), news))
}
