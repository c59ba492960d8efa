//! The durable, hash-chained, group-committed event store.
//!
//! Every dossier is an append-only stream of sealed events (see [`chain`]): seq 1..n with no gaps,
//! each event's `prev_hash` the previous event's SHA-256. Every event also gets a position in one
//! global feed (strictly increasing, no gaps), which is the outbox the publisher and the
//! projections tail.
//!
//! - [`EventStore`] is the contract. It names no sled type, so a second backend can be added and
//!   run through the same [`conformance`] suite.
//! - [`SledStore`] implements it on sled 0.34.7 (see [`sled_store`] for the layout, the group
//!   commit and the hazards of that sled release).
//!
//! Errors keep the three kinds apart that callers must treat differently: a *conflict*
//! ([`Error::Conflict`], [`Error::DuplicateKey`]: another writer won; reload, retry or replay),
//! a *rejection* of the request itself ([`Error::Invalid`], [`Error::Limit`]: retrying will not
//! help), and a *fault* ([`Error::Corrupt`], [`Error::Io`], [`Error::Poisoned`] ...).
//!
//! Timers: the store also keeps the dossiers' durable deadline timers ([`Timer`]), set and cleared
//! in the same atomic batch as the events that create or settle the deadlines
//! ([`AppendRequest::timers`]), or changed alone ([`EventStore::update_timers`]) when a timer
//! turned out stale; [`EventStore::due_timers`] lists them by firing time.
//!
//! Visibility: reads only ever return what is durable. An append is visible to readers once its
//! group has been flushed *and* fsynced, i.e. when its receiver yields `Ok`, never before: a
//! reader (the outbox publisher, a query) can therefore never see an event that a crash could
//! still take back.

pub mod chain;
pub mod conformance;
pub mod keys;
pub mod migrate;
mod recent;
pub mod sled_store;
mod sync;
mod writer;

use std::sync::Arc;

use lienthong_proto::v1::{Event, SealedEvent};
use tokio::sync::oneshot;

use chrono::{DateTime, Utc};

use crate::ids::{DossierCode, DossierId};

pub use crate::dossier::{Timer, TimerKind, TimerOp};
pub use chain::{ChainError, Link};
pub use recent::RECENT_FEED_EVENTS;
pub use sled_store::{SledStore, Stats};

/// Events accepted in one append (one command rarely produces more than a handful).
pub const EVENTS_PER_APPEND_MAX: usize = 64;
/// Size of one event's `raw` encoding, in bytes. Documents are stored by reference, so an event
/// is small; this keeps sled values far below its off-log blob threshold (128 KiB).
pub const EVENT_BYTES_MAX: usize = 32 * 1024;
/// Definitions (workflow or calendar texts) carried by one append.
pub const DEFINITIONS_PER_APPEND_MAX: usize = 8;
/// Size of one definition text, in bytes.
pub const DEFINITION_BYTES_MAX: usize = 256 * 1024;
/// Length of an idempotency actor or key, in bytes.
pub const IDEMPOTENCY_PART_BYTES_MAX: usize = 256;
/// Length of a dossier code prefix (`UBND.XA-261122`), in bytes.
pub const CODE_PREFIX_BYTES_MAX: usize = 64;
/// Records returned by one [`EventStore::read_feed`] call, whatever `limit` asks for.
pub const FEED_READ_MAX: usize = 10_000;
/// Timer operations carried by one append or one [`EventStore::update_timers`] call (the runtime
/// sends at most three: the fired timer, the earliest before and the earliest after).
pub const TIMERS_PER_APPEND_MAX: usize = 256;
/// Timers returned by one [`EventStore::due_timers`] call, whatever `limit` asks for.
pub const TIMERS_READ_MAX: usize = 10_000;
/// Length of a timer's step id, in bytes.
pub const TIMER_STEP_BYTES_MAX: usize = 256;

