//! `lienthong bench SCENARIO [--json]`: measured speed, reported as medians and as ratios to a
//! baseline measured in the same run (the machine is shared and noisy: absolute figures drift,
//! ratios much less). Run it from a release build (`cargo run --release -- bench store`); a debug
//! build says so on stderr. Nothing here is a test: CI only runs a short smoke of each scenario.
//!
//! Scenarios built so far:
//!
//! - `e2e` ([`e2e`]): the birth-group procedure end to end, embedded, over gRPC or over NATS,
//!   with the agencies as separate processes for the last two; dossiers/s, events/s, latency
//!   percentiles from submission to closing, peak RSS of each process, and
//!   the CPU time per dossier of each process by thread ([`cpu`]).
//! - `rebuild` ([`rebuild`]): projections rebuilt from nothing over a store of a given size
//!   (made quickly by [`corpus`]), against reading the same feed.
//! - `scale` ([`scale`]): per-command cost, restart time and peak memory of an engine started on
//!   stores of growing size.
//! - `store`: durable appends per second into the sled store (`SledStore`, every append durable
//!   before it is acknowledged, concurrent appends sharing one group commit), for each batch size
//!   (appends in flight at once), and the raw limit of the same disk in the same run: a plain
//!   file append of the same number of bytes followed by `fdatasync`, per write and per batch.
//!   Each figure is the median of `--runs` measurements of `--seconds` each.

mod corpus;
mod cpu;
mod e2e;
mod procs;
mod rebuild;
mod scale;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lienthong_engine::DossierId;
use lienthong_engine::store::conformance::{next_request, open_request};
use lienthong_engine::store::{EventStore, SledStore};
use serde_json::json;

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

/// The scenarios.
#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// Durable appends/s into the sled store by batch size, against the raw fdatasync limit.
    Store(StoreArgs),
    /// The birth-group procedure end to end: dossiers/s and latency, embedded, over gRPC or NATS.
    E2e(e2e::E2eArgs),
    /// Projection rebuild events/s over a store of a given size, against reading its feed.
    Rebuild(rebuild::RebuildArgs),
    /// Command cost, restart time and memory at growing store sizes.
    Scale(scale::ScaleArgs),
}

/// Arguments of `bench store`.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// Appends in flight at once (the group commit's batch), comma-separated.
    #[arg(long, default_value = "1,8,64,256", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// How long one measurement runs, in seconds (e.g. `2`, `0.2`).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Measurements per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the store and the raw file go (a fresh directory inside, removed after); default:
    /// the current directory, so that the disk measured is the one a data directory would use.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One JSON object for the scenario on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs a scenario.
pub fn run(args: Args) -> Result<ExitCode> {
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: this is a debug build, whose figures mean little; run `cargo run --release -- bench ...`"
        );
    }
    match args.scenario {
        Scenario::Store(a) => store(&a),
        Scenario::E2e(a) => e2e::run(&a).map(|()| ExitCode::SUCCESS),
        Scenario::Rebuild(a) => rebuild::run(&a).map(|()| ExitCode::SUCCESS),
        Scenario::Scale(a) => scale::run(&a).map(|()| ExitCode::SUCCESS),
    }
}

/// Bytes of one raw record: about one stored birth-dossier event with its index entries.
pub const RAW_RECORD_BYTES: usize = 512;

/// One batch size's figures (events per second, medians).
struct StoreRow {
    batch: usize,
    store: f64,
    raw_per_write: f64,
    raw_batched: f64,
}

