//! `lienthong verify --data DIR | --export FILE`: recompute every hash chain.
//!
//! Exits 0 when every chain is intact, 1 naming each dossier and seq where one breaks. With
//! `--export`, nothing but the file and this binary is needed: the check runs on the `raw` bytes
//! of each line (base64), never on the decoded view beside them.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use lienthong_engine::DossierId;
use lienthong_engine::store::EventStore;
use lienthong_engine::store::chain::{Report, Verifier};
use lienthong_proto::v1::SealedEvent;
use serde::Deserialize;

/// Arguments of `verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data directory of the embedded engine.
    #[arg(long, conflicts_with = "export")]
    data: Option<PathBuf>,
    /// An export file written by `lienthong export`.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The fields of an export line that verification reads.
#[derive(Deserialize)]
struct Line {
    dossier_id: String,
    seq: u64,
    raw: String,
    prev_hash: String,
    hash: String,
}

/// Verifies and prints the verdict.
pub fn run(args: Args) -> Result<ExitCode> {
    let (report, source) = match (&args.data, &args.export) {
        (_, Some(file)) => (verify_export(file)?, file.display().to_string()),
        (dir, None) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::common::DATA_DIR_DEFAULT));
            let store = crate::common::open_existing_store(&dir)?;
            let full = store.verify()?;
            let mut report = full.chains;
            report
                .unattributed
                .extend(full.problems.iter().map(ToString::to_string));
            (report, dir.display().to_string())
        }
    };
    if args.json {
        let breaks: Vec<_> = report
            .breaks
            .iter()
            .map(|b| serde_json::json!({"dossier_id": b.dossier.to_string(), "seq": b.seq, "what": b.what.to_string()}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "source": source, "dossiers": report.dossiers, "events": report.events,
                "clean": report.is_clean(), "breaks": breaks, "other": report.unattributed,
            })
        );
    } else {
        print_report(&report, &source);
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(report: &Report, source: &str) {
    if report.is_clean() {
        println!(
            "ok: {} events in {} dossiers verified in {source}: every chain is intact",
            report.events, report.dossiers
        );
        return;
    }
    for b in &report.breaks {
        println!("BROKEN: {b}");
    }
    for o in &report.unattributed {
        println!("BROKEN: {o}");
    }
    println!(
        "{} break(s) in {source} ({} events in {} dossiers read)",
        report.breaks.len() + report.unattributed.len(),
        report.events,
        report.dossiers
    );
}

/// Verifies an export file line by line (records of different dossiers may interleave).
fn verify_export(file: &PathBuf) -> Result<Report> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut verifier = Verifier::new();
    let mut problems = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("{}:{n}: cannot read", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Line = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}:{n}: not an export line: {e}", file.display()));
                continue;
            }
        };
        let Ok(dossier) = rec.dossier_id.parse::<DossierId>() else {
            problems.push(format!(
                "{}:{n}: bad dossier_id `{}`",
                file.display(),
                rec.dossier_id
            ));
            continue;
        };
        let (Ok(raw), Ok(hash), Ok(prev)) = (
            b64.decode(&rec.raw),
            hex::decode(&rec.hash),
            hex::decode(&rec.prev_hash),
        ) else {
            problems.push(format!(
                "{}:{n}: dossier {dossier} seq {}: raw must be base64, hash and prev_hash hex",
                file.display(),
                rec.seq
            ));
            continue;
        };
        let sealed = SealedEvent { raw, hash };
        // The `prev_hash` field is a convenience copy: the chain uses the one inside `raw`. A
        // disagreement means the line was edited.
        if let Ok(ev) =
            <lienthong_proto::v1::Event as prost::Message>::decode(sealed.raw.as_slice())
            && ev.envelope.as_ref().is_some_and(|e| e.prev_hash != prev)
        {
            problems.push(format!(
                "{}:{n}: dossier {dossier} seq {}: the line's prev_hash field differs from the one inside raw",
                file.display(),
                rec.seq
            ));
        }
        verifier.push_for(dossier, rec.seq, sealed);
    }
    let mut report = verifier.finish();
    if report.events == 0 && problems.is_empty() {
        bail!("{} holds no events", file.display());
    }
    report.unattributed.extend(problems);
    Ok(report)
}
