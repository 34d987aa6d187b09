//! The command-line front end shared by `ivshmem-client` (a host peer) and `ivshmem-guest-client`
//! (a Linux guest): one grammar, one input loop and one set of exit codes, so a script means the
//! same thing on either side, and the fuzz target checks the code both ship. Each binary only
//! implements [`session::Session`] for its own connection or device.
//!
//! * [`commands`] — splitting a script and parsing each command into a [`commands::Command`].
//! * [`frontend`] — arguments, logging, `-c` scripts / stdin / a terminal prompt, exit codes.
//! * [`session`] — the trait a client implements, [`session::Flow`], [`session::CommandFailed`].
//! * [`report`] — the output of `read` and `wait`, the same on both sides.
//! * [`hexdump`] — `read`'s output lines, in `hexdump -C` layout.
//! * [`output`] — stdout/stderr printing that never panics.

pub mod commands;
pub mod frontend;
pub mod hexdump;
pub mod output;
pub mod report;
pub mod session;
