//! The in-process bus: maps, queues and tokio channels in one process, for the embedded mode and
//! as the reference model the NATS bus is compared with (both pass [`crate::conformance`]).
//!
//! It keeps the NATS semantics with the same [`Config`]: feed and task message ids deduplicated
//! within `duplicate_window`; the feed bounded by `feed_messages_max` / `feed_bytes_max`,
//! discarding the oldest; per agency a work queue bounded by `tasks_per_agency_max` (publishing
//! beyond fails), at most `task_unacked_max` tasks out unacknowledged, redelivery after the
//! backoff of each delivery, and dead-lettering instead of delivery number
//! `task_deliveries_max + 1`. Nothing is persisted: the embedded engine's durability comes from
//! its sled store, not from this bus.
//!
//! Commands go through one bounded channel per served partition (`command_inbox_capacity`);
//! serving a partition again in the same process replaces the earlier server, whose inbox then
//! receives nothing more (on NATS both would share the partition's queue group).
//!
//! Time is tokio's clock, so a test may pause it. One short lock guards each of the feed, the
//! tasks and the dead letters; waiting happens outside the locks, on a [`Notify`] per agency and
//! one for the feed, so a stalled agency never holds up another.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::config::Config;
use crate::contract::{self, Agency, Partition, TaskId};
use crate::message::{
    Acker, CommandInbox, DeadLetter, Delivery, FeedEvent, FeedRecord, FeedSubscription, InboxInner,
    IncomingCommand, Published, Reply, ReplyInner, SubscriptionInner, Task, TaskCounts,
};
use crate::{
    BoxFuture, Commands, Error, Feed, Lease, Leases, PULL_BATCH_MAX, Tasks, check_payload,
};

/// The in-process bus; cheap to clone (all clones are one bus).
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Limits and timings, validated.
    config: Config,
    /// The inbox of each served partition.
    commands: Mutex<HashMap<Partition, mpsc::Sender<IncomingCommand>>>,
    /// The feed log.
    feed: Mutex<FeedLog>,
    /// Woken on every feed append, for subscribers.
    feed_appended: Notify,
    /// Every agency's queue.
    tasks: Mutex<TaskState>,
    /// The dead-letter log.
    dead: Mutex<DeadLog>,
    /// Partition leases, and the last revision given out.
    leases: Mutex<(HashMap<Partition, HeldLease>, u64)>,
}

/// A partition lease held in the in-process bus: holder, revision, expiry.
type HeldLease = (String, u64, Instant);

/// Message ids seen within the duplicate window, with the position of the first copy.
struct Dedup {
    /// How long an id is remembered.
    window: Duration,
    /// id -> position of the message that carried it first.
    ids: HashMap<String, u64>,
    /// Ids in the order they were first seen, to forget them after the window.
    order: VecDeque<(Instant, String)>,
}

