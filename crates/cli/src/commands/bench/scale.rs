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

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use lienthong_engine::store::{EventStore, SledStore};
use serde_json::{Value, json};

use super::{corpus, ratio};

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
    open_ms: f64,
    command_us: f64,
    run: Value,
}

/// Runs the scenario and prints its figures.
pub fn run(a: &ScaleArgs) -> Result<()> {
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 || a.dossiers == 0 || a.concurrency == 0 {
        bail!("--sizes, --dossiers and --concurrency must be at least 1");
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
        let run = probe(a, &data, &workflows, work.path())?;
        let seconds = run["seconds"].as_f64().unwrap_or(0.0);
        let commands = a.dossiers * COMMANDS_PER_DOSSIER;
        rows.push(Row {
            events,
            store_bytes: dir_bytes(&data)?,
            open_ms: run["open_ms"].as_f64().unwrap_or(0.0),
            command_us: seconds * 1e6 / commands as f64,
            run,
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
                    "command_us": (r.command_us * 10.0).round() / 10.0,
                    "command_cost_vs_smallest": ratio(r.command_us, smallest),
                    "dossiers_per_s": r.run["dossiers_per_s"],
                    "p50_ms": r.run["p50_ms"],
                    "p99_ms": r.run["p99_ms"],
                    "peak_rss_bytes": r.run["peak_rss_bytes"]["bench"],
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "scenario": "scale",
                "release": !cfg!(debug_assertions),
                "dossiers_per_size": a.dossiers,
                "concurrency": a.concurrency,
                "sizes": sizes,
            })
        );
    } else {
        println!(
            "scale: {} birth-group dossiers run by a fresh engine process on a store of each size",
            a.dossiers
        );
        println!(
            "{:>12}  {:>10}  {:>9}  {:>11}  {:>8}  {:>8}  {:>8}  {:>9}",
            "events",
            "store MiB",
            "open ms",
            "command µs",
            "vs first",
            "p50 ms",
            "p99 ms",
            "RSS MiB"
        );
        for r in &rows {
            let mib = |b: f64| b / (1024.0 * 1024.0);
            println!(
                "{:>12}  {:>10.0}  {:>9.1}  {:>11.1}  {:>8.2}  {:>8}  {:>8}  {:>9.0}",
                r.events,
                mib(r.store_bytes as f64),
                r.open_ms,
                r.command_us,
                ratio(r.command_us, smallest),
                r.run["p50_ms"],
                r.run["p99_ms"],
                mib(r.run["peak_rss_bytes"]["bench"].as_f64().unwrap_or(0.0)),
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
