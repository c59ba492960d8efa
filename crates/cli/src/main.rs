//! `lienthong`: the command-line entry point. Parses arguments and hands each subcommand to its
//! module in [`commands`]; no logic lives here.

mod commands;
mod common;
mod sim;
mod simulate;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// mimalloc instead of glibc's malloc: sled allocates and frees a node's fragments on every
/// insert, and under glibc that churn (`malloc_consolidate`, `_int_free`) was a fifth of the
/// store's write path (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    restore_sigpipe();
    // The matches are kept so that `serve` can tell a flag given from a default (its settings
    // file fills only what flags and environment leave unset).
    let matches = commands::Cli::command().get_matches();
    let cli = match commands::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    common::init_tracing(cli.verbose);
    match commands::run(cli, &matches) {
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