impl Dedup {
    fn new(window: Duration) -> Self {
        Self {
            window,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The position of an earlier message with `id`, if it is still within the window.
    fn seen(&mut self, id: &str, now: Instant) -> Option<u64> {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.get(id).copied()
    }

    fn record(&mut self, id: String, position: u64, now: Instant) {
        self.ids.insert(id.clone(), position);
        self.order.push_back((now, id));
    }
}

struct FeedLog {
    /// Retained records, positions increasing by one from the front.
    records: VecDeque<FeedRecord>,
    /// Sum of the retained payloads' lengths.
    bytes: u64,
    /// Position of the next record (the first is 1).
    next_position: u64,
    /// Ids `<dossier>/<seq>` seen within the window.
    dedup: Dedup,
}

impl FeedLog {
    /// Records at positions `>= from`, up to `max`.
    fn read(&self, from: u64, max: usize) -> Vec<FeedRecord> {
        let first = match self.records.front() {
            Some(r) => r.position,
            None => return Vec::new(),
        };
        let skip = from.saturating_sub(first) as usize;
        self.records.iter().skip(skip).take(max).cloned().collect()
    }
}

struct TaskState {
    /// Position of the next task in the (all agencies) task stream.
    next_position: u64,
    /// Task ids seen within the window.
    dedup: Dedup,
    /// Each agency's queue, created on first use.
    agencies: HashMap<Agency, AgencyQueue>,
}

#[derive(Default)]
struct AgencyQueue {
    /// Tasks never delivered, by position.
    ready: BTreeMap<u64, QueuedTask>,
    /// Tasks delivered and not acknowledged, by position; due for redelivery once their
    /// deadline has passed.
    unacked: BTreeMap<u64, Unacked>,
    /// Woken when a task is queued or acknowledged.
    changed: Arc<Notify>,
}

struct QueuedTask {
    id: TaskId,
    payload: Bytes,
}

struct Unacked {
    task: QueuedTask,
    /// Deliveries so far.
    delivered: u32,
    /// When the current delivery's ack wait ends.
    deadline: Instant,
}

struct DeadLog {
    /// Every record, position = index + 1.
    records: Vec<DeadLetter>,
    /// `dead/<task id>` seen within the window.
    dedup: Dedup,
}

/// Acknowledges one task of the in-process bus.
pub(crate) struct TaskAck {
    bus: Weak<Inner>,
    agency: Agency,
    position: u64,
}

impl TaskAck {
    pub(crate) fn ack(&self) -> Result<(), Error> {
        let inner = self.bus.upgrade().ok_or(Error::Closed)?;
        let mut tasks = inner.tasks.lock();
        if let Some(q) = tasks.agencies.get_mut(&self.agency) {
            // Acking twice, or a stale delivery, finds nothing left to remove: one effect.
            if q.unacked.remove(&self.position).is_some() {
                q.changed.notify_waiters();
            }
        }
        Ok(())
    }

    /// Makes the task due for redelivery after `delay`.
    pub(crate) fn reschedule(&self, delay: Duration) -> Result<(), Error> {
        self.set_deadline(|_| Instant::now() + delay)
    }

    /// Restarts the ack wait of delivery number `delivered`.
    pub(crate) fn extend(&self, delivered: u32) -> Result<(), Error> {
        self.set_deadline(|config| Instant::now() + config.ack_wait_of_delivery(delivered))
    }

    fn set_deadline(&self, deadline: impl FnOnce(&Config) -> Instant) -> Result<(), Error> {
        let inner = self.bus.upgrade().ok_or(Error::Closed)?;
        let mut tasks = inner.tasks.lock();
        if let Some(q) = tasks.agencies.get_mut(&self.agency)
            && let Some(u) = q.unacked.get_mut(&self.position)
        {
            u.deadline = deadline(&inner.config);
            q.changed.notify_waiters();
        }
        Ok(())
    }
}

/// A feed subscriber's position in the in-process feed.
pub(crate) struct FeedCursor {
    bus: Arc<Inner>,
    next: u64,
}

impl FeedCursor {
    pub(crate) async fn next(&mut self) -> Result<FeedRecord, Error> {
        loop {
            let appended = self.bus.feed_appended.notified();
            tokio::pin!(appended);
            // Register before looking, so an append between the look and the wait wakes us.
            appended.as_mut().enable();
            if let Some(r) = self.bus.feed.lock().read(self.next, 1).into_iter().next() {
                self.next = r.position + 1;
                return Ok(r);
            }
            appended.await;
        }
    }
}

impl MemoryBus {
    /// A new, empty bus with `config`.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let window = config.duplicate_window;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                commands: Mutex::new(HashMap::new()),
                feed: Mutex::new(FeedLog {
                    records: VecDeque::new(),
                    bytes: 0,
                    next_position: 1,
                    dedup: Dedup::new(window),
                }),
                feed_appended: Notify::new(),
                tasks: Mutex::new(TaskState {
                    next_position: 1,
                    dedup: Dedup::new(window),
                    agencies: HashMap::new(),
                }),
                dead: Mutex::new(DeadLog {
                    records: Vec::new(),
                    dedup: Dedup::new(window),
                }),
                leases: Mutex::new((HashMap::new(), 0)),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}

impl Inner {
    /// Takes up to `max` tasks of `agency` now: due redeliveries first, then new tasks while
    /// fewer than `task_unacked_max` are out; dead-letters tasks that used up their deliveries.
    /// Returns the deliveries and, when there are none, when to look again.
    fn take_tasks(
        self: &Arc<Self>,
        agency: &Agency,
        max: usize,
        now: Instant,
    ) -> (Vec<Delivery>, Option<Instant>) {
        let config = &self.config;
        let mut dead = Vec::new();
        let mut out = Vec::new();
        let mut tasks = self.tasks.lock();
        let q = tasks.agencies.entry(agency.clone()).or_default();
        let changed = q.changed.clone();

        let due: Vec<u64> = q
            .unacked
            .iter()
            .filter(|(_, u)| u.deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        for position in due {
            if out.len() >= max {
                break;
            }
            let Some(u) = q.unacked.get_mut(&position) else {
                continue;
            };
            if u.delivered >= config.task_deliveries_max {
                if let Some(u) = q.unacked.remove(&position) {
                    dead.push((position, u));
                }
                continue;
            }
            u.delivered += 1;
            u.deadline = now + config.ack_wait_of_delivery(u.delivered);
            out.push(self.delivery(agency, position, &u.task, u.delivered));
        }
        while out.len() < max && q.unacked.len() < config.task_unacked_max as usize {
            let Some((position, task)) = q.ready.pop_first() else {
                break;
            };
            out.push(self.delivery(agency, position, &task, 1));
            q.unacked.insert(
                position,
                Unacked {
                    task,
                    delivered: 1,
                    deadline: now + config.ack_wait_of_delivery(1),
                },
            );
        }
        let next_deadline = q.unacked.values().map(|u| u.deadline).min();
        if !dead.is_empty() {
            // Room was freed for new deliveries.
            changed.notify_waiters();
        }
        drop(tasks);

        for (position, u) in dead {
            self.dead_letter(agency, position, u);
        }
        (out, next_deadline)
    }

    /// The notifier of `agency`'s queue (creating the queue).
    fn queue_changed(&self, agency: &Agency) -> Arc<Notify> {
        let mut tasks = self.tasks.lock();
        tasks
            .agencies
            .entry(agency.clone())
            .or_default()
            .changed
            .clone()
    }

    fn delivery(
        self: &Arc<Self>,
        agency: &Agency,
        position: u64,
        task: &QueuedTask,
        delivered: u32,
    ) -> Delivery {
        Delivery {
            agency: agency.clone(),
            task: task.id.clone(),
            payload: task.payload.clone(),
            delivered,
            position,
            acker: Acker::Memory(TaskAck {
                bus: Arc::downgrade(self),
                agency: agency.clone(),
                position,
            }),
        }
    }

    /// Records a task given up on. If the dead-letter log is full the task goes back to the
    /// agency's unacked set, to be retried at the next pull, and the failure is logged.
    fn dead_letter(self: &Arc<Self>, agency: &Agency, position: u64, u: Unacked) {
        let now = Instant::now();
        let mut dead = self.dead.lock();
        let msg_id = contract::dead_msg_id(&u.task.id);
        if dead.dedup.seen(&msg_id, now).is_none() {
            if dead.records.len() as u64 >= self.config.dead_letters_max {
                drop(dead);
                tracing::error!(
                    agency = %agency,
                    task = %u.task.id,
                    limit = self.config.dead_letters_max,
                    "dead-letter log is full: the task stays queued; read and clear the dead \
                     letters or raise dead_letters_max"
                );
                // Back in the queue, due again after the longest backoff (not at once: its old
                // deadline has passed, and a past deadline would make every pull spin on it).
                let later = self
                    .config
                    .task_redelivery_backoff
                    .last()
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                let mut u = u;
                u.deadline = now + later;
                let mut tasks = self.tasks.lock();
                if let Some(q) = tasks.agencies.get_mut(agency) {
                    q.unacked.insert(position, u);
                }
                return;
            }
            let record_position = dead.records.len() as u64 + 1;
            dead.dedup.record(msg_id, record_position, now);
            dead.records.push(DeadLetter {
                position: record_position,
                agency: agency.clone(),
                task: u.task.id.clone(),
                deliveries: u.delivered,
                payload: u.task.payload.clone(),
            });
        }
        tracing::warn!(
            agency = %agency,
            task = %u.task.id,
            deliveries = u.delivered,
            subject = %contract::dead_subject(agency),
            "task dead-lettered: the agency never acknowledged it; it is kept on the dead-letter \
             subject for an operator to resolve"
        );
    }
}

impl Commands for MemoryBus {
    fn serve(&self, partition: Partition) -> BoxFuture<'_, Result<CommandInbox, Error>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(self.inner.config.command_inbox_capacity);
            self.inner.commands.lock().insert(partition, tx);
            Ok(CommandInbox {
                inner: InboxInner::Memory(rx),
            })
        })
    }

