//! The embedded runtime: the in-process command loop.
//!
//! One [`Engine`] (a cheap `Clone` handle) serves every dossier of one store:
//!
//! 1. A command for an existing dossier takes that dossier's lock, so commands for one dossier are
//!    serialised while different dossiers proceed concurrently.
//! 2. The dossier state comes from the cache or from a fold of its stream (chain checked on read);
//!    the workflow definition comes from the content-addressed copy the dossier is pinned to, never
//!    from the current file, so editing a workflow never changes a running dossier.
//! 3. The pure `decide` runs with the time passed in from the [`Clock`]; its events are wrapped in
//!    envelopes (actor, idempotency key, recorded-at) and appended with the expected sequence.
//! 4. The call returns only when the store reports the append durable (group-committed: many
//!    concurrent commands share one flush + fdatasync).
//!
//! Idempotency: the same (actor agency, idempotency key) returns the original result and appends
//! nothing; the same key with a different command is rejected. The fingerprint is the SHA-256 of
//! the command's canonical JSON together with the target dossier.
//!
//! Timers: every append also carries the timer change its events call for
//! ([`dossier::timer_changes`]: the dossier's earliest timer, cleared and set anew when the deadlines
//! it creates, moves or settles change it), so a deadline and the timer that watches it are
//! durable together. [`Engine::fire_due_timers`] (in [`timers`]) fires what is due at
//! the clock's `now` as `FireTimer` commands; [`Engine::spawn_timer_loop`] does it for a
//! long-running server. Submodules: [`clock`] (where `now` comes from), [`timers`].

pub mod clock;
pub mod timers;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering, fence};

use chrono::{DateTime, Utc};
use lienthong_calendar::{Calendar, Duration};
use lienthong_proto::v1::{Actor, Envelope, Event};
use lienthong_workflow::{Catalog, Workflow};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::dossier::{self, Command, DecideContext, DossierState, Timer, TimerOp, TimerPolicy};
use crate::ids::{DossierCode, DossierId};
use crate::store::{
    self, AppendRequest, Appended, CodeStripe, EventStore, IdempotencyKey, NewDossier, Recorded,
};

pub use clock::{Clock, ManualClock, SystemClock};

/// A dossier's cache slot: its state once folded (`None` until then, or after a failed
/// append, whose outcome the cache does not know). Shared with the last [`Outcome`] on it.
type Slot = Option<Arc<DossierState>>;

/// Moves a watch of a feed position forward to `position`, waking its receivers, unless it is
/// there or beyond already (positions only grow; a late, lower one must not move it back).
pub fn advance(watch: &tokio::sync::watch::Sender<u64>, position: u64) {
    watch.send_if_modified(|p| {
        let newer = position > *p;
        if newer {
            *p = position;
        }
        newer
    });
}
pub use timers::{FIRE_ROUNDS_MAX, TIMER_SLEEP_MS_MIN, TIMERS_PER_ROUND_MAX, engine_actor};

/// Retries after a sequence conflict before giving up with [`Error::Conflict`]. Conflicts come
/// only from another process writing the same store, so a few retries are plenty.
pub const CONFLICT_RETRIES_MAX: u32 = 3;

/// Dossier states kept in memory; beyond this, idle entries are dropped and re-folded on demand.
pub const CACHED_DOSSIERS_MAX: usize = 100_000;

/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// How the engine runs, beyond its store, catalog and clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// How long before a deadline (a step's due, the dossier's appointment) its holder gets a
    /// `DeadlineWarning`; working time for `wd`/`wh`. Default `1wd`, the legal notice period of
    /// an apology.
    pub warning_lead: Duration,
    /// Longest sleep of the timer loop, in milliseconds, so that a timer set by another process
    /// or a clock jump is noticed within this bound.
    pub timer_sleep_ms_max: u64,
    /// In the distributed mode, the partitions this engine node owns: a new dossier gets an id
    /// in one of them, so that the commands that follow (routed by the id's partition) reach this
    /// node. `None`: any id (the embedded mode).
    pub partitions: Option<Arc<OwnedPartitions>>,
}

/// The partitions an engine node owns, out of `count`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedPartitions {
    /// How many partitions the dossier space is split into.
    pub count: u32,
    /// The ones this node owns (each below `count`, at least one).
    pub owned: std::collections::BTreeSet<u32>,
}