fn store(a: &StoreArgs) -> Result<ExitCode> {
    if a.batch_sizes.is_empty() || a.batch_sizes.contains(&0) {
        bail!("--batch-sizes: give one or more sizes of at least 1, e.g. 1,8,64");
    }
    if a.runs == 0 || !a.seconds.is_finite() || a.seconds <= 0.0 || a.seconds > 3600.0 {
        bail!("--runs must be at least 1 and --seconds above 0 and at most 3600");
    }
    let span = Duration::from_secs_f64(a.seconds);
    let work = scratch(&a.dir, "store")?;
    let mut rows = Vec::new();
    for &batch in &a.batch_sizes {
        let mut store = Vec::new();
        let mut raw_one = Vec::new();
        let mut raw_batch = Vec::new();
        for run in 0..a.runs {
            let dir = work.path().join(format!("b{batch}-r{run}"));
            store.push(store_rate(&dir.join("store"), batch, span)?);
            raw_one.push(raw_rate(&dir.join("raw-one"), 1, span)?);
            raw_batch.push(raw_rate(&dir.join("raw-batch"), batch, span)?);
            std::fs::remove_dir_all(&dir).ok();
        }
        rows.push(StoreRow {
            batch,
            store: median(store),
            raw_per_write: median(raw_one),
            raw_batched: median(raw_batch),
        });
    }
    if a.json {
        let batches: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "batch": r.batch,
                    "store_events_per_s": r.store.round(),
                    "raw_fdatasync_per_write_per_s": r.raw_per_write.round(),
                    "raw_fdatasync_per_batch_per_s": r.raw_batched.round(),
                    "ratio_to_raw_batched": ratio(r.store, r.raw_batched),
                })
            })
            .collect();
        let out = json!({
            "scenario": "store",
            "release": !cfg!(debug_assertions),
            "runs": a.runs,
            "seconds_per_run": a.seconds,
            "raw_record_bytes": RAW_RECORD_BYTES,
            "batches": batches,
        });
        println!("{out}");
    } else {
        println!(
            "store: durable appends/s (median of {} runs of {} s), raw = file append + fdatasync in the same directory",
            a.runs, a.seconds
        );
        println!(
            "{:>6}  {:>14}  {:>18}  {:>18}  {:>14}",
            "batch", "store ev/s", "raw 1/fsync ev/s", "raw batch ev/s", "store/raw"
        );
        for r in &rows {
            println!(
                "{:>6}  {:>14.0}  {:>18.0}  {:>18.0}  {:>14.2}",
                r.batch,
                r.store,
                r.raw_per_write,
                r.raw_batched,
                ratio(r.store, r.raw_batched)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Events per second appended durably into a fresh sled store by `batch` clients, each on its own
/// dossier, each sending its next one-event append as soon as the previous one is acknowledged
/// (so `batch` appends are always in flight, as with that many concurrent callers), for about
/// `span`.
fn store_rate(dir: &Path, batch: usize, span: Duration) -> Result<f64> {
    let store = Arc::new(
        SledStore::open(dir).with_context(|| format!("open a store in {}", dir.display()))?,
    );
    let dossiers: Vec<DossierId> = (0..batch).map(|_| DossierId::new()).collect();
    // Opening the dossiers is not measured.
    let opened: Vec<_> = dossiers
        .iter()
        .map(|d| store.append(open_request(d, "BENCH-261206", 1)))
        .collect();
    for p in opened {
        p.blocking_recv()
            .context("the store's writer stopped")?
            .context("an append failed")?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("start the clients' runtime")?;
    let (events, elapsed) = runtime.block_on(async {
        let start = Instant::now();
        let clients: Vec<_> = dossiers
            .into_iter()
            .map(|dossier| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut seq = 1u64;
                    while start.elapsed() < span {
                        store
                            .append(next_request(&dossier, seq, 1))
                            .await
                            .context("the store's writer stopped")?
                            .context("an append failed")?;
                        seq += 1;
                    }
                    anyhow::Ok(seq - 1)
                })
            })
            .collect();
        let mut events = 0u64;
        for c in clients {
            events += c.await.context("a client panicked")??;
        }
        anyhow::Ok((events, start.elapsed()))
    })?;
    store.close().context("close the store")?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// Records per second written to a plain file with one `fdatasync` per `batch` records, for
/// about `span`: the disk's own limit for durable writes of that grouping.
fn raw_rate(dir: &Path, batch: usize, span: Duration) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .context("open the raw file")?;
    let record = vec![b'x'; RAW_RECORD_BYTES];
    let start = Instant::now();
    let mut records = 0u64;
    while start.elapsed() < span {
        for _ in 0..batch {
            file.write_all(&record)?;
        }
        file.sync_data().context("fdatasync")?;
        records += batch as u64;
    }
    Ok(records as f64 / start.elapsed().as_secs_f64())
}

/// A fresh scratch directory `lienthong-bench-<scenario>-*` inside `dir` (default: the current
/// directory, so that the disk measured is the one a data directory would use), removed when
/// dropped.
fn scratch(dir: &Option<PathBuf>, scenario: &str) -> Result<tempfile::TempDir> {
    let base = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    tempfile::Builder::new()
        .prefix(&format!("lienthong-bench-{scenario}-"))
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a scratch directory in {}", base.display()))
}

/// The median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `a / b` to two decimals (0 when `b` is 0).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(ratio(1.0, 4.0), 0.25);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
