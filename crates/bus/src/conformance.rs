//! The conformance suite every [`Bus`] implementation must pass.
//!
//! Written once over `&dyn Bus`, so the in-process and the NATS bus run exactly the same checks
//! (`crates/bus/tests/memory_conformance.rs` and `nats_conformance.rs`). Like the store's suite
//! it lives in the library so that an implementation in another crate can run it too; every
//! check panics, saying which property broke, when the bus is wrong.
//!
//! Build the bus with [`config`]: short redelivery delays and small bounds that the checks rely
//! on. The checks do not assume an empty bus: each uses fresh agencies, dossiers and partitions
//! and compares feed positions relative to what it published, so they can share one bus.
//! They are async; run them on a tokio runtime with the time driver (real time: the NATS server
//! keeps its own clock).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::Config;
use crate::contract::{Agency, Partition, PartitionCount, TaskId, partition_of};
use crate::message::{Delivery, FeedEvent, Task, TaskCounts};
use crate::{Bus, Error};

/// Delay before each redelivery in [`config`].
pub const REDELIVERY: Duration = Duration::from_millis(600);
/// Deliveries before dead-lettering in [`config`].
pub const DELIVERIES_MAX: u32 = 3;
/// Unacknowledged tasks per agency in [`config`].
pub const UNACKED_MAX: u32 = 3;
/// Queued tasks per agency in [`config`].
pub const TASKS_PER_AGENCY_MAX: u64 = 20;
/// Largest payload in [`config`].
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// How long a check waits for something that must happen (a redelivery, a reply).
pub const PATIENCE: Duration = Duration::from_secs(5);
/// Partition lease time to live in [`config`].
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// The configuration the checks assume.
pub fn config() -> Config {
    Config {
        duplicate_window: Duration::from_secs(120),
        task_redelivery_backoff: vec![REDELIVERY],
        task_deliveries_max: DELIVERIES_MAX,
        task_unacked_max: UNACKED_MAX,
        tasks_per_agency_max: TASKS_PER_AGENCY_MAX,
        payload_bytes_max: PAYLOAD_BYTES_MAX,
        lease_ttl: LEASE_TTL,
        ..Config::default()
    }
}

