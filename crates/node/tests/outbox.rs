//! The outbox against the in-process bus and a real nats-server (started per test on a free port
//! by `lienthong_bus::testing::NatsServer`; without one these tests fail and say how to install
//! it, they are never skipped).
//!
//! What they prove, and how:
//! - `publishes_everything_once_in_order_and_resumes`: the real engine, over a sled store and the
//!   shipped birth procedure, writes dossiers whose steps go to three agencies. The outbox's
//!   feed on the bus is compared with the store's feed record by record (same order, same
//!   `(dossier, seq)`, payload = the stored `SealedEvent` byte for byte) and every agency's queue
//!   with the tasks the engine's rule derives from the store (same ids, same protobuf). An event
//!   written while the outbox runs is published. The outbox is stopped, more is written, and a
//!   new outbox resumes exactly after the feed's end (nothing published twice, the new events
//!   and tasks published); then an outbox from zero state republishes everything and the bus
//!   drops all of it as duplicates: the feed and the queues are unchanged.
//! - `a_full_agency_queue_holds_the_feed_but_not_other_agencies`: with the bus's per-agency
//!   bound at 2, a third task for the justice officer is refused; the outbox keeps retrying it,
//!   reports the agency as blocked, holds the feed just before that record, and still publishes
//!   the later tasks of the police and social insurance. Once the officer acks, the rest goes out
//!   in order.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lienthong_bus::memory::MemoryBus;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_bus::{Agency, Bus, FeedRecord};
use lienthong_engine::store::{EventStore, SledStore};
use lienthong_node::outbox::{self, Outbox, Progress};
use lienthong_proto::v1 as pb;
use prost::Message;
use tokio::sync::{oneshot, watch};

use support::World;

/// How long a test waits for the outbox to catch up before failing.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pull waits for a task that should be there.
const PULL_WAIT: Duration = Duration::from_millis(500);

/// The agencies the birth procedure routes to (the desk only gets the final step).
const AGENCIES: [&str; 4] = ["tu-phap", "cong-an", "bhxh", "ubnd-xa"];

/// A running outbox and how to stop it.
struct Running {
    progress: watch::Receiver<Progress>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), outbox::Error>>,
}

impl Running {
    fn start(outbox: Outbox<SledStore>) -> Running {
        let progress = outbox.progress();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(outbox.run(async {
            let _ = stopped.await;
        }));
        Running {
            progress,
            stop,
            task,
        }
    }

    /// Waits until the feed holds everything up to `position`.
    async fn caught_up(&mut self, position: u64) -> Progress {
        let mut progress = self.progress.clone();
        let wait = progress.wait_for(|p| p.published_position >= position);
        match tokio::time::timeout(CATCH_UP_TIMEOUT, wait).await {
            Ok(Ok(p)) => p.clone(),
            Ok(Err(_)) => panic!("the outbox stopped: {:?}", self.task),
            Err(_) => panic!(
                "the outbox did not publish up to {position} in time: {:?}",
                *self.progress.borrow()
            ),
        }
    }

    async fn stop(self) -> Progress {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the outbox task")
            .expect("the outbox stops cleanly");
        self.progress.borrow().clone()
    }
}

/// Test timings: quick polls and retries.
fn config() -> outbox::Config {
    outbox::Config {
        poll_interval: Duration::from_millis(20),
        retry_backoff_min: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
        ..outbox::Config::default()
    }
}

fn outbox_on(world: &World, bus: &Arc<dyn Bus>) -> Outbox<SledStore> {
    Outbox::new(world.store.clone(), bus.clone(), config()).expect("valid config")
}

/// Pulls and acks `n` tasks of `agency` (failing if one does not come in time) and returns
/// their dossiers, in delivery order.
async fn take_tasks(bus: &dyn Bus, agency: &Agency, n: usize) -> Vec<String> {
    let mut dossiers = Vec::new();
    while dossiers.len() < n {
        let batch = bus.pull(agency, 256, CATCH_UP_TIMEOUT).await.expect("pull");
        assert!(!batch.is_empty(), "{agency} got {dossiers:?} only");
        for t in batch {
            dossiers.push(pb::Task::decode(t.payload.as_ref()).unwrap().dossier_id);
            t.ack().await.unwrap();
        }
    }
    dossiers
}

