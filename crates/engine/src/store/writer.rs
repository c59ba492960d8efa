//! The single writer thread of [`SledStore`](super::SledStore), and the sync thread beside it:
//! validation, stamping, sealing and the group commit.
//!
//! One thread owns every write, so validation (expected seq, idempotency key, code counter) and
//! position allocation need no locks and cannot race. It blocks for the first queued request,
//! then takes whatever else is queued, up to [`GROUP_COMMIT_MAX_REQUESTS`]: while one group is
//! being fsynced, the next one accumulates, so the number of fsyncs adapts to the load.
//!
//! For each group:
//! 1. Each request is validated and staged against the stored state *plus* the requests staged
//!    before it in the same group (an overlay): two appends to one dossier in one group chain
//!    onto each other, and the second of two equal idempotency keys is a duplicate. An invalid
//!    request fails alone; it stages nothing.
//! 2. The events are stamped (seq, position, `prev_hash`, code), sealed, and their envelopes
//!    checked with [`chain::check_envelope`] before anything is written: the write path asserts
//!    the links it writes. It does not decode what it has just encoded: every read checks the
//!    stored bytes whole ([`chain::check`]), hash and decoding included.
//! 3. Each request's events become one run (one `s/` key), and the group's feed one `f/` key at
//!    its first position naming every run in order (see [`keys`]).
//!    All staged writes of the group go into ONE `sled::Batch`, applied atomically by the writer
//!    thread, which then hands the group to the **sync thread** and goes on to the next group.
//! 4. The sync thread takes every applied group waiting for it, calls `flush()` and the explicit
//!    fdatasync ([`Syncer`]) once for all of them, and only then, group by group and in order,
//!    advances the durable position (making the group visible to readers) and answers every
//!    request. So the next groups are staged and applied while one waits for its fdatasync: the
//!    writer's CPU work and the disk overlap instead of taking turns (sled's `flush()` itself
//!    still waits for an apply in progress), and the number of fsyncs still adapts to the load
//!    (groups applied during one fsync share the next). At most `SYNC_QUEUE_GROUPS` applied
//!    groups wait; beyond that the writer waits for the disk.
//!    Readers are bounded by the durable position, so an applied group's events, heads, feed,
//!    codes and idempotency records are invisible until its fsync returned, as before. (Three
//!    reads are not bounded: a definition, which is content-addressed; a timer that an applied
//!    group cleared, which `due_timers` stops listing at once (after a crash that loses the
//!    group, the timer is listed again and fires); and a timer set with no event
//!    ([`Pending::Timers`]), bounded only by its dossier's last append, which may so fire a
//!    little early, harmlessly: a firing decides from durable events.) A group staged on top
//!    of an applied one reads that one's heads and keys from sled, which is right: it comes
//!    after it in the log, and is answered after it.
//! 5. If apply, flush or fsync fails, the group fails and the store is poisoned: after a failed
//!    fsync the state of the page cache is unknown (a retry may "succeed" on pages the kernel
//!    already dropped), so only a reopen, which recovers from what is on disk, is safe. A group
//!    already applied on top of the failed one fails with it ("outcome unknown until reopen"),
//!    refusals included: a conflict or a duplicate key may rest on the failed group.
//!
//! Before a group is staged, the free space of the data directory's file system is read
//! ([`Space`]): below the reserve, every request of the group is refused with
//! [`Error::DiskFull`] and nothing is written, so a filling disk is met by a clear, retryable
//! refusal rather than by a write that fails halfway and poisons the store. Appends resume as
//! soon as space is back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Instant;

use lienthong_proto::v1::SealedEvent;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::chain::{self, GENESIS_HASH, Link};
use super::keys::{self, HeadValue, IdemValue, TimerValue};
use super::sled_store::{GROUP_COMMIT_BYTES_MAX, GROUP_COMMIT_MAX_REQUESTS, Shared, backend};
use super::sync::Syncer;
use super::{
    AppendRequest, Appended, CODE_PREFIX_BYTES_MAX, Corruption, DEFINITION_BYTES_MAX,
    DEFINITIONS_PER_APPEND_MAX, EVENT_BYTES_MAX, EVENTS_PER_APPEND_MAX, Error,
    IDEMPOTENCY_PART_BYTES_MAX, IdempotencyRecord, Recorded, TIMER_STEP_BYTES_MAX,
    TIMERS_PER_APPEND_MAX, Timer, TimerKind, TimerOp,
};
use crate::ids::{DossierCode, DossierId};

