//! `lienthong projections rebuild|status --data DIR [--workflows DIR]`: the read models' database
//! (`<data>/projections/`): wipe and fold the whole feed again, or say how far behind it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use lienthong_projections::{FeedSource, Projections};

use super::DataArg;

/// Name of the projections' directory inside the data directory.
pub const PROJECTIONS_DIR: &str = "projections";

/// Arguments of `projections`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Wipe the read models and fold the whole feed again from position 0.
    Rebuild(Common),
    /// Checkpoint, store head and lag (events not yet folded).
    Status(Common),
}

/// What both actions need.
#[derive(clap::Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub data: DataArg,
    /// Workflow directory (calendars measure working time).
    #[arg(long)]
    pub workflows: Option<PathBuf>,
}

/// Opens the projections of `data` over its feed, with the workflows' calendars: the engine's
/// store, or, in the data directory of a projections-role process (`serve --role projections`),
/// its mirror of the bus's feed.
pub fn open(data: &Path, workflows: &Option<PathBuf>) -> Result<Projections> {
    let catalog = crate::common::load_catalog(&crate::common::workflows_dir(workflows))?;
    let mirror = data.join(lienthong_node::projections::BUS_FEED_DIR);
    let feed: Arc<dyn FeedSource> = if mirror.is_dir() {
        Arc::new(
            lienthong_node::projections::BusFeed::open(&mirror)
                .with_context(|| format!("cannot open the feed mirror in {}", mirror.display()))?,
        )
    } else {
        crate::common::open_existing_store(data)?
    };
    let dir = data.join(PROJECTIONS_DIR);
    Projections::open(&dir, feed, catalog)
        .with_context(|| format!("cannot open the projections in {}", dir.display()))
}

/// Runs the action.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.action {
        Action::Rebuild(c) => {
            let p = open(&c.data.data, &c.workflows)?;
            let started = Instant::now();
            let progress = p.rebuild()?;
            let elapsed = started.elapsed();
            let micros = elapsed.as_micros().max(1);
            let per_s = u128::from(progress.events) * 1_000_000 / micros;
            println!(
                "replayed {} events in {} batches in {:.3}s ({per_s} events/s); checkpoint {}",
                progress.events,
                progress.batches,
                elapsed.as_secs_f64(),
                progress.to
            );
        }
        Action::Status(c) => {
            let p = open(&c.data.data, &c.workflows)?;
            let lag = p.lag()?;
            println!(
                "checkpoint {}\nstore head {}\nlag {} events",
                lag.checkpoint, lag.head, lag.lag
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
