//! The bus between the engine, the gateway, the projections and the agency systems.
//!
//! Three kinds of traffic and the partitions' ownership, one trait each, and one [`Bus`] that is
//! all four:
//!
//! - [`Commands`]: request/reply to the engine node that owns a dossier's partition, on
//!   `lienthong.cmd.<partition>` ([`contract::partition_of`] maps a dossier to its partition).
//!   At most once: a request that times out may or may not have been executed, so commands carry
//!   an idempotency key (the engine's) and are retried with the same key.
//! - [`Feed`]: the event feed, an ordered log of every dossier's events, published from the
//!   engine's own sled log (the outbox) to the `LIENTHONG_FEED` stream on
//!   `lienthong.feed.<dossier>` with `Nats-Msg-Id = <dossier>/<seq>`, so a republish after a
//!   restart is dropped. Readers read from a position (the stream sequence) or follow it.
//! - [`Leases`]: which engine node serves which partition, one holder at a time (a lease per
//!   partition in the key-value bucket `LIENTHONG_LEASES`, expiring unless renewed).
//! - [`Tasks`]: work for agencies, a work queue per agency on `lienthong.task.<agency>` (stream
//!   `LIENTHONG_TASKS`) with one durable pull consumer per agency (`agency-<agency>`), explicit
//!   acks, a bound on unacknowledged tasks per agency (back-pressure), redelivery with backoff,
//!   and after the maximum deliveries a dead-letter record on `lienthong.dead.<agency>` (stream
//!   `LIENTHONG_DEAD`) plus a `warn` log, never a silent drop. Agencies never wait on each other.
//!
//! Payloads are opaque bytes (the engine puts protobuf in them): this crate knows nothing of the
//! engine. The subject, stream, header and consumer contract is in [`contract`] and
//! `docs/nats.md`; the limits and timings in [`config`].
//!
//! Two implementations pass one [`conformance`] suite: [`memory::MemoryBus`] (tokio channels and
//! maps, the embedded default and the reference model) and [`nats::NatsBus`] (async-nats and
//! JetStream; it refuses a nats-server older than 2.10). [`testing::NatsServer`] starts a real
//! nats-server for tests.
//!
//! Delivery guarantees, the same in both: a command reaches at most one server and is answered
//! at most once; a feed event or task published twice with the same id is stored once; a task
//! is delivered to one consumer of its agency at a time, again after its ack wait if it was not
//! acknowledged (so consumers must complete tasks idempotently, keyed by [`TaskId`]), and after
//! `task_deliveries_max` deliveries it is moved to the dead letters.

pub mod config;
pub mod conformance;
pub mod contract;
pub mod memory;
pub mod message;
pub mod nats;
pub mod testing;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

pub use config::Config;
pub use contract::{Agency, Partition, PartitionCount, TaskId, partition_of, partition_of_key};
pub use message::{
    CommandInbox, DeadLetter, Delivery, FeedEvent, FeedRecord, FeedSubscription, IncomingCommand,
    Published, Reply, Task, TaskCounts,
};

/// A boxed future, so that the traits can be used as `dyn` (`Arc<dyn Bus>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most deliveries one [`Tasks::pull`] returns.
pub const PULL_BATCH_MAX: usize = 256;

