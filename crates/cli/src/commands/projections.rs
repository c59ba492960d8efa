//! `lienthong projections rebuild|status|digest --data DIR [--workflows DIR]`: the read models'
//! database (`<data>/projections/`): wipe and fold the whole feed again, say how far behind it
//! is, or catch up and print one SHA-256 over every view record, so that views kept up to date
//! through crashes can be compared with a fresh rebuild of the same feed.

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
    /// Catch up with the feed, then print the checkpoint, the number of view records and one
    /// SHA-256 over all of them in key order (the checkpoint and schema records left out).
    Digest(Common),
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
        Action::Digest(c) => {
            let p = open(&c.data.data, &c.workflows)?;
            p.catch_up()?;
            let (records, digest) = digest(&p.dump()?);
            println!(
                "checkpoint {}\nrecords {records}\ndigest {digest}",
                p.checkpoint()?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The number of view records (meta records left out) and the SHA-256 of their keys and values
/// in key order, each length-prefixed so that no two different sets hash alike.
fn digest(records: &[(Vec<u8>, Vec<u8>)]) -> (usize, String) {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut n = 0;
    for (k, v) in records
        .iter()
        .filter(|(k, _)| !k.starts_with(lienthong_projections::keys::META))
    {
        n += 1;
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    (n, hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::digest;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn the_digest_covers_views_not_meta_and_tells_shifted_bytes_apart() {
        let a = digest(&[kv("d/1", "x"), kv("m/checkpoint", "7")]);
        let b = digest(&[kv("d/1", "x"), kv("m/checkpoint", "9")]);
        assert_eq!(a, b, "the checkpoint is printed on its own, not hashed");
        assert_eq!(a.0, 1);
        assert_ne!(digest(&[kv("d/1", "xy")]), digest(&[kv("d/1x", "y")]));
        assert_ne!(digest(&[kv("d/1", "x")]), digest(&[kv("d/1", "z")]));
    }
}