/// The whole feed on the bus.
async fn bus_feed(bus: &dyn Bus) -> Vec<FeedRecord> {
    let mut out: Vec<FeedRecord> = Vec::new();
    loop {
        let from = out.last().map_or(1, |r| r.position + 1);
        let batch = bus.read(from, 256).await.expect("feed read");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// The bus's feed is the store's, record for record, each event once.
async fn assert_feed_is_the_store(bus: &dyn Bus, world: &World) {
    let stored = world.store.read_feed(0, 10_000).expect("store feed");
    let published = bus_feed(bus).await;
    assert_eq!(
        published.len(),
        stored.len(),
        "the bus's feed has {} events, the store {}",
        published.len(),
        stored.len()
    );
    for (p, s) in published.iter().zip(&stored) {
        let env = s.event.envelope.as_ref().expect("envelope");
        assert_eq!(p.dossier.to_string(), env.dossier_id, "at {}", p.position);
        assert_eq!(p.seq, env.seq, "at {}", p.position);
        assert_eq!(p.payload.as_ref(), s.sealed.encode_to_vec().as_slice());
        let sealed = pb::SealedEvent::decode(p.payload.as_ref()).expect("a SealedEvent");
        assert_eq!(sealed, s.sealed, "the stored bytes, exactly");
    }
}

/// Every task waiting in the agencies' queues, acknowledged: agency -> task ids in order.
async fn drain_tasks(bus: &dyn Bus) -> BTreeMap<String, Vec<(String, pb::Task)>> {
    let mut out = BTreeMap::new();
    for code in AGENCIES {
        let agency = Agency::new(code).expect("agency");
        let mut got = Vec::new();
        loop {
            let batch = bus.pull(&agency, 256, PULL_WAIT).await.expect("pull");
            if batch.is_empty() {
                break;
            }
            for d in batch {
                assert_eq!(d.delivered, 1, "{} was delivered again", d.task);
                let task = pb::Task::decode(d.payload.as_ref()).expect("a Task");
                assert_eq!(task.task_id, d.task.as_str());
                got.push((d.task.to_string(), task));
                d.ack().await.expect("ack");
            }
        }
        if !got.is_empty() {
            out.insert(code.to_string(), got);
        }
    }
    out
}

/// The tasks the engine's rule derives from the store's records after `after`.
fn expected_tasks(world: &World, after: u64) -> BTreeMap<String, Vec<(String, pb::Task)>> {
    let mut out: BTreeMap<String, Vec<(String, pb::Task)>> = BTreeMap::new();
    for r in world.store.read_feed(after, 10_000).expect("store feed") {
        if let Some(t) = lienthong_engine::view::task(&r) {
            out.entry(t.agency.clone())
                .or_default()
                .push((t.task_id.clone(), t));
        }
    }
    out
}

async fn publishes_everything_once_in_order_and_resumes(bus: Arc<dyn Bus>) {
    let world = World::new();
    for _ in 0..3 {
        world.dossier().await;
    }
    let mut running = Running::start(outbox_on(&world, &bus));
    running.caught_up(world.last_position()).await;

    // Written while it runs: published too.
    world.dossier().await;
    let first = running.caught_up(world.last_position()).await;
    assert_eq!(first.resumed_after, 0, "an empty bus: from the start");
    assert_eq!(first.duplicates, 0);
    assert_eq!(first.lag(), 0);
    assert_feed_is_the_store(bus.as_ref(), &world).await;
    let tasks = drain_tasks(bus.as_ref()).await;
    assert_eq!(tasks, expected_tasks(&world, 0));
    assert_eq!(
        tasks.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bhxh", "cong-an", "tu-phap"]
    );
    assert_eq!(tasks["tu-phap"].len(), 4, "one registration per dossier");
    let stopped = running.stop().await;
    assert_eq!(stopped.events_published, world.last_position());

    // Stopped; more is written; a new outbox resumes after the feed's end.
    let end = world.last_position();
    world.dossier().await;
    // As after a crash between a task's publish and its event's: the first new task is on the
    // bus, its event is not.
    let ahead = world
        .store
        .read_feed(end, 100)
        .expect("store feed")
        .iter()
        .find_map(lienthong_engine::view::task)
        .expect("the new dossier makes a task");
    bus.publish_task(lienthong_bus::Task {
        agency: Agency::new(&ahead.agency).unwrap(),
        id: lienthong_bus::TaskId::new(&ahead.task_id).unwrap(),
        payload: ahead.encode_to_vec().into(),
    })
    .await
    .expect("publish the task ahead");
    let mut running = Running::start(outbox_on(&world, &bus));
    let resumed = running.caught_up(world.last_position()).await;
    assert_eq!(
        resumed.resumed_after, end,
        "resumes after the feed's last event"
    );
    assert_eq!(resumed.events_published, world.last_position() - end);
    assert_eq!(
        resumed.duplicates, 1,
        "only the task ahead, dropped by the bus"
    );
    assert_feed_is_the_store(bus.as_ref(), &world).await;
    assert_eq!(drain_tasks(bus.as_ref()).await, expected_tasks(&world, end));
    running.stop().await;

    // From zero state: everything is published again and the bus drops all of it.
    let all = world.last_position();
    let mut running = Running::start(outbox_on(&world, &bus).starting_after(0));
    let again = running.caught_up(all).await;
    let tasks_made: usize = expected_tasks(&world, 0).values().map(Vec::len).sum();
    assert_eq!(again.events_published, all);
    assert_eq!(again.tasks_published, tasks_made as u64);
    assert_eq!(again.duplicates, all + tasks_made as u64, "all dropped");
    assert_feed_is_the_store(bus.as_ref(), &world).await;
    assert_eq!(drain_tasks(bus.as_ref()).await, BTreeMap::new());
    running.stop().await;
}

async fn a_full_agency_queue_holds_the_feed_but_not_other_agencies(bus: Arc<dyn Bus>) {
    let world = World::new();
    // Two tasks fill the justice officer's queue; the third (dossier c's) is refused.
    let a = world.dossier().await;
    let b = world.dossier().await;
    let c = world.submit().await;
    let held_at = world.last_position(); // c's task for the justice officer
    world.register_birth(c).await; // ... so the officer completes c without its task
    let d = world.dossier().await;

    let mut running = Running::start(outbox_on(&world, &bus));
    let officer = Agency::new("tu-phap").unwrap();
    tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        running.progress.wait_for(|p| {
            p.blocked_agencies.contains(&officer) && p.published_position == held_at - 1
        }),
    )
    .await
    .expect("the outbox reports the blocked agency in time")
    .expect("the outbox runs");

    // The police and social insurance get their tasks of every dossier, c's and d's included
    // (their queues are bounded at 2 as well: they unblock as they ack).
    let want: Vec<String> = [a, b, c, d].iter().map(|d| d.to_string()).collect();
    for code in ["cong-an", "bhxh"] {
        let dossiers = take_tasks(bus.as_ref(), &Agency::new(code).unwrap(), 4).await;
        assert_eq!(dossiers, want, "{code}: in feed order");
    }
    let still = tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        running.progress.wait_for(|p| p.blocked_agencies.len() == 1),
    )
    .await
    .expect("the others unblock")
    .expect("the outbox runs")
    .clone();
    assert_eq!(still.blocked_agencies, std::slice::from_ref(&officer));
    assert_eq!(still.published_position, held_at - 1, "the feed is held");

    // The officer works its queue: the held task goes, then the feed catches up.
    let seen = take_tasks(bus.as_ref(), &officer, 4).await;
    assert_eq!(seen, want, "the officer's tasks in feed order");
    let done = running.caught_up(world.last_position()).await;
    assert!(done.blocked_agencies.is_empty());
    assert_feed_is_the_store(bus.as_ref(), &world).await;
    running.stop().await;
}

