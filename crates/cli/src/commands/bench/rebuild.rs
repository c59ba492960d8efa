//! `bench rebuild --events N`: how fast the projections are rebuilt from the feed.
//!
//! A store of at least `N` events is made ([`super::corpus`]: copies of a real birth-group
//! history). Then, `--runs` times, the projections are rebuilt from nothing over it (every view
//! cleared, the whole feed folded in batches, each batch one atomic sled write). The baseline
//! in the same run is reading the same feed without folding it (the store's read path: decode
//! and chain check), so the ratio says what the folding itself costs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lienthong_engine::store::{EventStore, FEED_READ_MAX, SledStore};
use lienthong_projections::{FeedSource, Projections};
use serde_json::json;

use super::{corpus, median, ratio};

/// Arguments of `bench rebuild`.
#[derive(clap::Args, Debug)]
pub struct RebuildArgs {
    /// Events in the store rebuilt from (rounded up to whole dossiers of 11 events).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rebuilds measured; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the store goes (a fresh directory inside, removed after); default: the current
    /// directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The workflow directory.
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs the scenario and prints its figures.
pub fn run(a: &RebuildArgs) -> Result<()> {
    if a.events == 0 || a.runs == 0 {
        bail!("--events and --runs must be at least 1");
    }
    let work = super::scratch(&a.dir, "rebuild")?;
    let catalog = crate::common::load_catalog(&crate::common::workflows_dir(&a.workflows))?;
    let template = corpus::template(&work.path().join("template"), catalog.clone())?;
    let store = Arc::new(SledStore::open(&work.path().join("store"))?);
    let began = Instant::now();
    let events = corpus::grow(&store, &template, a.events)?;
    let generate_s = began.elapsed().as_secs_f64();

    let mut feed_reads = Vec::new();
    let mut rebuilds = Vec::new();
    let projections = Projections::open(
        &work.path().join("projections"),
        store.clone() as Arc<dyn FeedSource>,
        catalog,
    )?;
    for _ in 0..a.runs {
        let (read, took) = read_feed(&store)?;
        if read != events {
            bail!("the feed holds {read} events, {events} were written");
        }
        feed_reads.push(read as f64 / took.as_secs_f64());
        let started = Instant::now();
        let progress = projections.rebuild()?;
        let took = started.elapsed();
        if progress.events != events {
            bail!("the rebuild folded {} of {events} events", progress.events);
        }
        rebuilds.push(events as f64 / took.as_secs_f64());
    }
    let rebuild = median(rebuilds);
    let feed_read = median(feed_reads);
    drop(projections);
    store.close()?;
    if a.json {
        println!(
            "{}",
            json!({
                "scenario": "rebuild",
                "release": !cfg!(debug_assertions),
                "events": events,
                "runs": a.runs,
                "generate_events_per_s": (events as f64 / generate_s).round(),
                "rebuild_events_per_s": rebuild.round(),
                "feed_read_events_per_s": feed_read.round(),
                "ratio_to_feed_read": ratio(rebuild, feed_read),
            })
        );
    } else {
        println!(
            "rebuild: projections rebuilt from nothing over {events} events (median of {} runs)",
            a.runs
        );
        println!("  rebuild:   {rebuild:>12.0} events/s");
        println!(
            "  feed read: {feed_read:>12.0} events/s (decode and chain check only, same store)"
        );
        println!("  ratio:     {:>12.2}", ratio(rebuild, feed_read));
        println!(
            "  (the store was written at {:.0} events/s)",
            events as f64 / generate_s
        );
    }
    Ok(())
}

/// Reads the whole feed as the projections do, in batches; answers the events and the time.
fn read_feed(store: &SledStore) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut after = 0;
    let mut n = 0u64;
    loop {
        let batch = EventStore::read_feed(store, after, FEED_READ_MAX)?;
        let Some(last) = batch.last() else { break };
        after = last.position();
        n += batch.len() as u64;
    }
    Ok((n, started.elapsed()))
}