/// Applied groups that may wait for the sync thread before the writer waits for it.
const SYNC_QUEUE_GROUPS: usize = 8;

/// One queued write and where to send its answer.
pub(crate) enum Pending {
    /// An append (events and what goes with them).
    Append {
        /// The request.
        req: AppendRequest,
        /// The caller's receiver waits on this.
        reply: oneshot::Sender<Result<Appended, Error>>,
    },
    /// Timers to set or clear with no event (a stale timer cleared, the next one set).
    Timers {
        /// The operations; clears apply before sets.
        ops: Vec<TimerOp>,
        /// The caller's receiver waits on this.
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

impl Pending {
    /// Answers with an error (the request was not written).
    pub(crate) fn fail(self, e: Error) {
        match self {
            Pending::Append { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Pending::Timers { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// An answer waiting for the group's durability.
enum Answer {
    Append(
        oneshot::Sender<Result<Appended, Error>>,
        Result<Appended, Error>,
    ),
    Timers(oneshot::Sender<Result<(), Error>>, Result<(), Error>),
}

impl Answer {
    fn is_ok(&self) -> bool {
        match self {
            Answer::Append(_, r) => r.is_ok(),
            Answer::Timers(_, r) => r.is_ok(),
        }
    }

    /// Sends the answer as staged.
    fn send(self) {
        match self {
            Answer::Append(reply, r) => {
                let _ = reply.send(r);
            }
            Answer::Timers(reply, r) => {
                let _ = reply.send(r);
            }
        }
    }

    /// Sends `failed()` instead of the staged answer, whatever it was: the group's outcome is
    /// unknown.
    fn fail(self, failed: &dyn Fn() -> Error) {
        match self {
            Answer::Append(reply, _) => {
                let _ = reply.send(Err(failed()));
            }
            Answer::Timers(reply, _) => {
                let _ = reply.send(Err(failed()));
            }
        }
    }
}

/// The error of a request whose group may or may not have reached the disk.
fn outcome_unknown(kind: io::ErrorKind, reason: &str) -> Error {
    Error::Io(io::Error::new(
        kind,
        format!("group commit failed, outcome unknown until reopen: {reason}"),
    ))
}

/// The writer thread's state.
pub(crate) struct Writer {
    /// The database and the counters shared with readers.
    shared: Arc<Shared>,
    /// Position of the last event applied to sled (durable once the sync thread says so; a
    /// failed group poisons the store, so nothing is applied after one).
    last_position: u64,
    /// The free space kept in reserve.
    space: Space,
}

/// A group applied to sled (or refused whole), handed to the sync thread, which makes it
/// durable, publishes it to readers and answers its requests, in the order of the groups.
struct Applied {
    /// One answer per request, in order.
    answers: Vec<Answer>,
    /// Whether the group wrote anything (otherwise it only carries refusals to answer).
    wrote: bool,
    /// The position of the group's last event.
    position: u64,
    /// Appends staged.
    requests: u64,
    /// Events staged.
    events: u64,
    /// Requests refused while staging.
    rejected: u64,
    /// The apply failed: the group's outcome is unknown.
    failed: Option<(io::ErrorKind, String)>,
    /// When the group was staged, for the trace.
    started: Instant,
}

/// The free space a store keeps in reserve on its file system.
pub(crate) struct Space {
    /// The data directory (its file system is the one measured).
    pub(crate) dir: PathBuf,
    /// Fewer bytes available than this refuses the group; 0 never does.
    pub(crate) free_bytes_min: u64,
}

impl Space {
    /// The bytes available when they are fewer than the reserve. A failed measurement lets the
    /// group through: the write itself then says what is wrong.
    fn short(&self) -> Option<u64> {
        if self.free_bytes_min == 0 {
            return None;
        }
        match rustix::fs::statvfs(&self.dir) {
            Ok(st) => {
                let free_bytes = st.f_bavail.saturating_mul(st.f_frsize);
                (free_bytes < self.free_bytes_min).then_some(free_bytes)
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot read the free space");
                None
            }
        }
    }
}

/// What the requests staged earlier in the same group changed, not yet in sled.
#[derive(Default)]
struct Overlay {
    /// New heads by dossier.
    heads: HashMap<DossierId, HeadValue>,
    /// New idempotency records by key.
    idempotency: HashMap<Vec<u8>, IdemValue>,
    /// New code counters by prefix.
    counters: HashMap<String, u64>,
    /// Codes given out.
    codes: HashSet<String>,
    /// Definitions written.
    definitions: HashSet<String>,
}

/// Everything one valid request writes.
struct Staged {
    /// Key/value pairs for the batch.
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The new head.
    head: HeadValue,
    /// The idempotency record, if any.
    idempotency: Option<(Vec<u8>, IdemValue)>,
    /// The code counter, for a new dossier.
    counter: Option<(String, u64)>,
    /// Definitions newly written.
    definitions: Vec<String>,
    /// Keys to remove (cleared timers), applied before `writes`.
    removes: Vec<Vec<u8>>,
    /// The answer once durable.
    appended: Appended,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, last_position: u64, space: Space) -> Writer {
        Writer {
            shared,
            last_position,
            space,
        }
    }

    /// Serves the queue until every sender is gone, then returns (after answering everything
    /// that was queued, and joining the sync thread it starts with `syncer`).
    pub(crate) fn run(mut self, queue: Receiver<Pending>, syncer: Syncer) {
        // The writer hands each applied group over and goes on; the sync thread makes every
        // group waiting durable with one fsync. Bounded, so that a slow disk holds the writer
        // back instead of letting applied, unanswered groups pile up.
        let (to_sync, applied) = mpsc::sync_channel::<Applied>(SYNC_QUEUE_GROUPS);
        let shared = Arc::clone(&self.shared);
        let sync_thread = std::thread::Builder::new()
            .name("lienthong-fsync".into())
            .spawn(move || sync_groups(&shared, syncer, applied));
        let sync_thread = match sync_thread {
            Ok(handle) => handle,
            Err(e) => {
                let reason = format!("cannot start the store's sync thread: {e}");
                tracing::error!(%reason, "the store refuses appends");
                self.shared.poison(reason.clone());
                for p in queue {
                    p.fail(Error::Poisoned(reason.clone()));
                }
                return;
            }
        };
        self.serve(&queue, &to_sync);
        drop(to_sync);
        if sync_thread.join().is_err() {
            tracing::error!("the store's sync thread panicked");
        }
        tracing::debug!("store writer stopped: queue closed and drained");
    }

    /// The writer's loop: takes groups from the queue, stages and applies each, and hands it to
    /// the sync thread.
    fn serve(&mut self, queue: &Receiver<Pending>, to_sync: &SyncSender<Applied>) {
        // Requests a full group pushed to the next one.
        let mut carried: VecDeque<Pending> = VecDeque::new();
        loop {
            let mut group = Vec::with_capacity(GROUP_COMMIT_MAX_REQUESTS);
            group.extend(carried.drain(..));
            if group.is_empty() {
                match queue.recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            while group.len() < GROUP_COMMIT_MAX_REQUESTS {
                match queue.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            carried = self.commit(group, to_sync);
        }
    }

    /// Validates and applies one group, and hands it to the sync thread, which makes it durable
    /// and answers each request. Returns the requests left for the next group once the group
    /// reached [`GROUP_COMMIT_BYTES_MAX`].
    fn commit(&mut self, group: Vec<Pending>, to_sync: &SyncSender<Applied>) -> VecDeque<Pending> {
        let span = tracing::debug_span!("group_commit", requests = group.len());
        let _enter = span.enter();
        if let Some(reason) = self.shared.poison_reason() {
            for p in group {
                p.fail(Error::Poisoned(reason.clone()));
            }
            return VecDeque::new();
        }
        if let Some(free_bytes) = self.space.short() {
            let min_bytes = self.space.free_bytes_min;
            tracing::warn!(
                free_bytes,
                min_bytes,
                requests = group.len(),
                "disk nearly full: appends refused until space is freed"
            );
            self.shared
                .stats
                .rejected
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            for p in group {
                p.fail(Error::DiskFull {
                    free_bytes,
                    min_bytes,
                });
            }
            return VecDeque::new();
        }
        let started = Instant::now();
        // Sized for the group: growing these maps request by request was 4% of the writer.
        let mut overlay = Overlay {
            heads: HashMap::with_capacity(group.len()),
            idempotency: HashMap::with_capacity(group.len()),
            ..Overlay::default()
        };
        let mut batch = sled::Batch::default();
        let mut position = self.last_position;
        let mut answers = Vec::with_capacity(group.len());
        let mut staged_requests = 0u64;
        let mut staged_events = 0u64;
        let mut staged_timer_changes = 0u64;
        let mut batch_bytes = 0usize;
        let mut feed = Vec::with_capacity(group.len());
        let mut group: VecDeque<Pending> = group.into();
        while let Some(pending) = group.pop_front() {
            if batch_bytes >= GROUP_COMMIT_BYTES_MAX {
                group.push_front(pending);
                break;
            }
            let (mut req, reply) = match pending {
                Pending::Append { req, reply } => (req, reply),
                Pending::Timers { ops, reply } => {
                    match self.stage_timer_ops(&ops, &overlay) {
                        Ok((removes, writes)) => {
                            for k in removes {
                                batch_bytes += k.len();
                                batch.remove(k);
                            }
                            for (k, v) in writes {
                                batch_bytes += k.len() + v.len();
                                batch.insert(k, v);
                            }
                            staged_timer_changes += 1;
                            answers.push(Answer::Timers(reply, Ok(())));
                        }
                        Err(e) => answers.push(Answer::Timers(reply, Err(e))),
                    }
                    continue;
                }
            };
            match self.stage(&mut req, &overlay, position) {
                Ok(staged) => {
                    position = staged.head.last_position;
                    for k in staged.removes {
                        batch_bytes += k.len();
                        batch.remove(k);
                    }
                    for (k, v) in staged.writes {
                        batch_bytes += k.len() + v.len();
                        batch.insert(k, v);
                    }
                    overlay.heads.insert(req.dossier, staged.head);
                    if let Some((k, v)) = staged.idempotency {
                        overlay.idempotency.insert(k, v);
                    }
                    if let Some((prefix, n)) = staged.counter {
                        overlay.codes.insert(staged.appended.code.0.clone());
                        overlay.counters.insert(prefix, n);
                    }
                    overlay.definitions.extend(staged.definitions);
                    feed.push(keys::FeedRef {
                        dossier: req.dossier,
                        first_seq: staged.appended.first_seq,
                        count: staged.appended.events.len() as u32,
                    });
                    staged_requests += 1;
                    staged_events += staged.appended.events.len() as u64;
                    answers.push(Answer::Append(reply, Ok(staged.appended)));
                }
                Err(e) => answers.push(Answer::Append(reply, Err(e))),
            }
        }
        let rejected = answers.iter().filter(|a| !a.is_ok()).count() as u64;
        if !feed.is_empty() {
            // One feed key for the whole group, at its first position.
            batch.insert(
                keys::feed_key(self.last_position + 1),
                keys::feed_group(&feed),
            );
        }
        let wrote = staged_requests > 0 || staged_timer_changes > 0;
        let mut failed = None;
        if wrote {
            match self.apply(batch) {
                Ok(()) => {}
                Err((kind, reason)) => {
                    // Refuse what follows at once; the sync thread logs and answers this group
                    // after the ones before it.
                    self.shared.poison(reason.clone());
                    for p in group.drain(..) {
                        p.fail(Error::Poisoned(reason.clone()));
                    }
                    failed = Some((kind, reason));
                }
            }
            self.last_position = position;
        }
        let handed = to_sync.send(Applied {
            answers,
            wrote,
            position,
            requests: staged_requests,
            events: staged_events,
            rejected,
            failed,
            started,
        });
        if let Err(mpsc::SendError(applied)) = handed {
            // The sync thread is gone (it panicked): nothing more can be made durable, and
            // what this group applied may or may not reach the disk.
            let reason = "the store's sync thread stopped".to_string();
            self.shared.poison(reason.clone());
            let failed = || outcome_unknown(io::ErrorKind::Other, &reason);
            for answer in applied.answers {
                answer.fail(&failed);
            }
            for p in group.drain(..) {
                p.fail(Error::Poisoned(reason.clone()));
            }
        }
        group
    }

    /// The keys a [`Pending::Timers`] removes, and the ones it writes. A timer set is stamped with
    /// its dossier's last position (staged earlier in the group, or stored), as an append's
    /// timers are: it is listed once that is durable, and `verify` holds a timer to its dossier's
    /// stream. A timer set for a dossier that does not exist is refused.
    fn stage_timer_ops(&self, ops: &[TimerOp], overlay: &Overlay) -> Result<TimerWrites, Error> {
        check_timer_ops("timer operations per change", ops)?;
        stage_timers(ops, |t| match overlay.heads.get(&t.dossier) {
            Some(head) => Ok(head.last_position),
            None => read_head(&self.shared.db, &t.dossier)?
                .map(|head| head.last_position)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "a timer for dossier {}, which does not exist",
                        t.dossier
                    ))
                }),
        })
    }

    /// Applies the batch (atomic).
    fn apply(&mut self, batch: sled::Batch) -> Result<(), (io::ErrorKind, String)> {
        self.shared
            .db
            .apply_batch(batch)
            .map_err(|e| sled_failure("apply batch", &e))
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        self.shared.db.get(key).map_err(backend)
    }

    /// Validates one request against the store and the overlay and builds its writes. Takes the
    /// request's events (they become the answer's).
    fn stage(
        &self,
        req: &mut AppendRequest,
        overlay: &Overlay,
        position: u64,
    ) -> Result<Staged, Error> {
        let n = req.events.len();
        if n == 0 {
            return Err(Error::Invalid("an append needs at least one event".into()));
        }
        limit("events per append", EVENTS_PER_APPEND_MAX, n)?;
        limit(
            "definitions per append",
            DEFINITIONS_PER_APPEND_MAX,
            req.definitions.len(),
        )?;
        check_timer_ops("timer operations per append", &req.timers)?;
        for t in req.timers.iter().map(TimerOp::timer) {
            if t.dossier != req.dossier {
                return Err(Error::Invalid(format!(
                    "a timer of dossier {} in an append for {}",
                    t.dossier, req.dossier
                )));
            }
        }
        for (hash, text) in &req.definitions {
            limit("definition text bytes", DEFINITION_BYTES_MAX, text.len())?;
            if hex::encode(Sha256::digest(text.as_bytes())) != *hash {
                return Err(Error::Invalid(format!(
                    "definition `{hash}` is not the lower-case hex SHA-256 of its text"
                )));
            }
        }

        let idempotency = match &req.idempotency {
            None => None,
            Some(k) => {
                for (what, part) in [("actor", &k.actor), ("key", &k.key)] {
                    if part.is_empty() || part.contains('\0') {
                        return Err(Error::Invalid(format!(
                            "idempotency {what} must be non-empty and free of NUL"
                        )));
                    }
                    limit(
                        "idempotency actor or key bytes",
                        IDEMPOTENCY_PART_BYTES_MAX,
                        part.len(),
                    )?;
                }
                let key = keys::idempotency_key(&k.actor, &k.key);
                let existing = match overlay.idempotency.get(&key) {
                    Some(v) => Some(v.clone()),
                    None => match self.get(&key)? {
                        Some(v) => {
                            Some(IdemValue::decode(&v).ok_or_else(|| Corruption::Record {
                                key: printable(&key),
                                reason: "not an idempotency record".into(),
                            })?)
                        }
                        None => None,
                    },
                };
                if let Some(v) = existing {
                    return Err(Error::DuplicateKey {
                        record: IdempotencyRecord {
                            fingerprint: v.fingerprint,
                            dossier: v.dossier,
                            first_seq: v.first_seq,
                            last_seq: v.last_seq,
                        },
                    });
                }
                Some((key, k.fingerprint))
            }
        };

        let head = match overlay.heads.get(&req.dossier) {
            Some(h) => Some(h.clone()),
            None => read_head(&self.shared.db, &req.dossier)?,
        };
        let actual = head.as_ref().map_or(0, |h| h.seq);
        if req.expected_seq != actual {
            return Err(Error::Conflict {
                dossier: req.dossier,
                expected: req.expected_seq,
                actual,
            });
        }

        let mut writes = Vec::with_capacity(2 * n + 4);
        let (code, first_position, counter) = match (&head, &req.new_dossier) {
            (Some(h), None) => (h.code.clone(), h.first_position, None),
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "new_dossier given for a dossier that exists".into(),
                ));
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "a new dossier (expected seq 0) needs new_dossier with a code prefix".into(),
                ));
            }
            (None, Some(new)) => {
                let prefix = &new.code_prefix;
                limit("code prefix bytes", CODE_PREFIX_BYTES_MAX, prefix.len())?;
                if prefix.is_empty() || prefix.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(Error::Invalid(format!(
                        "code prefix `{prefix}` must be non-empty, without spaces or control characters"
                    )));
                }
                let counter_key = keys::counter_key(prefix);
                let last = match overlay.counters.get(prefix) {
                    Some(n) => *n,
                    None => match self.get(&counter_key)? {
                        Some(v) => keys::u64_from(&v).ok_or_else(|| Corruption::Record {
                            key: printable(&counter_key),
                            reason: "not a counter".into(),
                        })?,
                        None => 0,
                    },
                };
                let next = match new.stripe {
                    None => last + 1,
                    Some(stripe) if stripe.count == 0 || stripe.partition >= stripe.count => {
                        return Err(Error::Invalid(format!(
                            "code stripe: partition {} is not below the partition count {}",
                            stripe.partition, stripe.count
                        )));
                    }
                    Some(stripe) => stripe.next_after(last),
                };
                let code = format!("{prefix}-{next:04}");
                let code_key = keys::code_key(&code);
                if overlay.codes.contains(&code) || self.get(&code_key)?.is_some() {
                    return Err(Corruption::Record {
                        key: printable(&counter_key),
                        reason: format!("counter is {last} but code `{code}` is already taken"),
                    }
                    .into());
                }
                writes.push((counter_key, next.to_be_bytes().to_vec()));
                writes.push((code_key, req.dossier.as_bytes().to_vec()));
                (code, position + 1, Some((prefix.clone(), next)))
            }
        };

        let dossier_text = req.dossier.to_string();
        let mut prev: Option<Link> = head.as_ref().map(|h| Link {
            seq: h.seq,
            hash: h.hash,
        });
        let mut events = Vec::with_capacity(n);
        for (i, mut event) in std::mem::take(&mut req.events).into_iter().enumerate() {
            let seq = actual + 1 + i as u64;
            let global_position = position + 1 + i as u64;
            let Some(envelope) = event.envelope.as_mut() else {
                return Err(Error::Invalid(format!("event {i} has no envelope")));
            };
            if envelope.dossier_id != dossier_text {
                return Err(Error::Invalid(format!(
                    "event {i} names dossier `{}`, the append is for {dossier_text}",
                    envelope.dossier_id
                )));
            }
            if !envelope.dossier_code.is_empty() && envelope.dossier_code != code {
                return Err(Error::Invalid(format!(
                    "event {i} names code `{}`, the dossier's code is `{code}`",
                    envelope.dossier_code
                )));
            }
            envelope.seq = seq;
            envelope.global_position = global_position;
            envelope.prev_hash = prev.map_or(GENESIS_HASH, |l| l.hash).to_vec();
            envelope.dossier_code = code.clone();
            let (sealed, hash) = chain::seal_linked(&event);
            limit("event bytes", EVENT_BYTES_MAX, sealed.raw.len())?;
            // Assert on the write path that the event links where the chain needs it. (Its bytes
            // are prost's encoding of this very event, and every read checks them again.)
            chain::check_envelope(prev.as_ref(), &req.dossier, seq, &event)
                .map_err(|e| Error::Corrupt(e.into()))?;
            prev = Some(Link { seq, hash });
            events.push(Arc::new(Recorded { event, sealed }));
        }
        let last = prev.ok_or_else(|| Error::Invalid("no events".into()))?;
        writes.push((
            keys::stream_key(&req.dossier, actual + 1),
            encode_run(events.iter().map(|r| &r.sealed)),
        ));
        let new_head = HeadValue {
            seq: last.seq,
            last_position: position + n as u64,
            first_position,
            hash: last.hash,
            code: code.clone(),
        };
        writes.push((keys::head_key(&req.dossier), new_head.encode()));

        let idempotency = idempotency.map(|(key, fingerprint)| {
            let value = IdemValue {
                fingerprint,
                dossier: req.dossier,
                first_seq: actual + 1,
                last_seq: last.seq,
                position: new_head.last_position,
            };
            writes.push((key.clone(), value.encode()));
            (key, value)
        });

        let mut definitions = Vec::new();
        for (hash, text) in &req.definitions {
            let key = keys::definition_key(hash);
            if overlay.definitions.contains(hash)
                || definitions.contains(hash)
                || self.shared.db.contains_key(&key).map_err(backend)?
            {
                continue;
            }
            writes.push((key, text.as_bytes().to_vec()));
            definitions.push(hash.clone());
        }

        let (removes, timer_writes) = stage_timers(&req.timers, |_| Ok(new_head.last_position))?;
        writes.extend(timer_writes);

        Ok(Staged {
            writes,
            head: new_head,
            idempotency,
            counter,
            definitions,
            removes,
            appended: Appended {
                dossier: req.dossier,
                code: DossierCode(code),
                first_seq: actual + 1,
                last_seq: last.seq,
                events,
            },
        })
    }
}

