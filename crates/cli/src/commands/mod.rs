//! One module per subcommand; [`Cli`] is the whole command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod calendar;
mod check;
mod demo;
mod dossiers;
mod export;
mod graph;
mod migrate;
mod projections;
mod replay;
mod report;
mod serve;
mod verify;

/// lienthong: routes citizens' dossiers between government agencies (một cửa liên thông).
#[derive(Parser, Debug)]
#[command(name = "lienthong", version, about, long_about = None)]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate every workflow file (agencies, calendars, procedures); exit 1 with diagnostics.
    Check(check::Args),
    /// Print a procedure's routing diagram.
    Graph(graph::Args),
    /// Run the engine embedded with simulated agencies handling dossiers end to end.
    Demo(demo::Args),
    /// List the dossiers in a data directory.
    Dossiers(dossiers::Args),
    /// A dossier's history as a timeline, and its state at an instant.
    Replay(replay::Args),
    /// Export events as JSON Lines that an auditor can verify offline.
    Export(export::Args),
    /// Recompute every hash chain (of a data directory or an export file).
    Verify(verify::Args),
    /// Upgrade a store written by an older release to this release's schema, in place.
    Migrate(migrate::Args),
    /// Working-day arithmetic with a calendar file.
    Calendar(calendar::Args),
    /// Read models: deadline board, SLA breaches, indicators (catches up first).
    Report(report::Args),
    /// The read models' database: rebuild it, or show its lag.
    Projections(projections::Args),
    /// The embedded engine and the gRPC gateway for agency systems, until Ctrl-C.
    Serve(serve::Args),
    /// A simulated agency system working its task queue over gRPC (demos, load, tests).
    Agent(agent::Args),
    /// Measured speed (release build): medians, and ratios to a baseline of the same run.
    Bench(bench::Args),
}

/// Runs the chosen subcommand; the exit code is the subcommand's verdict.
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<ExitCode> {
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Dossiers(a) => dossiers::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Export(a) => export::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Calendar(a) => calendar::run(a),
        Command::Report(a) => report::run(a),
        Command::Projections(a) => projections::run(a),
        Command::Serve(a) => serve::run(a, matches.subcommand_matches("serve")),
        Command::Agent(a) => agent::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// `--data DIR`, shared by the commands that read a store.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArg {
    /// Data directory of the embedded engine (sled).
    #[arg(long, default_value = crate::common::DATA_DIR_DEFAULT)]
    pub data: PathBuf,
}
