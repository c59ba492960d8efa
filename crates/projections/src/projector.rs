//! The checkpointed fold of the global feed into the projections database.
//!
//! [`Projections::apply_next`] reads one batch of the feed after the checkpoint (never splitting
//! the events of one append, so a checkpoint always falls between commands), re-builds the
//! record of every dossier the batch touches from that dossier's stream (cut at the last seq the
//! batch names, so the record never runs ahead of the checkpoint), replaces the dossier's index
//! entries and indicator contributions, and writes all of it together with the new checkpoint as
//! ONE `sled::Batch` (`apply_batch` is atomic, also after a crash): the views never disagree with
//! the checkpoint.
//!
//! # How a dossier's stream is found
//!
//! The state of a dossier lives in its `d/` record, and its fold is re-run over its whole stream
//! 1..seq when one of its events arrives. The stream is taken, in this order of preference:
//!
//! - from the batch alone, when the dossier's first event in it is seq 1;
//! - from the fold cache, a bounded in-memory map of recently folded dossiers (their events
//!   1..n, the hash of event n and the record they gave, least recently used evicted first
//!   beyond [`FOLD_CACHE_EVENTS_MAX`] events), when the batch's events continue the cached
//!   prefix; the cached record is then also the old record, not decoded again;
//! - else from the store's `read_stream` (which re-checks the whole chain and the head).
//!
//! The first two rely on the hash each feed event carries being SHA-256 of its bytes (the feed
//! read recomputes it from disk; an event of the store's in-memory tail carries the hash its
//! writer computed and chain-checked before writing it) and on the chain link: every event taken from the batch must have the next seq, point
//! back (`prev_hash`) at the hash of the event before it (the genesis hash for seq 1) and carry
//! the first event's dossier code. An event that does not sends the dossier to `read_stream`,
//! which reports the damage as before. `verify` does not use this path. The cache holds what the
//! database holds at its checkpoint: it is filled only after a batch is written, cleared by
//! `rebuild` and whenever the checkpoint read at the start of a batch is not the one it was
//! filled at.
//!
//! The event read after a batch to see where its last append ends is kept and starts the next
//! batch, so no feed event is read twice.
//!
//! # Reading ahead
//!
//! A catch-up more than two batches behind (a rebuild, a restart after a while) reads the feed on
//! a second thread, which decodes and hash-checks the next batches while the calling thread folds
//! and writes the current one; they pass batches through a channel a few batches deep. The
//! reader cuts the batches where `apply_next` cuts them, except that its last batch ends at the
//! head the catch-up started from (the store's head falls between appends, so no append is
//! split). The folds and writes stay on the calling thread, one batch at a time, so the views
//! are those of one-batch-at-a-time folding. What came after the head is folded by
//! `apply_next`, which also takes over after a failed read: it reads again from the checkpoint
//! and reports the error where one-batch-at-a-time folding would.
//!
//! No fsync: projections are a cache of the store, rebuildable at any time with
//! [`Projections::rebuild`]. A crash may lose the last batches (the checkpoint goes back with
//! them, so they are simply applied again); it cannot leave views and checkpoint apart.
//!
//! On open, a database of another schema version, or one holding views without a checkpoint (a
//! rebuild interrupted half-way), is wiped and folded again from position 0.

use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use lienthong_engine::DossierId;
use lienthong_engine::store::chain::GENESIS_HASH;
use lienthong_engine::store::{self, EVENTS_PER_APPEND_MAX, EventStore, FEED_READ_MAX, Recorded};
use lienthong_proto::v1::{Event, event::Body};
use lienthong_workflow::{Catalog, Workflow};
use uuid::Uuid;

use crate::error::Error;
use crate::keys;
use crate::record::{Counters, DossierRecord, command_of};

/// Feed events folded per batch (one atomic write each) by [`Projections::catch_up`].
pub const BATCH_EVENTS_MAX: usize = 1_000;

/// Batches read ahead of the fold, at most, by [`Projections::catch_up`] when it is far behind.
const READ_AHEAD_BATCHES: usize = 4;

/// How far behind (in batches) a catch-up must be to read ahead on a second thread. A serving
/// engine's periodic catch-up (a quarter second of events) stays below it and folds on its own
/// thread: a reader started four times a second would only compete with the fold for the same
/// loaded cores.
const READ_AHEAD_MIN_LAG_BATCHES: u64 = 8;

