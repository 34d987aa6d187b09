//! `ivshmem-server`: parses QEMU's command line and runs the broker. Exit status 0 on a clean
//! shutdown or `-h`, 1 on a bad command line or when the server cannot start.

//! Everything on stderr goes through [`log_sink`]: the server never blocks on its log.

use std::process::ExitCode;

use ivshmem_server::log_sink;
use ivshmem_server::options::{self, Command};

fn main() -> ExitCode {
    let program = "ivshmem-server";
    log_sink::install(log::LevelFilter::Info);
    let status = match options::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", options::help_text(program));
            ExitCode::SUCCESS
        }
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