/// With a spill, an agency that stops consuming holds back neither the feed nor anyone else:
/// its refused task and its later ones wait in the spill (which survives a restart of the
/// outbox) and reach it in feed order, each once, when it consumes again.
async fn with_a_spill_a_full_agency_queue_holds_back_nothing(bus: Arc<dyn Bus>) {
    let world = World::new();
    let spill_dir = tempfile::tempdir().expect("temp dir");
    let spilling = |world: &World| {
        outbox_on(world, &bus).with_spill(outbox::Spill::open(spill_dir.path()).expect("spill"))
    };
    // As above: the justice officer's queue holds two tasks; c's and d's are refused.
    let a = world.dossier().await;
    let b = world.dossier().await;
    let c = world.submit().await;
    world.register_birth(c).await;
    let d = world.dossier().await;
    let officer = Agency::new("tu-phap").unwrap();

    let mut running = Running::start(spilling(&world));
    // The feed reaches the store's end though the officer does not consume.
    let held = running.caught_up(world.last_position()).await;
    assert!(held.blocked_agencies.contains(&officer), "{held:?}");
    assert_eq!(
        held.spilled_tasks, 6,
        "c's and d's tasks of each agency wait in the spill: {held:?}"
    );
    assert_feed_is_the_store(bus.as_ref(), &world).await;
    // The others consume, and get every task, from their queue and then from the spill.
    let want: Vec<String> = [a, b, c, d].iter().map(|d| d.to_string()).collect();
    for code in ["cong-an", "bhxh"] {
        let dossiers = take_tasks(bus.as_ref(), &Agency::new(code).unwrap(), 4).await;
        assert_eq!(dossiers, want, "{code}: in feed order");
    }
    tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        running
            .progress
            .wait_for(|p| p.spilled_tasks == 2 && p.blocked_agencies == [officer.clone()]),
    )
    .await
    .expect("the others' spilled tasks went; the officer's wait")
    .expect("the outbox runs");

    // The node restarts: the officer's spilled tasks are still there.
    running.stop().await;
    let mut running = Running::start(spilling(&world));
    tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        running.progress.wait_for(|p| p.spilled_tasks == 2),
    )
    .await
    .expect("the restarted outbox finds the spill")
    .expect("the outbox runs");

    // The officer works its queue: every task once, in feed order, and the spill empties.
    let seen = take_tasks(bus.as_ref(), &officer, 4).await;
    assert_eq!(seen, want, "the officer's tasks in feed order, each once");
    let drained = tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        running
            .progress
            .wait_for(|p| p.spilled_tasks == 0 && p.blocked_agencies.is_empty()),
    )
    .await
    .expect("the spill drains")
    .expect("the outbox runs")
    .clone();
    assert_eq!(drained.published_position, world.last_position());
    assert_eq!(
        drain_tasks(bus.as_ref()).await,
        BTreeMap::new(),
        "nothing twice"
    );
    running.stop().await;
}

