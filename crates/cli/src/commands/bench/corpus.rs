//! Large stores, made quickly, for `bench rebuild` and `bench scale`.
//!
//! One birth-group dossier is run end to end through the real engine on a scratch store: that
//! history (11 events: submission, four steps opened and completed, the result returned) is the
//! template. Each further dossier is the template's events re-addressed to a new dossier id and
//! appended as the engine appended them, one request per command (the events that share a
//! `command_id`), many requests in flight, so the store stamps, chains, seals, group-commits and
//! keys them exactly as it does live events (one run per command); only the engine's deciding
//! is skipped.
//! What a reader folds (projections) or replays (the engine) is a real dossier's history.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use lienthong_engine::DossierId;
use lienthong_engine::runtime::{Engine, SystemClock};
use lienthong_engine::store::{AppendRequest, EventStore, NewDossier, SledStore};
use lienthong_proto::v1 as pb;
use lienthong_workflow::Catalog;

use super::e2e::{PROCEDURE, close_one};

/// Appends in flight while a corpus is written (they share group commits).
const IN_FLIGHT: usize = 512;

/// A finished dossier's history, ready to be copied.
pub struct Template {
    /// Its events as decided by the engine (stamps are redone by the store on each copy).
    events: Vec<pb::Event>,
    /// How many events each of its commands appended, in order.
    commands: Vec<usize>,
    /// The workflow definitions it is pinned to: `(hash, text)`.
    definitions: Vec<(String, String)>,
}

impl Template {
    /// Events per copy.
    pub fn len(&self) -> usize {
        self.events.len()
    }
}

/// Runs one birth-group dossier through the engine on a scratch store in `dir`, driven as
/// `bench e2e --transport embedded` drives it.
pub fn template(dir: &Path, catalog: Arc<Catalog>) -> Result<Template> {
    let store = Arc::new(SledStore::open(dir).context("open the template's store")?);
    let engine = Engine::new(store.clone(), catalog.clone(), Arc::new(SystemClock));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("start a runtime")?;
    let wf = catalog
        .procedure(PROCEDURE)
        .cloned()
        .ok_or_else(|| anyhow!("procedure {PROCEDURE} is not loaded"))?;
    let id = rt.block_on(close_one(engine.clone(), wf))?;
    let state = rt.block_on(engine.state(id))?;
    let events: Vec<pb::Event> = store
        .read_stream(&id)?
        .into_iter()
        .map(|r| r.event)
        .collect();
    let hash = state.definition_hash.clone();
    let text = store
        .definition(&hash)?
        .ok_or_else(|| anyhow!("the template's definition is not stored"))?;
    drop(engine);
    store.close()?;
    let mut commands: Vec<(String, usize)> = Vec::new();
    for e in &events {
        let command = e
            .envelope
            .as_ref()
            .map(|env| env.command_id.clone())
            .unwrap_or_default();
        match commands.last_mut() {
            Some((last, n)) if *last == command && !command.is_empty() => *n += 1,
            _ => commands.push((command, 1)),
        }
    }
    Ok(Template {
        events,
        commands: commands.into_iter().map(|(_, n)| n).collect(),
        definitions: vec![(hash, text)],
    })
}

/// Appends copies of `template` to `store` until it holds at least `target` events; answers
/// the events it appended.
pub fn grow(store: &SledStore, template: &Template, target: u64) -> Result<u64> {
    let mut have = store.last_position()?;
    let start = have;
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    let mut first = have == 0;
    while have < target || !pending.is_empty() {
        while have < target && pending.len() < IN_FLIGHT {
            let id = DossierId::new();
            let text = id.to_string();
            let mut events = template.events.iter().map(|e| {
                let mut e = e.clone();
                if let Some(env) = e.envelope.as_mut() {
                    env.dossier_id = text.clone();
                    env.dossier_code = String::new();
                }
                e
            });
            // One append per command, queued back to back: the writer takes them in order and
            // chains each onto the one before, within a group or across groups.
            let mut seq = 0u64;
            for &n in &template.commands {
                let first_command = seq == 0;
                pending.push_back(store.append(AppendRequest {
                    dossier: id,
                    expected_seq: seq,
                    events: events.by_ref().take(n).collect(),
                    idempotency: None,
                    new_dossier: first_command.then(|| NewDossier {
                        code_prefix: "BENCH-261207".into(),
                        stripe: None,
                    }),
                    definitions: if first {
                        template.definitions.clone()
                    } else {
                        Vec::new()
                    },
                    timers: Vec::new(),
                }));
                first = false;
                seq += n as u64;
            }
            have += template.len() as u64;
        }
        if let Some(p) = pending.pop_front() {
            p.blocking_recv()
                .context("the store's writer stopped")?
                .context("a corpus append failed")?;
        }
    }
    Ok(store.last_position()? - start)
}