/// A fresh agency code (`c-<label>-<8 hex>`).
pub fn fresh_agency(label: &str) -> Agency {
    let hex = Uuid::now_v7().simple().to_string();
    let code = format!("c-{label}-{}", &hex[24..]);
    Agency::new(&code).unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh task for `agency`.
pub fn fresh_task(agency: &Agency, note: &str) -> Task {
    let id = format!("{}/{note}", Uuid::now_v7());
    Task {
        agency: agency.clone(),
        id: TaskId::new(&id).unwrap_or_else(|e| panic!("{e}")),
        payload: Bytes::from(format!("task {note} for {agency}")),
    }
}

fn fresh_partition() -> Partition {
    // Well away from the small numbers a deployment uses, and unlikely to repeat.
    Partition(100_000 + (Uuid::now_v7().as_u128() % 1_000_000) as u32)
}

async fn publish(bus: &dyn Bus, task: &Task) {
    bus.publish_task(task.clone())
        .await
        .unwrap_or_else(|e| panic!("publish task {}: {e}", task.id));
}

async fn pull(bus: &dyn Bus, agency: &Agency, max: usize, wait: Duration) -> Vec<Delivery> {
    bus.pull(agency, max, wait)
        .await
        .unwrap_or_else(|e| panic!("pull for {agency}: {e}"))
}

async fn ack(d: &Delivery) {
    d.ack()
        .await
        .unwrap_or_else(|e| panic!("ack of {} (delivery {}): {e}", d.task, d.delivered));
}

async fn counts(bus: &dyn Bus, agency: &Agency) -> TaskCounts {
    bus.task_counts(agency)
        .await
        .unwrap_or_else(|e| panic!("task counts of {agency}: {e}"))
}

/// Pulls until `n` deliveries have come or [`PATIENCE`] is over.
async fn pull_n(bus: &dyn Bus, agency: &Agency, n: usize) -> Vec<Delivery> {
    let give_up = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < give_up {
        out.extend(pull(bus, agency, n - out.len(), Duration::from_millis(500)).await);
    }
    out
}

/// Commands reach the server of their partition, and only it; each is answered once; a
/// partition nobody serves answers `NoResponders` at once.
pub async fn commands_route_by_partition(bus: &dyn Bus) {
    let count = PartitionCount::new(4).expect("4 partitions");
    let base = fresh_partition().0;
    let partitions: Vec<Partition> = (0..4).map(|i| Partition(base + i)).collect();
    let mut servers = Vec::new();
    for p in &partitions {
        let inbox = bus
            .serve(*p)
            .await
            .unwrap_or_else(|e| panic!("serve {p}: {e}"));
        servers.push(inbox);
    }
    // Each server answers "<its partition>:<payload>".
    let mut handles = Vec::new();
    for (mut inbox, p) in servers.into_iter().zip(partitions.iter().copied()) {
        handles.push(tokio::spawn(async move {
            let mut served = 0u32;
            while let Some(cmd) = inbox.next().await {
                assert_eq!(cmd.partition, p, "a server got another partition's command");
                let mut answer = format!("{p}:").into_bytes();
                answer.extend_from_slice(&cmd.payload);
                if cmd.reply.send(Bytes::from(answer)).await.is_err() {
                    break;
                }
                served += 1;
            }
            served
        }));
    }
    for i in 0..24 {
        let dossier = Uuid::now_v7();
        let local = partition_of(dossier, count);
        let p = partitions[local.0 as usize];
        let payload = Bytes::from(format!("cmd-{i}-{dossier}"));
        let reply = bus
            .request(p, payload.clone(), PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("request to {p}: {e}"));
        let expected = format!("{p}:cmd-{i}-{dossier}");
        assert_eq!(
            reply,
            Bytes::from(expected),
            "the reply must come from the server of partition {p}"
        );
    }
    let nobody = Partition(base + 10);
    match bus
        .request(nobody, Bytes::from_static(b"x"), PATIENCE)
        .await
    {
        Err(Error::NoResponders { partition }) => assert_eq!(partition, nobody),
        other => panic!("a partition nobody serves must answer NoResponders, got {other:?}"),
    }
    for h in handles {
        h.abort();
    }
}

/// A server that stops serving (drops its inbox) stops receiving: requests then fail fast with
/// `NoResponders`, not a timeout.
pub async fn dropped_inbox_stops_serving(bus: &dyn Bus) {
    let p = fresh_partition();
    let inbox = bus.serve(p).await.unwrap_or_else(|e| panic!("serve: {e}"));
    drop(inbox);
    let give_up = Instant::now() + PATIENCE;
    loop {
        let started = Instant::now();
        match bus
            .request(p, Bytes::from_static(b"x"), Duration::from_millis(300))
            .await
        {
            Err(Error::NoResponders { .. }) => {
                assert!(
                    started.elapsed() < Duration::from_millis(250),
                    "NoResponders must come at once"
                );
                return;
            }
            // The unsubscription may take a moment to reach a remote server.
            Err(Error::Timeout { .. }) if Instant::now() < give_up => {}
            other => panic!("after the inbox is dropped, expected NoResponders, got {other:?}"),
        }
    }
}

/// Publishing the same (dossier, seq) twice stores one message; the second publish reports the
/// first's position.
pub async fn feed_dedups_by_msg_id(bus: &dyn Bus) {
    let d = Uuid::now_v7();
    let event = |seq: u64, note: &str| FeedEvent {
        dossier: d,
        seq,
        payload: Bytes::from(format!("{d}/{seq} {note}")),
    };
    let first = bus
        .publish_event(event(1, "first"))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    assert!(!first.duplicate, "a first publish is not a duplicate");
    let again = bus
        .publish_event(event(1, "republished after a restart"))
        .await
        .unwrap_or_else(|e| panic!("republish: {e}"));
    assert!(
        again.duplicate,
        "the same <dossier>/<seq> must be a duplicate"
    );
    assert_eq!(
        again.position, first.position,
        "a duplicate reports the first's position"
    );
    let second = bus
        .publish_event(event(2, "next"))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    assert!(!second.duplicate && second.position > first.position);

    let records = bus
        .read(first.position, 100)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let mine: Vec<_> = records.iter().filter(|r| r.dossier == d).collect();
    assert_eq!(mine.len(), 2, "one message per (dossier, seq): {mine:?}");
    assert_eq!((mine[0].seq, mine[1].seq), (1, 2));
    assert_eq!(
        mine[0].payload,
        Bytes::from(format!("{d}/1 first")),
        "the first copy is kept"
    );
}

/// Readers read from any position, in order, in batches; a subscriber follows new events; the
/// last record is where a publisher resumes.
pub async fn feed_reads_from_a_position(bus: &dyn Bus) {
    let d = Uuid::now_v7();
    let mut positions = Vec::new();
    for seq in 1..=5u64 {
        let p = bus
            .publish_event(FeedEvent {
                dossier: d,
                seq,
                payload: Bytes::from(format!("event {seq}")),
            })
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
        positions.push(p.position);
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions must increase: {positions:?}"
    );
    let last = bus
        .last()
        .await
        .unwrap_or_else(|e| panic!("last: {e}"))
        .expect("a feed with events has a last record");
    assert_eq!(
        (last.dossier, last.seq, last.position),
        (d, 5, positions[4])
    );

    let from_third = bus
        .read(positions[2], 100)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(from_third.first().map(|r| r.position), Some(positions[2]));
    let seqs: Vec<u64> = from_third
        .iter()
        .filter(|r| r.dossier == d)
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        seqs,
        vec![3, 4, 5],
        "reading from a position gives what follows, in order"
    );
    assert!(
        from_third.windows(2).all(|w| w[0].position < w[1].position),
        "a read is in position order"
    );
    let two = bus
        .read(positions[0], 2)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(two.len(), 2, "a read returns at most max records");
    assert_eq!(two[0].position, positions[0]);
    let beyond = bus
        .read(positions[4] + 1_000_000, 10)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert!(beyond.is_empty(), "nothing beyond the end");

    let mut sub = bus
        .subscribe(positions[3])
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    for expected in [positions[3], positions[4]] {
        let r = sub
            .next_within(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("subscription: {e}"))
            .expect("the subscription delivers what is there");
        assert_eq!(r.position, expected);
    }
    let p6 = bus
        .publish_event(FeedEvent {
            dossier: d,
            seq: 6,
            payload: Bytes::from_static(b"event 6"),
        })
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    let r = sub
        .next_within(PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("subscription: {e}"))
        .expect("the subscription delivers a new event");
    assert!(r.position <= p6.position);
    if r.dossier == d {
        assert_eq!((r.seq, r.position), (6, p6.position));
    }
}