impl OwnedPartitions {
    /// Whether the dossier `id` belongs to this node.
    pub fn owns(&self, id: &DossierId) -> bool {
        self.owned.contains(&id.partition(self.count))
    }
}

/// Most fresh ids drawn to find one in an owned partition (expected: `count / owned` draws).
pub const ID_DRAWS_MAX: u32 = 1 << 20;

impl Default for Options {
    fn default() -> Self {
        Options {
            warning_lead: Duration::WorkingDays(1),
            timer_sleep_ms_max: 60_000,
            partitions: None,
        }
    }
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command is not allowed now (a business rule); nothing was written.
    #[error("rejected: {0}")]
    Rejected(#[from] dossier::Rejection),
    /// No dossier with this id.
    #[error("dossier {0} not found")]
    NotFound(String),
    /// No procedure with this code in the loaded workflows.
    #[error("unknown procedure `{0}`: run `lienthong check` to list the procedures that load")]
    UnknownProcedure(String),
    /// The same idempotency key was used before with a different command.
    #[error(
        "idempotency key `{key}` of `{actor}` was already used for a different command; use a new key for a new command"
    )]
    KeyReused {
        /// The acting agency.
        actor: String,
        /// The reused key.
        key: String,
    },
    /// The idempotency key is empty or too long.
    #[error("idempotency key must be 1..={IDEMPOTENCY_KEY_BYTES_MAX} bytes, got {0}")]
    BadKey(usize),
    /// Another writer kept winning the race for this dossier; retry later.
    #[error("dossier {0} is being changed concurrently; retry")]
    Conflict(DossierId),
    /// The pinned workflow or calendar could not be loaded.
    #[error("definition {hash} of dossier {dossier}: {reason}")]
    Definition {
        /// The dossier.
        dossier: String,
        /// The pinned definition hash.
        hash: String,
        /// What went wrong.
        reason: String,
    },
    /// A storage fault (I/O, corruption, store closed).
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A command addressed to the engine.
#[derive(Clone, Debug)]
pub struct Request {
    /// The dossier; `None` for a submission (a new dossier).
    pub dossier: Option<DossierId>,
    /// Who acts.
    pub actor: Actor,
    /// The caller's idempotency key: a retry with the same key returns the first answer.
    pub idempotency_key: String,
    /// What to do.
    pub command: Command,
}

/// What a command did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The dossier.
    pub dossier: DossierId,
    /// Its human code.
    pub code: DossierCode,
    /// The events the command appended (for a replayed retry: the ones it appended the first
    /// time), shared with the store's feed: not copied.
    pub events: Vec<Arc<Recorded>>,
    /// The dossier's state after the command (for a replayed retry: the current state; for a
    /// fired timer that was stale: the unchanged state), shared with the engine's cache: the
    /// next command on the dossier takes it back without a copy once this answer is dropped.
    pub state: Arc<DossierState>,
    /// True when this answer is the original one returned again for a retried key.
    pub replayed: bool,
}