/// Events of recently folded dossiers kept in memory between batches by default, so that a
/// batch continuing them does not read their streams again (see
/// [`Projections::set_fold_cache_events_max`]).
pub const FOLD_CACHE_EVENTS_MAX: usize = 20_000;

/// What the projections read: the feed, the streams, the head. Every [`EventStore`] is one;
/// tests may feed hand-written events through a small in-memory implementation.
pub trait FeedSource: Send + Sync + 'static {
    /// Up to `limit` events after `after_position`, in global order.
    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, store::Error>;
    /// One dossier's whole stream, seq 1..n.
    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, store::Error>;
    /// The position of the last durable event (0 when empty).
    fn last_position(&self) -> Result<u64, store::Error>;
    /// A content-addressed workflow definition text by its hash (what a dossier is pinned to);
    /// `None` when the source does not keep them (the catalog's version is used instead).
    fn definition(&self, _hash: &str) -> Result<Option<String>, store::Error> {
        Ok(None)
    }
}

impl<S: EventStore + ?Sized> FeedSource for S {
    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, store::Error> {
        EventStore::read_feed(self, after_position, limit)
    }

    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, store::Error> {
        EventStore::read_stream(self, dossier)
    }

    fn last_position(&self) -> Result<u64, store::Error> {
        EventStore::last_position(self)
    }

    fn definition(&self, hash: &str) -> Result<Option<String>, store::Error> {
        EventStore::definition(self, hash)
    }
}

/// One record of the database: key and value bytes.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// What a catch-up or rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The checkpoint before.
    pub from: u64,
    /// The checkpoint after.
    pub to: u64,
    /// Feed events folded.
    pub events: u64,
    /// Atomic batches written.
    pub batches: u64,
}

/// How far the views are behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lag {
    /// The last feed position folded into the views.
    pub checkpoint: u64,
    /// The store's last durable position.
    pub head: u64,
    /// `head - checkpoint`, in events.
    pub lag: u64,
}

/// The projections of one store. Cheap to share behind an `Arc`; its folds run one at a time
/// (each holds the fold cache's lock). sled lets only one handle open a database, and the fold
/// cache relies on that: it holds what this handle wrote (see the module docs).
pub struct Projections {
    /// The projections' own database (one tree, see [`keys`]).
    db: sled::Db,
    /// The event store whose feed is folded.
    store: Arc<dyn FeedSource>,
    /// Calendars (working time) and procedures (day lengths for averages).
    catalog: Arc<Catalog>,
    /// Pinned workflow definitions already parsed, by definition hash (`None`: not available).
    definitions: Mutex<BTreeMap<String, Option<Arc<Workflow>>>>,
    /// Recently folded dossiers (events, last hash, record) and the feed's look-ahead event;
    /// locked for the whole of a batch.
    fold_cache: Mutex<FoldCache>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections").finish_non_exhaustive()
    }
}