/// A task reaches its own agency's consumer, once: not another agency, not twice after an ack,
/// not twice when published twice, and not to two workers of the agency at once.
pub async fn task_is_delivered_once_to_its_agency(bus: &dyn Bus) {
    let a = fresh_agency("once-a");
    let b = fresh_agency("once-b");
    let ta = fresh_task(&a, "a1");
    let tb = fresh_task(&b, "b1");
    publish(bus, &ta).await;
    publish(bus, &tb).await;
    let dup = bus
        .publish_task(ta.clone())
        .await
        .unwrap_or_else(|e| panic!("republish: {e}"));
    assert!(
        dup.duplicate,
        "the same task id published twice is one task"
    );

    let got_a = pull(bus, &a, 10, PATIENCE).await;
    assert_eq!(got_a.len(), 1, "agency a has exactly one task: {got_a:?}");
    assert_eq!(
        (&got_a[0].task, &got_a[0].payload, got_a[0].delivered),
        (&ta.id, &ta.payload, 1)
    );
    assert_eq!(got_a[0].agency, a);
    let got_b = pull(bus, &b, 10, PATIENCE).await;
    assert_eq!(got_b.len(), 1, "agency b has exactly one task: {got_b:?}");
    assert_eq!(got_b[0].task, tb.id);
    ack(&got_a[0]).await;
    ack(&got_b[0]).await;
    // Longer than the ack wait: an acknowledged task never comes back.
    let again = pull(bus, &a, 10, REDELIVERY * 2).await;
    assert!(
        again.is_empty(),
        "an acked task must not come back: {again:?}"
    );

    // Two workers of one agency share its durable consumer: each task goes to one of them.
    // (They wait less than the ack wait and ack at once, so no redelivery can mix in.)
    let c = fresh_agency("once-c");
    let tasks: Vec<Task> = (0..UNACKED_MAX)
        .map(|i| fresh_task(&c, &format!("c{i}")))
        .collect();
    for t in &tasks {
        publish(bus, t).await;
    }
    let short = REDELIVERY / 2;
    let (w1, w2) = tokio::join!(pull(bus, &c, 2, short), pull(bus, &c, 2, short));
    let mut seen = BTreeSet::new();
    for d in w1.iter().chain(w2.iter()) {
        assert!(
            seen.insert(d.task.clone()),
            "{} delivered to both workers",
            d.task
        );
        assert_eq!(d.delivered, 1);
        ack(d).await;
    }
    let rest = pull_n(bus, &c, tasks.len() - seen.len()).await;
    for d in &rest {
        assert!(seen.insert(d.task.clone()), "{} delivered twice", d.task);
        ack(d).await;
    }
    let all: BTreeSet<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(seen, all, "every task of the agency is delivered");
}

