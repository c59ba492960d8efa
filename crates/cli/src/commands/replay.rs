//! `lienthong replay DOSSIER --data DIR [--at RFC3339] [--json]`: a dossier's history as a
//! readable timeline (who, which agency, when, what) and its state at an instant.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use lienthong_engine::dossier;
use lienthong_engine::store::EventStore;
use lienthong_engine::view;
use lienthong_proto::v1::Event;
use serde_json::json;

use super::DataArg;

/// Arguments of `replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The dossier: its id or its code (e.g. UBND.XA-261125-0001).
    dossier: String,
    #[command(flatten)]
    data: DataArg,
    /// Show the history up to this instant (RFC 3339) and the state at that instant.
    #[arg(long)]
    at: Option<String>,
    /// Print JSON instead of a timeline.
    #[arg(long)]
    json: bool,
    /// Time zone for display.
    #[arg(long, default_value = "Asia/Ho_Chi_Minh")]
    tz: String,
}

/// Prints the timeline and the state.
pub fn run(args: Args) -> Result<ExitCode> {
    let tz = crate::common::parse_tz(&args.tz)?;
    let store = crate::common::open_existing_store(&args.data.data)?;
    let id = super::dossiers::resolve(store.as_ref(), &args.dossier)?;
    let at: Option<DateTime<Utc>> = args
        .at
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| anyhow!("--at `{s}` is not an RFC 3339 instant ({e})"))
        })
        .transpose()?;
    let all: Vec<Event> = store
        .read_stream(&id)?
        .into_iter()
        .map(|r| r.event)
        .collect();
    if all.is_empty() {
        return Err(anyhow!("dossier {id} has no events"));
    }
    // The history up to an instant is a prefix of the stream (never a filter: if the engine's
    // clock ever stepped back, a later event must not be shown without the ones before it).
    let events: Vec<Event> = match at {
        Some(t) => all
            .iter()
            .take_while(|e| view::recorded_at(e) <= t)
            .cloned()
            .collect(),
        None => all.clone(),
    };
    let state = dossier::fold(&events);
    if args.json {
        let timeline: Vec<_> = events.iter().map(view::to_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dossier_id": id.to_string(),
                "at": at.map(|t| t.to_rfc3339()),
                "events": timeline,
                "state": view::state_to_json(&state),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let code = all[0]
        .envelope
        .as_ref()
        .map(|e| e.dossier_code.clone())
        .unwrap_or_default();
    println!("dossier {code} ({id})");
    if let Some(t) = at {
        println!(
            "history up to {} ({} of {} events)",
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %:z"),
            events.len(),
            all.len()
        );
    }
    println!();
    println!("{:>4}  {:<19}  {:<28}  WHAT", "SEQ", "WHEN", "WHO");
    for e in &events {
        let env = e.envelope.clone().unwrap_or_default();
        let actor = env.actor.unwrap_or_default();
        let who = if actor.officer.is_empty() {
            actor.agency.clone()
        } else {
            format!("{}/{}", actor.agency, actor.officer)
        };
        println!(
            "{:>4}  {:<19}  {:<28}  {}",
            env.seq,
            view::recorded_at(e)
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S"),
            who,
            view::summary(e, &tz)
        );
    }
    println!();
    if events.is_empty() {
        println!(
            "nothing was recorded by then: the dossier was received at {}",
            view::recorded_at(&all[0])
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S %:z")
        );
    } else {
        print!("{}", view::render_state(&state, &tz));
    }
    Ok(ExitCode::SUCCESS)
}
