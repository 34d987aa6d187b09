//! `ivshmem-guest-client`: `ivshmem-client`'s commands inside a Linux guest, on a device bound
//! by the ivshmem kernel module: `help`, `dump`, `int PEER VECTOR`, `int PEER all`,
//! `read OFFSET LEN`, `write OFFSET TEXT`, `wait [VECTOR|any] [MS]`, `sleep MS`, `quit`;
//! with `--state-table OFFSET` (where the server keeps its peer state table) also `peers`,
//! `wait-peer [PEER|any] [MS]` and `int all`, with `ivshmem-client`'s output and exit codes
//! (`--lifecycle-vector N` makes `wait-peer` sleep on that vector instead of polling).
//!
//! Commands come from `-c 'a; b'` or stdin (a `cmd> ` prompt on a terminal). Scripts stop at
//! the first failing command. Exit codes: 0 success, 1 a command failed, 2 cannot open the
//! device.

mod session;

use std::process::ExitCode;

use clap::Parser;

use ivshmem_guest::{discovery, GuestDevice};
// The command language and front end are ivshmem-client's: one of each in the peer library.
use peer_cli::frontend::{self, Input, EXIT_SETUP_FAILED};
use peer_cli::output::complain;
use peer_cli::say;

use session::Session;

/// The name errors are prefixed with.
const PROGRAM: &str = "ivshmem-guest-client";

/// Use an ivshmem device from a Linux guest: shared memory and doorbells.
#[derive(Debug, Parser)]
#[command(name = "ivshmem-guest-client", version, after_help = session::HELP)]
struct Args {
    /// Verbose: log details on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// The device: an index (0 = /dev/ivshmem0), a PCI address (00:04.0) or a device node.
    #[arg(
        short = 'd',
        long = "device",
        value_name = "DEVICE",
        default_value = "0"
    )]
    device: String,
    /// Run these commands (separated by ';' or newlines) and exit.
    #[arg(short = 'c', long = "command", value_name = "COMMANDS")]
    command: Option<String>,
    /// Ring doorbells with the ioctl instead of a store to the mapped register page.
    #[arg(long)]
    ring_ioctl: bool,
    /// List the devices the module bound (index, PCI address) and exit.
    #[arg(long)]
    list: bool,
    /// Where the server keeps its peer state table (its --state-table OFFSET: bytes, or with a
    /// K/M/G suffix, or 0x hex): enables `peers`, `wait-peer` and `int all`.
    #[arg(long = "state-table", value_name = "OFFSET", value_parser = parse_offset)]
    state_table: Option<u64>,
    /// Our vector the server rings on each join and leave (its --lifecycle-vector N):
    /// `wait-peer` sleeps on it instead of re-reading the table every 10 ms.
    #[arg(long = "lifecycle-vector", value_name = "N", requires = "state_table")]
    lifecycle_vector: Option<u32>,
}

fn parse_offset(text: &str) -> Result<u64, String> {
    protocol::size::parse_size(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Args = match frontend::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    frontend::init_logging(args.verbose);

    if args.list {
        for d in discovery::list() {
            say!("{} {} {}", d.name, d.pci_address, d.path.display());
        }
        return ExitCode::SUCCESS;
    }

    // A -c script is parsed completely before the device is touched.
    let input = match Input::from_arg(PROGRAM, args.command.as_deref()) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let mut device = match GuestDevice::open_spec(&args.device) {
        Ok(device) => device,
        Err(e) => {
            complain(PROGRAM, e);
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    if let Some(offset) = args.state_table {
        let placed = usize::try_from(offset)
            .map_err(|_| ivshmem_guest::PeersError::Placement {
                offset: usize::MAX,
                size: device.shm().len(),
            })
            .and_then(|offset| device.set_state_table(offset, args.lifecycle_vector));
        if let Err(e) = placed {
            complain(PROGRAM, format!("--state-table: {e}"));
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    }
    log::info!(
        "{}: peer {:?}, {} vector(s), {} bytes of shared memory",
        device.path().display(),
        device.id(),
        device.own_vector_count(),
        device.shm().len()
    );
    let mut session = Session {
        device,
        ring_ioctl: args.ring_ioctl,
    };
    frontend::run(PROGRAM, &mut session, input)
}
