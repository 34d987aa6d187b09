//! `ivshmem-server`: parses QEMU's command line and runs the broker. Exit status 0 on a clean
//! shutdown or `-h`, 1 on a bad command line or when the server cannot start.

use std::io::Write;
use std::process::ExitCode;

use ivshmem_server::options::{self, Command};

fn main() -> ExitCode {
    let program = "ivshmem-server";
    let opts = match options::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", options::help_text(program));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(opts)) => opts,
        Err(e) => {
            eprintln!("{program}: {e}");
            eprintln!("Try '{program} -h' for more information.");
            return ExitCode::from(1);
        }
    };
    env_logger::Builder::new()
        .filter_level(if opts.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        })
        .format(|buf, record| writeln!(buf, "{}", record.args()))
        .init();
    match ivshmem_server::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::from(1)
        }
    }
}
