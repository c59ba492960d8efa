//! What travels on the bus, and the handles that answer it: a received command and its
//! [`Reply`], a published [`FeedEvent`] and the [`FeedRecord`] a reader gets back, a [`Task`] and
//! the [`Delivery`] an agency acknowledges, and the [`DeadLetter`] of a task given up.
//!
//! The handles are the same types for both implementations (an enum inside), so code written
//! against the traits never names an implementation.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use uuid::Uuid;

use crate::contract::{Agency, Partition, TaskId};
use crate::{Error, memory, nats};

/// One event to publish on the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// The dossier the event belongs to: the subject is `lienthong.feed.<dossier>`.
    pub dossier: Uuid,
    /// The event's sequence number within the dossier (from 1): with the dossier it forms the
    /// message id `<dossier>/<seq>` that makes a republish harmless.
    pub seq: u64,
    /// The event's bytes (the engine's protobuf).
    pub payload: Bytes,
}

/// One event read from the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRecord {
    /// Where it is in the feed: the stream sequence, from 1, strictly increasing.
    pub position: u64,
    /// The dossier the event belongs to.
    pub dossier: Uuid,
    /// Its sequence number within the dossier.
    pub seq: u64,
    /// The event's bytes.
    pub payload: Bytes,
}

/// The answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The position of the message in its stream (of the first copy, for a duplicate).
    pub position: u64,
    /// True when the message id was already in the stream and this copy was dropped.
    pub duplicate: bool,
}

/// A task for an agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The agency whose queue it goes to: the subject is `lienthong.task.<agency>`.
    pub agency: Agency,
    /// The task's stable id: its message id, and the agency's key for completing it once.
    pub id: TaskId,
    /// The task's bytes (the engine's protobuf).
    pub payload: Bytes,
}

/// How many tasks of an agency are where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskCounts {
    /// Queued and never delivered yet.
    pub waiting: u64,
    /// Delivered and not acknowledged yet, including those due for redelivery: at most
    /// `task_unacked_max`.
    pub unacked: u64,
}

/// A task that exhausted its deliveries, recorded on `lienthong.dead.<agency>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its position in the dead-letter stream (from 1, all agencies together).
    pub position: u64,
    /// The agency that never acknowledged it.
    pub agency: Agency,
    /// The task's id.
    pub task: TaskId,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// The task's bytes, unchanged.
    pub payload: Bytes,
}

/// A task handed to an agency: acknowledge it with [`Delivery::ack`] once it is done (or safely
/// stored), or it comes back after the ack wait.
pub struct Delivery {
    /// The agency it was delivered to.
    pub agency: Agency,
    /// The task's id: the same on every delivery of the task; complete tasks idempotently by it.
    pub task: TaskId,
    /// The task's bytes.
    pub payload: Bytes,
    /// Which delivery this is: 1 the first time, 2 for the first redelivery ...
    pub delivered: u32,
    /// The task's position in the task stream.
    pub position: u64,
    /// How to acknowledge it.
    pub(crate) acker: Acker,
}

/// The implementation's way of acknowledging a delivery.
pub(crate) enum Acker {
    Memory(memory::TaskAck),
    Nats(Box<async_nats::jetstream::message::Acker>),
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("agency", &self.agency)
            .field("task", &self.task)
            .field("delivered", &self.delivered)
            .field("position", &self.position)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

impl Delivery {
    /// Acknowledges the task: it leaves the agency's queue and is not delivered again. Acking a
    /// task that was already acknowledged (through this or an earlier delivery) succeeds and
    /// changes nothing.
    pub async fn ack(&self) -> Result<(), Error> {
        match &self.acker {
            Acker::Memory(ack) => ack.ack(),
            Acker::Nats(acker) => acker
                .double_ack()
                .await
                .map_err(|e| Error::nats("task ack", e)),
        }
    }

    /// Gives the task back: it is delivered again (to this or another worker of the agency)
    /// after `delay` instead of after the ack wait. It still counts towards the deliveries.
    pub async fn nak(&self, delay: Duration) -> Result<(), Error> {
        match &self.acker {
            Acker::Memory(ack) => ack.reschedule(delay),
            Acker::Nats(acker) => acker
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| Error::nats("task nak", e)),
        }
    }

    /// Says the task is still being worked on: its ack wait starts again from now, so it is not
    /// redelivered meanwhile. For work that may outlast the ack wait.
    pub async fn in_progress(&self) -> Result<(), Error> {
        match &self.acker {
            Acker::Memory(ack) => ack.extend(self.delivered),
            Acker::Nats(acker) => acker
                .ack_with(async_nats::jetstream::AckKind::Progress)
                .await
                .map_err(|e| Error::nats("task in-progress", e)),
        }
    }
}

/// A command received by a partition's server.
#[derive(Debug)]
pub struct IncomingCommand {
    /// The partition it was sent to.
    pub partition: Partition,
    /// The command's bytes.
    pub payload: Bytes,
    /// Where the answer goes.
    pub reply: Reply,
}

/// The way back to a command's sender; answer once with [`Reply::send`].
#[derive(Debug)]
pub struct Reply {
    pub(crate) inner: ReplyInner,
    /// The largest payload the reply may carry.
    pub(crate) payload_bytes_max: usize,
}

#[derive(Debug)]
pub(crate) enum ReplyInner {
    Memory(oneshot::Sender<Bytes>),
    Nats {
        client: async_nats::Client,
        subject: async_nats::Subject,
    },
}

impl Reply {
    /// Sends the answer. A sender that gave up waiting is not an error here: it sees a timeout
    /// and retries with its idempotency key.
    pub async fn send(self, payload: Bytes) -> Result<(), Error> {
        if payload.len() > self.payload_bytes_max {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max: self.payload_bytes_max,
            });
        }
        match self.inner {
            ReplyInner::Memory(tx) => {
                // The requester may have timed out and gone: nothing to do then.
                let _ = tx.send(payload);
                Ok(())
            }
            ReplyInner::Nats { client, subject } => client
                .publish(subject, payload)
                .await
                .map_err(|e| Error::nats("command reply", e)),
        }
    }
}

/// The requests for one served partition, in arrival order. Dropping it stops serving.
pub struct CommandInbox {
    pub(crate) inner: InboxInner,
}

pub(crate) enum InboxInner {
    Memory(mpsc::Receiver<IncomingCommand>),
    Nats(nats::CommandSubscription),
}

impl CommandInbox {
    /// The next request, or `None` when the bus is closed.
    pub async fn next(&mut self) -> Option<IncomingCommand> {
        match &mut self.inner {
            InboxInner::Memory(rx) => rx.recv().await,
            InboxInner::Nats(sub) => sub.next().await,
        }
    }
}

/// A reader following the feed from a position.
pub struct FeedSubscription {
    pub(crate) inner: SubscriptionInner,
}

pub(crate) enum SubscriptionInner {
    Memory(memory::FeedCursor),
    Nats(nats::FeedStream),
}

impl FeedSubscription {
    /// The next record, waiting for one to be published.
    pub async fn next(&mut self) -> Result<FeedRecord, Error> {
        match &mut self.inner {
            SubscriptionInner::Memory(cursor) => cursor.next().await,
            SubscriptionInner::Nats(stream) => match stream.next().await {
                Some(r) => r,
                None => Err(Error::Closed),
            },
        }
    }

    /// The next record if one comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<FeedRecord>, Error> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}
