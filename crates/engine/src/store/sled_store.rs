//! [`SledStore`]: the [`EventStore`] on sled 0.34.7.
//!
//! # Layout and atomicity
//! One sled tree (the default one) holds everything, with a two-byte prefix per kind of record
//! ([`keys`] has the table). A group commit is ONE `sled::Batch` applied with `apply_batch`,
//! which sled 0.34 makes atomic for readers (it holds its global write lock) and for crash
//! recovery (the batch is sealed in the log as one unit: recovery replays all of it or none).
//! Multi-tree transactions would also be atomic, but they retry on conflict, cost more, and in
//! 0.34 take the same global lock anyway; with a single writer there is nothing to retry, so
//! one tree and one batch is simpler and does the same. Corollary: keep everything an append
//! must change atomically (events, feed, head, code, counter, idempotency, definitions, timers) in
//! this one tree.
//!
//! # Durability
//! sled's `flush()` is not enough on Linux (it ends in `sync_file_range`, see `store/sync.rs`),
//! so every group commit is: apply the batch, `flush()`, fdatasync sled's files, and only then
//! advance the durable position and answer. The writer thread applies; a sync thread beside it
//! flushes, fsyncs and answers, while the writer applies the next group. See `store/writer.rs`
//! for the group commit and the poisoning after a failed flush.
//!
//! # Visibility
//! Readers never see an event before it is durable: the sync thread advances `durable` (the last
//! durable global position) after the fsync, and every read filters by it (events, feed, heads,
//! codes and idempotency records carry or lead to a position). A write that sled applied but
//! that is not yet fsynced (or whose fsync failed) stays invisible.
//!
//! # Damage
//! sled 0.34 has open reports of corruption after crashes (#1533, #1527, #1509). Nothing read
//! from sled is trusted: `read_stream` re-checks the chain and the head, `read_feed` re-hashes
//! each event it reads from sled, and [`EventStore::verify`] recomputes everything and names what
//! is broken (dossier and seq, feed position, or key). A broken invariant is an
//! [`Error::Corrupt`], never a panic. The feed's last
//! [`RECENT_FEED_EVENTS`](super::RECENT_FEED_EVENTS) positions written since open are answered
//! from the store's memory instead (see `store/recent.rs`): those are the events the writer
//! stamped, checked (`chain::check_envelope`) and sealed before writing them, not bytes read
//! back.
//!
//! # Open and close
//! `open` checks the schema version (a directory of another version is [`Error::Schema`]),
//! finds the last position from the last `f/` key (no replay of chains), and starts the writer
//! (which starts its sync thread). `close` (or drop) closes the queue, lets the writer and its
//! sync thread answer everything queued, and joins them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lienthong_proto::v1::Event;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::chain::{self, Break, ChainError, StreamCheck, Verifier};
use super::keys::{self, FeedRef, HeadValue, IdemValue};
use super::recent::Recent;
use super::sync::Syncer;
use super::writer::{Pending, Space, Writer, decode_run, printable, read_head};
use super::{
    AppendRequest, Appended, Corruption, Error, EventStore, FEED_READ_MAX, Head, IdempotencyRecord,
    Recorded, TIMERS_READ_MAX, Timer, TimerOp, VerifyReport,
};
use crate::ids::{DossierCode, DossierId};

/// The on-disk schema this build reads and writes (the key layout of [`keys`]).
pub const SCHEMA_VERSION: u32 = 2;
/// Appends queued for the writer before [`Error::Overloaded`].
pub const APPEND_QUEUE_CAPACITY: usize = 4096;
/// Requests written and fsynced together at most, so that one group's latency stays bounded.
pub const GROUP_COMMIT_MAX_REQUESTS: usize = 256;
/// Bytes of keys and values in one group commit, about (the request that crosses it is the
/// group's last), so that one batch's memory and write time stay bounded.
pub const GROUP_COMMIT_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Free space kept in reserve on the data directory's file system by default: a group is
/// refused ([`Error::DiskFull`]) rather than written when less is available, so that sled never
/// meets a full disk mid-write (which would poison the store until a restart). Well above
/// [`GROUP_COMMIT_BYTES_MAX`], since sled writes a group's pages more than once.
pub const DISK_FREE_BYTES_MIN_DEFAULT: u64 = 64 * 1024 * 1024;

/// What the writer has done since open. All counts are since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Appends made durable.
    pub appends: u64,
    /// Appends refused (conflict, duplicate key, invalid, limit ...).
    pub rejected: u64,
    /// Events made durable.
    pub events: u64,
    /// Group commits (each one sled batch).
    pub groups: u64,
    /// flush + fdatasync rounds: one per group commit, or fewer, since one round covers every
    /// group applied while the one before it was being synced.
    pub fsyncs: u64,
    /// Most appends made durable by one group.
    pub largest_group: u64,
}

/// Counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) groups: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) largest_group: AtomicU64,
}

