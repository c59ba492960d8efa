//! `bench scale --sizes 100000,1000000,10000000`: does a command cost the same on a big store,
//! and how fast does an engine start on one?
//!
//! One store is grown through the sizes, smallest first ([`super::corpus`]: copies of a real
//! birth-group history). At each size a fresh `lienthong bench e2e --transport embedded`
//! process runs `--dossiers` new dossiers end to end on that store, so that its figures are
//! those of an engine started on a store of that size: the time from opening the store to an
//! engine ready for commands (restart time), the cost of one command (the run's time over its
//! commands: a submission, four steps, the return), latencies, and its peak resident memory.
//! The baseline in the same run is the smallest size: the command cost at each size is also
//! given as a ratio to it.
//!
//! With `--runs N` the engine process is started N times at each size, one after the other, and
//! the command cost and latencies are the medians of its runs (one run of a few thousand
//! dossiers varies by a third on a shared machine, which is larger than the effect measured).
//! The first start after the store grew is the restart that matters most: sled replays the log
//! written since it last opened the store, so it is reported alone (`open_ms`), and the later
//! starts, after a short run, as their median (`reopen_ms`). Each run adds its dossiers to the
//! store: `--dossiers` × 11 events, small beside the sizes measured.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use lienthong_engine::store::{EventStore, SledStore};
use serde_json::{Value, json};

use super::{corpus, median, ratio};

/// Commands per birth-group dossier run by `bench e2e`: the submission, four steps, the return.
pub const COMMANDS_PER_DOSSIER: u64 = 6;

/// Arguments of `bench scale`.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Store sizes in events, comma-separated (e.g. `100000,1000000,10000000`).
    #[arg(long, default_value = "100000,1000000", value_delimiter = ',')]
    sizes: Vec<u64>,
    /// Dossiers run end to end at each size.
    #[arg(long, default_value_t = 1_000)]
    dossiers: u64,
    /// Dossiers open at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Engine processes started one after the other at each size; the command cost and
    /// latencies are their medians.
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

/// One size's figures.
struct Row {
    events: u64,
    store_bytes: u64,
    /// The first start after the store grew.
    open_ms: f64,
    /// The median start of the later runs (`None` with one run).
    reopen_ms: Option<f64>,
    /// Medians over the runs.
    command_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    dossiers_per_s: f64,
    /// The largest over the runs.
    peak_rss_bytes: f64,
}

/// Runs the scenario and prints its figures.
pub fn run(a: &ScaleArgs) -> Result<()> {
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 || a.dossiers == 0 || a.concurrency == 0 || a.runs == 0 {
        bail!("--sizes, --dossiers, --concurrency and --runs must be at least 1");
    }
    let work = super::scratch(&a.dir, "scale")?;
    let workflows = std::path::absolute(crate::common::workflows_dir(&a.workflows))?;
    let catalog = crate::common::load_catalog(&workflows)?;
    let template = corpus::template(&work.path().join("template"), Arc::clone(&catalog))?;
    let data = work.path().join("data");
    let mut rows: Vec<Row> = Vec::new();
    for &size in &sizes {
        let began = Instant::now();
        let store = SledStore::open(&data)?;
        corpus::grow(&store, &template, size)?;
        let events = store.last_position()?;
        store.close()?;
        drop(store);
        tracing::info!(
            events,
            seconds = began.elapsed().as_secs_f64(),
            "store grown"
        );
        let runs = (0..a.runs)
            .map(|_| probe(a, &data, &workflows, work.path()))
            .collect::<Result<Vec<Value>>>()?;
        let field = |run: &Value, key: &str| run[key].as_f64().unwrap_or(0.0);
        let median_of = |key: &str| median(runs.iter().map(|r| field(r, key)).collect());
        let commands = (a.dossiers * COMMANDS_PER_DOSSIER) as f64;
        rows.push(Row {
            events,
            store_bytes: dir_bytes(&data)?,
            open_ms: field(&runs[0], "open_ms"),
            reopen_ms: (runs.len() > 1)
                .then(|| median(runs[1..].iter().map(|r| field(r, "open_ms")).collect())),
            command_us: median_of("seconds") * 1e6 / commands,
            p50_ms: median_of("p50_ms"),
            p99_ms: median_of("p99_ms"),
            dossiers_per_s: median_of("dossiers_per_s"),
            peak_rss_bytes: runs
                .iter()
                .map(|r| r["peak_rss_bytes"]["bench"].as_f64().unwrap_or(0.0))
                .fold(0.0, f64::max),
        });
    }
    let smallest = rows[0].command_us;
    if a.json {
        let sizes: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "events": r.events,
                    "store_bytes": r.store_bytes,
                    "open_ms": r.open_ms,
                    "reopen_ms": r.reopen_ms,
                    "command_us": (r.command_us * 10.0).round() / 10.0,
                    "command_cost_vs_smallest": ratio(r.command_us, smallest),
                    "dossiers_per_s": r.dossiers_per_s,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "peak_rss_bytes": r.peak_rss_bytes,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "scenario": "scale",
                "release": !cfg!(debug_assertions),
                "dossiers_per_size": a.dossiers,
                "runs_per_size": a.runs,
                "concurrency": a.concurrency,
                "sizes": sizes,
            })
        );
    } else {
        println!(
            "scale: {} birth-group dossiers run by a fresh engine process on a store of each size \
             (medians of {} runs; open = the first start after the store grew, reopen = the later ones)",
            a.dossiers, a.runs
        );
        println!(
            "{:>12}  {:>10}  {:>9}  {:>9}  {:>11}  {:>8}  {:>8}  {:>8}  {:>9}",
            "events",
            "store MiB",
            "open ms",
            "reopen ms",
            "command µs",
            "vs first",
            "p50 ms",
            "p99 ms",
            "RSS MiB"
        );
        for r in &rows {
            let mib = |b: f64| b / (1024.0 * 1024.0);
            let reopen = r
                .reopen_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}"));
            println!(
                "{:>12}  {:>10.0}  {:>9.1}  {:>9}  {:>11.1}  {:>8.2}  {:>8.1}  {:>8.1}  {:>9.0}",
                r.events,
                mib(r.store_bytes as f64),
                r.open_ms,
                reopen,
                r.command_us,
                ratio(r.command_us, smallest),
                r.p50_ms,
                r.p99_ms,
                mib(r.peak_rss_bytes),
            );
        }
    }
    Ok(())
}

/// Runs `bench e2e --transport embedded` on `data` in a new process; answers its JSON.
fn probe(a: &ScaleArgs, data: &Path, workflows: &Path, scratch: &Path) -> Result<Value> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let mut probe = Process::new(me);
    super::procs::die_with_parent(&mut probe);
    let out = probe
        .args([
            "bench",
            "e2e",
            "--transport",
            "embedded",
            "--no-verify",
            "--json",
        ])
        .arg("--data")
        .arg(data)
        .arg("--workflows")
        .arg(workflows)
        .arg("--dir")
        .arg(scratch)
        .args(["--dossiers", &a.dossiers.to_string()])
        .args(["--concurrency", &a.concurrency.to_string()])
        .output()
        .context("cannot run bench e2e")?;
    if !out.status.success() {
        bail!(
            "bench e2e on {} failed ({}):\n{}",
            data.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| anyhow!("bench e2e printed `{text}`: {e}"))
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
