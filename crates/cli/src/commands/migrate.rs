//! `lienthong migrate --data DIR`: upgrade a store written by an older release to this
//! release's schema, in place, resumable after a crash, verified in full afterwards (see
//! `lienthong_engine::store::migrate`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use lienthong_engine::store::migrate::migrate;
use lienthong_engine::store::sled_store::SCHEMA_VERSION;

use super::DataArg;

/// Arguments of `migrate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArg,
}

/// Upgrades the store and says what it did.
pub fn run(args: Args) -> Result<ExitCode> {
    let dir = &args.data.data;
    if !dir.exists() {
        anyhow::bail!("no data directory at {}", dir.display());
    }
    let done =
        migrate(dir).with_context(|| format!("cannot migrate the store in {}", dir.display()))?;
    if done.from == SCHEMA_VERSION {
        println!(
            "{}: already at schema {SCHEMA_VERSION}, nothing to do",
            dir.display()
        );
    } else {
        println!(
            "{}: schema {} -> {SCHEMA_VERSION}, {} records rewritten, {} events verified",
            dir.display(),
            done.from,
            done.records,
            done.events
        );
    }
    Ok(ExitCode::SUCCESS)
}