/// State shared by the handle (readers) and the writer thread.
pub(crate) struct Shared {
    /// The database (one tree).
    pub(crate) db: sled::Db,
    /// Global position of the last durable event: what readers may see.
    pub(crate) durable: AtomicU64,
    /// Why the store refuses appends, once an apply, flush or fsync failed (or the sync thread
    /// stopped).
    poison: Mutex<Option<String>>,
    /// Writer statistics.
    pub(crate) stats: Counters,
    /// The feed's most recent durable events, put there by the sync thread before it advances
    /// `durable` (see [`super::recent`]).
    pub(crate) recent: RwLock<Recent>,
}

impl Shared {
    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.poison.lock().clone()
    }

    pub(crate) fn poison(&self, reason: String) {
        self.poison.lock().get_or_insert(reason);
    }
}

/// Maps a sled error: I/O stays I/O, sled's corruption report is corruption.
pub(crate) fn backend(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::Io(io),
        e @ sled::Error::Corruption { .. } => Corruption::Backend(e.to_string()).into(),
        e => Error::Backend(e.to_string()),
    }
}

/// How long `open` waits for another `sled::Db` on the same directory to let go of its lock.
/// sled 0.34 releases the data file only when its background threads finish, a little after
/// the `Db` is dropped, so reopening in the same process (tests, restarts of an embedded
/// engine) can find it still locked for a moment.
pub const OPEN_LOCK_WAIT_MS_MAX: u64 = 5_000;

/// Opens sled in `dir`, waiting up to [`OPEN_LOCK_WAIT_MS_MAX`] for its lock: sled 0.34 keeps its
/// file lock briefly after a `Db` is dropped, so reopening at once would fail. Shared with every
/// other sled database of the project (the projections).
pub fn open_sled_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + Duration::from_millis(OPEN_LOCK_WAIT_MS_MAX);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            // sled 0.34 reports a held lock only by this message (`config.rs`, `try_lock`).
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The feed group holding `position`, if the feed has one there: the last group key at or
/// before it, with its value (whether the group reaches `position` is the caller's to check).
fn feed_group_at(db: &sled::Db, position: u64) -> Result<Option<(sled::IVec, sled::IVec)>, Error> {
    db.range(keys::FEED.to_vec()..=keys::feed_key(position))
        .next_back()
        .transpose()
        .map_err(backend)
}

/// The event store on sled. See the module docs.
pub struct SledStore {
    /// Database and counters, shared with the writer.
    shared: Arc<Shared>,
    /// The writer's queue; `None` once closed.
    queue: Mutex<Option<SyncSender<Pending>>>,
    /// The writer thread, joined on close.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("durable_position", &self.durable())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the store in `dir`, creating it if missing, keeping
    /// [`DISK_FREE_BYTES_MIN_DEFAULT`] free.
    pub fn open(dir: &Path) -> Result<SledStore, Error> {
        Self::open_with(dir, DISK_FREE_BYTES_MIN_DEFAULT)
    }

