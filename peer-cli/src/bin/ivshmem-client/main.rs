//! `ivshmem-client`: connect to an ivshmem server as a host peer and run commands — QEMU's
//! ivshmem-client commands (`help`, `dump`, `int`) plus `peers`, `read`, `write`, `wait`,
//! `wait-peer`, `sleep`.
//!
//! Modes: `-c 'cmd; cmd'` runs a script; otherwise commands come from stdin — interactively with a
//! `cmd> ` prompt on a terminal (notifications, joins and leaves are printed as they happen), or
//! as a script when stdin is not a terminal. Scripts stop at the first failing command.
//!
//! Exit codes: 0 success, 1 a command failed (unknown peer, timeout, bad arguments),
//! 2 cannot connect or the server broke the protocol during the handshake.

mod session;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use peer::{ConnectOptions, Peer, DEFAULT_SOCKET_PATH};
use peer_cli::commands;
use peer_cli::frontend::{self, Input, EXIT_SETUP_FAILED};

use session::{complain, Session, PROGRAM};

/// Connect to an ivshmem server as a peer and run commands on the shared memory and doorbells.
#[derive(Debug, Parser)]
#[command(name = "ivshmem-client", version, after_help = commands::HELP)]
struct Args {
    /// Verbose: log protocol details on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Path of the server's UNIX socket.
    #[arg(short = 'S', long = "socket", value_name = "PATH", default_value = DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// Run these commands (separated by ';' or newlines) and exit.
    #[arg(short = 'c', long = "command", value_name = "COMMANDS")]
    command: Option<String>,
    /// Vectors we accept per peer; connecting waits until we have this many of our own
    /// (default: accept up to 1024, wait for at least one; 0 for a server run with -n 0).
    #[arg(long, value_name = "N")]
    vectors: Option<u32>,
    /// How long the connection handshake may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    connect_timeout: u64,
}

fn main() -> ExitCode {
    let args: Args = match frontend::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    frontend::init_logging(args.verbose);
    let input = match Input::from_arg(PROGRAM, args.command.as_deref()) {
        Ok(input) => input,
        Err(code) => return code,
    };

    let options = ConnectOptions {
        vectors: args.vectors,
        timeout: Duration::from_millis(args.connect_timeout),
    };
    let peer = match Peer::connect_with(&args.socket, &options) {
        Ok(peer) => peer,
        Err(e) => {
            complain!("{e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    log::info!(
        "connected to {} as peer {} with {} vector(s), {} bytes of shared memory",
        args.socket.display(),
        peer.id(),
        peer.own_vector_count(),
        peer.shm().len()
    );

    let mut session = Session {
        peer,
        announce_server_news: input.is_interactive(),
    };
    frontend::run(PROGRAM, &mut session, input)
}
