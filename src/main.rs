//! dbctl: parse arguments, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dbctl::cli::Cli::parse();
    ExitCode::from(dbctl::commands::run(cli))
}