impl Projections {
    /// Opens (or creates) the projections database in `dir`, folding `store`'s feed with the
    /// calendars of `catalog`. Does not catch up: call [`Projections::catch_up`].
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub fn open(
        dir: &Path,
        store: Arc<dyn FeedSource>,
        catalog: Arc<Catalog>,
    ) -> Result<Projections, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Db(e.to_string()))?;
        let db = lienthong_engine::store::sled_store::open_sled_db(dir)?;
        let schema = db
            .get(keys::META_SCHEMA)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        let has_checkpoint = db.get(keys::META_CHECKPOINT)?.is_some();
        let has_views = db
            .iter()
            .keys()
            .any(|k| k.is_ok_and(|k| !k.starts_with(keys::META)));
        if schema != Some(keys::SCHEMA_VERSION) || (has_views && !has_checkpoint) {
            if schema.is_some() || has_views {
                tracing::warn!(
                    ?schema,
                    has_checkpoint,
                    "projections are of another schema or half rebuilt; folding again from 0"
                );
            }
            db.clear()?;
            db.insert(keys::META_SCHEMA, &keys::SCHEMA_VERSION.to_be_bytes())?;
            db.flush()?;
        }
        Ok(Projections {
            db,
            store,
            catalog,
            definitions: Mutex::new(BTreeMap::new()),
            fold_cache: Mutex::new(FoldCache::new(FOLD_CACHE_EVENTS_MAX)),
        })
    }

    /// Sets how many events of recently folded dossiers the fold keeps in memory (0: none, every
    /// touched stream is read from the store), evicting the least recently used beyond it.
    pub fn set_fold_cache_events_max(&self, events_max: usize) -> Result<(), Error> {
        let mut cache = self.lock_fold_cache()?;
        cache.events_max = events_max;
        cache.evict();
        cache.spent.clear();
        Ok(())
    }

    /// The loaded workflows.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn FeedSource> {
        &self.store
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The last feed position folded into the views (0: none).
    pub fn checkpoint(&self) -> Result<u64, Error> {
        match self.db.get(keys::META_CHECKPOINT)? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt {
                    key: keys::printable(keys::META_CHECKPOINT),
                    reason: "not 8 bytes".into(),
                }),
        }
    }

    /// Checkpoint, store head and the lag between them.
    pub fn lag(&self) -> Result<Lag, Error> {
        let checkpoint = self.checkpoint()?;
        let head = self.store.last_position()?;
        if checkpoint > head {
            return Err(Error::AheadOfStore { checkpoint, head });
        }
        Ok(Lag {
            checkpoint,
            head,
            lag: head - checkpoint,
        })
    }

    /// Folds everything new in the feed, in batches of [`BATCH_EVENTS_MAX`].
    pub fn catch_up(&self) -> Result<Progress, Error> {
        self.catch_up_in(BATCH_EVENTS_MAX)
    }

    /// Folds everything new in the feed, in batches of at most `batch_events_max` events.
    pub fn catch_up_in(&self, batch_events_max: usize) -> Result<Progress, Error> {
        let from = self.checkpoint()?;
        let mut progress = Progress {
            from,
            to: from,
            events: 0,
            batches: 0,
        };
        // A long way behind (a rebuild, a restart after a while): read ahead on a second thread.
        let head = self.store.last_position()?;
        let min_lag = READ_AHEAD_MIN_LAG_BATCHES.saturating_mul(batch_events_max as u64);
        if head.saturating_sub(from) > min_lag {
            let (events, batches) = self.fold_ahead(head, batch_events_max)?;
            progress.events += events;
            progress.batches += batches;
        }
        // What is left: the end the reader may have stopped short of, and what came meanwhile.
        loop {
            let n = self.apply_next(batch_events_max)?;
            if n == 0 {
                break;
            }
            progress.events += n;
            progress.batches += 1;
        }
        progress.to = self.checkpoint()?;
        Ok(progress)
    }

    /// Wipes the views and folds the whole feed again from position 0. Gives exactly the views
    /// an incremental fold gives (see the crate docs for why).
    #[tracing::instrument(skip_all)]
    pub fn rebuild(&self) -> Result<Progress, Error> {
        let mut cache = self.lock_fold_cache()?;
        cache.clear();
        cache.checkpoint = 0;
        // Checkpoint first: from here until the first batch, `open` sees views without a
        // checkpoint and wipes them, so an interrupted rebuild is never mistaken for a fold.
        self.db.remove(keys::META_CHECKPOINT)?;
        self.db.flush()?;
        self.db.clear()?;
        self.db
            .insert(keys::META_SCHEMA, &keys::SCHEMA_VERSION.to_be_bytes())?;
        self.db.flush()?;
        drop(cache);
        let progress = self.catch_up()?;
        self.db.flush()?;
        Ok(progress)
    }

    /// Writes sled's buffers out (not fsynced: see the module docs).
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// Every record of the database in key order, for comparisons and debugging.
    pub fn dump(&self) -> Result<Vec<KeyValue>, Error> {
        self.db
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// The record of one dossier, as of the checkpoint.
    pub fn record(&self, id: &Uuid) -> Result<Option<DossierRecord>, Error> {
        let key = keys::dossier_key(id);
        self.db.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// Folds the next batch of at most `events_max` feed events; returns how many (0: caught up).
    #[tracing::instrument(skip_all, fields(checkpoint))]
    pub fn apply_next(&self, events_max: usize) -> Result<u64, Error> {
        let mut cache = self.lock_fold_cache_at_checkpoint()?;
        let checkpoint = cache.checkpoint;
        tracing::Span::current().record("checkpoint", checkpoint);
        let head = self.store.last_position()?;
        if checkpoint > head {
            return Err(Error::AheadOfStore { checkpoint, head });
        }
        let feed = self.read_batch(&mut cache, checkpoint, events_max)?;
        let folded = self.fold(&mut cache, feed);
        cache.spent.clear();
        folded
    }

    /// Folds the feed from the checkpoint up to `head` with the reading done ahead on a second
    /// thread: while one batch is folded, the next ones are read, decoded and hash-checked (see
    /// [`read_ahead`]). The batches are cut as [`Projections::apply_next`] cuts them, the last
    /// one at `head`. Answers the events folded and the batches written; nothing when the
    /// checkpoint is already at `head` or past it (the caller's `apply_next` then says which).
    fn fold_ahead(&self, head: u64, events_max: usize) -> Result<(u64, u64), Error> {
        let mut cache = self.lock_fold_cache_at_checkpoint()?;
        let checkpoint = cache.checkpoint;
        if checkpoint >= head {
            // Another fold got there first (or the store went back: `apply_next` reads the head
            // again under the lock, and says so).
            return Ok((0, 0));
        }
        // The event kept from the last batch starts the reader's, so it is not read again.
        let first = cache.take_lookahead(checkpoint);
        let store = &*self.store;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel(READ_AHEAD_BATCHES);
            // The events the fold is done with go back to the reader, which frees them.
            let (spent_tx, spent_rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("projections-read-ahead".into())
                .spawn_scoped(s, move || {
                    read_ahead(store, checkpoint, first, head, events_max, &tx, &spent_rx)
                })
                .map_err(|e| Error::Db(format!("cannot start the feed reader: {e}")))?;
            let (mut events, mut batches) = (0, 0);
            // An error returns here, which drops `rx`: the reader's next send fails and it stops.
            for feed in rx {
                let folded = self.fold(&mut cache, feed);
                let _ = spent_tx.send(std::mem::take(&mut cache.spent));
                events += folded?;
                batches += 1;
            }
            Ok((events, batches))
        })
    }

    fn lock_fold_cache(&self) -> Result<std::sync::MutexGuard<'_, FoldCache>, Error> {
        self.fold_cache
            .lock()
            .map_err(|_| Error::Db("fold cache poisoned".into()))
    }

    /// The fold cache, locked, and in step with the database's checkpoint (`checkpoint` holds
    /// it): emptied when the database moved without this handle's folds (or a fold failed
    /// half-way), since what it holds may then not be what is stored.
    fn lock_fold_cache_at_checkpoint(&self) -> Result<std::sync::MutexGuard<'_, FoldCache>, Error> {
        let mut cache = self.lock_fold_cache()?;
        let checkpoint = self.checkpoint()?;
        if cache.checkpoint != checkpoint {
            cache.clear();
            cache.checkpoint = checkpoint;
        }
        Ok(cache)
    }

    /// Folds one batch read after the database's checkpoint (`cache.checkpoint`, which
    /// [`Projections::lock_fold_cache_at_checkpoint`] put in step) and writes it with its new
    /// checkpoint; answers its events.
    fn fold(&self, cache: &mut FoldCache, feed: Vec<Recorded>) -> Result<u64, Error> {
        if feed.is_empty() {
            return Ok(0);
        }
        let count = feed.len() as u64;
        let mut last = cache.checkpoint;
        let mut touched: BTreeMap<Uuid, Vec<Recorded>> = BTreeMap::new();
        for r in feed {
            let position = r.position();
            if position <= last {
                return Err(Error::Feed {
                    position,
                    reason: format!("positions must increase (after {last})"),
                });
            }
            last = position;
            let id = r
                .event
                .envelope
                .as_ref()
                .and_then(|e| e.dossier_id.parse::<DossierId>().ok())
                .ok_or_else(|| Error::Feed {
                    position,
                    reason: "event without a valid dossier id".into(),
                })?;
            touched.entry(id.0).or_default().push(r);
        }
        let mut overlay = Overlay::new(&self.db);
        // The batch's changes to the indicator counters, summed over its dossiers and applied
        // once per counter at the end.
        let mut deltas: BTreeMap<Vec<u8>, Counters> = BTreeMap::new();
        let mut folded = Vec::with_capacity(touched.len());
        for (id, batch) in touched {
            let seq = batch.iter().map(Recorded::seq).max().unwrap_or(0);
            let cached = cache.take(&id);
            let (events, last_hash, old) = match continue_stream(batch, cached) {
                Some(known) => known,
                None => self.stream_until(id, seq, last)?,
            };
            let workflow = self.pinned_workflow(&events)?;
            let new = DossierRecord::build_with(id, &events, &self.catalog, workflow.as_deref());
            let key = keys::dossier_key(&id);
            let old: Option<DossierRecord> = match old {
                Some(old) => Some(old),
                None => overlay.get(&key)?.map(|v| decode(&key, &v)).transpose()?,
            };
            if let Some(old) = &old
                && old.seq > new.seq
            {
                return Err(Error::Feed {
                    position: last,
                    reason: format!(
                        "dossier {id}: record at seq {} would go back to {}",
                        old.seq, new.seq
                    ),
                });
            }
            replace_entries(&mut overlay, old.as_ref(), &new)?;
            add_counter_deltas(&mut deltas, old.as_ref(), &new);
            overlay.put(key, encode(&new)?);
            folded.push((
                id,
                Folded {
                    events,
                    last_hash,
                    record: new,
                },
            ));
        }
        apply_counter_deltas(&mut overlay, deltas)?;
        overlay.put(keys::META_CHECKPOINT.to_vec(), last.to_be_bytes().to_vec());
        overlay.commit()?;
        cache.checkpoint = last;
        for (id, f) in folded {
            cache.put(id, f);
        }
        Ok(count)
    }

    /// The next batch after `checkpoint`, cut by [`cut`]: `events_max` events (at least 1, at
    /// most [`FEED_READ_MAX`]), extended while the next event comes from the same append, so
    /// that a batch never splits one append (bounded by the events one append may hold). The
    /// event read after the batch to see where its append ends is kept in `cache` and starts
    /// the next batch, instead of being read again.
    fn read_batch(
        &self,
        cache: &mut FoldCache,
        checkpoint: u64,
        events_max: usize,
    ) -> Result<Vec<Recorded>, Error> {
        let events_max = events_max.clamp(1, FEED_READ_MAX);
        let mut pending: VecDeque<Recorded> =
            cache.take_lookahead(checkpoint).into_iter().collect();
        // One more than the batch, when the store allows it (the look-ahead); then one at a time
        // while the batch's last append may go on. An empty read is the end of the feed.
        let mut want = events_max + 1 - pending.len();
        let mut ended = false;
        let n = loop {
            if let Some(n) = cut(&pending, events_max, ended) {
                break n;
            }
            if ended {
                break 0;
            }
            let after = pending.back().map_or(checkpoint, Recorded::position);
            let read = self.store.read_feed(after, want)?;
            ended = read.is_empty();
            pending.extend(read);
            want = 1;
        };
        let batch: Vec<Recorded> = pending.drain(..n).collect();
        if let (Some(last), Some(next)) = (batch.last(), pending.pop_front()) {
            cache.lookahead = Some((last.position(), next));
        }
        Ok(batch)
    }

    /// `id`'s stream read from the store, cut at `seq` (the last the batch names), with the last
    /// event's hash; the old record is not known (`None`).
    fn stream_until(&self, id: Uuid, seq: u64, position: u64) -> Result<KnownStream, Error> {
        let mut last_hash = Vec::new();
        let events: Vec<Event> = self
            .store
            .read_stream(&DossierId(id))?
            .into_iter()
            .take_while(|r| r.seq() <= seq)
            .map(|r| {
                last_hash = r.sealed.hash;
                r.event
            })
            .collect();
        let folded = events
            .last()
            .and_then(|e| e.envelope.as_ref())
            .map_or(0, |e| e.seq);
        if folded != seq || events.len() as u64 != seq {
            return Err(Error::Feed {
                position,
                reason: format!(
                    "dossier {id}: the feed names seq {seq} but its stream has {folded}"
                ),
            });
        }
        Ok((events, last_hash, None))
    }

    /// The workflow a dossier is pinned to, as the engine's runtime finds it: the store's
    /// content-addressed definition (parsed against the catalog), else the catalog's version of
    /// the procedure when its hash is the pinned one, else the catalog's version all the same
    /// (the best available; a store keeps every pinned definition, so only feeds without one
    /// get here).
    fn pinned_workflow(&self, events: &[Event]) -> Result<Option<Arc<Workflow>>, Error> {
        let Some(r) = events.iter().find_map(|e| match &e.body {
            Some(Body::Received(r)) => Some(r),
            _ => None,
        }) else {
            return Ok(None);
        };
        let catalog_version = self.catalog.procedure(&r.procedure_code);
        if let Some(wf) = catalog_version.filter(|wf| wf.hash == r.definition_hash) {
            return Ok(Some(wf.clone()));
        }
        let hash = &r.definition_hash;
        let cached = self
            .definitions
            .lock()
            .map_err(|_| Error::Db("definition cache poisoned".into()))?
            .get(hash)
            .cloned();
        let pinned = match cached {
            Some(p) => p,
            None => {
                let parsed = self.store.definition(hash)?.and_then(|text| {
                    self.catalog
                        .parse_workflow(&text, &format!("store:{hash}"))
                        .ok()
                        .map(Arc::new)
                });
                self.definitions
                    .lock()
                    .map_err(|_| Error::Db("definition cache poisoned".into()))?
                    .insert(hash.clone(), parsed.clone());
                parsed
            }
        };
        Ok(pinned.or_else(|| catalog_version.cloned()))
    }
}