/// Cheap handle on the embedded engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Durable event store (group-committed appends).
    store: Arc<dyn EventStore>,
    /// Agencies, calendars and current procedure definitions loaded from `workflows/`.
    catalog: Arc<Catalog>,
    /// Source of `now` for every decision.
    clock: Arc<dyn Clock>,
    /// Per-dossier lock and cached state (`None` until first folded).
    dossiers: Mutex<HashMap<DossierId, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Parsed definitions by content hash (pinned versions of running dossiers).
    definitions: Mutex<HashMap<String, Arc<Workflow>>>,
    /// Warning lead and timer loop bounds.
    options: Options,
    /// Wakes the timer loop when an append set a timer earlier than its next look.
    timers_changed: tokio::sync::Notify,
    /// When the timer loop looks at the store next (milliseconds since the epoch, on the
    /// engine's clock); `i64::MAX` while it is looking or when no loop runs, so that every
    /// timer set then wakes it. An append wakes the loop only for a timer due before its next
    /// look (see [`Engine::timers_set`]).
    timer_loop_next_look_ms: AtomicI64,
    /// Timers whose dossier's definition or calendar does not load in this process: kept in the
    /// store (a restart with the definition back fires them), not fired again here.
    held_timers: Mutex<HashSet<Timer>>,
    /// The feed position of the last event this engine appended (see [`Engine::appended`]).
    appended: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    /// An engine over `store`, routing with `catalog`, taking time from `clock`, with the
    /// default [`Options`].
    pub fn new(store: Arc<dyn EventStore>, catalog: Arc<Catalog>, clock: Arc<dyn Clock>) -> Self {
        Engine::with_options(store, catalog, clock, Options::default())
    }

    /// An engine with explicit [`Options`].
    pub fn with_options(
        store: Arc<dyn EventStore>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Self {
        let definitions = catalog
            .procedures
            .values()
            .map(|wf| (wf.hash.clone(), wf.clone()))
            .collect();
        Engine {
            inner: Arc::new(Inner {
                store,
                catalog,
                clock,
                dossiers: Mutex::new(HashMap::new()),
                definitions: Mutex::new(definitions),
                options,
                timers_changed: tokio::sync::Notify::new(),
                timer_loop_next_look_ms: AtomicI64::new(i64::MAX),
                held_timers: Mutex::new(HashSet::new()),
                appended: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// A watch of the feed position of the last event this engine appended, changed after each
    /// durable append: what a reader of the feed (the outbox) waits on instead of polling.
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.appended.subscribe()
    }

    /// Tells the watchers of [`Engine::appended`] about `events`.
    fn announce(&self, events: &[Arc<Recorded>]) {
        if let Some(last) = events.iter().map(|r| r.position()).max() {
            advance(&self.inner.appended, last);
        }
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The store behind this engine.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The loaded workflows.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.catalog
    }

    /// The engine's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Executes one command; returns once its events are durable (or it was rejected).
    #[tracing::instrument(skip_all, fields(dossier = ?req.dossier, agency = %req.actor.agency, command = req.command.kind()))]
    pub async fn execute(&self, req: Request) -> Result<Outcome, Error> {
        let key_len = req.idempotency_key.len();
        if key_len == 0 || key_len > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(Error::BadKey(key_len));
        }
        let fingerprint = fingerprint(&req);
        let result = match req.dossier {
            None => match self.replay_if_known(&req, &fingerprint).await? {
                Some(outcome) => return Ok(outcome),
                None => self.submit(&req, fingerprint).await,
            },
            // `act` consults the key's record under the dossier's lock, once a retry can show
            // (see there).
            Some(id) => self.act(id, &req, fingerprint, None).await,
        };
        match result {
            // A concurrent retry with the same key won the race: answer as it did.
            Err(Error::Store(store::Error::DuplicateKey { .. })) => self
                .replay_if_known(&req, &fingerprint)
                .await?
                .ok_or_else(|| Error::Conflict(req.dossier.unwrap_or_default())),
            other => other,
        }
    }

    /// The current state of a dossier (folded from its verified stream).
    pub async fn state(&self, id: DossierId) -> Result<DossierState, Error> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        self.loaded(id, &mut guard)
            .await
            .map(|s| s.as_ref().clone())
    }

    async fn replay_if_known(
        &self,
        req: &Request,
        fingerprint: &[u8; 32],
    ) -> Result<Option<Outcome>, Error> {
        let Some(record) = self
            .inner
            .store
            .idempotency(&req.actor.agency, &req.idempotency_key)?
        else {
            return Ok(None);
        };
        if &record.fingerprint != fingerprint {
            return Err(Error::KeyReused {
                actor: req.actor.agency.clone(),
                key: req.idempotency_key.clone(),
            });
        }
        let stream = self.inner.store.read_stream(&record.dossier)?;
        let events: Vec<Arc<Recorded>> = stream
            .iter()
            .filter(|r| envelope_seq(&r.event) >= record.first_seq)
            .filter(|r| envelope_seq(&r.event) <= record.last_seq)
            .map(|r| Arc::new(r.clone()))
            .collect();
        let state = dossier::fold(
            &stream
                .iter()
                .map(|r| r.event.clone())
                .collect::<Vec<Event>>(),
        );
        Ok(Some(Outcome {
            dossier: record.dossier,
            code: DossierCode(state.code.clone()),
            events,
            state: Arc::new(state),
            replayed: true,
        }))
    }

    /// A new dossier id, in one of this node's partitions when it owns some.
    fn fresh_id(&self) -> Result<DossierId, Error> {
        let Some(p) = &self.inner.options.partitions else {
            return Ok(DossierId::new());
        };
        for _ in 0..ID_DRAWS_MAX {
            let id = DossierId::new();
            if p.owns(&id) {
                return Ok(id);
            }
        }
        Err(Error::Definition {
            dossier: "(new)".into(),
            hash: String::new(),
            reason: format!(
                "no id in the owned partitions {:?} of {} after {ID_DRAWS_MAX} draws: the node's partition set is empty or out of range",
                p.owned, p.count
            ),
        })
    }

    async fn submit(&self, req: &Request, fingerprint: [u8; 32]) -> Result<Outcome, Error> {
        let Command::Submit(submit) = &req.command else {
            return Err(Error::NotFound("(no dossier id given)".into()));
        };
        let workflow = self
            .inner
            .catalog
            .procedure(&submit.procedure_code)
            .cloned()
            .ok_or_else(|| Error::UnknownProcedure(submit.procedure_code.clone()))?;
        let calendar = self.calendar_for(&workflow, "(new)")?;
        let receiving = self
            .inner
            .catalog
            .agencies
            .get(&workflow.receiving_agency.0)
            .map(|a| a.code_prefix.clone())
            .unwrap_or_else(|| workflow.receiving_agency.0.to_uppercase());
        let now = self.now();
        let id = self.fresh_id()?;
        let state = DossierState::default();
        let bodies = dossier::decide(
            &state,
            &req.command,
            &DecideContext {
                now,
                actor: &req.actor,
                workflow: &workflow,
                calendar,
            },
        )?;
        let local = now.with_timezone(&calendar.timezone());
        let prefix = format!("{receiving}-{}", local.format("%y%m%d"));
        let events = envelopes(id, "", 0, req, now, bodies);
        #[cfg(debug_assertions)]
        let before = state.clone();
        let (after, timers) =
            self.evolve_with_timers(id, state, &events, &workflow, calendar, None);
        let set_at = earliest_set(&timers);
        // The new dossier's cache slot is locked before its first events become durable and
        // visible in the feed: an agency that sees its task and acts at once waits here for the
        // submission to finish, instead of its later state being overwritten by this one (a
        // stale cache that refused the next agencies as "not routed").
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let appended = self
            .inner
            .store
            .append(AppendRequest {
                dossier: id,
                expected_seq: 0,
                events,
                idempotency: Some(IdempotencyKey {
                    actor: req.actor.agency.clone(),
                    key: req.idempotency_key.clone(),
                    fingerprint,
                }),
                new_dossier: Some(NewDossier {
                    code_prefix: prefix,
                    stripe: self.inner.options.partitions.as_ref().map(|p| CodeStripe {
                        partition: id.partition(p.count),
                        count: p.count,
                    }),
                }),
                definitions: vec![(workflow.hash.clone(), workflow.source.clone())],
                timers,
            })
            .await
            .map_err(|_| store::Error::Closed)??;
        // The store allocated the code; everything else was stamped as it stamps it.
        let mut state = after;
        state.code.clone_from(&appended.code.0);
        #[cfg(debug_assertions)]
        check_evolved(before, &appended.events, &state);
        Ok(self.settle(&mut guard, id, state, appended, set_at))
    }

    /// Ends a command whose append succeeded: wakes the timer loop for an earlier timer,
    /// announces the events, caches `state` (folded before the append, see [`envelopes`]) in
    /// the dossier's slot and answers with it. The caller still holds the slot's lock.
    fn settle(
        &self,
        slot: &mut Slot,
        id: DossierId,
        state: DossierState,
        appended: Appended,
        set_at: Option<DateTime<Utc>>,
    ) -> Outcome {
        self.timers_set(set_at);
        self.announce(&appended.events);
        let state = Arc::new(state);
        *slot = Some(state.clone());
        Outcome {
            dossier: id,
            code: appended.code,
            events: appended.events,
            state,
            replayed: false,
        }
    }

    /// Runs a command on an existing dossier. `fired`: the timer this command fires, cleared in
    /// the same batch as the notice (or alone, when the timer is stale and nothing is decided).
    async fn act(
        &self,
        id: DossierId,
        req: &Request,
        fingerprint: [u8; 32],
        fired: Option<&Timer>,
    ) -> Result<Outcome, Error> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        // A retry (also one that overlapped its first attempt and waited for the lock while the
        // first one appended) must be answered with the first result, not decided again on the
        // new state. The idempotency record is not looked up first, though: that lookup misses
        // for nearly every command, and it was an eighth of the engine's time. A retry is
        // caught where it shows instead: a decision that fails (the state moved on) or decides
        // nothing, or an append the store refuses (a key it already holds, a full queue or
        // disk), is checked against the record, still under the lock.
        let mut attempts = 0;
        loop {
            let (state, workflow, calendar, now, bodies) =
                match self.decide_on(id, &mut guard, req).await {
                    Ok(d) => d,
                    Err(e) => return self.replay_or(req, &fingerprint, e).await,
                };
            if bodies.is_empty() {
                let state = Arc::new(state);
                *guard = Some(state.clone());
                if let Some(outcome) = self.replay_if_known(req, &fingerprint).await? {
                    return Ok(outcome);
                }
                // Only a timer that records nothing (stale, or a warning whose deadline passed)
                // decides nothing: clear it and set the dossier's next timer, append nothing.
                // This happens under the dossier's lock, so it cannot delete an identical timer
                // that a concurrent command of this dossier is about to set.
                if let Some(t) = fired {
                    let policy = self.timer_policy(&workflow, calendar);
                    let ops = dossier::rearm(id, &state, &policy, t, now);
                    self.inner
                        .store
                        .update_timers(ops)
                        .await
                        .map_err(|_| store::Error::Closed)??;
                }
                drop(guard);
                return Ok(Outcome {
                    dossier: id,
                    code: DossierCode(state.code.clone()),
                    events: Vec::new(),
                    state,
                    replayed: false,
                });
            }
            let expected_seq = state.seq;
            let events = envelopes(id, &state.code, expected_seq, req, now, bodies);
            #[cfg(debug_assertions)]
            let before = state.clone();
            let (after, timers) =
                self.evolve_with_timers(id, state, &events, &workflow, calendar, fired);
            let set_at = earliest_set(&timers);
            let result = self
                .inner
                .store
                .append(AppendRequest {
                    dossier: id,
                    expected_seq,
                    events,
                    idempotency: Some(IdempotencyKey {
                        actor: req.actor.agency.clone(),
                        key: req.idempotency_key.clone(),
                        fingerprint,
                    }),
                    new_dossier: None,
                    definitions: Vec::new(),
                    timers,
                })
                .await
                .map_err(|_| store::Error::Closed)?;
            match result {
                Ok(appended) => {
                    #[cfg(debug_assertions)]
                    check_evolved(before, &appended.events, &after);
                    let outcome = self.settle(&mut guard, id, after, appended, set_at);
                    drop(guard);
                    self.trim_cache();
                    return Ok(outcome);
                }
                Err(store::Error::Conflict { .. }) if attempts < CONFLICT_RETRIES_MAX => {
                    attempts += 1;
                    *guard = None;
                }
                Err(store::Error::Conflict { .. }) => return Err(Error::Conflict(id)),
                Err(e) => {
                    // The outcome of a failed append is unknown to the cache: re-read next time.
                    *guard = None;
                    // A retry must get its first answer even when the store refuses the append
                    // (a duplicate key, or a full queue or disk).
                    return self.replay_or(req, &fingerprint, e.into()).await;
                }
            }
        }
    }

    /// Decides `req` on the dossier's current state: the state, its pinned workflow and
    /// calendar, the instant decided at, and the event bodies (none: nothing to record). Once
    /// decided, the state is taken out of the cache slot `guard` rather than copied (the caller
    /// puts back what it ends with); a failed decision leaves it there.
    async fn decide_on<'w>(
        &'w self,
        id: DossierId,
        guard: &mut Slot,
        req: &Request,
    ) -> Result<Decided<'w>, Error> {
        let state = self.loaded(id, guard).await?;
        let workflow = self.pinned_workflow(state)?;
        let calendar = self.calendar_for(&workflow, &state.code)?;
        // Never before the stream's last event: a wall clock stepped back (NTP, a VM
        // restored) must not record a later event at an earlier time.
        let now = self
            .now()
            .max(state.last_recorded_at.unwrap_or(DateTime::<Utc>::MIN_UTC));
        let bodies = dossier::decide(
            state,
            &req.command,
            &DecideContext {
                now,
                actor: &req.actor,
                workflow: &workflow,
                calendar,
            },
        )?;
        // The last answer on this dossier has usually been sent and dropped by now, so the
        // state is taken back whole; a copy only while someone still holds that answer.
        let state = guard
            .take()
            .map(Arc::unwrap_or_clone)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok((state, workflow, calendar, now, bodies))
    }

    /// The first answer to `req` if it is a retry; else `err`, what the command met. A key
    /// taken by another command is [`Error::KeyReused`]; a failed look-up leaves `err` as the
    /// answer (it is the better account of what happened: the store may be refusing reads too).
    async fn replay_or(
        &self,
        req: &Request,
        fingerprint: &[u8; 32],
        err: Error,
    ) -> Result<Outcome, Error> {
        match self.replay_if_known(req, fingerprint).await {
            Ok(Some(outcome)) => Ok(outcome),
            Err(reused @ Error::KeyReused { .. }) => Err(reused),
            Ok(None) | Err(_) => Err(err),
        }
    }

    /// The dossier's state, folding its stream if not cached.
    async fn loaded<'a>(
        &self,
        id: DossierId,
        slot: &'a mut Slot,
    ) -> Result<&'a Arc<DossierState>, Error> {
        if slot.is_none() {
            let stream = self.inner.store.read_stream(&id)?;
            if stream.is_empty() {
                return Err(Error::NotFound(id.to_string()));
            }
            let events: Vec<Event> = stream.into_iter().map(|r| r.event).collect();
            *slot = Some(Arc::new(dossier::fold(&events)));
        }
        slot.as_ref().ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn slot(&self, id: DossierId) -> Arc<tokio::sync::Mutex<Slot>> {
        self.inner
            .dossiers
            .lock()
            .entry(id)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }

    /// Drops idle cache entries once the cache is over its bound (closed dossiers first).
    fn trim_cache(&self) {
        let mut map = self.inner.dossiers.lock();
        if map.len() <= CACHED_DOSSIERS_MAX {
            return;
        }
        map.retain(|_, slot| Arc::strong_count(slot) > 1);
    }

    /// The definition a dossier is pinned to: from memory, else from the store's content-addressed copy.
    fn pinned_workflow(&self, state: &DossierState) -> Result<Arc<Workflow>, Error> {
        let hash = &state.definition_hash;
        if let Some(wf) = self.inner.definitions.lock().get(hash) {
            return Ok(wf.clone());
        }
        let err = |reason: String| Error::Definition {
            dossier: state.code.clone(),
            hash: hash.clone(),
            reason,
        };
        let text = self
            .inner
            .store
            .definition(hash)?
            .ok_or_else(|| err("not in the store".into()))?;
        let families: Vec<&str> = self
            .inner
            .catalog
            .calendars
            .keys()
            .map(String::as_str)
            .collect();
        let wf = Workflow::parse(
            &text,
            &format!("store:{hash}"),
            &self.inner.catalog.agencies,
            &families,
        )
        .map_err(|d| err(format!("{} diagnostics, first: {}", d.len(), d[0])))?;
        let wf = Arc::new(wf);
        self.inner
            .definitions
            .lock()
            .insert(hash.clone(), wf.clone());
        Ok(wf)
    }

    /// How the timers of a dossier pinned to `workflow` and `calendar` are computed.
    fn timer_policy<'a>(&self, workflow: &'a Workflow, calendar: &'a Calendar) -> TimerPolicy<'a> {
        TimerPolicy {
            workflow,
            calendar,
            lead: self.inner.options.warning_lead,
        }
    }

    /// Wakes the timer loop if an append set a timer (`set_at`: the earliest it set) due before
    /// the loop's next look at the store. Called after the append, once the timer is visible:
    /// a loop that read the store before it has published its next look by now, or is still
    /// looking (`i64::MAX`) and is woken, so its next sleep ends at once (see
    /// [`Engine::spawn_timer_loop`]).
    fn timers_set(&self, set_at: Option<DateTime<Utc>>) {
        let Some(at) = set_at else { return };
        // Pairs with the loop's fence between publishing `i64::MAX` and reading the store: either
        // this load sees that (or a later) value, or the loop's read sees the timer.
        fence(Ordering::SeqCst);
        if at.timestamp_millis() < self.inner.timer_loop_next_look_ms.load(Ordering::SeqCst) {
            self.inner.timers_changed.notify_one();
        }
    }

    /// Folds `events` into `state` and answers the state after them with the timer changes
    /// their append carries ([`dossier::timer_changes`]). The events are stamped as the store
    /// stamps them (see [`envelopes`]), so once appended this is the dossier's state: it is not
    /// folded a second time from what the store answers.
    fn evolve_with_timers(
        &self,
        id: DossierId,
        state: DossierState,
        events: &[Event],
        workflow: &Workflow,
        calendar: &Calendar,
        fired: Option<&Timer>,
    ) -> (DossierState, Vec<TimerOp>) {
        let policy = self.timer_policy(workflow, calendar);
        let old = dossier::next_timer(id, &state, &policy);
        let after = events.iter().fold(state, dossier::evolve);
        let new = dossier::next_timer(id, &after, &policy);
        (after, dossier::timer_changes(old, new, fired))
    }

    fn calendar_for(&self, wf: &Workflow, dossier: &str) -> Result<&Calendar, Error> {
        self.inner
            .catalog
            .calendar(&wf.calendar)
            .ok_or_else(|| Error::Definition {
                dossier: dossier.to_string(),
                hash: wf.hash.clone(),
                reason: format!("calendar family `{}` is not loaded", wf.calendar),
            })
    }
}