/// Checks one timer: a whole-second firing time, a short step id, a lead exactly on warnings.
fn check_timer(t: &Timer) -> Result<(), Error> {
    if t.at.timestamp_subsec_nanos() != 0 {
        return Err(Error::Invalid(format!(
            "timer firing time {} is not a whole second",
            t.at
        )));
    }
    if let Some(step) = &t.step {
        limit("timer step id bytes", TIMER_STEP_BYTES_MAX, step.len())?;
        if step.is_empty() {
            return Err(Error::Invalid(
                "a timer's step id is absent (the appointment) or non-empty".into(),
            ));
        }
    }
    if (t.kind == TimerKind::Warning) != t.lead.is_some() {
        return Err(Error::Invalid(format!(
            "a {} timer {} a lead",
            t.kind.as_str(),
            if t.lead.is_some() { "has" } else { "lacks" }
        )));
    }
    Ok(())
}

/// The sync thread: takes every applied group waiting, makes them all durable with one flush +
/// fdatasync ([`Syncer`]), then publishes each to readers (the recent feed, the durable
/// position) and answers its requests, in order.
///
/// Once a group fails, every later group fails too, with the same "outcome unknown" error: they
/// were applied on top of it and sled may still write them out (it flushes in the background),
/// so only a reopen, which recovers what is on disk, can say.
fn sync_groups(shared: &Shared, mut syncer: Syncer, applied: Receiver<Applied>) {
    let mut broken: Option<(io::ErrorKind, String)> = None;
    while let Ok(first) = applied.recv() {
        let mut groups = vec![first];
        groups.extend(applied.try_iter());
        let to_sync = groups.iter().any(|g| g.wrote && g.failed.is_none());
        let synced = if broken.is_none() && to_sync {
            let synced = make_durable(shared, &mut syncer);
            if synced.is_ok() {
                shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            synced
        } else {
            Ok(())
        };
        for group in groups {
            finish(shared, group, &synced, &mut broken);
        }
    }
}

/// Publishes and answers one group after the flush + fdatasync that covered it (`synced`), or
/// fails it: when that failed, when its own apply failed, or when an earlier group failed.
fn finish(
    shared: &Shared,
    group: Applied,
    synced: &Result<(), (io::ErrorKind, String)>,
    broken: &mut Option<(io::ErrorKind, String)>,
) {
    let outcome = match (&*broken, group.failed, synced) {
        (Some(earlier), _, _) => Err(earlier.clone()),
        (None, Some(failed), _) => Err(failed),
        (None, None, Err(failed)) if group.wrote => Err(failed.clone()),
        _ => Ok(()),
    };
    if let Err((kind, reason)) = outcome {
        if broken.is_none() {
            tracing::error!(
                %reason,
                "group commit failed; the store refuses appends until it is reopened"
            );
            shared.poison(reason.clone());
            *broken = Some((kind, reason.clone()));
        }
        // Every answer, refusals too: a conflict or a duplicate key may rest on a group that
        // will never be durable.
        let failed = || outcome_unknown(kind, &reason);
        for answer in group.answers {
            answer.fail(&failed);
        }
        return;
    }
    if group.wrote {
        {
            let mut recent = shared.recent.write();
            for answer in &group.answers {
                if let Answer::Append(_, Ok(appended)) = answer {
                    for r in &appended.events {
                        recent.push(Arc::clone(r));
                    }
                }
            }
        }
        // Readers see the group from here on, and only from here on.
        shared.durable.store(group.position, Ordering::Release);
        let stats = &shared.stats;
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats.appends.fetch_add(group.requests, Ordering::Relaxed);
        stats.events.fetch_add(group.events, Ordering::Relaxed);
        stats
            .largest_group
            .fetch_max(group.requests, Ordering::Relaxed);
        tracing::trace!(
            requests = group.requests,
            events = group.events,
            micros = group.started.elapsed().as_micros() as u64,
            "group committed"
        );
    }
    shared
        .stats
        .rejected
        .fetch_add(group.rejected, Ordering::Relaxed);
    for answer in group.answers {
        answer.send();
    }
}

/// Flushes sled and fdatasyncs its files: everything applied so far is durable after it.
fn make_durable(shared: &Shared, syncer: &mut Syncer) -> Result<(), (io::ErrorKind, String)> {
    shared.db.flush().map_err(|e| sled_failure("flush", &e))?;
    syncer
        .sync()
        .map_err(|e| (e.kind(), format!("fdatasync: {e}")))
}

/// A sled error as the kind and text a failed group is answered with.
fn sled_failure(what: &str, e: &sled::Error) -> (io::ErrorKind, String) {
    let kind = match e {
        sled::Error::Io(io) => io.kind(),
        _ => io::ErrorKind::Other,
    };
    (kind, format!("{what}: {e}"))
}

/// The keys timer operations remove and the key/value pairs they write.
type TimerWrites = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// Checks timer operations: how many there are (against `what`'s limit), then each timer.
fn check_timer_ops(what: &'static str, ops: &[TimerOp]) -> Result<(), Error> {
    limit(what, TIMERS_PER_APPEND_MAX, ops.len())?;
    ops.iter().map(TimerOp::timer).try_for_each(check_timer)
}

/// What checked timer operations write: a cleared timer's key removed, a set timer's key written
/// with the position `position_of` gives it (its dossier's stream reached it when it was set).
fn stage_timers(
    ops: &[TimerOp],
    mut position_of: impl FnMut(&Timer) -> Result<u64, Error>,
) -> Result<TimerWrites, Error> {
    let (mut removes, mut writes) = (Vec::new(), Vec::new());
    for op in ops {
        match op {
            TimerOp::Clear(t) => removes.push(keys::timer_key(t)),
            TimerOp::Set(t) => {
                let value = TimerValue {
                    position: position_of(t)?,
                    lead: t.lead.map(|l| l.to_string()).unwrap_or_default(),
                };
                writes.push((keys::timer_key(t), value.encode()));
            }
        }
    }
    Ok((removes, writes))
}

/// Reads and decodes a stored head.
pub(crate) fn read_head(db: &sled::Db, dossier: &DossierId) -> Result<Option<HeadValue>, Error> {
    let key = keys::head_key(dossier);
    match db.get(&key).map_err(backend)? {
        None => Ok(None),
        Some(v) => HeadValue::decode(&v).map(Some).ok_or_else(|| {
            Corruption::Head {
                dossier: *dossier,
                seq: 0,
                reason: "the stored head does not decode".into(),
            }
            .into()
        }),
    }
}

/// Decodes a stored run (an `s/` value): its `SealedEvent`s, each length-delimited. An empty
/// value is not a run.
pub(crate) fn decode_run(mut v: &[u8]) -> Result<Vec<SealedEvent>, String> {
    if v.is_empty() {
        return Err("an empty run".into());
    }
    let mut out = Vec::new();
    while !v.is_empty() {
        out.push(SealedEvent::decode_length_delimited(&mut v).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Encodes a run (an `s/` value) of sealed events.
pub(crate) fn encode_run<'a>(events: impl IntoIterator<Item = &'a SealedEvent>) -> Vec<u8> {
    let mut v = Vec::new();
    for sealed in events {
        // A Vec grows as needed: encoding into it cannot fail.
        let _ = sealed.encode_length_delimited(&mut v);
    }
    v
}

fn limit(what: &'static str, max: usize, actual: usize) -> Result<(), Error> {
    if actual > max {
        return Err(Error::Limit {
            what,
            max: max as u64,
            actual: actual as u64,
        });
    }
    Ok(())
}

/// A key in a form fit for a message: text where it is text, hex where it is not.
pub(crate) fn printable(key: &[u8]) -> String {
    let (prefix, rest) = key.split_at(key.len().min(2));
    let prefix = String::from_utf8_lossy(prefix);
    match std::str::from_utf8(rest) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{prefix}{text}"),
        _ => format!("{prefix}{}", hex::encode(rest)),
    }
}
