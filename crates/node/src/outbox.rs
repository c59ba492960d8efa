//! The engine's outbox: publishes the engine's global feed to the bus.
//!
//! The engine's sled log is the record; the bus's feed (`LIENTHONG_FEED`) and the agencies' task
//! queues (`LIENTHONG_TASKS`) are derived from it by this one publisher. For every stored record,
//! in global feed order, [`Outbox::run`]:
//!
//! 1. publishes the task the event makes for an agency, if any (the engine's one rule,
//!    [`lienthong_engine::view::task`], which the gateway's task streams use too): a protobuf
//!    `lienthong.v1.Task` on `lienthong.task.<agency>`, task id `<dossier>/<seq>`;
//! 2. then publishes the event itself: a [`FeedEvent`] whose payload is the stored
//!    `lienthong.v1.SealedEvent` (the event's `raw` bytes and their hash) byte for byte, with
//!    message id `<dossier>/<seq>`.
//!
//! # Resume
//!
//! The outbox keeps no checkpoint of its own: the bus's feed is it. At start it asks the bus for
//! the feed's last message ([`lienthong_bus::Feed::last`]), looks that `(dossier, seq)` up in the
//! store to find its global position, and continues after it. A record's feed event is only
//! published once its task is on the bus, so "the feed holds record *p*" implies "every task of
//! records up to *p* is queued": nothing is lost by resuming after *p*. What a crash can leave
//! behind is the other way round, tasks published ahead of the feed; they are published again
//! and dropped by the bus as duplicates (same task id within the duplicate window).
//!
//! Several engine nodes, each with its own store, may publish to one bus: the feed's last
//! message may then be another node's. The outbox walks the feed backwards from its end (at most
//! [`Config::resume_scan_records_max`] records) until it finds a message of one of its own
//! dossiers. If it reaches the feed's start without one, it publishes from the beginning of its
//! store, which is right for a node that never published; if it reaches the limit first, it
//! refuses with [`Error::ResumeUnknown`] rather than guess. A message of one of its dossiers
//! that its store does not hold (the store was restored from an older backup) stops the outbox
//! with [`Error::BusAhead`]: an operator must decide.
//!
//! # Retries and a full agency queue
//!
//! Nothing is ever skipped, except a task whose agency is not a valid queue name (then the event
//! is still published and the error logged with its position: see `pending`). A retryable bus error (no connection, timeout) is retried on the
//! same record with exponential backoff ([`Config::retry_backoff_min`] to
//! [`Config::retry_backoff_max`]); any other bus error (a name or size the bus refuses, which the
//! engine's own limits should make impossible) stops the outbox with the error.
//!
//! An agency whose queue is full ([`lienthong_bus::Error::QueueFull`]: it stopped consuming)
//! must not stall the others. An engine node runs its outbox with a **spill**
//! ([`Outbox::with_spill`], `DATA/outbox-spill`): the refused task, and every later task of that
//! agency, is written there (flushed before the feed moves past its record), and the outbox goes
//! on with the feed and everyone else's tasks. The spill is published from, oldest first, each
//! time the agency's retry is due, until its queue refuses again; a restart finds it as it was.
//! [`Progress::spilled_tasks`] shows how many wait. Without a spill (the default of
//! [`Outbox::new`]), the outbox holds the task in memory, as follows. Its task is kept and retried with backoff, a warning names the
//! agency, and its later tasks wait behind it (an agency sees its tasks in feed order). The feed
//! cannot move past that record (see Resume: the feed's end is the proof that the tasks before it
//! are queued), but the outbox keeps reading ahead, up to [`Config::lookahead_records_max`]
//! records, and publishes the tasks of every other agency. So a stalled agency delays the feed
//! (and what reads it: projections, the board) but not the other agencies' work, until it has
//! stalled for that many records; then everything waits for it, with a warning. Tasks published
//! ahead of the feed are published again after a restart: the bus drops them within its
//! duplicate window (2 h by default); beyond it an agency may receive a task twice, which the
//! contract already requires it to handle idempotently by task id.
//!
//! # Progress
//!
//! [`Outbox::progress`] is a watch of [`Progress`]: the last position published to the feed, the
//! store's last position, the lag between them, counts, and the agencies whose queues are full.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::{Agency, Bus, FeedEvent, FeedRecord, PULL_BATCH_MAX, Task, TaskId};
use lienthong_engine::DossierId;
use lienthong_engine::store::{self, EventStore, Recorded};
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