/// The contract of an event store. See the module docs for visibility and error kinds.
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one stream. Durable when the receiver yields `Ok`: the events are
    /// written, flushed AND fsynced. Many concurrent appends share one flush (group commit).
    /// All of one request is written or none of it (events, head, feed, code, idempotency, timers,
    /// definitions).
    fn append(&self, req: AppendRequest) -> oneshot::Receiver<Result<Appended, Error>>;
    /// The whole stream, seq 1..n, chain checked on read (and against the stored head).
    /// Empty when the dossier does not exist.
    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, Error>;
    /// The stream's head, `None` when the dossier does not exist.
    fn head(&self, dossier: &DossierId) -> Result<Option<Head>, Error>;
    /// Up to `limit` (at most [`FEED_READ_MAX`]) events after `after_position`, in global order.
    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, Error>;
    /// [`EventStore::read_feed`] for readers that only look at the events (task streams): they
    /// are shared, not copied, where the store holds them in memory.
    fn read_feed_shared(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Recorded>>, Error> {
        Ok(self
            .read_feed(after_position, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }
    /// The position of the last durable event (0 when empty).
    fn last_position(&self) -> Result<u64, Error>;
    /// Every dossier with its code, in id order.
    fn dossiers(&self) -> Result<Vec<(DossierId, DossierCode)>, Error>;
    /// The dossier a code belongs to.
    fn dossier_by_code(&self, code: &str) -> Result<Option<DossierId>, Error>;
    /// What `(actor, key)` did when it was first used.
    fn idempotency(&self, actor: &str, key: &str) -> Result<Option<IdempotencyRecord>, Error>;
    /// A content-addressed text (workflow definition, calendar) by its lower-case hex SHA-256.
    fn definition(&self, hash: &str) -> Result<Option<String>, Error>;
    /// Recomputes every chain and checks that heads, feed, codes, idempotency records,
    /// definitions and timers agree with the streams. Finds damage; never repairs.
    fn verify(&self) -> Result<VerifyReport, Error>;
    /// Up to `limit` (at most [`TIMERS_READ_MAX`]) durable timers firing at or before `until`,
    /// earliest first. A timer is visible once the append that set it is durable (one set alone,
    /// by [`EventStore::update_timers`], once its dossier's last append is).
    fn due_timers(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, Error>;
    /// Sets and clears timers without appending events: a stale timer (its deadline moved or
    /// was met) is cleared, and the timer its dossier needs next is set. Clears apply before
    /// sets; clearing a missing timer is fine; setting one for a dossier that does not exist is
    /// [`Error::Invalid`]. Durable when the receiver yields `Ok`. A timer set here may be listed
    /// a little before it is durable (once its dossier's last append is): firing it early is
    /// harmless, since a firing decides from the durable events.
    fn update_timers(&self, ops: Vec<TimerOp>) -> oneshot::Receiver<Result<(), Error>>;
}

/// One append: events for one stream, and what must be written atomically with them.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    /// The stream.
    pub dossier: DossierId,
    /// The head seq the caller decided on (0 = a new dossier). Anything else is a conflict.
    pub expected_seq: u64,
    /// The events. Their envelopes carry `dossier_id`, `recorded_at`, `actor` and `command_id`;
    /// the store stamps `seq`, `global_position`, `prev_hash` and `dossier_code`, then seals.
    /// A caller may leave `dossier_code` empty or set it to the dossier's code.
    pub events: Vec<Event>,
    /// Stored in the same atomic batch; a key already used gives [`Error::DuplicateKey`].
    pub idempotency: Option<IdempotencyKey>,
    /// Required exactly when `expected_seq == 0`: the store allocates the dossier's code.
    pub new_dossier: Option<NewDossier>,
    /// Content-addressed texts to keep: `(lower-case hex SHA-256 of text, text)`. Idempotent;
    /// a hash that is not the text's SHA-256 is [`Error::Invalid`].
    pub definitions: Vec<(String, String)>,
    /// Timers to set or clear with the events, all of this dossier, each firing at a whole
    /// second. Clears apply before sets, so a request that clears and sets one timer keeps it.
    pub timers: Vec<TimerOp>,
}

/// The idempotency key of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who sent the command (agency code). Non-empty, no `\0`.
    pub actor: String,
    /// The caller's key. Non-empty, no `\0`.
    pub key: String,
    /// SHA-256 of the command, to tell a retry from a reuse of the key.
    pub fingerprint: [u8; 32],
}

/// What the store needs to open a new dossier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDossier {
    /// `<receiving agency prefix>-<yymmdd>`, e.g. `UBND.XA-261122`; the store appends the next
    /// daily sequence number under this prefix: `UBND.XA-261122-0001`.
    pub code_prefix: String,
    /// Numbers only in this stripe (`None`: every number, 1, 2, 3 ...). Engine nodes of a
    /// distributed deployment each number their own dossiers; striping by the dossier's
    /// partition keeps their codes apart without asking each other.
    pub stripe: Option<CodeStripe>,
}