/// Replaces `old`'s index entries (`o/`, `a/`, `r/`, `k/`) with `new`'s. Only the keys of the
/// old entries are needed: their values are not encoded.
fn replace_entries(
    overlay: &mut Overlay<'_>,
    old: Option<&DossierRecord>,
    new: &DossierRecord,
) -> Result<(), Error> {
    let new_entries = new.entries().map_err(encode_failed)?;
    for k in old.map(DossierRecord::entry_keys).unwrap_or_default() {
        if !new_entries.contains_key(&k) {
            overlay.delete(k);
        }
    }
    for (k, v) in new_entries {
        overlay.put(k, v);
    }
    Ok(())
}

/// Adds to `deltas` what replacing `old` with `new` changes in the indicator counters: minus
/// exactly what `old` added when it was built (stored in its `d/` record), plus what `new` adds.
fn add_counter_deltas(
    deltas: &mut BTreeMap<Vec<u8>, Counters>,
    old: Option<&DossierRecord>,
    new: &DossierRecord,
) {
    if let Some(old) = old {
        for (k, c) in old.counters() {
            deltas.entry(k).or_default().add(&c, -1);
        }
    }
    for (k, c) in new.counters() {
        deltas.entry(k).or_default().add(&c, 1);
    }
}

/// Applies a batch's summed counter changes: one read and one write (or delete, at zero) per
/// counter that changed. A counter that would go below zero is damage, reported; the check sees
/// the batch's net change to each counter, so it does not depend on the order of the dossiers.
fn apply_counter_deltas(
    overlay: &mut Overlay<'_>,
    deltas: BTreeMap<Vec<u8>, Counters>,
) -> Result<(), Error> {
    for (k, delta) in deltas {
        if delta.is_zero() {
            continue;
        }
        let mut current: Counters = match overlay.get(&k)? {
            Some(v) => decode(&k, &v)?,
            None => Counters::default(),
        };
        current.add(&delta, 1);
        if !current.is_valid() {
            return Err(Error::Corrupt {
                key: keys::printable(&k),
                reason: "a counter would go below zero".into(),
            });
        }
        if current.is_zero() {
            overlay.delete(k);
        } else {
            overlay.put(k, encode(&current)?);
        }
    }
    Ok(())
}

