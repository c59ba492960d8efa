//! `lienthong`: the command-line entry point. Parses arguments and hands each subcommand to its
//! module in [`commands`]; no logic lives here.

mod commands;
mod common;
mod sim;
mod simulate;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = commands::Cli::parse();
    common::init_tracing(cli.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Restores the default SIGPIPE action, so that `lienthong dossiers | head` ends quietly like
/// other Unix tools instead of panicking on a closed stdout (Rust ignores SIGPIPE by default).
fn restore_sigpipe() {
    // SAFETY: called once at start-up, before any thread exists; `signal` with SIG_DFL has no
    // other preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
