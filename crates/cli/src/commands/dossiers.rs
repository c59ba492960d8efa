//! `lienthong dossiers --data DIR [--json]`: list dossiers (id, code, procedure, status).

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{self, DossierState};
use lienthong_engine::store::EventStore;
use lienthong_proto::v1::Event;
use serde_json::json;

use super::DataArg;

/// Arguments of `dossiers`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArg,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints one row per dossier, oldest first.
pub fn run(args: Args) -> Result<ExitCode> {
    let store = crate::common::open_existing_store(&args.data.data)?;
    let list = store.dossiers()?;
    if !args.json {
        println!("{:<36}  {:<24}  {:<22}  STATUS", "ID", "CODE", "PROCEDURE");
    }
    for (id, code) in list {
        let state = current_state(store.as_ref(), &id)?;
        if args.json {
            println!(
                "{}",
                json!({"id": id.to_string(), "code": code.0, "procedure": state.procedure_code, "status": state.status().as_str()})
            );
        } else {
            println!(
                "{:<36}  {:<24}  {:<22}  {}",
                id.to_string(),
                code.0,
                state.procedure_code,
                state.status().as_str()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Folds a dossier's verified stream into its state.
pub fn current_state(store: &dyn EventStore, id: &DossierId) -> Result<DossierState> {
    let events: Vec<Event> = store
        .read_stream(id)?
        .into_iter()
        .map(|r| r.event)
        .collect();
    Ok(dossier::fold(&events))
}

/// A dossier named by id or by its human code.
pub fn resolve(store: &dyn EventStore, name: &str) -> Result<DossierId> {
    if let Ok(id) = name.parse::<DossierId>() {
        return Ok(id);
    }
    store.dossier_by_code(name)?.ok_or_else(|| {
        anyhow!("no dossier with id or code `{name}` (list them with `lienthong dossiers`)")
    })
}