/// The reading half of [`Projections::fold_ahead`]: reads the feed after `after` (`first`
/// being the event there when the last fold kept it) up to `head`, in reads of a batch's size,
/// and sends it in batches cut as [`Projections::apply_next`] cuts them (see [`cut`]), each as
/// soon as it can be cut; the last one ends at `head`. Stops at `head`, at the first failed read,
/// or when the fold stops listening. A failed read is not sent: `apply_next`, which carries on
/// after the read-ahead, reads from where this stopped and reports the error where
/// one-batch-at-a-time folding would. Between reads it frees the events the fold sends back
/// through `spent`.
fn read_ahead(
    store: &dyn FeedSource,
    mut after: u64,
    first: Option<Recorded>,
    head: u64,
    events_max: usize,
    tx: &mpsc::SyncSender<Vec<Recorded>>,
    spent: &mpsc::Receiver<Vec<Vec<Event>>>,
) {
    let events_max = events_max.clamp(1, FEED_READ_MAX);
    let mut pending: VecDeque<Recorded> = VecDeque::new();
    if let Some(r) = first {
        after = r.position();
        pending.push_back(r);
    }
    loop {
        spent.try_iter().for_each(drop);
        if let Some(n) = cut(&pending, events_max, after >= head) {
            if tx.send(pending.drain(..n).collect()).is_err() {
                return;
            }
            continue;
        }
        if after >= head {
            return;
        }
        // A batch's worth at a time, so that the fold never waits long for the next one.
        let want = (events_max + 1).min(usize::try_from(head - after).unwrap_or(usize::MAX));
        let Ok(mut read) = store.read_feed(after, want) else {
            return;
        };
        // A feed whose positions have gaps (a bus mirror) may answer past `head`.
        let past_head = read.last().is_some_and(|r| r.position() > head);
        read.retain(|r| r.position() <= head);
        match read.last() {
            Some(last) if !past_head => after = last.position(),
            // Nothing more up to the head (or nothing where the head said there was: the
            // fold's own loop goes on from wherever this stopped, and reports what it finds).
            _ => after = head,
        }
        pending.extend(read);
    }
}