/// The daily sequence numbers a dossier of one partition may take: those `n` with
/// `n ≡ partition + 1 (mod count)`, so `partition + 1`, `partition + 1 + count`, ... Two
/// partitions never share a number, and each partition is served by one engine node at a time,
/// so codes are unique across the deployment. Numbers are increasing within a store, but no
/// longer dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeStripe {
    /// The dossier's partition (below `count`).
    pub partition: u32,
    /// The deployment's partition count (at least 1).
    pub count: u32,
}

impl CodeStripe {
    /// The first number of this stripe above `last`.
    pub fn next_after(self, last: u64) -> u64 {
        let count = u64::from(self.count.max(1));
        let residue = (u64::from(self.partition) + 1) % count;
        let candidate = last + 1;
        let step = (residue + count - candidate % count) % count;
        candidate + step
    }
}

/// A successful append.
#[derive(Clone, Debug)]
pub struct Appended {
    /// The stream appended to.
    pub dossier: DossierId,
    /// Its code (allocated now for a new dossier).
    pub code: DossierCode,
    /// Seq of the first event appended.
    pub first_seq: u64,
    /// Seq of the last event appended (the new head).
    pub last_seq: u64,
    /// The events as stored, shared with the store's in-memory feed tail (the writer makes
    /// one copy of each, not two; see `store::recent`).
    pub events: Vec<Arc<Recorded>>,
}

/// An event as stored: the sealed bytes, and the event they encode (decoded from them on a
/// read; on the write path, the value they were encoded from, which prost decodes back equal).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// What `sealed.raw` encodes, for convenience.
    pub event: Event,
    /// The stored bytes and their hash.
    pub sealed: SealedEvent,
}

impl Recorded {
    /// The event's seq (0 if it had no envelope, which a stored event never lacks).
    pub fn seq(&self) -> u64 {
        self.event.envelope.as_ref().map_or(0, |e| e.seq)
    }

    /// The event's dossier (`None` if its envelope does not name one, which a stored event
    /// never lacks).
    pub fn dossier(&self) -> Option<DossierId> {
        self.event.envelope.as_ref()?.dossier_id.parse().ok()
    }

    /// The event's global position.
    pub fn position(&self) -> u64 {
        self.event
            .envelope
            .as_ref()
            .map_or(0, |e| e.global_position)
    }
}

/// The head of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Seq of the last event.
    pub seq: u64,
    /// Hash of the last event.
    pub hash: [u8; 32],
    /// The dossier code.
    pub code: DossierCode,
}

/// What the first use of an idempotency key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Fingerprint of the command the key was first used with.
    pub fingerprint: [u8; 32],
    /// The dossier it appended to.
    pub dossier: DossierId,
    /// First seq it appended.
    pub first_seq: u64,
    /// Last seq it appended.
    pub last_seq: u64,
}