/// What went wrong on the bus. Kept apart: refusals of a caller's input ([`Error::InvalidName`],
/// [`Error::PayloadTooLarge`], [`Error::Config`], [`Error::ServerTooOld`]), conditions worth a
/// retry ([`Error::NoResponders`], [`Error::Timeout`], [`Error::QueueFull`]: see
/// [`Error::is_retryable`]), and faults of the transport ([`Error::Nats`], [`Error::Malformed`],
/// [`Error::Closed`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server is older than 2.10, whose JetStream settings the bus relies on.
    #[error(
        "nats-server {found} is too old: lienthong needs nats-server 2.10 or newer (older servers \
         silently ignore JetStream settings it relies on). Run an official NATS release >= 2.10 in \
         production; for tests and development, scripts/nats-server.sh installs one into \
         .tools/bin/nats-server"
    )]
    ServerTooOld {
        /// The version the server announced in its INFO.
        found: String,
    },
    /// The server runs without JetStream.
    #[error(
        "nats-server {version} at {url} has JetStream disabled: start it with `-js` (or a \
         `jetstream {{}}` block in its config)"
    )]
    JetStreamDisabled {
        /// The server's address.
        url: String,
        /// The version the server announced.
        version: String,
    },
    /// Could not connect to the server.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The address tried.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// A name that cannot go into a subject or message id.
    #[error("invalid {what} {name:?}: {rule}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The refused name.
        name: String,
        /// What a valid one looks like.
        rule: &'static str,
    },
    /// The configuration is inconsistent.
    #[error("invalid bus configuration: {0}")]
    Config(String),
    /// A payload above `payload_bytes_max`.
    #[error("payload of {size} bytes is larger than the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// No process serves the partition (none subscribed to `lienthong.cmd.<partition>`).
    #[error(
        "no engine serves partition {partition} (nobody listens on lienthong.cmd.{partition}): \
         check that an engine node owns it"
    )]
    NoResponders {
        /// The partition asked.
        partition: Partition,
    },
    /// The serving side did not answer in time; the command may or may not have been executed:
    /// retry with the same idempotency key.
    #[error("no reply from partition {partition} within {timeout_ms} ms")]
    Timeout {
        /// The partition asked.
        partition: Partition,
        /// How long the caller waited.
        timeout_ms: u64,
    },
    /// An agency's queue holds `tasks_per_agency_max` tasks: it is not keeping up.
    #[error(
        "the task queue of agency {agency} is full ({max} tasks waiting or unacknowledged): the \
         agency is not consuming; retry later"
    )]
    QueueFull {
        /// The agency whose queue is full.
        agency: Agency,
        /// The configured bound.
        max: u64,
    },
    /// A message on a lienthong subject that does not follow the contract.
    #[error("malformed message on {subject}: {why}")]
    Malformed {
        /// Where it was found.
        subject: String,
        /// What is wrong with it.
        why: String,
    },
    /// Any other failure of the NATS client or server.
    #[error("NATS {op} failed: {reason}")]
    Nats {
        /// What the bus was doing.
        op: &'static str,
        /// What the client or server said.
        reason: String,
    },
    /// Another holder has the partition's lease.
    #[error(
        "partition {partition} is leased to `{holder}`: each partition is served by exactly one \
         engine node. Give this node other --partitions, or stop that node (its lease then \
         expires within the bus's lease_ttl)"
    )]
    LeaseHeld {
        /// The partition.
        partition: Partition,
        /// Who holds it.
        holder: String,
    },
    /// A lease expired and was taken by another holder, or was released.
    #[error("the lease on partition {partition} was lost: {why}")]
    LeaseLost {
        /// The partition.
        partition: Partition,
        /// What happened to it.
        why: String,
    },
    /// The bus (or the other end of an in-process channel) is gone.
    #[error("the bus is closed")]
    Closed,
}

impl Error {
    /// Whether the same call may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NoResponders { .. }
                | Error::Timeout { .. }
                | Error::QueueFull { .. }
                | Error::Nats { .. }
        )
    }

    pub(crate) fn nats(op: &'static str, e: impl std::fmt::Display) -> Self {
        Error::Nats {
            op,
            reason: e.to_string(),
        }
    }
}

/// Commands to the engine by request/reply, routed by partition.
pub trait Commands: Send + Sync {
    /// Starts serving `partition`: requests for it arrive in the returned inbox until it is
    /// dropped. On NATS the subscription is in queue group `lienthong-engine`, so each request
    /// goes to one subscriber; a deployment gives each partition to exactly one engine node.
    fn serve(&self, partition: Partition) -> BoxFuture<'_, Result<CommandInbox, Error>>;

    /// Sends `payload` to whoever serves `partition` and waits up to `timeout` for the reply.
    fn request(
        &self,
        partition: Partition,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, Error>>;
}

/// The event feed: an ordered, deduplicated log of every dossier's events.
pub trait Feed: Send + Sync {
    /// Appends one event; a second publish of the same (dossier, seq) within the duplicate
    /// window is dropped and reported as [`Published::duplicate`] with the first's position.
    fn publish_event(&self, event: FeedEvent) -> BoxFuture<'_, Result<Published, Error>>;