    fn request(
        &self,
        partition: Partition,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, Error>> {
        Box::pin(async move {
            check_payload(&payload, &self.inner.config)?;
            let tx = self
                .inner
                .commands
                .lock()
                .get(&partition)
                .filter(|tx| !tx.is_closed())
                .cloned()
                .ok_or(Error::NoResponders { partition })?;
            let (reply_tx, reply_rx) = oneshot::channel();
            let command = IncomingCommand {
                partition,
                payload,
                reply: Reply {
                    inner: ReplyInner::Memory(reply_tx),
                    payload_bytes_max: self.inner.config.payload_bytes_max,
                },
            };
            let timed_out = Error::Timeout {
                partition,
                timeout_ms: timeout.as_millis() as u64,
            };
            let exchange = async {
                tx.send(command)
                    .await
                    .map_err(|_| Error::NoResponders { partition })?;
                // A server that drops the request without answering looks, as on NATS, like
                // one that did not answer in time.
                reply_rx.await.map_err(|_| Error::Timeout {
                    partition,
                    timeout_ms: timeout.as_millis() as u64,
                })
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(timed_out))
        })
    }
}

impl Feed for MemoryBus {
    fn publish_event(&self, event: FeedEvent) -> BoxFuture<'_, Result<Published, Error>> {
        Box::pin(async move {
            let config = &self.inner.config;
            check_payload(&event.payload, config)?;
            let now = Instant::now();
            let msg_id = contract::feed_msg_id(event.dossier, event.seq);
            let mut feed = self.inner.feed.lock();
            if let Some(position) = feed.dedup.seen(&msg_id, now) {
                return Ok(Published {
                    position,
                    duplicate: true,
                });
            }
            let position = feed.next_position;
            feed.next_position += 1;
            feed.dedup.record(msg_id, position, now);
            feed.bytes += event.payload.len() as u64;
            feed.records.push_back(FeedRecord {
                position,
                dossier: event.dossier,
                seq: event.seq,
                payload: event.payload,
            });
            // Discard the oldest beyond the limits, as the NATS stream does.
            while feed.records.len() as u64 > config.feed_messages_max
                || feed.bytes > config.feed_bytes_max
            {
                match feed.records.pop_front() {
                    Some(old) => feed.bytes -= old.payload.len() as u64,
                    None => break,
                }
            }
            drop(feed);
            self.inner.feed_appended.notify_waiters();
            Ok(Published {
                position,
                duplicate: false,
            })
        })
    }

    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, Result<Vec<FeedRecord>, Error>> {
        Box::pin(async move { Ok(self.inner.feed.lock().read(from, max.min(PULL_BATCH_MAX))) })
    }

