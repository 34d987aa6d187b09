//! `ivshmem-guest-client`: `ivshmem-client`'s commands inside a Linux guest, on a device bound
//! by the ivshmem kernel module: `help`, `dump`, `int PEER VECTOR`, `int PEER all`,
//! `read OFFSET LEN`, `write OFFSET TEXT`, `wait [VECTOR|any] [MS]`, `sleep MS`, `quit`.
//! (`peers`, `wait-peer` and `int all` need the server's peer list, which a guest does not see.)
//!
//! Commands come from `-c 'a; b'` or stdin (a `cmd> ` prompt on a terminal). Scripts stop at
//! the first failing command. Exit codes: 0 success, 1 a command failed, 2 cannot open the
//! device.

mod session;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use ivshmem_guest::{discovery, GuestDevice};
// The command language is ivshmem-client's: one parser in the peer library.
use peer::cli::commands::{self, Command};

use session::{Flow, Session};

const EXIT_COMMAND_FAILED: u8 = 1;
const EXIT_OPEN_FAILED: u8 = 2;

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

macro_rules! complain {
    ($($arg:tt)*) => {{
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "ivshmem-guest-client: ");
        let _ = writeln!(err, $($arg)*);
    }};
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_COMMAND_FAILED),
            };
        }
    };
    env_logger::Builder::new()
        .filter_level(if args.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        })
        .format_timestamp(None)
        .init();

    if args.list {
        let mut out = std::io::stdout().lock();
        for d in discovery::list() {
            let _ = writeln!(out, "{} {} {}", d.name, d.pci_address, d.path.display());
        }
        return ExitCode::SUCCESS;
    }

    // A -c script is parsed completely before the device is touched.
    let script = match &args.command {
        Some(text) => match commands::parse_script(text) {
            Ok(commands) => Some(commands),
            Err(e) => {
                complain!("{e}");
                return ExitCode::from(EXIT_COMMAND_FAILED);
            }
        },
        None => None,
    };
    let device = match GuestDevice::open_spec(&args.device) {
        Ok(device) => device,
        Err(e) => {
            complain!("{e}");
            return ExitCode::from(EXIT_OPEN_FAILED);
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
    let ok = match script {
        Some(commands) => run_script(&mut session, &commands),
        None => run_stdin(&mut session),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_COMMAND_FAILED)
    }
}

fn run_script(session: &mut Session, commands: &[Command]) -> bool {
    for command in commands {
        match session.execute(command) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                complain!("{e}");
                return false;
            }
        }
    }
    true
}

/// Commands from stdin until EOF or `quit`: on a terminal with a prompt, going on after errors;
/// otherwise as a script that stops at the first failure.
fn run_stdin(session: &mut Session) -> bool {
    let interactive = std::io::stdin().is_terminal();
    let prompt = || {
        if interactive {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "cmd> ");
            let _ = out.flush();
        }
    };
    prompt();
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                complain!("reading stdin failed: {e}");
                return false;
            }
        };
        for text in commands::split_commands(&line) {
            let result = commands::parse(&text)
                .map_err(|e| e.to_string())
                .and_then(|command| session.execute(&command));
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
        prompt();
    }
    true
}