/// Default: how often an idle outbox looks at the store for new events.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);
/// Default: records read from the store per look.
pub const READ_BATCH_RECORDS_DEFAULT: usize = 512;
/// Default: records the outbox reads ahead of the feed while an agency's full queue holds the
/// feed back (their other tasks are published meanwhile).
pub const LOOKAHEAD_RECORDS_MAX_DEFAULT: usize = 10_000;
/// Default: first wait before retrying a failed publish.
pub const RETRY_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(50);
/// Default: longest wait between retries of a failed publish.
pub const RETRY_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// Default: feed messages examined at start, from the end backwards, to find this node's last
/// published event.
pub const RESUME_SCAN_RECORDS_MAX_DEFAULT: u64 = 100_000;
/// The spill's directory in an engine node's data directory.
pub const SPILL_DIR: &str = "outbox-spill";
/// How often the warning about an agency whose queue stays full is repeated.
pub const QUEUE_FULL_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The outbox's timings and limits; [`Config::default`] uses the `*_DEFAULT` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often an idle outbox looks for new events (it does not wait when there is a backlog).
    pub poll_interval: Duration,
    /// Records read from the store per look (at most [`store::FEED_READ_MAX`]).
    pub read_batch_records: usize,
    /// Records held in memory ahead of the feed while an agency's full queue holds it back.
    pub lookahead_records_max: usize,
    /// First wait before a failed publish is retried; it doubles on every failure.
    pub retry_backoff_min: Duration,
    /// Longest wait between retries.
    pub retry_backoff_max: Duration,
    /// Feed messages examined, from the end backwards, to find where this node resumes.
    pub resume_scan_records_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            poll_interval: POLL_INTERVAL_DEFAULT,
            read_batch_records: READ_BATCH_RECORDS_DEFAULT,
            lookahead_records_max: LOOKAHEAD_RECORDS_MAX_DEFAULT,
            retry_backoff_min: RETRY_BACKOFF_MIN_DEFAULT,
            retry_backoff_max: RETRY_BACKOFF_MAX_DEFAULT,
            resume_scan_records_max: RESUME_SCAN_RECORDS_MAX_DEFAULT,
        }
    }
}

impl Config {
    /// Checks the combination.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::Config(why.to_owned()));
        if self.poll_interval < Duration::from_millis(1) {
            return bad("poll_interval must be at least 1 ms");
        }
        if !(1..=store::FEED_READ_MAX).contains(&self.read_batch_records) {
            return bad("read_batch_records must be 1 to 10000");
        }
        if self.lookahead_records_max < self.read_batch_records {
            return bad("lookahead_records_max must be at least read_batch_records");
        }
        if self.retry_backoff_min < Duration::from_millis(1)
            || self.retry_backoff_max < self.retry_backoff_min
        {
            return bad(
                "retry backoff must satisfy 1 ms <= retry_backoff_min <= retry_backoff_max",
            );
        }
        Ok(())
    }
}

/// Why the outbox stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent.
    #[error("invalid outbox configuration: {0}")]
    Config(String),
    /// The store failed (a fault: I/O, corruption, closed). Restart the outbox once the store
    /// is healthy; it resumes where the bus's feed ends.
    #[error("outbox cannot read the engine's store: {0}")]
    Store(#[from] store::Error),
    /// The bus refused a publish for a reason that retrying will not cure.
    #[error("outbox cannot publish: {0}")]
    Bus(#[from] lienthong_bus::Error),
    /// The bus's feed holds an event of one of this store's dossiers that the store does not
    /// have: the store lost events it had published (restored from an older backup?).
    #[error(
        "the bus's feed holds event {dossier}/{seq} but this store's dossier ends at seq {head}: \
         the store is behind what it published (restored from an older backup?); do not run the \
         outbox on it until an operator has compared the store with the feed"
    )]
    BusAhead {
        /// The dossier.
        dossier: DossierId,
        /// The sequence number the feed has.
        seq: u64,
        /// The last sequence number the store has.
        head: u64,
    },
    /// The end of the bus's feed holds only other engine nodes' events, further back than the
    /// outbox looks: where this node stopped publishing is unknown.
    #[error(
        "the last {scanned} messages of the bus's feed are other engine nodes' events: cannot tell \
         where this node stopped publishing. Raise resume_scan_records_max, or start the outbox \
         after a known store position"
    )]
    ResumeUnknown {
        /// Feed messages examined.
        scanned: u64,
    },
    /// The spill (the durable queue of tasks waiting for a full agency queue) failed.
    #[error("outbox spill in {dir}: {reason}")]
    Spill {
        /// Its directory.
        dir: String,
        /// What failed.
        reason: String,
    },
    /// A stored record that cannot be published as it is (no envelope, bad dossier id, gap).
    #[error("feed position {position} cannot be published: {why}")]
    Malformed {
        /// The record's position.
        position: u64,
        /// What is wrong.
        why: String,
    },
}

