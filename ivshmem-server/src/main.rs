//! `ivshmem-server`: parses QEMU's command line and runs the broker. Exit status 0 on a clean
//! shutdown or `-h`, 1 on a bad command line or when the server cannot start.

//! Everything on stderr goes through [`log_sink`]: the server never blocks on its log.

use std::process::ExitCode;

use ivshmem_server::control;
use ivshmem_server::log_sink;
use ivshmem_server::options::{self, Command, ControlCommand, Options};

fn main() -> ExitCode {
    let program = "ivshmem-server";
    log_sink::install(log::LevelFilter::Info);
    let status = match options::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", options::help_text(program));
            ExitCode::SUCCESS
        }
        Ok(Command::Run(opts)) if opts.control.is_some() => ask_server(&opts),
        Ok(Command::Run(opts)) => {
            if opts.verbose {
                log::set_max_level(log::LevelFilter::Debug);
            }
            match ivshmem_server::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{program}: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            log::error!("{program}: {e}");
            log::error!("Try '{program} -h' for more information.");
            ExitCode::from(1)
        }
    };
    log_sink::finish();
    status
}

/// `--status` / `--upgrade`: one request on the control socket next to `-S`; the answer goes to
/// stdout. Exit 1 when the server cannot be reached or answers with an error.
fn ask_server(opts: &Options) -> ExitCode {
    let path = control::control_path(&opts.socket_path);
    let (request, timeout) = match opts.control {
        Some(ControlCommand::Status { json: true }) => ("status", 10),
        Some(ControlCommand::Status { json: false }) => ("status text", 10),
        // The new server gets its start-up time; the helper's own bound comes on top.
        _ => (
            "upgrade",
            ivshmem_server::upgrade::READY_TIMEOUT.as_secs() + 10,
        ),
    };
    match control::request(&path, request, std::time::Duration::from_secs(timeout)) {
        Ok(answer) => {
            print!("{answer}");
            if answer.starts_with("{\"error\"") || answer.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!(
                "ivshmem-server: cannot ask the server on {}: {e} (is it running, with a control socket, and may you connect?)",
                path.display()
            );
            ExitCode::from(1)
        }
    }
}
