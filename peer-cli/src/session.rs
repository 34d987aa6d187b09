//! What a client front end drives: a [`Session`] runs one parsed command at a time against its
//! shared memory and doorbells (a host [`Peer`](peer::Peer), or a guest's device).

use std::os::fd::BorrowedFd;

use super::commands::Command;

/// What the front end does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next command.
    Continue,
    /// `quit`: stop reading commands, successfully.
    Quit,
}

/// A failed command; the message names what was wrong and is printed after the program name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandFailed(pub String);

/// One client's connection (or device) as seen by the front end in [`frontend`](super::frontend).
pub trait Session {
    /// Names a news source returned by [`news_fds`](Self::news_fds) (e.g. "server socket",
    /// "one of our vectors"), so that [`take_news`](Self::take_news) knows which became ready.
    type NewsSource: Copy + PartialEq;

    /// Runs one command, printing its results on stdout.
    fn execute(&mut self, command: &Command) -> Result<Flow, CommandFailed>;

    /// Fds to watch besides stdin while waiting for the next command; when one is readable
    /// [`take_news`](Self::take_news) handles it. `interactive` is true when a person is at
    /// the prompt. The default is none.
    fn news_fds(&self, interactive: bool) -> Vec<(Self::NewsSource, BorrowedFd<'_>)> {
        let _ = interactive;
        Vec::new()
    }

    /// Handles (prints or logs) what arrived on the ready sources, each listed once.
    fn take_news(&mut self, ready: &[Self::NewsSource]) {
        let _ = ready;
    }
}