/// Damage found in a store other than a broken chain (or a chain break, wrapped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// A stream's hash chain is broken.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A head disagrees with its stream.
    #[error("head of dossier {dossier} disagrees with its stream at seq {seq}: {reason}")]
    Head {
        /// The dossier.
        dossier: DossierId,
        /// The seq the head claims (or the stream's last seq).
        seq: u64,
        /// What disagrees.
        reason: String,
    },
    /// The feed disagrees with the streams.
    #[error("feed position {position} is damaged: {reason}")]
    Feed {
        /// The position.
        position: u64,
        /// What disagrees.
        reason: String,
    },
    /// An index record (code, counter, idempotency, definition, meta) is damaged.
    #[error("record `{key}` is damaged: {reason}")]
    Record {
        /// The key, printable.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The storage engine itself reported corruption.
    #[error("storage engine reports corruption: {0}")]
    Backend(String),
}

/// What [`EventStore::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Dossiers and events whose chains were recomputed, and the first break of each stream.
    pub chains: chain::Report,
    /// Position of the last durable event when the check started (later events are skipped).
    pub last_position: u64,
    /// Feed entries checked.
    pub feed_entries: u64,
    /// Definitions whose hash was recomputed.
    pub definitions: u64,
    /// Everything else that disagrees (heads, feed, codes, idempotency, definitions).
    pub problems: Vec<Corruption>,
}

impl VerifyReport {
    /// True when nothing is broken.
    pub fn is_clean(&self) -> bool {
        self.chains.is_clean() && self.problems.is_empty()
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer appended first: the head is not `expected`. Reload and retry.
    #[error("dossier {dossier}: expected head seq {expected} but it is {actual}; reload and retry")]
    Conflict {
        /// The stream.
        dossier: DossierId,
        /// What the caller expected.
        expected: u64,
        /// The actual head seq (0: no such dossier).
        actual: u64,
    },
    /// The idempotency key was used before; nothing was written.
    #[error("idempotency key already used (dossier {}, seq {}..={})", record.dossier, record.first_seq, record.last_seq)]
    DuplicateKey {
        /// What its first use did.
        record: IdempotencyRecord,
    },
    /// The request is malformed (a caller bug); nothing was written.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The request exceeds a limit; nothing was written.
    #[error("limit exceeded: {what} is {actual}, at most {max}")]
    Limit {
        /// What is limited, with its unit.
        what: &'static str,
        /// The limit.
        max: u64,
        /// What the request had.
        actual: u64,
    },
    /// The writer's queue is full; nothing was written. Back off and retry.
    #[error("store overloaded: {queued_max} appends already queued; retry later")]
    Overloaded {
        /// The queue's capacity.
        queued_max: usize,
    },
    /// The data directory's file system has less free space than the store keeps in reserve;
    /// nothing was written. Free space (or grow the volume) and retry: appends resume by
    /// themselves.
    #[error(
        "disk nearly full: {free_bytes} bytes free on the data directory's file system, below the {min_bytes} kept in reserve (--disk-free-min); nothing was written, free space and retry"
    )]
    DiskFull {
        /// Bytes available to the process when the append was refused.
        free_bytes: u64,
        /// The reserve the store keeps free.
        min_bytes: u64,
    },
    /// The stored data is damaged. Stop and run `lienthong verify`; restore from a backup.
    #[error("store is corrupt: {0}")]
    Corrupt(#[from] Corruption),
    /// The directory holds a store of another schema version.
    #[error(
        "store schema version {found} is not the supported version {supported}; use a matching lienthong release, or upgrade an older store with `lienthong migrate --data DIR`"
    )]
    Schema {
        /// The version on disk (0: unreadable).
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// An I/O error from the storage.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A storage-engine failure that is not plain I/O.
    #[error("storage engine error: {0}")]
    Backend(String),
    /// A flush or fsync failed earlier: what is on disk is unknown, so the store refuses all
    /// appends until it is reopened (recovery then decides what survived).
    #[error("store refuses appends after a failed flush ({0}); restart the process to recover")]
    Poisoned(String),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
}