/// Where the next batch of `pending` ends, for [`Projections::read_batch`] and [`read_ahead`]
/// alike (so both cut the same batches): `events_max` events, extended by up to [`EVENTS_PER_APPEND_MAX`] while the next event comes
/// from the same append; at `head` (nothing more will come), the batch may end with what is
/// pending. `None` while the end depends on events not read yet, or when nothing is pending.
fn cut(pending: &VecDeque<Recorded>, events_max: usize, at_head: bool) -> Option<usize> {
    if pending.is_empty() {
        return None;
    }
    if pending.len() <= events_max {
        return at_head.then_some(pending.len());
    }
    let mut end = events_max;
    for _ in 0..EVENTS_PER_APPEND_MAX {
        match pending.get(end) {
            Some(next) if same_append(&pending[end - 1], next) => end += 1,
            Some(_) => return Some(end),
            None => return at_head.then_some(end),
        }
    }
    Some(end)
}

/// Whether two consecutive feed events were appended by the same command.
fn same_append(a: &Recorded, b: &Recorded) -> bool {
    let dossier = |r: &Recorded| r.event.envelope.as_ref().map(|e| e.dossier_id.clone());
    dossier(a) == dossier(b)
        && b.seq() == a.seq() + 1
        && command_of(&a.event) == command_of(&b.event)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, Error> {
    crate::record::from_bytes(v).map_err(|e| Error::Corrupt {
        key: keys::printable(key),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    crate::record::to_bytes(v).map_err(encode_failed)
}

fn encode_failed(e: postcard::Error) -> Error {
    Error::Db(format!("cannot encode a projection record: {e}"))
}

/// The writes of one batch, readable before they are applied.
struct Overlay<'a> {
    /// The database underneath.
    db: &'a sled::Db,
    /// Pending writes: `Some` put, `None` delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    fn new(db: &'a sled::Db) -> Self {
        Overlay {
            db,
            writes: BTreeMap::new(),
        }
    }

    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.writes.get(k) {
            Some(w) => Ok(w.clone()),
            None => Ok(self.db.get(k)?.map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    fn delete(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// Applies every write as one atomic batch.
    fn commit(self) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (k, w) in self.writes {
            match w {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }
}

/// A dossier's stream as far as the batch goes, the last event's hash, and the dossier's
/// record as stored before the batch when it is known without reading it (`None`: read it).
type KnownStream = (Vec<Event>, Vec<u8>, Option<DossierRecord>);

/// The stream of a dossier up to the batch's last event, without reading it from the store: the
/// batch's own events when they start at seq 1, else the cached prefix they continue. Each event
/// must have the next seq, point back at its predecessor's hash (`prev_hash`: the genesis hash
/// for seq 1, else the hash the feed read checked against the predecessor's bytes) and carry the
/// first event's dossier code, as `read_stream` would check. `None` when any of that does not
/// hold or the cache has not got the prefix: the caller then reads the stream from the store.
fn continue_stream(batch: Vec<Recorded>, cached: Option<Folded>) -> Option<KnownStream> {
    let first = batch.first()?.seq();
    let (mut events, mut hash, old) = if first == 1 {
        (Vec::with_capacity(batch.len()), GENESIS_HASH.to_vec(), None)
    } else {
        let c = cached.filter(|c| c.events.len() as u64 + 1 == first)?;
        let old = (c.record.seq == c.events.len() as u64).then_some(c.record);
        (c.events, c.last_hash, old)
    };
    {
        let code = &events
            .first()
            .unwrap_or(&batch[0].event)
            .envelope
            .as_ref()?
            .dossier_code;
        let mut prev: &[u8] = &hash;
        for (expected, r) in (events.len() as u64 + 1..).zip(&batch) {
            let env = r.event.envelope.as_ref()?;
            if env.seq != expected || env.prev_hash != prev || env.dossier_code != *code {
                return None;
            }
            prev = &r.sealed.hash;
        }
    }
    events.reserve(batch.len());
    for r in batch {
        hash = r.sealed.hash;
        events.push(r.event);
    }
    Some((events, hash, old))
}

/// A folded dossier kept between batches: its events 1..=n, the hash of event n, and the record
/// they gave (exactly what its `d/` record holds, as of the cache's checkpoint).
struct Folded {
    events: Vec<Event>,
    last_hash: Vec<u8>,
    record: DossierRecord,
}

/// The recently folded dossiers, least recently used evicted first once they hold more than
/// `events_max` events; and the feed event read after the last batch.
struct FoldCache {
    /// The checkpoint the entries agree with: they are what the database holds at it.
    checkpoint: u64,
    /// Entries by dossier, with their last use.
    entries: HashMap<Uuid, (Folded, u64)>,
    /// Dossiers by last use, oldest first.
    by_use: BTreeMap<u64, Uuid>,
    /// Uses so far (the clock of `by_use`).
    uses: u64,
    /// Events held by the entries.
    events: usize,
    /// Events held at most.
    events_max: usize,
    /// The first event after a position, read past the end of the last batch.
    lookahead: Option<(u64, Recorded)>,
    /// The events of entries evicted (or too long to keep) since the caller last took them: the
    /// caller frees them where it likes. In a read-ahead, the reader decoded most of them and
    /// frees them more cheaply than the folding thread (an allocator frees fastest on the thread
    /// that allocated).
    spent: Vec<Vec<Event>>,
}

impl FoldCache {
    fn new(events_max: usize) -> Self {
        FoldCache {
            checkpoint: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            uses: 0,
            events: 0,
            events_max,
            lookahead: None,
            spent: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_use.clear();
        self.events = 0;
        self.lookahead = None;
        self.spent.clear();
    }

    /// The kept look-ahead event, when it is the one after `checkpoint`.
    fn take_lookahead(&mut self, checkpoint: u64) -> Option<Recorded> {
        match self.lookahead.take() {
            Some((after, r)) if after == checkpoint => Some(r),
            _ => None,
        }
    }

    /// Removes and returns `id`'s entry.
    fn take(&mut self, id: &Uuid) -> Option<Folded> {
        let (f, used) = self.entries.remove(id)?;
        self.by_use.remove(&used);
        self.events -= f.events.len();
        Some(f)
    }

    /// Keeps `f` as `id`'s entry (the most recently used), evicting the least recently used
    /// entries beyond `events_max`.
    fn put(&mut self, id: Uuid, f: Folded) {
        self.take(&id);
        if f.events.len() > self.events_max {
            self.spent.push(f.events);
            return;
        }
        self.uses += 1;
        self.events += f.events.len();
        self.by_use.insert(self.uses, id);
        self.entries.insert(id, (f, self.uses));
        self.evict();
    }

    /// Drops the least recently used entries until at most `events_max` events are held.
    fn evict(&mut self) {
        while self.events > self.events_max {
            let Some((_, id)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((f, _)) = self.entries.remove(&id) {
                self.events -= f.events.len();
                self.spent.push(f.events);
            }
        }
    }
}
