//! Large stores, made quickly, for `bench rebuild` and `bench scale`.
//!
//! One birth-group dossier is run end to end through the real engine on a scratch store: that
//! history (11 events: submission, four steps opened and completed, the result returned) is the
//! template. Each further dossier is the template's events re-addressed to a new dossier id and
//! appended in one request, many requests in flight, so the store stamps, chains, seals and
//! group-commits them exactly as it does live events; only the engine's deciding is skipped.
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
    Ok(Template {
        events,
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
            let events = template
                .events
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(env) = e.envelope.as_mut() {
                        env.dossier_id = text.clone();
                        env.dossier_code = String::new();
                    }
                    e
                })
                .collect();
            pending.push_back(store.append(AppendRequest {
                dossier: id,
                expected_seq: 0,
                events,
                idempotency: None,
                new_dossier: Some(NewDossier {
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