/// What the outbox reads: the engine's global feed, and the streams (to find the position of a
/// published event). Every [`EventStore`] is one.
pub trait FeedSource: Send + Sync {
    /// Up to `limit` records after `after_position`, in global order.
    fn read_feed(&self, after_position: u64, limit: usize) -> Result<Vec<Recorded>, store::Error>;
    /// One dossier's whole stream, seq 1..n (empty when it does not exist).
    fn read_stream(&self, dossier: &DossierId) -> Result<Vec<Recorded>, store::Error>;
    /// The position of the last durable record (0 when empty).
    fn last_position(&self) -> Result<u64, store::Error>;
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
}

/// How far the outbox is, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The store position the outbox resumed after (set once the resume point is known).
    pub resumed_after: u64,
    /// The last store position whose event (and task) the bus has acknowledged.
    pub published_position: u64,
    /// The store's last position when the outbox last looked.
    pub store_position: u64,
    /// Feed events published by this run (including those the bus dropped as duplicates).
    pub events_published: u64,
    /// Tasks published by this run (including those the bus dropped as duplicates).
    pub tasks_published: u64,
    /// Publishes (events and tasks) the bus reported as duplicates: the overlap after a restart.
    pub duplicates: u64,
    /// Agencies whose queue is full: their tasks, and (without a spill) the feed, wait.
    pub blocked_agencies: Vec<Agency>,
    /// Tasks waiting in the spill for their agency's queue to take them (0 without a spill).
    pub spilled_tasks: u64,
}

impl Progress {
    /// Records stored but not yet on the bus's feed.
    pub fn lag(&self) -> u64 {
        self.store_position.saturating_sub(self.published_position)
    }
}

/// The engine's outbox. Build it with [`Outbox::new`], then [`Outbox::run`] it until shutdown.
pub struct Outbox<S: FeedSource + ?Sized = dyn EventStore> {
    /// The engine's store: the record the outbox publishes.
    store: Arc<S>,
    /// Where it publishes.
    bus: Arc<dyn Bus>,
    /// Timings and limits.
    config: Config,
    /// Where to start instead of resuming from the bus's feed (`Some(0)`: republish everything).
    start_after: Option<u64>,
    /// Progress, for whoever watches.
    progress: watch::Sender<Progress>,
    /// Where tasks for full agency queues wait, durably, so that the feed need not.
    spill: Option<Spill>,
    /// Changed when the store holds new events: an idle outbox wakes on it at once instead of
    /// at its next poll.
    wake: Option<watch::Receiver<u64>>,
}

/// The spill: tasks an agency's full queue refused, kept durably in the engine node's data
/// directory (a sled database of its own) in feed order per agency, until the queue takes them.
/// Key: agency code, a zero byte, the record's store position (8 bytes, big-endian); value: the
/// task id's length (2 bytes, big-endian), the id, the task's payload.
pub struct Spill {
    /// The database.
    db: sled::Db,
    /// Its directory, for messages.
    dir: String,
}

impl Spill {
    /// Opens (or creates) the spill in `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Spill, Error> {
        let name = dir.display().to_string();
        // Waits briefly for the lock a just-closed database may still hold (a restart in the
        // same process).
        let db =
            lienthong_engine::store::sled_store::open_sled_db(dir).map_err(|e| Error::Spill {
                dir: name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Spill { db, dir: name })
    }

    fn fault(&self, e: impl std::fmt::Display) -> Error {
        Error::Spill {
            dir: self.dir.clone(),
            reason: e.to_string(),
        }
    }

