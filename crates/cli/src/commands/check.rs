//! `lienthong check [DIR]`: validate all workflow files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use lienthong_workflow::Catalog;

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The workflow directory (agencies.toml, calendars/, procedures/).
    #[arg(default_value = crate::common::WORKFLOWS_DIR_DEFAULT)]
    dir: PathBuf,
}

/// Prints a summary and exits 0, or every diagnostic and exits 1.
pub fn run(args: Args) -> Result<ExitCode> {
    match Catalog::load(&args.dir) {
        Ok(c) => {
            println!(
                "ok: {} agencies, {} calendars (families and office views), {} procedures in {}",
                c.agencies.len(),
                c.calendars.len(),
                c.procedures.len(),
                args.dir.display()
            );
            for wf in c.procedures.values() {
                println!(
                    "  {:<22} v{:<3} {:<5} {} steps  {}  ({})",
                    wf.code,
                    wf.version,
                    wf.limit.to_string(),
                    wf.steps.len(),
                    &wf.hash[..12],
                    wf.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}\n");
            }
            eprintln!("{} error(s)", diags.len());
            Ok(ExitCode::from(1))
        }
    }
}
