//! The checkpointed fold of the global feed into the projections database.
//!
//! [`Projections::apply_next`] reads one batch of the feed after the checkpoint (never splitting
//! the events of one append, so a checkpoint always falls between commands), re-builds the
//! record of every dossier the batch touches from that dossier's stream (cut at the last seq the
//! batch names, so the record never runs ahead of the checkpoint), replaces the dossier's index
//! entries and indicator contributions, and writes all of it together with the new checkpoint as
//! ONE `sled::Batch` (`apply_batch` is atomic, also after a crash): the views never disagree with
//! the checkpoint. Nothing is held in memory between batches: the state of a dossier lives in its
//! `d/` record, and its fold is re-run from its stream when one of its events arrives (streams are
//! short; the feed batch bounds the work).
//!
//! No fsync: projections are a cache of the store, rebuildable at any time with
//! [`Projections::rebuild`]. A crash may lose the last batches (the checkpoint goes back with
//! them, so they are simply applied again); it cannot leave views and checkpoint apart.
//!
//! On open, a database of another schema version, or one holding views without a checkpoint (a
//! rebuild interrupted half-way), is wiped and folded again from position 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use lienthong_engine::DossierId;
use lienthong_engine::store::{self, EVENTS_PER_APPEND_MAX, EventStore, FEED_READ_MAX, Recorded};
use lienthong_proto::v1::{Event, event::Body};
use lienthong_workflow::{Catalog, Workflow};
use uuid::Uuid;

use crate::error::Error;
use crate::keys;
use crate::record::{Counters, DossierRecord, command_of};

/// Feed events folded per batch (one atomic write each) by [`Projections::catch_up`].
pub const BATCH_EVENTS_MAX: usize = 1_000;

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

/// The projections of one store. Cheap to share behind an `Arc`; one folder at a time (the
/// `catch_up` of two handles on the same database would only repeat work, never corrupt it,
/// because each batch rewrites whole records from the streams).
pub struct Projections {
    /// The projections' own database (one tree, see [`keys`]).
    db: sled::Db,
    /// The event store whose feed is folded.
    store: Arc<dyn FeedSource>,
    /// Calendars (working time) and procedures (day lengths for averages).
    catalog: Arc<Catalog>,
    /// Pinned workflow definitions already parsed, by definition hash (`None`: not available).
    definitions: Mutex<BTreeMap<String, Option<Arc<Workflow>>>>,
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
        })
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
        // Checkpoint first: from here until the first batch, `open` sees views without a
        // checkpoint and wipes them, so an interrupted rebuild is never mistaken for a fold.
        self.db.remove(keys::META_CHECKPOINT)?;
        self.db.flush()?;
        self.db.clear()?;
        self.db
            .insert(keys::META_SCHEMA, &keys::SCHEMA_VERSION.to_be_bytes())?;
        self.db.flush()?;
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
        let checkpoint = self.checkpoint()?;
        tracing::Span::current().record("checkpoint", checkpoint);
        let head = self.store.last_position()?;
        if checkpoint > head {
            return Err(Error::AheadOfStore { checkpoint, head });
        }
        let mut feed = self
            .store
            .read_feed(checkpoint, events_max.clamp(1, FEED_READ_MAX))?;
        // A batch never splits one append: extend it while the next event comes from the same
        // command (bounded by the events one append may hold).
        for _ in 0..EVENTS_PER_APPEND_MAX {
            let Some(last) = feed.last() else {
                return Ok(0);
            };
            let next = self.store.read_feed(last.position(), 1)?;
            match next.into_iter().next() {
                Some(n) if same_append(last, &n) => feed.push(n),
                _ => break,
            }
        }
        let mut last = checkpoint;
        let mut touched: BTreeMap<Uuid, u64> = BTreeMap::new();
        for r in &feed {
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
            let seq = touched.entry(id.0).or_default();
            *seq = (*seq).max(r.seq());
        }
        let mut overlay = Overlay::new(&self.db);
        for (id, seq) in touched {
            let events: Vec<Event> = self
                .store
                .read_stream(&DossierId(id))?
                .into_iter()
                .take_while(|r| r.seq() <= seq)
                .map(|r| r.event)
                .collect();
            let folded = events
                .last()
                .and_then(|e| e.envelope.as_ref())
                .map_or(0, |e| e.seq);
            if folded != seq || events.len() as u64 != seq {
                return Err(Error::Feed {
                    position: last,
                    reason: format!(
                        "dossier {id}: the feed names seq {seq} but its stream has {folded}"
                    ),
                });
            }
            let workflow = self.pinned_workflow(&events)?;
            let new = DossierRecord::build_with(id, &events, &self.catalog, workflow.as_deref());
            let key = keys::dossier_key(&id);
            let old: Option<DossierRecord> =
                overlay.get(&key)?.map(|v| decode(&key, &v)).transpose()?;
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
            self.replace(&mut overlay, old.as_ref(), &new)?;
            overlay.put(key, encode(&new)?);
        }
        overlay.put(keys::META_CHECKPOINT.to_vec(), last.to_be_bytes().to_vec());
        overlay.commit()?;
        Ok(feed.len() as u64)
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

    /// Replaces `old`'s index entries and counter contributions with `new`'s.
    fn replace(
        &self,
        overlay: &mut Overlay<'_>,
        old: Option<&DossierRecord>,
        new: &DossierRecord,
    ) -> Result<(), Error> {
        let json =
            |e: serde_json::Error| Error::Db(format!("cannot encode a projection record: {e}"));
        let old_entries = old.map(DossierRecord::entries).transpose().map_err(json)?;
        let new_entries = new.entries().map_err(json)?;
        for k in old_entries.into_iter().flat_map(BTreeMap::into_keys) {
            if !new_entries.contains_key(&k) {
                overlay.delete(k);
            }
        }
        for (k, v) in new_entries {
            overlay.put(k, v);
        }
        let mut deltas: BTreeMap<Vec<u8>, Counters> = BTreeMap::new();
        if let Some(old) = old {
            // Exactly what it added when it was built (stored in its `d/` record).
            for (k, c) in old.counters() {
                deltas.entry(k).or_default().add(&c, -1);
            }
        }
        for (k, c) in new.counters() {
            deltas.entry(k).or_default().add(&c, 1);
        }
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
}

/// Whether two consecutive feed events were appended by the same command.
fn same_append(a: &Recorded, b: &Recorded) -> bool {
    let dossier = |r: &Recorded| r.event.envelope.as_ref().map(|e| e.dossier_id.clone());
    dossier(a) == dossier(b)
        && b.seq() == a.seq() + 1
        && command_of(&a.event) == command_of(&b.event)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(v).map_err(|e| Error::Corrupt {
        key: keys::printable(key),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Db(format!("cannot encode a projection record: {e}")))
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
