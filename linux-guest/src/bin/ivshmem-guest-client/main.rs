//! `ivshmem-guest-client`: `ivshmem-client`'s commands inside a Linux guest, on a device bound
//! by the ivshmem kernel module: `help`, `dump`, `int PEER VECTOR`, `int PEER all`,
//! `read OFFSET LEN`, `write OFFSET TEXT`, `wait [VECTOR|any] [MS]`, `sleep MS`, `quit`.
//! (`peers`, `wait-peer` and `int all` need the server's peer list, which a guest does not see.)
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
    let device = match GuestDevice::open_spec(&args.device) {
        Ok(device) => device,
        Err(e) => {
            complain(PROGRAM, e);
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
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