async fn two_stores_share_one_bus(bus: Arc<dyn Bus>) {
    // Two engine nodes, each with its own store, publish to one bus; node one restarts after
    // node two published last, and must find its own last event further back in the feed.
    let (one, two) = (World::new(), World::new());
    one.dossier().await;
    let mut running = Running::start(outbox_on(&one, &bus));
    running.caught_up(one.last_position()).await;
    running.stop().await;
    let end = one.last_position();
    two.dossier().await;
    two.dossier().await;
    let mut running = Running::start(outbox_on(&two, &bus));
    running.caught_up(two.last_position()).await;
    running.stop().await;

    one.dossier().await;
    let short_sighted = outbox::Config {
        resume_scan_records_max: 1,
        ..config()
    };
    let err = Outbox::new(one.store.clone(), bus.clone(), short_sighted)
        .expect("valid config")
        .resume_position()
        .await
        .expect_err("node one's last event is further back than it looks");
    assert!(matches!(err, outbox::Error::ResumeUnknown { .. }), "{err}");
    let mut running = Running::start(outbox_on(&one, &bus));
    let resumed = running.caught_up(one.last_position()).await;
    assert_eq!(resumed.resumed_after, end, "behind the other node's events");
    assert_eq!(resumed.duplicates, 0);
    running.stop().await;

    let feed = bus_feed(bus.as_ref()).await;
    for world in [&one, &two] {
        let stored: Vec<(String, u64)> = world
            .store
            .read_feed(0, 10_000)
            .unwrap()
            .iter()
            .map(|r| {
                let env = r.event.envelope.as_ref().unwrap();
                (env.dossier_id.clone(), env.seq)
            })
            .collect();
        let dossiers: std::collections::BTreeSet<&String> = stored.iter().map(|(d, _)| d).collect();
        let published: Vec<(String, u64)> = feed
            .iter()
            .map(|r| (r.dossier.to_string(), r.seq))
            .filter(|(d, _)| dossiers.contains(d))
            .collect();
        assert_eq!(published, stored, "each node's events once, in its order");
    }
    assert_eq!(feed.len() as u64, one.last_position() + two.last_position());
}