/// A task not acknowledged within the ack wait is delivered again, with the same id and payload
/// and the delivery count raised.
pub async fn unacked_task_is_redelivered(bus: &dyn Bus) {
    let a = fresh_agency("redeliver");
    let t = fresh_task(&a, "t");
    publish(bus, &t).await;
    let first = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!(first.len(), 1);
    let delivered_at = Instant::now();
    let second = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!(second.len(), 1, "an unacked task must be redelivered");
    assert!(
        delivered_at.elapsed() >= REDELIVERY.mul_f32(0.7),
        "redelivered after {:?}, before the ack wait of {REDELIVERY:?}",
        delivered_at.elapsed()
    );
    let d = &second[0];
    assert_eq!((&d.task, &d.payload), (&t.id, &t.payload));
    assert_eq!(d.delivered, 2, "the second delivery says so");
    ack(d).await;
}

/// A task redelivered because its first ack came late, and then acknowledged through both
/// deliveries, has one effect: both acks succeed, the task never comes back, no dead letter.
/// (Consumers complete tasks idempotently by [`TaskId`], which both deliveries carry.)
pub async fn redelivered_task_acked_twice_has_one_effect(bus: &dyn Bus) {
    let a = fresh_agency("twice");
    let t = fresh_task(&a, "t");
    publish(bus, &t).await;
    let d1 = pull(bus, &a, 1, PATIENCE).await;
    let d2 = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!((d1.len(), d2.len()), (1, 1), "delivered, then redelivered");
    let (d1, d2) = (&d1[0], &d2[0]);
    assert_eq!(d1.task, d2.task, "a redelivery carries the same task id");

    // Both acks succeed, the redelivery's first and then the stale first delivery's (a worker
    // that was slow): neither errs, and the task is gone for good. That the work itself happens
    // once is the consumer's part (it completes by task id: the engine's idempotency keys).
    for d in [d2, d1] {
        ack(d).await;
    }

    let after = pull(bus, &a, 10, REDELIVERY * 2).await;
    assert!(
        after.is_empty(),
        "an acked task must not come back: {after:?}"
    );
    assert_eq!(counts(bus, &a).await, TaskCounts::default());
    let dead = bus
        .dead_letters(&a, 1, 10)
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e}"));
    assert!(dead.is_empty(), "an acked task is not dead: {dead:?}");
}