    fn key(agency: &Agency, position: u64) -> Vec<u8> {
        let mut k = agency.as_str().as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&position.to_be_bytes());
        k
    }

    fn prefix(agency: &Agency) -> Vec<u8> {
        let mut k = agency.as_str().as_bytes().to_vec();
        k.push(0);
        k
    }

    /// Keeps `task` (made at `position`); durable only after [`Spill::flush`]. Whether it is
    /// new (a record read again after a restart may be spilled already).
    fn put(&self, position: u64, task: &Task) -> Result<bool, Error> {
        let id = task.id.as_str().as_bytes();
        let len = u16::try_from(id.len()).map_err(|e| self.fault(e))?;
        let mut v = Vec::with_capacity(2 + id.len() + task.payload.len());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(id);
        v.extend_from_slice(&task.payload);
        let before = self
            .db
            .insert(Self::key(&task.agency, position), v)
            .map_err(|e| self.fault(e))?;
        Ok(before.is_none())
    }

    /// Makes every `put` so far durable.
    async fn flush(&self) -> Result<(), Error> {
        self.db.flush_async().await.map_err(|e| self.fault(e))?;
        Ok(())
    }

    /// The oldest waiting tasks of `agency`, at most `max`.
    fn oldest(&self, agency: &Agency, max: usize) -> Result<Vec<(Vec<u8>, Task)>, Error> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(Self::prefix(agency)).take(max) {
            let (k, v) = kv.map_err(|e| self.fault(e))?;
            let bad = || self.fault(format!("a damaged entry for agency {agency}"));
            let len = usize::from(u16::from_be_bytes(
                v.get(..2).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
            ));
            let id = std::str::from_utf8(v.get(2..2 + len).ok_or_else(bad)?).map_err(|_| bad())?;
            let id = TaskId::new(id).map_err(|_| bad())?;
            out.push((
                k.to_vec(),
                Task {
                    agency: agency.clone(),
                    id,
                    payload: Bytes::copy_from_slice(&v[2 + len..]),
                },
            ));
        }
        Ok(out)
    }

    /// Forgets a task its queue took.
    fn remove(&self, key: &[u8]) -> Result<(), Error> {
        self.db.remove(key).map_err(|e| self.fault(e))?;
        Ok(())
    }

    /// How many tasks wait, per agency.
    fn counts(&self) -> Result<BTreeMap<Agency, u64>, Error> {
        let mut out: BTreeMap<Agency, u64> = BTreeMap::new();
        for kv in self.db.iter() {
            let (k, _) = kv.map_err(|e| self.fault(e))?;
            let code = k.split(|b| *b == 0).next().unwrap_or_default();
            let agency = std::str::from_utf8(code)
                .ok()
                .and_then(|c| Agency::new(c).ok())
                .ok_or_else(|| self.fault("an entry names no agency"))?;
            *out.entry(agency).or_default() += 1;
        }
        Ok(out)
    }
}

/// One record on its way to the bus.
struct Pending {
    /// Its global position in the store.
    position: u64,
    /// The feed message, published once `task` is `None`.
    event: FeedEvent,
    /// The task it makes, until the bus accepted it.
    task: Option<Task>,
}

/// An agency whose queue is full.
struct Blocked {
    /// When its queue was first found full.
    since: Instant,
    /// When to try its oldest task again.
    retry_at: Instant,
    /// When the warning was last logged.
    warned_at: Instant,
    /// The growing wait between tries.
    backoff: Backoff,
}

/// Exponential backoff between two bounds.
struct Backoff {
    /// The next wait.
    next: Duration,
    /// The first wait.
    min: Duration,
    /// The longest wait.
    max: Duration,
}

