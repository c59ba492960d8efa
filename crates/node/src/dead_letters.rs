//! The engine node's watch over the bus's dead letters: a task that an agency's system never
//! acknowledged is set aside by the bus after its last delivery (`lienthong.dead.<agency>`, with
//! a `warn` log by the client that gave up). This watch records it in the dossier it belongs to,
//! as a `TaskUndeliverable` event, so that the board shows the step as undeliverable and the
//! dossier's history keeps it for auditors.
//!
//! Every [`Config::poll`], for every agency of the catalog, [`run`] reads the dead letters after
//! the last one it saw, decodes each payload (a `lienthong.v1.Task`), and for a dossier this
//! node owns executes [`Command::RecordUndeliverable`] as the engine with the idempotency key
//! `dead/<task id>`: recorded once, however often the letter is read (a restarted node reads
//! them all again from the start, and each is answered as a replay). A letter of another node's
//! dossier is left to that node; one that does not decode is logged and skipped (it stays on
//! the bus for an operator). Bus errors, and a letter that could not be recorded (the store, a
//! conflict), are logged and tried again at the next poll, from that letter on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lienthong_bus::{Agency, Bus, PULL_BATCH_MAX};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{Command, RecordUndeliverable};
use lienthong_engine::runtime::{Engine, Request, engine_actor};
use lienthong_proto::v1 as pb;
use lienthong_workflow::StepId;
use prost::Message;

/// Default time between two reads of the dead letters.
pub const POLL_DEFAULT: Duration = Duration::from_secs(1);

/// Timings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Time between two reads of every agency's dead letters.
    pub poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { poll: POLL_DEFAULT }
    }
}

/// What one pass did, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Dead letters read.
    pub read: u64,
    /// Recorded in a dossier of this node (new or replayed).
    pub recorded: u64,
}

/// Watches the dead letters of every agency of `engine`'s catalog until `shutdown` completes.
pub async fn run(
    engine: Engine,
    bus: Arc<dyn Bus>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) {
    let agencies: Vec<Agency> = engine
        .catalog()
        .agencies
        .keys()
        .filter_map(|code| Agency::new(code).ok())
        .collect();
    let mut watch = Watch {
        cursors: HashMap::new(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let pass = watch.pass(&engine, bus.as_ref(), &agencies).await;
        if pass.recorded > 0 {
            tracing::info!(
                recorded = pass.recorded,
                "undeliverable tasks recorded in their dossiers"
            );
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(config.poll) => {}
        }
    }
}

/// The position to read each agency's dead letters from.
#[derive(Debug, Default)]
pub struct Watch {
    /// Agency -> the first position not read yet.
    cursors: HashMap<Agency, u64>,
}

impl Watch {
    /// A watch that starts from the first dead letter.
    pub fn new() -> Self {
        Watch::default()
    }

    /// Reads what is new for each of `agencies` and records it.
    pub async fn pass(&mut self, engine: &Engine, bus: &dyn Bus, agencies: &[Agency]) -> Pass {
        let mut pass = Pass::default();
        for agency in agencies {
            loop {
                let from = *self.cursors.get(agency).unwrap_or(&1);
                let letters = match bus.dead_letters(agency, from, PULL_BATCH_MAX).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(%agency, error = %e, "cannot read the dead letters; trying again later");
                        break;
                    }
                };
                if letters.is_empty() {
                    break;
                }
                let full = letters.len() >= PULL_BATCH_MAX;
                let mut failed = false;
                for letter in &letters {
                    pass.read += 1;
                    match record(engine, letter).await {
                        Recorded::Done => pass.recorded += 1,
                        Recorded::NotOurs => {}
                        // Tried again from this letter at the next pass (recorded once all
                        // the same: the idempotency key).
                        Recorded::Failed => {
                            failed = true;
                            break;
                        }
                    }
                    self.cursors.insert(agency.clone(), letter.position + 1);
                }
                if failed || !full {
                    break;
                }
            }
        }
        pass
    }
}

/// What became of one dead letter.
enum Recorded {
    /// Recorded in its dossier (or it was already).
    Done,
    /// Nothing to record here: another node's dossier, an ended one, or a letter that is not a
    /// task (left on the bus for an operator).
    NotOurs,
    /// Recording failed (the store, a conflict): try again later.
    Failed,
}

/// Records one dead letter in its dossier, if this node owns it.
async fn record(engine: &Engine, letter: &lienthong_bus::DeadLetter) -> Recorded {
    let task = match pb::Task::decode(letter.payload.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(agency = %letter.agency, task = %letter.task, error = %e, "a dead letter that is not a lienthong.v1.Task; left on the bus");
            return Recorded::NotOurs;
        }
    };
    let Ok(dossier) = task.dossier_id.parse::<DossierId>() else {
        tracing::warn!(agency = %letter.agency, task = %letter.task, "a dead letter whose task names no dossier id; left on the bus");
        return Recorded::NotOurs;
    };
    let owned = engine
        .options()
        .partitions
        .as_ref()
        .is_none_or(|p| p.owns(&dossier));
    if !owned {
        return Recorded::NotOurs;
    }
    let request = Request {
        dossier: Some(dossier),
        actor: engine_actor(),
        idempotency_key: format!("dead/{}", task.task_id),
        command: Command::RecordUndeliverable(RecordUndeliverable {
            agency: letter.agency.to_string(),
            task_id: task.task_id.clone(),
            step: (!task.step_id.is_empty()).then(|| StepId(task.step_id.clone())),
            task_kind: pb::TaskKind::try_from(task.kind)
                .map(|k| k.as_str_name().to_string())
                .unwrap_or_else(|_| format!("TASK_KIND_{}", task.kind)),
            deliveries: letter.deliveries,
        }),
    };
    match engine.execute(request).await {
        Ok(outcome) => {
            if !outcome.replayed && !outcome.events.is_empty() {
                tracing::warn!(dossier = %outcome.code, agency = %letter.agency, task = %task.task_id, deliveries = letter.deliveries, "task undeliverable: recorded in the dossier and shown on the board");
            }
            Recorded::Done
        }
        Err(lienthong_engine::runtime::Error::NotFound(_)) => Recorded::NotOurs,
        Err(e) => {
            tracing::warn!(dossier = %dossier, task = %task.task_id, error = %e, "cannot record an undeliverable task; trying again at the next pass");
            Recorded::Failed
        }
    }
}