/// A bus config whose agency queues hold `tasks_per_agency_max` tasks.
fn bus_config(tasks_per_agency_max: u64) -> lienthong_bus::Config {
    lienthong_bus::Config {
        tasks_per_agency_max,
        ..lienthong_bus::Config::default()
    }
}

fn memory(tasks_per_agency_max: u64) -> Arc<dyn Bus> {
    Arc::new(MemoryBus::new(bus_config(tasks_per_agency_max)).expect("memory bus"))
}

async fn nats(server: &NatsServer, tasks_per_agency_max: u64) -> Arc<dyn Bus> {
    let bus = NatsBus::connect(&server.url(), bus_config(tasks_per_agency_max))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()));
    Arc::new(bus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_publishes_everything_once_in_order_and_resumes() {
    publishes_everything_once_in_order_and_resumes(memory(1_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publishes_everything_once_in_order_and_resumes() {
    let server = NatsServer::start();
    publishes_everything_once_in_order_and_resumes(nats(&server, 1_000).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_full_agency_queue_holds_the_feed_but_not_other_agencies() {
    a_full_agency_queue_holds_the_feed_but_not_other_agencies(memory(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_full_agency_queue_holds_the_feed_but_not_other_agencies() {
    let server = NatsServer::start();
    a_full_agency_queue_holds_the_feed_but_not_other_agencies(nats(&server, 2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_with_a_spill_a_full_agency_queue_holds_back_nothing() {
    with_a_spill_a_full_agency_queue_holds_back_nothing(memory(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_with_a_spill_a_full_agency_queue_holds_back_nothing() {
    let server = NatsServer::start();
    with_a_spill_a_full_agency_queue_holds_back_nothing(nats(&server, 2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_two_stores_share_one_bus() {
    two_stores_share_one_bus(memory(1_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_stores_share_one_bus() {
    let server = NatsServer::start();
    two_stores_share_one_bus(nats(&server, 1_000).await).await;
}

/// The nats-server is killed while the outbox runs and events are written; the outbox keeps
/// retrying the same record and, once the server is back on the same storage, publishes
/// everything exactly once (a publish whose acknowledgement was lost is dropped as a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outbox_rides_out_a_server_restart() {
    let mut server = NatsServer::start();
    let bus = nats(&server, 1_000).await;
    let world = World::new();
    world.dossier().await;
    let mut running = Running::start(outbox_on(&world, &bus));
    running.caught_up(world.last_position()).await;

    tokio::task::block_in_place(|| server.stop());
    world.dossier().await;
    world.dossier().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        running.progress.borrow().lag() > 0,
        "nothing can be published"
    );
    tokio::task::block_in_place(|| server.start_again());

    running.caught_up(world.last_position()).await;
    assert_feed_is_the_store(bus.as_ref(), &world).await;
    assert_eq!(drain_tasks(bus.as_ref()).await, expected_tasks(&world, 0));
    running.stop().await;
}

/// An idle outbox woken by the engine's appends publishes a new event at once, not at its next
/// poll (here an hour away): each hand-off of a dossier to an agency used to wait for the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_outbox_wakes_on_the_engines_appends() {
    let world = World::new();
    let bus = memory(lienthong_bus::config::TASKS_PER_AGENCY_MAX_DEFAULT);
    let outbox = Outbox::new(
        world.store.clone(),
        bus.clone(),
        outbox::Config {
            poll_interval: Duration::from_secs(3600),
            ..config()
        },
    )
    .expect("valid config")
    .waking_on(world.engine.appended());
    let mut running = Running::start(outbox);
    // Let it find the store empty and go idle on its hour-long poll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.submit().await;
    let position = world.last_position();
    assert!(position > 0);
    let published = tokio::time::timeout(Duration::from_secs(5), running.caught_up(position)).await;
    assert!(
        published.is_ok(),
        "the append did not wake the outbox: {:?}",
        *running.progress.borrow()
    );
    running.stop().await;
}
