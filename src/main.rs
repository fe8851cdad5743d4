//! dbctl: parse arguments, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A reader that stops early (`dbctl plan | head`) ends the command quietly,
    // as with any Unix tool, rather than a panic in `println!`. `apply`
    // ignores it again while steps run, and stops after the steps in flight.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Warnings by default; `DBCTL_LOG=debug` shows where a command spends its time.
    let filter = tracing_subscriber::EnvFilter::try_from_env("DBCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().init();
    let cli = dbctl::cli::Cli::parse();
    ExitCode::from(dbctl::commands::run(cli))
}