    fn subscribe(&self, from: u64) -> BoxFuture<'_, Result<FeedSubscription, Error>> {
        Box::pin(async move {
            Ok(FeedSubscription {
                inner: SubscriptionInner::Memory(FeedCursor {
                    bus: self.inner.clone(),
                    next: from.max(1),
                }),
            })
        })
    }

    fn last(&self) -> BoxFuture<'_, Result<Option<FeedRecord>, Error>> {
        Box::pin(async move { Ok(self.inner.feed.lock().records.back().cloned()) })
    }
}

impl Tasks for MemoryBus {
    fn publish_task(&self, task: Task) -> BoxFuture<'_, Result<Published, Error>> {
        Box::pin(async move {
            let config = &self.inner.config;
            check_payload(&task.payload, config)?;
            let now = Instant::now();
            let mut tasks = self.inner.tasks.lock();
            if let Some(position) = tasks.dedup.seen(task.id.as_str(), now) {
                return Ok(Published {
                    position,
                    duplicate: true,
                });
            }
            let position = tasks.next_position;
            let q = tasks.agencies.entry(task.agency.clone()).or_default();
            if (q.ready.len() + q.unacked.len()) as u64 >= config.tasks_per_agency_max {
                return Err(Error::QueueFull {
                    agency: task.agency,
                    max: config.tasks_per_agency_max,
                });
            }
            q.ready.insert(
                position,
                QueuedTask {
                    id: task.id.clone(),
                    payload: task.payload,
                },
            );
            q.changed.notify_waiters();
            tasks.next_position += 1;
            tasks
                .dedup
                .record(task.id.as_str().to_owned(), position, now);
            Ok(Published {
                position,
                duplicate: false,
            })
        })
    }

    fn pull(
        &self,
        agency: &Agency,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, Error>> {
        let agency = agency.clone();
        Box::pin(async move {
            let max = max.min(PULL_BATCH_MAX);
            if max == 0 {
                return Ok(Vec::new());
            }
            let give_up = Instant::now() + wait;
            loop {
                let changed = self.inner.queue_changed(&agency);
                let notified = changed.notified();
                tokio::pin!(notified);
                // Register before looking, so a publish or ack in between wakes us.
                notified.as_mut().enable();
                let now = Instant::now();
                let (out, next_deadline) = self.inner.take_tasks(&agency, max, now);
                if !out.is_empty() {
                    return Ok(out);
                }
                if now >= give_up {
                    return Ok(Vec::new());
                }
                // Wake for a publish or ack, for the next redelivery, or to give up.
                let until = next_deadline.map_or(give_up, |d| d.min(give_up));
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        })
    }

    fn task_counts(&self, agency: &Agency) -> BoxFuture<'_, Result<TaskCounts, Error>> {
        let agency = agency.clone();
        Box::pin(async move {
            let tasks = self.inner.tasks.lock();
            Ok(tasks
                .agencies
                .get(&agency)
                .map(|q| TaskCounts {
                    waiting: q.ready.len() as u64,
                    unacked: q.unacked.len() as u64,
                })
                .unwrap_or_default())
        })
    }

    fn dead_letters(
        &self,
        agency: &Agency,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, Error>> {
        let agency = agency.clone();
        Box::pin(async move {
            let dead = self.inner.dead.lock();
            let skip = from.saturating_sub(1) as usize;
            Ok(dead
                .records
                .iter()
                .skip(skip)
                .filter(|d| d.agency == agency)
                .take(max.min(PULL_BATCH_MAX))
                .cloned()
                .collect())
        })
    }
}

impl Leases for MemoryBus {
    fn acquire(&self, partition: Partition, holder: &str) -> BoxFuture<'_, Result<Lease, Error>> {
        let holder = holder.to_owned();
        Box::pin(async move {
            let now = Instant::now();
            let mut guard = self.inner.leases.lock();
            let (leases, last) = &mut *guard;
            if let Some((other, _, expires)) = leases.get(&partition)
                && *expires > now
                && *other != holder
            {
                return Err(Error::LeaseHeld {
                    partition,
                    holder: other.clone(),
                });
            }
            *last += 1;
            let revision = *last;
            leases.insert(
                partition,
                (holder.clone(), revision, now + self.inner.config.lease_ttl),
            );
            Ok(Lease {
                partition,
                holder,
                revision,
            })
        })
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<Lease, Error>> {
        let lease = lease.clone();
        Box::pin(async move {
            let now = Instant::now();
            let mut guard = self.inner.leases.lock();
            let (leases, last) = &mut *guard;
            match leases.get(&lease.partition) {
                // Ours (at this revision, or at a later one: a renewal that landed after its
                // caller stopped waiting for it), and alive.
                Some((holder, _, expires)) if *holder == lease.holder && *expires > now => {}
                Some((holder, _, _)) if *holder == lease.holder => {
                    // Expired but nobody took it: as on NATS, the entry is gone.
                    leases.remove(&lease.partition);
                    return Err(Error::LeaseLost {
                        partition: lease.partition,
                        why: "it expired before it was renewed".into(),
                    });
                }
                Some((holder, _, _)) => {
                    return Err(Error::LeaseLost {
                        partition: lease.partition,
                        why: format!("it is now held by `{holder}`"),
                    });
                }
                None => {
                    return Err(Error::LeaseLost {
                        partition: lease.partition,
                        why: "it was released".into(),
                    });
                }
            }
            *last += 1;
            let revision = *last;
            leases.insert(
                lease.partition,
                (
                    lease.holder.clone(),
                    revision,
                    now + self.inner.config.lease_ttl,
                ),
            );
            Ok(Lease { revision, ..lease })
        })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut guard = self.inner.leases.lock();
            if guard
                .0
                .get(&lease.partition)
                .is_some_and(|(_, revision, _)| *revision == lease.revision)
            {
                guard.0.remove(&lease.partition);
            }
            Ok(())
        })
    }
}