impl Backoff {
    fn new(config: &Config) -> Self {
        Self {
            next: config.retry_backoff_min,
            min: config.retry_backoff_min,
            max: config.retry_backoff_max,
        }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The shutdown signal, boxed so that helpers can wait on it.
type Shutdown<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Runs `fut` unless `shutdown` fires first (`None` then).
async fn unless_shutdown<T>(
    shutdown: &mut Shutdown<'_>,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = shutdown.as_mut() => None,
        v = fut => Some(v),
    }
}

impl<S: FeedSource + ?Sized> Outbox<S> {
    /// An outbox publishing `store`'s feed to `bus`.
    pub fn new(store: Arc<S>, bus: Arc<dyn Bus>, config: Config) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            store,
            bus,
            config,
            start_after: None,
            progress: watch::channel(Progress::default()).0,
            spill: None,
            wake: None,
        })
    }

    /// Keeps the tasks that a full agency queue refuses in `spill` instead of in memory, so
    /// that the feed and every other agency's tasks go on however long an agency stops
    /// consuming: a refused task, and every later one of its agency, is written to the spill
    /// (durably, before the feed moves past it), and published from there, in order, once its
    /// queue takes tasks again. A restart finds them in the spill.
    pub fn with_spill(mut self, spill: Spill) -> Self {
        self.spill = Some(spill);
        self
    }

    /// Wakes an idle outbox as soon as `appended` changes (the engine's
    /// [`lienthong_engine::runtime::Engine::appended`]) rather than at its next poll: without it, each
    /// hand-off of a dossier to an agency waited up to [`Config::poll_interval`]. The poll stays,
    /// for appends that do not come through that engine.
    pub fn waking_on(mut self, appended: watch::Receiver<u64>) -> Self {
        self.wake = Some(appended);
        self
    }

    /// Starts after `position` instead of resuming from the bus's feed: `0` republishes the
    /// whole store (what the bus already holds within its duplicate window is dropped). For
    /// operators repairing a bus, and for tests.
    pub fn starting_after(mut self, position: u64) -> Self {
        self.start_after = Some(position);
        self
    }

    /// A watch of the outbox's [`Progress`].
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The store position after which publishing resumes: that of the last event of one of this
    /// store's dossiers on the bus's feed (0 when there is none). See the module docs.
    pub async fn resume_position(&self) -> Result<u64, Error> {
        let Some(last) = self.bus.last().await? else {
            return Ok(0);
        };
        if let Some(p) = self.position_of(&last)? {
            return Ok(p);
        }
        // Another node's message: walk back through the feed to this node's last one, looking
        // each foreign dossier up in the store once.
        let mut foreign = HashSet::from([last.dossier]);
        let mut scanned = 1u64;
        let mut end = last.position; // exclusive
        while end > 1 && scanned < self.config.resume_scan_records_max {
            let window = (PULL_BATCH_MAX as u64).min(end - 1);
            let from = end - window;
            let records = self.bus.read(from, window as usize).await?;
            for r in records.iter().rev().filter(|r| r.position < end) {
                if foreign.contains(&r.dossier) {
                    continue;
                }
                match self.position_of(r)? {
                    Some(p) => return Ok(p),
                    None => {
                        foreign.insert(r.dossier);
                    }
                }
            }
            scanned += window;
            end = from;
        }
        if end > 1 {
            return Err(Error::ResumeUnknown { scanned });
        }
        tracing::info!(
            scanned,
            "no event of this store on the bus's feed: publishing from the store's beginning"
        );
        Ok(0)
    }

    /// The store position of a feed message, if its dossier is one of this store's.
    fn position_of(&self, r: &FeedRecord) -> Result<Option<u64>, Error> {
        let dossier = DossierId(r.dossier);
        let stream = self.store.read_stream(&dossier)?;
        if stream.is_empty() {
            return Ok(None);
        }
        let found = usize::try_from(r.seq.saturating_sub(1))
            .ok()
            .and_then(|i| stream.get(i));
        match found {
            Some(rec) if rec.seq() == r.seq => Ok(Some(rec.position())),
            _ => Err(Error::BusAhead {
                dossier,
                seq: r.seq,
                head: stream.last().map_or(0, Recorded::seq),
            }),
        }
    }

    /// Publishes until `shutdown` completes (then returns `Ok`) or a fault stops it. Cancelling
    /// the returned future is also safe: a publish cut short is redone after the resume.
    pub async fn run<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        use tracing::Instrument;
        self.publish(shutdown)
            .instrument(tracing::info_span!("outbox"))
            .await
    }

    async fn publish<F>(self, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        let mut shutdown: Shutdown<'_> = Box::pin(shutdown);
        let after = match self.start_after {
            Some(p) => p,
            None => {
                let mut backoff = Backoff::new(&self.config);
                loop {
                    match unless_shutdown(&mut shutdown, self.resume_position()).await {
                        None => return Ok(()),
                        Some(Ok(p)) => break p,
                        Some(Err(Error::Bus(e))) if e.is_retryable() => {
                            let wait = backoff.next();
                            tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot read the bus's feed to resume; retrying");
                            if unless_shutdown(&mut shutdown, tokio::time::sleep(wait))
                                .await
                                .is_none()
                            {
                                return Ok(());
                            }
                        }
                        Some(Err(e)) => return Err(e),
                    }
                }
            }
        };
        tracing::info!(after, "outbox publishing after store position {after}");
        self.progress.send_modify(|p| {
            p.resumed_after = after;
            p.published_position = after;
        });
        let spilled = match &self.spill {
            Some(spill) => spill.counts()?,
            None => BTreeMap::new(),
        };
        if !spilled.is_empty() {
            tracing::info!(
                ?spilled,
                "tasks waiting in the spill for their agencies' queues"
            );
        }
        let mut run = Run {
            outbox: &self,
            wake: self.wake.clone(),
            shutdown,
            read_after: after,
            window: VecDeque::new(),
            blocked: BTreeMap::new(),
            backoff: Backoff::new(&self.config),
            spilled,
            unflushed: false,
        };
        run.publish_spilled();
        run.run().await
    }
}

/// The state of one [`Outbox::run`].
struct Run<'a, S: FeedSource + ?Sized> {
    /// The outbox.
    outbox: &'a Outbox<S>,
    /// See [`Outbox::waking_on`].
    wake: Option<watch::Receiver<u64>>,
    /// Completes when the outbox must stop.
    shutdown: Shutdown<'a>,
    /// The last store position read into `window`.
    read_after: u64,
    /// Records read and not yet on the feed, in feed order.
    window: VecDeque<Pending>,
    /// Agencies whose queue is full, with when to try again.
    blocked: BTreeMap<Agency, Blocked>,
    /// Wait before retrying after a retryable bus error.
    backoff: Backoff,
    /// Tasks in the spill, per agency (none without a spill).
    spilled: BTreeMap<Agency, u64>,
    /// Tasks were put in the spill since its last flush: flush before any feed event goes.
    unflushed: bool,
}