/// The earliest instant among the timers `ops` set.
fn earliest_set(ops: &[TimerOp]) -> Option<DateTime<Utc>> {
    ops.iter()
        .filter_map(|op| match op {
            TimerOp::Set(t) => Some(t.at),
            TimerOp::Clear(_) => None,
        })
        .min()
}

/// Debug builds: the state folded before the append (see [`envelopes`]) is the state folded from
/// the events as the store recorded them.
#[cfg(debug_assertions)]
fn check_evolved(before: DossierState, appended: &[Arc<Recorded>], state: &DossierState) {
    let folded = appended
        .iter()
        .fold(before, |s, r| dossier::evolve(s, &r.event));
    debug_assert_eq!(&folded, state, "the state folded before the append differs");
}

fn envelope_seq(e: &Event) -> u64 {
    e.envelope.as_ref().map_or(0, |env| env.seq)
}

/// What [`Engine::decide_on`] answers: the state decided on, its pinned workflow and calendar,
/// the instant decided at, and the event bodies.
type Decided<'a> = (
    DossierState,
    Arc<Workflow>,
    &'a Calendar,
    DateTime<Utc>,
    Vec<lienthong_proto::v1::event::Body>,
);

/// The events of `bodies` for an append after seq `after_seq`, stamped with the seqs the store
/// gives them (it stamps them itself, and refuses an append whose expected seq is not the
/// dossier's): the state folded from them before the append is the state after it. The store
/// alone stamps positions and hashes, which `evolve` does not read, and a new dossier's code.
fn envelopes(
    id: DossierId,
    code: &str,
    after_seq: u64,
    req: &Request,
    now: DateTime<Utc>,
    bodies: Vec<lienthong_proto::v1::event::Body>,
) -> Vec<Event> {
    let recorded_at = prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    };
    bodies
        .into_iter()
        .zip(after_seq + 1..)
        .map(|(body, seq)| Event {
            envelope: Some(Envelope {
                dossier_id: id.to_string(),
                dossier_code: code.to_string(),
                seq,
                global_position: 0,
                recorded_at: Some(recorded_at),
                actor: Some(req.actor.clone()),
                command_id: req.idempotency_key.clone(),
                prev_hash: Vec::new(),
            }),
            body: Some(body),
        })
        .collect()
}

/// SHA-256 over the target dossier and the command's canonical JSON (struct fields in declaration
/// order, maps ordered): a retry of the same command has the same fingerprint.
fn fingerprint(req: &Request) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(req.dossier.map(|d| d.to_string()).unwrap_or_default());
    h.update([0u8]);
    h.update(serde_json::to_vec(&req.command).unwrap_or_default());
    h.finalize().into()
}
