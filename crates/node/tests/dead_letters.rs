//! Dead-lettered tasks reach the board: the engine's outbox queues a birth dossier's tasks on
//! the bus (in-process and a real nats-server, with the conformance suite's short redelivery:
//! 3 deliveries, 600 ms apart); social insurance's system pulls its task and never acknowledges
//! it, so the bus sets it aside as a dead letter; the engine node's watch
//! (`lienthong_node::dead_letters`) records it in the dossier as `TaskUndeliverable`, once however
//! often it reads it, and the projections' board shows the step as undeliverable. The police,
//! who acknowledged theirs, show nothing of the kind.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lienthong_bus::memory::MemoryBus;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_bus::{Agency, Bus, conformance};
use lienthong_engine::store::EventStore;
use lienthong_node::dead_letters::Watch;
use lienthong_node::outbox::{self, Outbox};
use lienthong_projections::{BoardQuery, FeedSource, Projections};
use lienthong_proto::v1::event::Body;
use support::World;
use tokio::sync::watch;

/// How long the test keeps pulling before the task must have become a dead letter.
const DEAD_WITHIN: Duration = Duration::from_secs(30);

/// Waits until the outbox has published everything the store holds now.
async fn published_everything(world: &World, progress: &mut watch::Receiver<outbox::Progress>) {
    let last = EventStore::last_position(world.store.as_ref()).expect("position");
    tokio::time::timeout(
        Duration::from_secs(30),
        progress.wait_for(|p| p.published_position >= last),
    )
    .await
    .expect("the outbox caught up in time")
    .expect("the outbox runs");
}

async fn undeliverable_task_reaches_the_board(bus: Arc<dyn Bus>) {
    let world = World::new();
    let dossier = world.dossier().await;
    let outbox = Outbox::new(
        world.store.clone(),
        bus.clone(),
        outbox::Config {
            poll_interval: Duration::from_millis(20),
            ..outbox::Config::default()
        },
    )
    .expect("valid config");
    let mut progress = outbox.progress();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(outbox.run(async {
        let _ = stopped.await;
    }));
    published_everything(&world, &mut progress).await;

    // The police do their job: pull and acknowledge.
    let police = Agency::new("cong-an").expect("agency");
    for d in bus
        .pull(&police, 10, Duration::from_millis(500))
        .await
        .expect("pull")
    {
        d.ack().await.expect("ack");
    }
    // Social insurance's system takes its task and never acknowledges it, until the bus gives up.
    let bhxh = Agency::new("bhxh").expect("agency");
    let deadline = tokio::time::Instant::now() + DEAD_WITHIN;
    loop {
        let held = bus
            .pull(&bhxh, 10, Duration::from_millis(200))
            .await
            .expect("pull");
        drop(held);
        if !bus
            .dead_letters(&bhxh, 1, 10)
            .await
            .expect("dead letters")
            .is_empty()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unacknowledged task never became a dead letter"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let agencies = [police.clone(), bhxh.clone()];
    let mut watch = Watch::new();
    let first = watch.pass(&world.engine, bus.as_ref(), &agencies).await;
    assert_eq!((first.read, first.recorded), (1, 1), "{first:?}");
    // Read again from the start (a restarted node): a replay, no second event.
    let again = Watch::new()
        .pass(&world.engine, bus.as_ref(), &agencies)
        .await;
    assert_eq!((again.read, again.recorded), (1, 1), "{again:?}");
    let stream = EventStore::read_stream(world.store.as_ref(), &dossier).expect("stream");
    let undeliverable: Vec<_> = stream
        .iter()
        .filter_map(|r| match &r.event.body {
            Some(Body::TaskUndeliverable(u)) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(undeliverable.len(), 1, "recorded once: {undeliverable:?}");
    assert_eq!(undeliverable[0].agency, "bhxh");
    assert_eq!(undeliverable[0].step_id, "issue-health-card");
    assert_eq!(
        undeliverable[0].deliveries,
        conformance::DELIVERIES_MAX,
        "{undeliverable:?}"
    );
    // A dead-lettered deadline warning of the police's step is recorded, but does not make the
    // step undeliverable: its opening task was acknowledged.
    world
        .execute(
            Some(dossier),
            "engine",
            lienthong_engine::dossier::Command::RecordUndeliverable(
                lienthong_engine::dossier::RecordUndeliverable {
                    agency: "cong-an".into(),
                    task_id: format!("{dossier}/99"),
                    step: Some(lienthong_workflow::StepId("register-residence".into())),
                    task_kind: "TASK_KIND_DEADLINE_WARNING".into(),
                    deliveries: 3,
                },
            ),
        )
        .await;
    // The outbox publishes the new events too (they make no task).
    published_everything(&world, &mut progress).await;
    let _ = stop.send(());
    running
        .await
        .expect("the outbox task")
        .expect("the outbox stops cleanly");

    // The board: social insurance's step is undeliverable, the police's is not.
    let views_dir = tempfile::tempdir().expect("temp dir");
    let source: Arc<dyn FeedSource> = world.store.clone();
    let views = Projections::open(views_dir.path(), source, world.catalog.clone()).expect("views");
    views.catch_up().expect("fold");
    let board = views
        .board(world.engine.now(), &BoardQuery::default())
        .expect("board");
    let marked: Vec<(String, u32)> = board
        .steps
        .iter()
        .map(|s| (s.agency.clone(), s.undeliverable_deliveries))
        .collect();
    assert!(
        marked.contains(&("bhxh".to_string(), conformance::DELIVERIES_MAX)),
        "{marked:?}"
    );
    assert!(marked.contains(&("cong-an".to_string(), 0)), "{marked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_task_reaches_the_board_in_process() {
    let bus: Arc<dyn Bus> =
        Arc::new(MemoryBus::new(conformance::config()).expect("conformance config"));
    undeliverable_task_reaches_the_board(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_task_reaches_the_board_on_nats() {
    let server = NatsServer::start();
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&server.url(), conformance::config())
            .await
            .expect("connects"),
    );
    undeliverable_task_reaches_the_board(bus).await;
}