    /// Up to `max` (at most [`PULL_BATCH_MAX`]) records at positions `>= from` that exist now,
    /// in order; empty when there are none. Positions start at 1; positions no longer retained
    /// are skipped.
    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, Result<Vec<FeedRecord>, Error>>;

    /// Follows the feed from position `from` on, waiting for new events.
    fn subscribe(&self, from: u64) -> BoxFuture<'_, Result<FeedSubscription, Error>>;

    /// The last record of the feed, if any: where a restarted publisher resumes.
    fn last(&self) -> BoxFuture<'_, Result<Option<FeedRecord>, Error>>;
}

/// Agency work queues.
pub trait Tasks: Send + Sync {
    /// Queues a task for its agency; a second publish of the same task id within the duplicate
    /// window is dropped. Fails with [`Error::QueueFull`] when the agency's queue is full.
    fn publish_task(&self, task: Task) -> BoxFuture<'_, Result<Published, Error>>;

    /// Takes up to `max` (at most [`PULL_BATCH_MAX`]) tasks of `agency` through its durable
    /// consumer, waiting up to `wait` for the first. Never more than `task_unacked_max` are out
    /// unacknowledged. A task due for delivery number `task_deliveries_max + 1` is not returned
    /// but moved to the dead letters.
    fn pull(
        &self,
        agency: &Agency,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, Error>>;

    /// How many tasks of `agency` wait and how many are delivered but unacknowledged.
    fn task_counts(&self, agency: &Agency) -> BoxFuture<'_, Result<TaskCounts, Error>>;

    /// Up to `max` (at most [`PULL_BATCH_MAX`]) dead-letter records of `agency` at positions
    /// `>= from` (positions start at 1), in order.
    fn dead_letters(
        &self,
        agency: &Agency,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, Error>>;
}

/// Exclusive ownership of partitions by engine nodes: a lease per partition, held by one
/// holder (an engine node's id) until it expires `lease_ttl` after it was taken or last renewed.
/// A partition's commands must be served by one node only (its dossiers live in that node's
/// store), so a node serves only the partitions it leases, and renews each lease well within
/// the time to live.
pub trait Leases: Send + Sync {
    /// Takes the lease on `partition` for `holder`: granted when nobody holds it, when its
    /// last holder let it expire, or when `holder` holds it already (a node restarted with the
    /// same id takes its lease back at once). Refused with [`Error::LeaseHeld`], naming the
    /// holder, otherwise.
    fn acquire(&self, partition: Partition, holder: &str) -> BoxFuture<'_, Result<Lease, Error>>;

    /// Extends `lease` by `lease_ttl` from now. [`Error::LeaseLost`] if its holder no longer
    /// holds the partition (the lease expired, and was taken or not, or was released): the
    /// holder must stop serving the partition at once. A lease its holder still holds at a later
    /// revision (a renewal that landed after its caller stopped waiting) is renewed.
    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<Lease, Error>>;

    /// Gives the lease up, if it is still this lease, so that another node may take the
    /// partition without waiting for it to expire.
    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), Error>>;
}

/// A lease held on a partition (see [`Leases`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The partition.
    pub partition: Partition,
    /// Who holds it.
    pub holder: String,
    /// The lease's version: each acquire and renew makes a new one, and only the latest may be
    /// renewed or released.
    pub revision: u64,
}

/// The whole bus: commands, feed, tasks and partition leases.
pub trait Bus: Commands + Feed + Tasks + Leases {}

impl<T: Commands + Feed + Tasks + Leases> Bus for T {}

/// Refuses a payload above the configured limit.
pub(crate) fn check_payload(payload: &Bytes, config: &Config) -> Result<(), Error> {
    if payload.len() > config.payload_bytes_max {
        return Err(Error::PayloadTooLarge {
            size: payload.len(),
            max: config.payload_bytes_max,
        });
    }
    Ok(())
}