/// After [`DELIVERIES_MAX`] deliveries without an ack the task is not delivered again: a
/// dead-letter record with its id, payload and delivery count is there instead.
pub async fn max_deliveries_leads_to_a_dead_letter(bus: &dyn Bus) {
    let a = fresh_agency("dead");
    let other = fresh_agency("dead-other");
    let t = fresh_task(&a, "poison");
    publish(bus, &t).await;
    for n in 1..=DELIVERIES_MAX {
        let d = pull(bus, &a, 1, PATIENCE).await;
        assert_eq!(d.len(), 1, "delivery {n} must come");
        assert_eq!(d[0].delivered, n);
    }
    // The next delivery would be number DELIVERIES_MAX + 1: it is dead-lettered instead.
    let none = pull(bus, &a, 1, REDELIVERY * 3).await;
    assert!(none.is_empty(), "no delivery after the maximum: {none:?}");
    let dead = bus
        .dead_letters(&a, 1, 10)
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e}"));
    assert_eq!(dead.len(), 1, "one dead-letter record: {dead:?}");
    let r = &dead[0];
    assert_eq!(
        (&r.agency, &r.task, &r.payload, r.deliveries),
        (&a, &t.id, &t.payload, DELIVERIES_MAX)
    );
    assert_eq!(
        counts(bus, &a).await,
        TaskCounts::default(),
        "the queue is empty"
    );
    let theirs = bus
        .dead_letters(&other, 1, 10)
        .await
        .unwrap_or_else(|e| panic!("dead letters: {e}"));
    assert!(theirs.is_empty(), "dead letters are per agency");
}

/// No more than [`UNACKED_MAX`] tasks of an agency are out unacknowledged: further tasks wait
/// until one is acked.
pub async fn unacked_max_bounds_in_flight_tasks(bus: &dyn Bus) {
    let a = fresh_agency("bound");
    let tasks: Vec<Task> = (0..5).map(|i| fresh_task(&a, &format!("t{i}"))).collect();
    for t in &tasks {
        publish(bus, t).await;
    }
    let first = pull(bus, &a, 10, PATIENCE).await;
    assert_eq!(
        first.len(),
        UNACKED_MAX as usize,
        "only {UNACKED_MAX} go out unacked"
    );
    let out: HashSet<TaskId> = first.iter().map(|d| d.task.clone()).collect();
    // Whatever comes now can only be a redelivery of those (if the ack wait passed): never a
    // fourth task.
    let more = pull(bus, &a, 10, Duration::from_millis(200)).await;
    for d in &more {
        assert!(
            out.contains(&d.task),
            "{} delivered beyond the bound",
            d.task
        );
    }
    let c = counts(bus, &a).await;
    assert_eq!(
        c,
        TaskCounts {
            waiting: 2,
            unacked: u64::from(UNACKED_MAX)
        }
    );
    ack(&first[0]).await;
    let next = pull_n(bus, &a, 1).await;
    let fresh: Vec<_> = next.iter().filter(|d| !out.contains(&d.task)).collect();
    assert!(
        fresh.len() <= 1,
        "one ack frees one place, got {} new tasks",
        fresh.len()
    );
    // Drain everything.
    let give_up = Instant::now() + PATIENCE * 2;
    let mut done: HashSet<TaskId> = HashSet::from([first[0].task.clone()]);
    let mut pending = first
        .into_iter()
        .skip(1)
        .chain(more)
        .chain(next)
        .collect::<Vec<_>>();
    while done.len() < tasks.len() && Instant::now() < give_up {
        for d in pending.drain(..) {
            ack(&d).await;
            done.insert(d.task.clone());
        }
        pending = pull(bus, &a, 10, Duration::from_millis(500)).await;
    }
    assert_eq!(
        done.len(),
        tasks.len(),
        "every task is delivered once places free up"
    );
}

/// An agency that stops acknowledging (its unacked bound reached, a backlog behind it) does not
/// delay another agency's tasks, even while a pull of the stalled agency is waiting.
pub async fn stalled_agency_does_not_block_another(bus: &dyn Bus) {
    let slow = fresh_agency("stalled");
    let fast = fresh_agency("fast");
    for i in 0..(UNACKED_MAX + 5) {
        publish(bus, &fresh_task(&slow, &format!("s{i}"))).await;
    }
    let held = pull(bus, &slow, 10, PATIENCE).await;
    assert_eq!(held.len(), UNACKED_MAX as usize);

    let t = fresh_task(&fast, "f");
    let fast_side = async {
        let started = Instant::now();
        publish(bus, &t).await;
        let got = pull(bus, &fast, 1, PATIENCE).await;
        (started.elapsed(), got)
    };
    // The stalled agency's pull waits meanwhile (it may only get redeliveries).
    let slow_side = pull(bus, &slow, 10, Duration::from_millis(300));
    let ((elapsed, got), _) = tokio::join!(fast_side, slow_side);
    assert_eq!(got.len(), 1, "the other agency gets its task");
    assert_eq!(got[0].task, t.id);
    assert!(
        elapsed < Duration::from_secs(1),
        "the other agency waited {elapsed:?} behind the stalled one"
    );
    ack(&got[0]).await;
    let c = counts(bus, &slow).await;
    assert_eq!(c.waiting, 5, "the stalled agency's backlog waits for it");
}