/// What a pass over the window did.
enum Pass {
    /// Something was published or read: look again at once.
    Progressed,
    /// Nothing to do until new events arrive or a blocked agency's retry is due.
    Idle,
    /// A retryable bus error: wait and try again.
    Retry(lienthong_bus::Error),
    /// Shutdown.
    Stop,
}

impl<S: FeedSource + ?Sized> Run<'_, S> {
    async fn run(&mut self) -> Result<(), Error> {
        loop {
            match self.pass().await? {
                Pass::Stop => return Ok(()),
                Pass::Progressed => self.backoff.reset(),
                Pass::Retry(e) => {
                    let wait = self.backoff.next();
                    tracing::warn!(
                        error = %e,
                        wait_ms = wait.as_millis() as u64,
                        position = self.window.front().map_or(0, |p| p.position),
                        "publishing to the bus failed; retrying the same record"
                    );
                    if !self.sleep_until(Instant::now() + wait).await {
                        return Ok(());
                    }
                }
                Pass::Idle => {
                    let mut wake = Instant::now() + self.outbox.config.poll_interval;
                    if let Some(b) = self.blocked.values().map(|b| b.retry_at).min() {
                        wake = wake.min(b);
                    }
                    if !self.idle_until(wake).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Waits until `at` or until the store holds new events, whichever comes first; false when
    /// shutdown came first.
    async fn idle_until(&mut self, at: Instant) -> bool {
        let Some(wake) = self.wake.as_mut() else {
            return self.sleep_until(at).await;
        };
        let woken = async {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                changed = wake.changed() => {
                    if changed.is_err() {
                        // The engine is gone: poll from now on.
                        tokio::time::sleep_until(at).await;
                    }
                }
            }
        };
        unless_shutdown(&mut self.shutdown, woken).await.is_some()
    }

    /// Sleeps until `at`; false when shutdown came first.
    async fn sleep_until(&mut self, at: Instant) -> bool {
        unless_shutdown(&mut self.shutdown, tokio::time::sleep_until(at))
            .await
            .is_some()
    }

    /// Reads what fits in the window, publishes the tasks that can go, then the feed events
    /// whose tasks are done.
    async fn pass(&mut self) -> Result<Pass, Error> {
        let config = &self.outbox.config;
        let mut progressed = false;
        let room = config
            .lookahead_records_max
            .saturating_sub(self.window.len());
        if room > 0 {
            let batch = self
                .outbox
                .store
                .read_feed(self.read_after, room.min(config.read_batch_records))?;
            progressed |= !batch.is_empty();
            for r in &batch {
                let pending = pending(r, self.read_after)?;
                self.read_after = pending.position;
                self.window.push_back(pending);
            }
        }
        let store_position = self.outbox.store.last_position()?.max(self.read_after);
        self.outbox
            .progress
            .send_modify(|p| p.store_position = store_position);

        // The spill first: its tasks are older than the window's.
        match self.drain_spill().await? {
            Some(Pass::Progressed) => progressed = true,
            Some(other) => return Ok(other),
            None => {}
        }

        // Tasks, in feed order; an agency whose queue is full waits until its retry is due, and
        // its later tasks wait behind its oldest. With a spill, they wait there instead, so that
        // the feed goes on.
        let now = Instant::now();
        for i in 0..self.window.len() {
            let Some(task) = self.window[i].task.clone() else {
                continue;
            };
            if let Some(spill) = &self.outbox.spill
                && (self.spilled.get(&task.agency).is_some_and(|n| *n > 0)
                    || self.blocked.contains_key(&task.agency))
            {
                if spill.put(self.window[i].position, &task)? {
                    *self.spilled.entry(task.agency.clone()).or_default() += 1;
                }
                self.window[i].task = None;
                self.unflushed = true;
                progressed = true;
                continue;
            }
            if self
                .blocked
                .get(&task.agency)
                .is_some_and(|b| b.retry_at > now)
            {
                continue;
            }
            let agency = task.agency.clone();
            let id = task.id.clone();
            let Some(result) =
                unless_shutdown(&mut self.shutdown, self.outbox.bus.publish_task(task)).await
            else {
                return Ok(Pass::Stop);
            };
            match result {
                Ok(published) => {
                    self.window[i].task = None;
                    progressed = true;
                    self.outbox.progress.send_modify(|p| {
                        p.tasks_published += 1;
                        p.duplicates += u64::from(published.duplicate);
                    });
                    if let Some(b) = self.blocked.remove(&agency) {
                        tracing::info!(
                            agency = %agency,
                            blocked_s = b.since.elapsed().as_secs(),
                            "the task queue of agency {agency} accepts tasks again"
                        );
                        self.publish_blocked();
                    }
                }
                Err(lienthong_bus::Error::QueueFull { agency, max }) => {
                    let position = self.window[i].position;
                    self.queue_full(agency, max, &id, position);
                    // (Taken out of the window only when there is a spill to keep it.)
                    if let Some(spill) = &self.outbox.spill
                        && let Some(task) = self.window[i].task.take()
                    {
                        if spill.put(position, &task)? {
                            *self.spilled.entry(task.agency.clone()).or_default() += 1;
                        }
                        self.unflushed = true;
                        progressed = true;
                    }
                }
                Err(e) if e.is_retryable() => return Ok(Pass::Retry(e)),
                Err(e) => return Err(e.into()),
            }
        }
        // What was spilled (in this pass, or in one that ended early) is durable before the
        // feed moves past it.
        if self.unflushed
            && let Some(spill) = &self.outbox.spill
        {
            spill.flush().await?;
            self.unflushed = false;
            self.publish_spilled();
        }

        // Feed events, in order, as far as the tasks allow.
        while let Some(front) = self.window.front() {
            if front.task.is_some() {
                break;
            }
            let (event, position) = (front.event.clone(), front.position);
            let Some(result) =
                unless_shutdown(&mut self.shutdown, self.outbox.bus.publish_event(event)).await
            else {
                return Ok(Pass::Stop);
            };
            match result {
                Ok(published) => {
                    self.window.pop_front();
                    progressed = true;
                    self.outbox.progress.send_modify(|p| {
                        p.published_position = position;
                        p.events_published += 1;
                        p.duplicates += u64::from(published.duplicate);
                    });
                }
                Err(e) if e.is_retryable() => return Ok(Pass::Retry(e)),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(front) = self.window.front()
            && self.window.len() >= config.lookahead_records_max
        {
            tracing::debug!(
                position = front.position,
                "read-ahead window full: waiting for a blocked agency"
            );
        }
        Ok(if progressed {
            Pass::Progressed
        } else {
            Pass::Idle
        })
    }

    /// Records that `agency`'s queue refused the task `id` (at `position`): back off, warn.
    fn queue_full(&mut self, agency: Agency, max: u64, id: &TaskId, position: u64) {
        let now = Instant::now();
        let config = &self.outbox.config;
        let lookahead = config.lookahead_records_max;
        let first = !self.blocked.contains_key(&agency);
        let b = self
            .blocked
            .entry(agency.clone())
            .or_insert_with(|| Blocked {
                since: now,
                retry_at: now,
                warned_at: now,
                backoff: Backoff::new(config),
            });
        b.retry_at = now + b.backoff.next();
        if first || now.duration_since(b.warned_at) >= QUEUE_FULL_WARN_INTERVAL {
            b.warned_at = now;
            let meanwhile = if self.outbox.spill.is_some() {
                "its tasks wait in the outbox's spill, in order, and go when it consumes again; \
                 the feed and other agencies go on"
                    .to_owned()
            } else {
                format!(
                    "its tasks wait and the feed is held at position {position}; other agencies' \
                     tasks go on for up to {lookahead} records"
                )
            };
            tracing::warn!(
                agency = %agency,
                task = %id,
                position,
                max,
                blocked_s = now.duration_since(b.since).as_secs(),
                "the task queue of agency {agency} is full ({max} tasks): it is not consuming. \
                 {meanwhile}. Check the agency's system"
            );
        }
        if first {
            self.publish_blocked();
        }
    }

    /// Publishes the spill's tasks of each agency whose retry is due, oldest first, until its
    /// queue is full again. `None`: nothing to do; `Some(Pass::Progressed)`: some went;
    /// otherwise the pass to return (a retryable bus error, or shutdown).
    async fn drain_spill(&mut self) -> Result<Option<Pass>, Error> {
        let Some(spill) = &self.outbox.spill else {
            return Ok(None);
        };
        let now = Instant::now();
        let due: Vec<Agency> = self
            .spilled
            .iter()
            .filter(|(a, n)| **n > 0 && self.blocked.get(*a).is_none_or(|b| b.retry_at <= now))
            .map(|(a, _)| a.clone())
            .collect();
        let mut progressed = false;
        for agency in due {
            'agency: loop {
                let batch = spill.oldest(&agency, PULL_BATCH_MAX)?;
                if batch.is_empty() {
                    self.spilled.remove(&agency);
                    break;
                }
                for (key, task) in batch {
                    let id = task.id.clone();
                    let Some(result) =
                        unless_shutdown(&mut self.shutdown, self.outbox.bus.publish_task(task))
                            .await
                    else {
                        return Ok(Some(Pass::Stop));
                    };
                    match result {
                        Ok(published) => {
                            spill.remove(&key)?;
                            if let Some(n) = self.spilled.get_mut(&agency) {
                                *n = n.saturating_sub(1);
                            }
                            progressed = true;
                            self.outbox.progress.send_modify(|p| {
                                p.tasks_published += 1;
                                p.duplicates += u64::from(published.duplicate);
                            });
                        }
                        Err(lienthong_bus::Error::QueueFull { agency: a, max }) => {
                            let position = key
                                .get(key.len().saturating_sub(8)..)
                                .and_then(|b| b.try_into().ok())
                                .map_or(0, u64::from_be_bytes);
                            self.queue_full(a, max, &id, position);
                            break 'agency;
                        }
                        Err(e) if e.is_retryable() => return Ok(Some(Pass::Retry(e))),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if self.spilled.get(&agency).is_none_or(|n| *n == 0) {
                self.spilled.remove(&agency);
                if let Some(b) = self.blocked.remove(&agency) {
                    tracing::info!(
                        agency = %agency,
                        blocked_s = b.since.elapsed().as_secs(),
                        "the task queue of agency {agency} took every spilled task"
                    );
                    self.publish_blocked();
                }
            }
        }
        if progressed {
            self.publish_spilled();
        }
        Ok(progressed.then_some(Pass::Progressed))
    }

    /// Publishes the number of spilled tasks in the progress.
    fn publish_spilled(&self) {
        let total: u64 = self.spilled.values().sum();
        self.outbox
            .progress
            .send_modify(|p| p.spilled_tasks = total);
    }

    /// Publishes the set of blocked agencies in the progress.
    fn publish_blocked(&self) {
        let agencies: Vec<Agency> = self.blocked.keys().cloned().collect();
        self.outbox
            .progress
            .send_modify(|p| p.blocked_agencies = agencies);
    }
}

/// A stored record as the messages to publish, checking that it follows `after` in the feed.
fn pending(r: &Recorded, after: u64) -> Result<Pending, Error> {
    let position = r.position();
    let malformed = |why: String| Error::Malformed { position, why };
    if position != after + 1 {
        return Err(malformed(format!(
            "the store returned position {position} after {after}: the feed must have no gaps"
        )));
    }
    let env = r
        .event
        .envelope
        .as_ref()
        .ok_or_else(|| malformed("the event has no envelope".into()))?;
    let dossier = DossierId::from_str(&env.dossier_id)
        .map_err(|e| malformed(format!("dossier id {:?}: {e}", env.dossier_id)))?;
    let task = match lienthong_engine::view::task(r) {
        Some(t) => match (Agency::new(&t.agency), TaskId::new(&t.task_id)) {
            (Ok(agency), Ok(id)) => Some(Task {
                agency,
                id,
                payload: Bytes::from(t.encode_to_vec()),
            }),
            // A task no queue can hold (an addressee that is not an agency code): stopping here
            // would stop every agency's work for good, so the event is published without it and
            // the operator is told. The gateway refuses such addressees; this guards old events.
            (agency, id) => {
                tracing::error!(
                    position,
                    agency = %t.agency,
                    task = %t.task_id,
                    reason = %agency.err().or(id.err()).map_or(String::new(), |e| e.to_string()),
                    "an event names a task for no valid agency queue: published without its task"
                );
                None
            }
        },
        None => None,
    };
    Ok(Pending {
        position,
        event: FeedEvent {
            dossier: dossier.0,
            seq: env.seq,
            payload: Bytes::from(r.sealed.encode_to_vec()),
        },
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid() {
        Config::default().validate().expect("defaults");
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let bad = [
            Config {
                read_batch_records: 0,
                ..Config::default()
            },
            Config {
                lookahead_records_max: 10,
                read_batch_records: 100,
                ..Config::default()
            },
            Config {
                retry_backoff_min: Duration::from_secs(2),
                retry_backoff_max: Duration::from_secs(1),
                ..Config::default()
            },
            Config {
                poll_interval: Duration::ZERO,
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(Error::Config(_))), "{c:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut b = Backoff::new(&Config {
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(35),
            ..Config::default()
        });
        let waits: Vec<u64> = (0..4).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 35, 35]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}
