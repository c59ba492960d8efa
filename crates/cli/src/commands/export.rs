//! `lienthong export`: events as JSON Lines for auditors.
//!
//! One line per event: `dossier_id`, `dossier_code`, `seq`, `global_position`, `raw` (base64 of
//! exactly the bytes the hash covers), `prev_hash` and `hash` (hex), and `event`, a decoded view for
//! humans. `lienthong verify --export FILE` checks such a file with nothing but the binary.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Result;
use base64::Engine as _;
use lienthong_engine::store::{EventStore, Recorded};
use serde_json::json;

use super::DataArg;

/// Events read from the feed per batch.
const FEED_BATCH_EVENTS: usize = 4096;

/// Arguments of `export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArg,
    /// Only this dossier (id or code); default: every dossier, in feed order.
    #[arg(long)]
    dossier: Option<String>,
}

/// Writes the export to stdout.
pub fn run(args: Args) -> Result<ExitCode> {
    let store = crate::common::open_existing_store(&args.data.data)?;
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    match &args.dossier {
        Some(d) => {
            let id = super::dossiers::resolve(store.as_ref(), d)?;
            for r in store.read_stream(&id)? {
                writeln!(out, "{}", line(&r))?;
            }
        }
        None => {
            let mut after = 0;
            loop {
                let batch = store.read_feed(after, FEED_BATCH_EVENTS)?;
                let Some(last) = batch.last() else { break };
                after = last
                    .event
                    .envelope
                    .as_ref()
                    .map_or(after + 1, |e| e.global_position);
                for r in &batch {
                    writeln!(out, "{}", line(r))?;
                }
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One export line.
pub fn line(r: &Recorded) -> String {
    let env = r.event.envelope.clone().unwrap_or_default();
    json!({
        "dossier_id": env.dossier_id,
        "dossier_code": env.dossier_code,
        "seq": env.seq,
        "global_position": env.global_position,
        "raw": base64::engine::general_purpose::STANDARD.encode(&r.sealed.raw),
        "prev_hash": hex::encode(&env.prev_hash),
        "hash": hex::encode(&r.sealed.hash),
        "event": lienthong_engine::view::to_json(&r.event),
    })
    .to_string()
}
