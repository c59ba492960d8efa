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

use anyhow::{Context, Result, anyhow, bail};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{Command, CompleteStep};
use lienthong_engine::runtime::{Engine, Request, SystemClock};
use lienthong_engine::store::{AppendRequest, EventStore, NewDossier, SledStore};
use lienthong_proto::v1 as pb;
use lienthong_workflow::{Catalog, StepId};
use rand::SeedableRng;

use super::e2e::{DESK, birth};

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

/// Runs one birth-group dossier through the engine on a scratch store in `dir`.
pub fn template(dir: &Path, catalog: Arc<Catalog>) -> Result<Template> {
    let store = Arc::new(SledStore::open(dir).context("open the template's store")?);
    let engine = Engine::new(store.clone(), catalog.clone(), Arc::new(SystemClock));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("start a runtime")?;
    let id = rt.block_on(async {
        let submit = birth("corpus-template");
        let command = lienthong_gateway::convert::submit(&submit, &Default::default())
            .map_err(|s| anyhow!("the template's submission: {}", s.message()))?;
        let actor = |agency: &str| pb::Actor {
            agency: agency.into(),
            officer: format!("{agency}-01"),
            channel: pb::Channel::System as i32,
        };
        let out = engine
            .execute(Request {
                dossier: None,
                actor: actor(DESK),
                idempotency_key: "corpus-submit".into(),
                command,
            })
            .await?;
        let id = out.dossier;
        let steps = [
            ("tu-phap", "register-birth"),
            ("cong-an", "register-residence"),
            ("bhxh", "issue-health-card"),
            (DESK, "return-result"),
        ];
        for (agency, step) in steps {
            engine
                .execute(Request {
                    dossier: Some(id),
                    actor: actor(agency),
                    idempotency_key: format!("corpus-{step}"),
                    command: Command::CompleteStep(CompleteStep {
                        step: StepId(step.into()),
                        outcome: "approve".into(),
                        results: Vec::new(),
                        note: String::new(),
                    }),
                })
                .await?;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        engine
            .execute(Request {
                dossier: Some(id),
                actor: actor(DESK),
                idempotency_key: "corpus-return".into(),
                command: crate::sim::return_result(&mut rng),
            })
            .await?;
        anyhow::Ok(id)
    })?;
    let state = rt.block_on(engine.state(id))?;
    if !state.status().is_closed() {
        bail!("the template dossier did not close: {:?}", state.status());
    }
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