/// An agency's queue holds at most [`TASKS_PER_AGENCY_MAX`] tasks; publishing more fails with
/// `QueueFull` and leaves other agencies' queues open.
pub async fn queue_is_bounded_per_agency(bus: &dyn Bus) {
    let a = fresh_agency("full");
    let b = fresh_agency("notfull");
    for i in 0..TASKS_PER_AGENCY_MAX {
        publish(bus, &fresh_task(&a, &format!("t{i}"))).await;
    }
    match bus.publish_task(fresh_task(&a, "one-too-many")).await {
        Err(Error::QueueFull { agency, max }) => {
            assert_eq!((agency, max), (a.clone(), TASKS_PER_AGENCY_MAX));
        }
        other => panic!("a full queue must refuse with QueueFull, got {other:?}"),
    }
    publish(bus, &fresh_task(&b, "fits")).await;
    // Acking frees room.
    let got = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!(got.len(), 1);
    ack(&got[0]).await;
    let give_up = Instant::now() + PATIENCE;
    loop {
        match bus.publish_task(fresh_task(&a, "after-ack")).await {
            Ok(_) => break,
            Err(Error::QueueFull { .. }) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after an ack the queue must accept again: {e}"),
        }
    }
}

/// Payloads above `payload_bytes_max` are refused before they reach the bus.
pub async fn oversized_payloads_are_refused(bus: &dyn Bus) {
    let big = Bytes::from(vec![0u8; PAYLOAD_BYTES_MAX + 1]);
    let a = fresh_agency("big");
    let task = Task {
        payload: big.clone(),
        ..fresh_task(&a, "big")
    };
    assert!(matches!(
        bus.publish_task(task).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    let event = FeedEvent {
        dossier: Uuid::now_v7(),
        seq: 1,
        payload: big.clone(),
    };
    assert!(matches!(
        bus.publish_event(event).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        bus.request(fresh_partition(), big, PATIENCE).await,
        Err(Error::PayloadTooLarge { .. })
    ));
}

/// A task given back with `nak` comes back after the delay asked, sooner than the ack wait.
pub async fn nak_redelivers_after_the_delay_asked(bus: &dyn Bus) {
    let a = fresh_agency("nak");
    let t = fresh_task(&a, "t");
    publish(bus, &t).await;
    let d1 = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!(d1.len(), 1);
    let given_back = Instant::now();
    d1[0]
        .nak(Duration::from_millis(50))
        .await
        .unwrap_or_else(|e| panic!("nak: {e}"));
    let d2 = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!(d2.len(), 1, "a nak'd task comes back");
    assert!(
        given_back.elapsed() < REDELIVERY,
        "a nak'd task comes back after its delay, not the ack wait ({:?})",
        given_back.elapsed()
    );
    assert_eq!((&d2[0].task, d2[0].delivered), (&t.id, 2));
    ack(&d2[0]).await;
}

/// A worker that says a task is in progress keeps it past the ack wait: no redelivery while it
/// keeps saying so.
pub async fn in_progress_holds_off_redelivery(bus: &dyn Bus) {
    let a = fresh_agency("progress");
    let t = fresh_task(&a, "slow-work");
    publish(bus, &t).await;
    let d = pull(bus, &a, 1, PATIENCE).await;
    assert_eq!(d.len(), 1);
    // Work for over twice the ack wait, reporting progress every third of it.
    let working_until = Instant::now() + REDELIVERY * 2 + REDELIVERY / 2;
    while Instant::now() < working_until {
        d[0].in_progress()
            .await
            .unwrap_or_else(|e| panic!("in progress: {e}"));
        let again = pull(bus, &a, 1, REDELIVERY / 3).await;
        assert!(
            again.is_empty(),
            "a task in progress must not be redelivered: {again:?}"
        );
    }
    ack(&d[0]).await;
}

/// A partition's lease has one holder: another is refused with the holder's name, the same holder
/// takes it back (a restarted node), a superseded or released lease cannot be renewed, a release
/// lets another holder in at once, and partitions are independent.
pub async fn leases_are_exclusive(bus: &dyn Bus) {
    let p = fresh_partition();
    let a = bus
        .acquire(p, "node-a")
        .await
        .unwrap_or_else(|e| panic!("a free partition is leased: {e}"));
    match bus.acquire(p, "node-b").await {
        Err(Error::LeaseHeld { holder, partition }) => {
            assert_eq!(holder, "node-a", "the refusal names the holder");
            assert_eq!(partition, p);
        }
        other => panic!("a held lease is refused to another holder, not {other:?}"),
    }
    let a2 = bus
        .acquire(p, "node-a")
        .await
        .unwrap_or_else(|e| panic!("the holder takes its own lease back: {e}"));
    assert_ne!(a2.revision, a.revision, "taking it back makes a new lease");
    // A renewal from an older revision of the holder's own lease (one that landed after its
    // caller gave up waiting) renews it.
    let a3 = bus
        .renew(&a)
        .await
        .unwrap_or_else(|e| panic!("the holder's older revision is renewed: {e}"));
    assert_ne!(a3.revision, a2.revision, "a renewal makes a new revision");
    let a3 = bus
        .renew(&a3)
        .await
        .unwrap_or_else(|e| panic!("the current lease is renewed: {e}"));
    let q = fresh_partition();
    bus.acquire(q, "node-b")
        .await
        .unwrap_or_else(|e| panic!("another partition is independent: {e}"));
    bus.release(a3.clone())
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let b = bus
        .acquire(p, "node-b")
        .await
        .unwrap_or_else(|e| panic!("a released partition is free at once: {e}"));
    assert!(
        matches!(bus.renew(&a3).await, Err(Error::LeaseLost { .. })),
        "a released lease cannot be renewed"
    );
    bus.release(a3)
        .await
        .unwrap_or_else(|e| panic!("releasing a lease no longer ours is a no-op: {e}"));
    match bus.acquire(p, "node-a").await {
        Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "node-b"),
        other => panic!("the stale release left node-b's lease alone, not {other:?}"),
    }
    bus.renew(&b)
        .await
        .unwrap_or_else(|e| panic!("node-b's lease is intact: {e}"));
}

/// A lease renewed in time outlives its time to live; one left unrenewed expires, another holder
/// takes the partition, and the old holder's renewal then fails.
pub async fn an_unrenewed_lease_expires(bus: &dyn Bus) {
    let p = fresh_partition();
    let mut lease = bus
        .acquire(p, "node-a")
        .await
        .unwrap_or_else(|e| panic!("a free partition is leased: {e}"));
    let start = Instant::now();
    while start.elapsed() < LEASE_TTL * 2 {
        tokio::time::sleep(LEASE_TTL / 4).await;
        lease = bus
            .renew(&lease)
            .await
            .unwrap_or_else(|e| panic!("renewed within its time to live: {e}"));
        assert!(
            matches!(bus.acquire(p, "node-b").await, Err(Error::LeaseHeld { .. })),
            "a renewed lease stays held"
        );
    }
    let stopped = Instant::now();
    let deadline = stopped + LEASE_TTL * 3 + PATIENCE;
    loop {
        match bus.acquire(p, "node-b").await {
            Ok(_) => break,
            Err(Error::LeaseHeld { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("an unrenewed lease expires and is taken, not {other:?}"),
        }
    }
    assert!(
        stopped.elapsed() >= LEASE_TTL - Duration::from_millis(100),
        "the lease lasted its time to live after the last renewal ({:?})",
        stopped.elapsed()
    );
    assert!(
        matches!(bus.renew(&lease).await, Err(Error::LeaseLost { .. })),
        "the old holder learns it lost the lease"
    );
}