    /// Opens the store in `dir`, creating it if missing. A group of appends is refused with
    /// [`Error::DiskFull`] while the file system has less than `disk_free_bytes_min` available
    /// (0: never refused; a full disk then poisons the store until it is reopened).
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub fn open_with(dir: &Path, disk_free_bytes_min: u64) -> Result<SledStore, Error> {
        std::fs::create_dir_all(dir)?;
        let db = open_sled_db(dir).map_err(backend)?;
        match db.get(keys::META_SCHEMA).map_err(backend)? {
            Some(v) => {
                let found = keys::schema_of(&v);
                if found != SCHEMA_VERSION {
                    return Err(Error::Schema {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                if db.iter().next().is_some() {
                    return Err(Error::Schema {
                        found: 0,
                        supported: SCHEMA_VERSION,
                    });
                }
                db.insert(keys::META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(backend)?;
                db.flush().map_err(backend)?;
            }
        }
        let syncer = Syncer::open(dir)?;
        let last_position = match db.scan_prefix(keys::FEED).next_back() {
            None => 0,
            Some(entry) => {
                let (k, v) = entry.map_err(backend)?;
                let damaged = || Corruption::Record {
                    key: printable(&k),
                    reason: "not a feed group".into(),
                };
                let first = keys::parse_feed_key(&k).ok_or_else(damaged)?;
                first + keys::feed_group_len(&v).ok_or_else(damaged)? - 1
            }
        };
        let shared = Arc::new(Shared {
            db,
            durable: AtomicU64::new(last_position),
            poison: Mutex::new(None),
            stats: Counters::default(),
            recent: RwLock::new(Recent::default()),
        });
        let (queue, rx) = mpsc::sync_channel(APPEND_QUEUE_CAPACITY);
        let space = Space {
            dir: dir.to_path_buf(),
            free_bytes_min: disk_free_bytes_min,
        };
        let writer = Writer::new(shared.clone(), last_position, space);
        let handle = std::thread::Builder::new()
            .name("lienthong-store-writer".into())
            .spawn(move || writer.run(rx, syncer))?;
        tracing::info!(last_position, "event store open");
        Ok(SledStore {
            shared,
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Stops taking appends, lets the writer answer everything queued, and joins it. Later
    /// appends get [`Error::Closed`]; reads keep working. Idempotent.
    pub fn close(&self) -> Result<(), Error> {
        drop(self.queue.lock().take());
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            handle
                .join()
                .map_err(|_| Error::Backend("the store writer thread panicked".into()))?;
            self.shared.db.flush().map_err(backend)?;
        }
        Ok(())
    }

    /// Why the store refuses every append, if a write failed (see [`Error::Poisoned`]): only a
    /// reopen recovers, so a server stops on it and lets its supervisor restart it.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poison_reason()
    }

    /// What the writer has done since open.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            appends: c.appends.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            largest_group: c.largest_group.load(Ordering::Relaxed),
        }
    }

    fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Hands a write to the writer thread, or answers it at once when the queue is closed or full.
    fn enqueue(&self, pending: Pending) {
        let queue = self.queue.lock();
        let Some(queue) = queue.as_ref() else {
            pending.fail(Error::Closed);
            return;
        };
        match queue.try_send(pending) {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => p.fail(Error::Overloaded {
                queued_max: APPEND_QUEUE_CAPACITY,
            }),
            Err(TrySendError::Disconnected(p)) => p.fail(Error::Closed),
        }
    }

    fn db(&self) -> &sled::Db {
        &self.shared.db
    }

    /// The visible stream of `dossier`: chain checked, and checked against the stored head.
    fn checked_stream(&self, dossier: &DossierId, durable: u64) -> Result<Vec<Recorded>, Error> {
        let head = read_head(self.db(), dossier)?;
        let mut check = StreamCheck::new(*dossier);
        let mut out = Vec::new();
        let mut last_position = 0;
        'runs: for entry in self.db().scan_prefix(keys::stream_prefix(dossier)) {
            let (k, v) = entry.map_err(backend)?;
            let expected = check.next_seq();
            let broken = |what: Break| {
                Error::Corrupt(Corruption::Chain(ChainError {
                    dossier: *dossier,
                    seq: expected,
                    what,
                }))
            };
            let Some((_, seq)) = keys::parse_stream_key(&k) else {
                return Err(Corruption::Record {
                    key: printable(&k),
                    reason: "not an event key".into(),
                }
                .into());
            };
            if seq != expected {
                return Err(broken(Break::SeqGap { found: seq }));
            }
            let run = decode_run(&v).map_err(|e| {
                broken(Break::Undecodable {
                    reason: e.to_string(),
                })
            })?;
            for sealed in run {
                let Some(event) = check.next(&sealed) else {
                    return Err(match check.broken {
                        Some(e) => Corruption::Chain(e).into(),
                        None => broken(Break::Undecodable {
                            reason: "unchecked".into(),
                        }),
                    });
                };
                let position = event.envelope.as_ref().map_or(0, |e| e.global_position);
                if position > durable {
                    break 'runs;
                }
                last_position = position;
                out.push(Recorded { event, sealed });
            }
        }
        let last = out.last().map(|r| (r.seq(), chain::hash_of(&r.sealed.raw)));
        let head_problem = |seq: u64, reason: String| -> Error {
            Corruption::Head {
                dossier: *dossier,
                seq,
                reason,
            }
            .into()
        };
        match (head, last) {
            (None, None) => {}
            (None, Some((seq, _))) => {
                return Err(head_problem(
                    seq,
                    "the stream has events but no head".into(),
                ));
            }
            (Some(h), None) => {
                if h.first_position <= durable {
                    return Err(head_problem(h.seq, "the head has no events".into()));
                }
            }
            (Some(h), Some((seq, hash))) => {
                if h.last_position <= durable {
                    if h.seq != seq || h.hash != hash || h.last_position != last_position {
                        return Err(head_problem(
                            h.seq,
                            format!(
                                "head says seq {} hash {} position {}; stream ends at seq {seq} hash {} position {last_position}",
                                h.seq,
                                hex::encode(h.hash),
                                h.last_position,
                                hex::encode(hash),
                            ),
                        ));
                    }
                } else if h.seq <= seq {
                    return Err(head_problem(
                        h.seq,
                        format!(
                            "head at position {} is not durable but the stream is durable up to seq {seq}",
                            h.last_position
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Reads the run a feed group's `entry` names, which sits at positions `position..`, and
    /// appends to `out` its events at positions in `after + 1..=end`. Each event is re-hashed
    /// and must be the one the entry names (dossier, seq, position); its predecessor is not read
    /// (`verify` checks whole chains).
    fn feed_run(
        &self,
        entry: &FeedRef,
        position: u64,
        (after, end): (u64, u64),
        out: &mut Vec<Recorded>,
    ) -> Result<(), Error> {
        let dossier = &entry.dossier;
        let feed_problem = |position: u64, reason: String| -> Error {
            Corruption::Feed { position, reason }.into()
        };
        let Some(v) = self
            .db()
            .get(keys::stream_key(dossier, entry.first_seq))
            .map_err(backend)?
        else {
            return Err(feed_problem(
                position,
                format!(
                    "points at dossier {dossier} seq {}, which is missing",
                    entry.first_seq
                ),
            ));
        };
        let broken = |seq: u64, what: Break| -> Error {
            Corruption::Chain(ChainError {
                dossier: *dossier,
                seq,
                what,
            })
            .into()
        };
        let run = decode_run(&v).map_err(|e| {
            broken(
                entry.first_seq,
                Break::Undecodable {
                    reason: e.to_string(),
                },
            )
        })?;
        if run.len() != entry.count as usize {
            return Err(feed_problem(
                position,
                format!(
                    "names {} events of dossier {dossier} from seq {}, the stream holds {} there",
                    entry.count,
                    entry.first_seq,
                    run.len()
                ),
            ));
        }
        for (i, sealed) in run.into_iter().enumerate() {
            let (seq, at) = (entry.first_seq + i as u64, position + i as u64);
            if at <= after {
                continue;
            }
            if at > end {
                break;
            }
            let computed = chain::hash_of(&sealed.raw);
            if computed.as_slice() != sealed.hash.as_slice() {
                return Err(broken(
                    seq,
                    Break::HashMismatch {
                        stored: hex::encode(&sealed.hash),
                        computed: hex::encode(computed),
                    },
                ));
            }
            let event = Event::decode(sealed.raw.as_slice()).map_err(|e| {
                broken(
                    seq,
                    Break::Undecodable {
                        reason: e.to_string(),
                    },
                )
            })?;
            let Some(envelope) = event.envelope.as_ref() else {
                return Err(broken(
                    seq,
                    Break::Undecodable {
                        reason: "event has no envelope".into(),
                    },
                ));
            };
            if envelope.dossier_id != dossier.to_string()
                || envelope.seq != seq
                || envelope.global_position != at
            {
                return Err(feed_problem(
                    at,
                    format!(
                        "points at dossier {dossier} seq {seq}, which says dossier {} seq {} position {}",
                        envelope.dossier_id, envelope.seq, envelope.global_position
                    ),
                ));
            }
            out.push(Recorded { event, sealed });
        }
        Ok(())
    }

    /// The stored event of `dossier` at `seq`, undecoded beyond its run; `None` when no run
    /// holds it (or the run does not decode).
    fn sealed_at(
        &self,
        dossier: &DossierId,
        seq: u64,
    ) -> Result<Option<lienthong_proto::v1::SealedEvent>, Error> {
        let runs = keys::stream_key(dossier, 0)..=keys::stream_key(dossier, seq);
        let Some(entry) = self.db().range(runs).next_back() else {
            return Ok(None);
        };
        let (k, v) = entry.map_err(backend)?;
        let Some((_, first_seq)) = keys::parse_stream_key(&k) else {
            return Ok(None);
        };
        Ok(decode_run(&v)
            .ok()
            .and_then(|run| run.into_iter().nth((seq - first_seq) as usize)))
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the event store failed");
        }
    }
}

impl EventStore for SledStore {
    fn append(&self, req: AppendRequest) -> oneshot::Receiver<Result<Appended, Error>> {
        let (reply, rx) = oneshot::channel();
        if let Some(reason) = self.shared.poison_reason() {
            let _ = reply.send(Err(Error::Poisoned(reason)));
            return rx;
        }
        self.enqueue(Pending::Append { req, reply });
        rx
    }

    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, Error> {
        self.checked_stream(dossier, self.durable())
    }

    fn head(&self, dossier: &DossierId) -> Result<Option<Head>, Error> {
        let durable = self.durable();
        let Some(h) = read_head(self.db(), dossier)? else {
            return Ok(None);
        };
        if h.last_position <= durable {
            return Ok(Some(Head {
                seq: h.seq,
                hash: h.hash,
                code: DossierCode(h.code),
            }));
        }
        if h.first_position > durable {
            return Ok(None);
        }
        // The head belongs to a group still being fsynced: answer from the durable events.
        let stream = self.checked_stream(dossier, durable)?;
        Ok(stream.last().map(|r| Head {
            seq: r.seq(),
            hash: chain::hash_of(&r.sealed.raw),
            code: DossierCode(h.code),
        }))
    }

    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, Error> {
        let durable = self.durable();
        let limit = limit.min(FEED_READ_MAX) as u64;
        if after_position >= durable || limit == 0 {
            return Ok(Vec::new());
        }
        let end = durable.min(after_position.saturating_add(limit));
        if let Some(held) = self.shared.recent.read().range(after_position, end) {
            return Ok(held.iter().map(|r| Recorded::clone(r)).collect());
        }
        let mut out = Vec::with_capacity((end - after_position) as usize);
        let missing = |position: u64| -> Error {
            Corruption::Feed {
                position,
                reason: "missing from the feed".into(),
            }
            .into()
        };
        let first = after_position + 1;
        let Some((start, _)) = feed_group_at(self.db(), first)? else {
            return Err(missing(first));
        };
        let mut next: Option<u64> = None;
        for entry in self.db().range(start.to_vec()..=keys::feed_key(end)) {
            let (k, v) = entry.map_err(backend)?;
            let damaged = || Corruption::Record {
                key: printable(&k),
                reason: "not a feed group".into(),
            };
            let mut position = keys::parse_feed_key(&k).ok_or_else(damaged)?;
            if let Some(n) = next
                && n != position
            {
                return Err(missing(n));
            }
            for r in keys::parse_feed_group(&v).ok_or_else(damaged)? {
                if position + u64::from(r.count) > after_position {
                    self.feed_run(&r, position, (after_position, end), &mut out)?;
                }
                position += u64::from(r.count);
            }
            next = Some(position);
            if position > end {
                break;
            }
        }
        if (out.len() as u64) < end - after_position {
            return Err(missing(after_position + 1 + out.len() as u64));
        }
        Ok(out)
    }

    fn read_feed_shared(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Recorded>>, Error> {
        let durable = self.durable();
        let end = durable.min(after_position.saturating_add(limit.min(FEED_READ_MAX) as u64));
        if let Some(held) = self.shared.recent.read().range(after_position, end) {
            return Ok(held);
        }
        Ok(self
            .read_feed(after_position, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn last_position(&self) -> Result<u64, Error> {
        Ok(self.durable())
    }

    fn dossiers(&self) -> Result<Vec<(DossierId, DossierCode)>, Error> {
        let durable = self.durable();
        let mut out = Vec::new();
        for entry in self.db().scan_prefix(keys::HEAD) {
            let (k, v) = entry.map_err(backend)?;
            let damaged = || Corruption::Record {
                key: printable(&k),
                reason: "not a head".into(),
            };
            let dossier = keys::parse_head_key(&k).ok_or_else(damaged)?;
            let head = HeadValue::decode(&v).ok_or_else(damaged)?;
            if head.first_position <= durable {
                out.push((dossier, DossierCode(head.code)));
            }
        }
        Ok(out)
    }

    fn dossier_by_code(&self, code: &str) -> Result<Option<DossierId>, Error> {
        let durable = self.durable();
        let key = keys::code_key(code);
        let Some(v) = self.db().get(&key).map_err(backend)? else {
            return Ok(None);
        };
        let dossier = keys::dossier_from(&v).ok_or_else(|| Corruption::Record {
            key: printable(&key),
            reason: "not a dossier id".into(),
        })?;
        match read_head(self.db(), &dossier)? {
            Some(h) if h.first_position <= durable => Ok(Some(dossier)),
            Some(_) => Ok(None),
            None => Err(Corruption::Record {
                key: printable(&key),
                reason: format!("names dossier {dossier}, which has no head"),
            }
            .into()),
        }
    }

    fn idempotency(&self, actor: &str, key: &str) -> Result<Option<IdempotencyRecord>, Error> {
        let durable = self.durable();
        let k = keys::idempotency_key(actor, key);
        let Some(v) = self.db().get(&k).map_err(backend)? else {
            return Ok(None);
        };
        let r = IdemValue::decode(&v).ok_or_else(|| Corruption::Record {
            key: printable(&k),
            reason: "not an idempotency record".into(),
        })?;
        if r.position > durable {
            return Ok(None);
        }
        Ok(Some(IdempotencyRecord {
            fingerprint: r.fingerprint,
            dossier: r.dossier,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
        }))
    }

    fn definition(&self, hash: &str) -> Result<Option<String>, Error> {
        let key = keys::definition_key(hash);
        let Some(v) = self.db().get(&key).map_err(backend)? else {
            return Ok(None);
        };
        let damaged = |reason: &str| Corruption::Record {
            key: printable(&key),
            reason: reason.into(),
        };
        let text = String::from_utf8(v.to_vec()).map_err(|_| damaged("not UTF-8"))?;
        if hex::encode(Sha256::digest(text.as_bytes())) != hash {
            return Err(damaged("the text's SHA-256 is not its key").into());
        }
        Ok(Some(text))
    }

    fn verify(&self) -> Result<VerifyReport, Error> {
        Verification::new(self).run()
    }

    fn due_timers(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, Error> {
        let durable = self.durable();
        let limit = limit.min(TIMERS_READ_MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for entry in self
            .db()
            .range(keys::TIMER.to_vec()..keys::timer_key_after(until.timestamp()))
        {
            let (k, v) = entry.map_err(backend)?;
            let (timer, position) =
                keys::parse_timer(&k, &v).ok_or_else(|| Corruption::Record {
                    key: printable(&k),
                    reason: "not a timer".into(),
                })?;
            // Set by an append still being made durable: not there yet.
            if position > durable {
                continue;
            }
            out.push(timer);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn update_timers(&self, ops: Vec<TimerOp>) -> oneshot::Receiver<Result<(), Error>> {
        let (reply, rx) = oneshot::channel();
        if let Some(reason) = self.shared.poison_reason() {
            let _ = reply.send(Err(Error::Poisoned(reason)));
            return rx;
        }
        self.enqueue(Pending::Timers { ops, reply });
        rx
    }
}

/// One run of [`EventStore::verify`]. Writes may continue meanwhile: everything past the
/// durable position taken at the start is skipped (heads written later are checked for
/// consistency only), so a concurrent append is never reported as damage.
struct Verification<'a> {
    store: &'a SledStore,
    /// The durable position at the start.
    durable: u64,
    verifier: Verifier,
    report: VerifyReport,
    /// Durable events seen in the streams (up to each stream's first break).
    stream_events: u64,
    /// Streams with a chain break.
    broken_streams: u64,
    /// The feed group read last (first position, events covered, entries), for
    /// [`Self::feed_ref_at`].
    group: Option<(u64, u64, Vec<FeedRef>)>,
}

/// A stream being walked by [`Verification`].
struct Walk {
    check: StreamCheck,
    /// Position of the first event.
    first_position: u64,
    /// Seq, hash and position of the last durable event.
    last: Option<(u64, [u8; 32], u64)>,
}

impl<'a> Verification<'a> {
    fn new(store: &'a SledStore) -> Self {
        Verification {
            store,
            durable: store.durable(),
            verifier: Verifier::new(),
            report: VerifyReport::default(),
            stream_events: 0,
            broken_streams: 0,
            group: None,
        }
    }

    fn db(&self) -> &sled::Db {
        self.store.db()
    }

    fn problem(&mut self, c: Corruption) {
        self.report.problems.push(c);
    }

    fn run(mut self) -> Result<VerifyReport, Error> {
        self.report.last_position = self.durable;
        self.streams()?;
        self.feed()?;
        self.heads()?;
        self.codes()?;
        self.idempotency()?;
        self.definitions()?;
        self.timers()?;
        self.report.chains = std::mem::take(&mut self.verifier).finish();
        Ok(self.report)
    }

    /// Walks every stream in key order: chains, heads, codes, the feed entry of each run.
    fn streams(&mut self) -> Result<(), Error> {
        let mut walk: Option<Walk> = None;
        for entry in self.db().scan_prefix(keys::STREAM) {
            let (k, v) = entry.map_err(backend)?;
            let Some((dossier, first_seq)) = keys::parse_stream_key(&k) else {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "not an event key".into(),
                });
                continue;
            };
            if walk.as_ref().map(|w| w.check.dossier) != Some(dossier) {
                if let Some(done) = walk.take() {
                    self.end_stream(done)?;
                }
                walk = Some(Walk {
                    check: StreamCheck::new(dossier),
                    first_position: 0,
                    last: None,
                });
            }
            let Some(w) = walk.as_mut() else { continue };
            if w.check.broken.is_some() {
                continue;
            }
            let expected = w.check.next_seq();
            if first_seq != expected {
                w.check.broken = Some(ChainError {
                    dossier,
                    seq: expected,
                    what: Break::SeqGap { found: first_seq },
                });
                continue;
            }
            let run = match decode_run(&v) {
                Ok(run) => run,
                Err(e) => {
                    w.check.broken = Some(ChainError {
                        dossier,
                        seq: first_seq,
                        what: Break::Undecodable {
                            reason: e.to_string(),
                        },
                    });
                    continue;
                }
            };
            let count = run.len();
            let mut run_position = None;
            for (i, sealed) in run.into_iter().enumerate() {
                let Some(event) = w.check.next(&sealed) else {
                    break;
                };
                let position = event.envelope.as_ref().map_or(0, |e| e.global_position);
                if position > self.durable {
                    continue; // still chain-checked, so that the next run follows on
                }
                let seq = first_seq + i as u64;
                if seq == 1 {
                    w.first_position = position;
                }
                if i == 0 {
                    run_position = Some(position);
                }
                w.last = Some((seq, chain::hash_of(&sealed.raw), position));
                self.stream_events += 1;
            }
            // The feed must name this run at its first event's position.
            if let Some(position) = run_position {
                let here = FeedRef {
                    dossier,
                    first_seq,
                    count: count as u32,
                };
                match self.feed_ref_at(position)? {
                    Some(found) if found == here => {}
                    Some(found) => self.problem(Corruption::Feed {
                        position,
                        reason: format!(
                            "dossier {dossier} seq {first_seq} ({count} events) sits here but the feed names dossier {} seq {} ({} events)",
                            found.dossier, found.first_seq, found.count
                        ),
                    }),
                    None => self.problem(Corruption::Feed {
                        position,
                        reason: format!(
                            "missing, but dossier {dossier} seq {first_seq} ({count} events) sits here"
                        ),
                    }),
                }
            }
        }
        if let Some(done) = walk.take() {
            self.end_stream(done)?;
        }
        Ok(())
    }

    /// The feed entry whose run starts at `position`, if any. Keeps the last group read, since
    /// a dossier's runs often share groups with their neighbours in key order.
    fn feed_ref_at(&mut self, position: u64) -> Result<Option<FeedRef>, Error> {
        let covers = |&(start, len, _): &(u64, u64, Vec<FeedRef>)| {
            start <= position && position < start + len
        };
        if !self.group.as_ref().is_some_and(covers) {
            self.group = None;
            if let Some((k, v)) = feed_group_at(self.db(), position)?
                && let (Some(start), Some(refs)) =
                    (keys::parse_feed_key(&k), keys::parse_feed_group(&v))
            {
                self.group = Some((start, keys::refs_len(&refs), refs));
            }
        }
        let Some((start, _, refs)) = self.group.as_ref() else {
            return Ok(None);
        };
        let mut at = *start;
        for r in refs {
            if at == position {
                return Ok(Some(*r));
            }
            at += u64::from(r.count);
        }
        Ok(None)
    }

    /// Checks a walked stream's head and code.
    fn end_stream(&mut self, walk: Walk) -> Result<(), Error> {
        self.verifier.add(&walk.check);
        if walk.check.broken.is_some() {
            self.broken_streams += 1;
        }
        let dossier = walk.check.dossier;
        let head = match read_head(self.db(), &dossier) {
            Ok(h) => h,
            Err(Error::Corrupt(c)) => {
                self.problem(c);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some((seq, hash, position)) = walk.last else {
            return Ok(()); // nothing durable (or broken at seq 1: reported as a chain break)
        };
        let Some(head) = head else {
            self.problem(Corruption::Head {
                dossier,
                seq,
                reason: "the stream has events but no head".into(),
            });
            return Ok(());
        };
        if walk.check.broken.is_none() {
            let code = walk.check.code.clone().unwrap_or_default();
            let mut wrong = Vec::new();
            if head.last_position <= self.durable {
                if head.seq != seq {
                    wrong.push(format!("seq {} (stream ends at seq {seq})", head.seq));
                }
                if head.hash != hash {
                    wrong.push(format!(
                        "hash {} (last event's is {})",
                        hex::encode(head.hash),
                        hex::encode(hash)
                    ));
                }
                if head.last_position != position {
                    wrong.push(format!(
                        "last position {} (last event's is {position})",
                        head.last_position
                    ));
                }
            } else if head.seq <= seq {
                wrong.push(format!(
                    "seq {} at position {} beyond the durable position, but the stream is durable up to seq {seq}",
                    head.seq, head.last_position
                ));
            }
            if head.first_position != walk.first_position {
                wrong.push(format!(
                    "first position {} (first event's is {})",
                    head.first_position, walk.first_position
                ));
            }
            if head.code != code {
                wrong.push(format!("code `{}` (events say `{code}`)", head.code));
            }
            if !wrong.is_empty() {
                self.problem(Corruption::Head {
                    dossier,
                    seq: head.seq,
                    reason: format!("the head has {}", wrong.join(", ")),
                });
            }
        }
        // The code must lead back to this dossier, and its counter must have passed it.
        let ck = keys::code_key(&head.code);
        match self.db().get(&ck).map_err(backend)? {
            Some(v) if keys::dossier_from(&v) == Some(dossier) => {}
            other => self.problem(Corruption::Record {
                key: printable(&ck),
                reason: match other {
                    None => format!("missing; dossier {dossier} has this code"),
                    Some(_) => format!("does not name dossier {dossier}, which has this code"),
                },
            }),
        }
        if let Some((prefix, n)) = head
            .code
            .rsplit_once('-')
            .and_then(|(p, n)| Some((p, n.parse::<u64>().ok()?)))
        {
            let nk = keys::counter_key(prefix);
            let counter = self.db().get(&nk).map_err(backend)?;
            if counter
                .as_deref()
                .and_then(keys::u64_from)
                .is_none_or(|c| c < n)
            {
                self.problem(Corruption::Record {
                    key: printable(&nk),
                    reason: format!(
                        "counter is missing or below {n}, which `{}` uses",
                        head.code
                    ),
                });
            }
        }
        Ok(())
    }

    /// The feed's groups cover exactly positions 1..=durable (each run checked against its
    /// entry above).
    fn feed(&mut self) -> Result<(), Error> {
        let mut expected = Some(1);
        for entry in self.db().scan_prefix(keys::FEED) {
            let (k, v) = entry.map_err(backend)?;
            let (Some(position), Some(len)) = (keys::parse_feed_key(&k), keys::feed_group_len(&v))
            else {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "not a feed group".into(),
                });
                expected = None; // picked up again at the next group
                continue;
            };
            if position > self.durable {
                break;
            }
            if let Some(e) = expected
                && position != e
            {
                self.problem(Corruption::Feed {
                    position: e,
                    reason: format!("missing: the feed jumps to {position}"),
                });
            }
            expected = Some(position + len);
            self.report.feed_entries += len;
        }
        if let Some(e) = expected
            && e <= self.durable
        {
            self.problem(Corruption::Feed {
                position: e,
                reason: format!(
                    "missing: the feed ends before the last position {}",
                    self.durable
                ),
            });
        }
        // Events after a chain break are not walked, so the counts can only agree without one.
        if self.broken_streams == 0 && self.report.feed_entries != self.stream_events {
            let (feed, events) = (self.report.feed_entries, self.stream_events);
            self.problem(Corruption::Feed {
                position: self.durable,
                reason: format!("{feed} feed entries but {events} durable events in the streams"),
            });
        }
        Ok(())
    }

    /// Every durable head has a first event.
    fn heads(&mut self) -> Result<(), Error> {
        for entry in self.db().scan_prefix(keys::HEAD) {
            let (k, v) = entry.map_err(backend)?;
            let (Some(dossier), Some(head)) = (keys::parse_head_key(&k), HeadValue::decode(&v))
            else {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "not a head".into(),
                });
                continue;
            };
            if head.first_position <= self.durable
                && !self
                    .db()
                    .contains_key(keys::stream_key(&dossier, 1))
                    .map_err(backend)?
            {
                self.problem(Corruption::Head {
                    dossier,
                    seq: head.seq,
                    reason: "the head has no events".into(),
                });
            }
        }
        Ok(())
    }

    /// Every code names a dossier whose head has that code.
    fn codes(&mut self) -> Result<(), Error> {
        for entry in self.db().scan_prefix(keys::CODE) {
            let (k, v) = entry.map_err(backend)?;
            let code = String::from_utf8_lossy(&k[keys::CODE.len()..]).into_owned();
            let head = match keys::dossier_from(&v) {
                Some(d) => match read_head(self.db(), &d) {
                    Ok(h) => h,
                    Err(Error::Corrupt(_)) => continue, // reported with the stream
                    Err(e) => return Err(e),
                },
                None => None,
            };
            if head.as_ref().is_none_or(|h| h.code != code) {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "names no dossier with this code".into(),
                });
            }
        }
        Ok(())
    }

    /// Every durable idempotency record points at the event it says it appended.
    fn idempotency(&mut self) -> Result<(), Error> {
        for entry in self.db().scan_prefix(keys::IDEMPOTENCY) {
            let (k, v) = entry.map_err(backend)?;
            let Some(r) = IdemValue::decode(&v) else {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "not an idempotency record".into(),
                });
                continue;
            };
            if r.position > self.durable {
                continue;
            }
            let at = self
                .store
                .sealed_at(&r.dossier, r.last_seq)?
                .and_then(|s| Event::decode(s.raw.as_slice()).ok())
                .and_then(|e| e.envelope)
                .map(|e| e.global_position);
            if r.first_seq == 0 || r.first_seq > r.last_seq || at != Some(r.position) {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: format!(
                        "says dossier {} seq {}..={} at position {}, which the stream does not hold",
                        r.dossier, r.first_seq, r.last_seq, r.position
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every timer decodes, and every durable one belongs to a dossier that exists.
    fn timers(&mut self) -> Result<(), Error> {
        for entry in self.db().scan_prefix(keys::TIMER) {
            let (k, v) = entry.map_err(backend)?;
            let Some((timer, position)) = keys::parse_timer(&k, &v) else {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "not a timer".into(),
                });
                continue;
            };
            if position > self.durable {
                continue;
            }
            let head = match read_head(self.db(), &timer.dossier) {
                Ok(h) => h,
                Err(Error::Corrupt(_)) => continue, // reported with the stream
                Err(e) => return Err(e),
            };
            if head.is_none_or(|h| h.last_position < position) {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: format!(
                        "set at position {position} for dossier {}, whose stream does not reach it",
                        timer.dossier
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every definition is the text its hash names.
    fn definitions(&mut self) -> Result<(), Error> {
        for entry in self.db().scan_prefix(keys::DEFINITION) {
            let (k, v) = entry.map_err(backend)?;
            self.report.definitions += 1;
            let hash = &k[keys::DEFINITION.len()..];
            if hex::encode(Sha256::digest(&v)).as_bytes() != hash {
                self.problem(Corruption::Record {
                    key: printable(&k),
                    reason: "the text's SHA-256 is not its key".into(),
                });
            }
        }
        Ok(())
    }
}
