//! The command-line grammar shared by `ivshmem-client` (a host peer) and `ivshmem-guest-client`
//! (a Linux guest): one parser, so a script means the same thing on either side, and the
//! fuzz target checks the code both ship.
//!
//! * [`commands`] — splitting a script and parsing each command into a [`commands::Command`].
//! * [`hexdump`] — `read`'s output lines, in `hexdump -C` layout.

pub mod commands;
pub mod hexdump;
