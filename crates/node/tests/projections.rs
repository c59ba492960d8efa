//! The projections role fed from the bus's feed, against the in-process bus and a real
//! nats-server (started per test on a free port by `lienthong_bus::testing::NatsServer`; without
//! one these tests fail and say how to install it, they are never skipped).
//!
//! What they prove, and how. A real engine over a sled store and the shipped birth procedure
//! writes dossiers whose steps go to three agencies; the real [`Outbox`] publishes the store's
//! feed to the bus; the projections role ([`Follower`] over a [`BusFeed`] mirror) follows the
//! bus in its own directories. The reference is the embedded mode: projections folded directly
//! from the engine's store, in a directory of their own.
//!
//! The two databases are compared with `Projections::dump()`, every key and value, the
//! checkpoint (`m/checkpoint`) included. The role's checkpoint is a *bus* position and the
//! embedded one a *store* position; with one engine publishing to a fresh feed stream the two
//! numberings coincide (asserted), and duplicates the bus holds beyond its window are not kept
//! in the mirror, so the last kept event keeps the store's position too. Nothing else in the
//! views holds a position, so the dumps must be identical byte for byte.
//!
//! - `views_equal_the_embedded_mode_across_restarts`: equal after the first catch-up, after
//!   dossiers written while everything runs, after the role is stopped and reopened while more
//!   is written (it resumes after its checkpoint: nothing mirrored twice), after it is aborted
//!   (no graceful stop) while working through a backlog one message per batch, and after its mirror is deleted while the projections keep
//!   their checkpoint (the mirror is filled again from the bus with the same positions; the
//!   views wait for it, then go on).
//! - `a_corrupted_payload_is_refused_and_never_folded`: a feed message whose sealed bytes were
//!   altered stops the role with an error that names its position, dossier and seq and says
//!   "hash mismatch"; the views stay those of the verified prefix, and a restarted role refuses
//!   it again.
//! - `duplicates_beyond_the_bus_window_are_dropped`: with a 100 ms duplicate window, an outbox
//!   that republishes everything later puts every event on the feed twice; the mirror keeps each
//!   once (by `(dossier, seq)`, same bytes) and the views equal the embedded ones.
//! - `the_mirror_checks_every_event` (no bus): gaps, forks, garbage, wrong dossiers, broken
//!   `prev_hash` are refused without moving the checkpoint; exact duplicates are dropped; what
//!   the mirror reads back is the store's feed and streams with bus positions.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::memory::MemoryBus;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_bus::{Bus, FeedEvent, FeedRecord};
use lienthong_engine::store::{EventStore, Recorded, chain};
use lienthong_gateway::ReadModels;
use lienthong_node::outbox::{self, Outbox};
use lienthong_node::projections::{self, BusFeed, Follower, Progress};
use lienthong_projections::projector::KeyValue;
use lienthong_projections::{self as lp, Projections};
use lienthong_proto::v1 as pb;
use lienthong_workflow::Catalog;
use prost::Message;
use tokio::sync::{oneshot, watch};

use support::World;

/// How long a test waits for the role or the outbox before failing.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

impl World {
    /// The embedded mode's views: projections folded directly from the store, in a fresh
    /// directory.
    fn embedded_dump(&self) -> Vec<KeyValue> {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = Projections::open(dir.path(), self.store.clone(), self.catalog.clone())
            .expect("embedded projections open");
        p.catch_up().expect("embedded projections fold");
        p.dump().expect("dump")
    }
}

/// A running outbox and how to stop it.
struct Publisher {
    progress: watch::Receiver<outbox::Progress>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), outbox::Error>>,
}

impl Publisher {
    fn start(world: &World, bus: &Arc<dyn Bus>, start_after: Option<u64>) -> Publisher {
        let config = outbox::Config {
            poll_interval: Duration::from_millis(20),
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(100),
            ..outbox::Config::default()
        };
        let mut outbox = Outbox::new(world.store.clone(), bus.clone(), config).expect("config");
        if let Some(after) = start_after {
            outbox = outbox.starting_after(after);
        }
        let progress = outbox.progress();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(outbox.run(async {
            let _ = stopped.await;
        }));
        Publisher {
            progress,
            stop,
            task,
        }
    }

    /// Waits until the bus holds the store's feed up to `position`.
    async fn caught_up(&mut self, position: u64) {
        let wait = self.progress.wait_for(|p| p.published_position >= position);
        match tokio::time::timeout(CATCH_UP_TIMEOUT, wait).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("the outbox stopped: {:?}", self.task),
            Err(_) => panic!("the outbox did not publish up to {position} in time"),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the outbox task")
            .expect("the outbox stops cleanly");
    }
}

/// Test timings: quick idle looks and retries.
fn config() -> projections::Config {
    projections::Config {
        idle_wait: Duration::from_millis(20),
        retry_backoff_min: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
        ..projections::Config::default()
    }
}

/// The projections role, in `root` (`root/bus-feed`, `root/projections`), running.
struct Role {
    models: ReadModels,
    feed: Arc<BusFeed>,
    progress: watch::Receiver<Progress>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), projections::Error>>,
}

impl Role {
    fn start(root: &Path, bus: &Arc<dyn Bus>, catalog: &Arc<Catalog>) -> Role {
        Role::start_with(root, bus, catalog, config())
    }

    fn start_with(
        root: &Path,
        bus: &Arc<dyn Bus>,
        catalog: &Arc<Catalog>,
        config: projections::Config,
    ) -> Role {
        let feed = Arc::new(BusFeed::open(&root.join("bus-feed")).expect("mirror opens"));
        let views = Projections::open(&root.join("projections"), feed.clone(), catalog.clone())
            .expect("projections open");
        let models = ReadModels::new(Arc::new(views));
        let follower =
            Follower::new(bus.clone(), feed.clone(), models.clone(), config).expect("config");
        let progress = follower.progress();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(follower.run(async {
            let _ = stopped.await;
        }));
        Role {
            models,
            feed,
            progress,
            stop,
            task,
        }
    }

    /// Waits until the views are folded up to `position`.
    async fn caught_up(&mut self, position: u64) -> Progress {
        self.until(&format!("folded up to {position}"), |p| {
            p.folded_position >= position
        })
        .await
    }

    async fn until(&mut self, what: &str, done: impl Fn(&Progress) -> bool) -> Progress {
        let mut progress = self.progress.clone();
        let wait = progress.wait_for(|p| done(p));
        match tokio::time::timeout(CATCH_UP_TIMEOUT, wait).await {
            Ok(Ok(p)) => p.clone(),
            Ok(Err(_)) => {
                let progress = self.progress.borrow().clone();
                let result = (&mut self.task).await;
                panic!("the role stopped before {what}: {result:?}, {progress:?}")
            }
            Err(_) => panic!(
                "the role did not get {what} in time: {:?}",
                *self.progress.borrow()
            ),
        }
    }

    fn dump(&self) -> Vec<KeyValue> {
        self.models.projections().dump().expect("dump")
    }

    /// Stops it gracefully and closes its databases.
    async fn stop(self) -> Progress {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the role's task")
            .expect("the role stops cleanly");
        self.progress.borrow().clone()
    }

    /// Stops it without warning (its future is dropped wherever it is) and closes its databases.
    async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits for it to stop by itself, with an error.
    async fn failure(self) -> projections::Error {
        match tokio::time::timeout(CATCH_UP_TIMEOUT, self.task).await {
            Ok(Ok(Err(e))) => e,
            Ok(Ok(Ok(()))) => panic!("the role stopped without an error"),
            Ok(Err(e)) => panic!("the role's task failed: {e}"),
            Err(_) => panic!("the role did not stop in time"),
        }
    }
}

/// The role's views are the embedded mode's, key for key and byte for byte.
fn assert_same_views(role: &[KeyValue], embedded: &[KeyValue], when: &str) {
    let printable = |k: &[u8]| format!("{}{}", String::from_utf8_lossy(&k[..2]), hex(&k[2..]));
    for (i, (r, e)) in role.iter().zip(embedded).enumerate() {
        assert!(
            r == e,
            "{when}: record {i} differs: role {} = {}, embedded {} = {}",
            printable(&r.0),
            String::from_utf8_lossy(&r.1),
            printable(&e.0),
            String::from_utf8_lossy(&e.1),
        );
    }
    assert_eq!(
        role.len(),
        embedded.len(),
        "{when}: the role has {} records, the embedded mode {}",
        role.len(),
        embedded.len()
    );
    assert!(
        role.iter().any(|(k, _)| k.starts_with(b"o/")),
        "{when}: the board is not empty"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bus feed's last position.
async fn bus_last(bus: &dyn Bus) -> u64 {
    bus.last()
        .await
        .expect("feed last")
        .map_or(0, |r| r.position)
}

async fn views_equal_the_embedded_mode_across_restarts(bus: Arc<dyn Bus>) {
    let world = World::new();
    let root = tempfile::tempdir().expect("temp dir");
    for _ in 0..3 {
        world.dossier().await;
    }
    let mut publisher = Publisher::start(&world, &bus, None);
    publisher.caught_up(world.last_position()).await;
    assert_eq!(
        bus_last(bus.as_ref()).await,
        world.last_position(),
        "one engine, a fresh feed: bus positions are store positions"
    );

    // First catch-up.
    let mut role = Role::start(root.path(), &bus, &world.catalog);
    let first = role.caught_up(world.last_position()).await;
    assert_eq!(first.resumed_after, 0);
    assert_eq!(first.events_mirrored, world.last_position());
    assert_same_views(&role.dump(), &world.embedded_dump(), "first catch-up");

    // Written while everything runs.
    world.dossier().await;
    world.dossier().await;
    publisher.caught_up(world.last_position()).await;
    role.caught_up(world.last_position()).await;
    assert_same_views(&role.dump(), &world.embedded_dump(), "while running");

    // Stopped and reopened while more is written: resumes after its checkpoint.
    let before = role.stop().await;
    let mirrored = before.mirrored_position;
    world.dossier().await;
    let half = world.submit().await;
    publisher.caught_up(world.last_position()).await;
    let mut role = Role::start(root.path(), &bus, &world.catalog);
    let resumed = role.caught_up(world.last_position()).await;
    assert_eq!(
        resumed.resumed_after, mirrored,
        "resumes after the mirror's checkpoint"
    );
    assert_eq!(
        resumed.events_mirrored,
        world.last_position() - mirrored,
        "nothing mirrored twice"
    );
    assert_eq!(resumed.duplicates, 0);
    assert_same_views(&role.dump(), &world.embedded_dump(), "after a restart");

    // Aborted (no graceful stop) while it works through a backlog one message per batch, then
    // reopened: wherever the abort lands, the reopened role ends equal.
    let stopped = role.stop().await;
    world.register_birth(half).await;
    world.dossier().await;
    world.dossier().await;
    publisher.caught_up(world.last_position()).await;
    let one_by_one = projections::Config {
        batch_records: 1,
        ..config()
    };
    let mut role = Role::start_with(root.path(), &bus, &world.catalog, one_by_one);
    role.until("its first batch", |p| {
        p.mirrored_position > stopped.mirrored_position
    })
    .await;
    role.abort().await;
    let mut role = Role::start(root.path(), &bus, &world.catalog);
    role.caught_up(world.last_position()).await;
    assert_same_views(&role.dump(), &world.embedded_dump(), "after an abort");

    // The mirror is lost; the projections keep their checkpoint. The mirror is filled again from
    // the bus with the same positions, and the views go on from where they were.
    let folded = role.stop().await.folded_position;
    std::fs::remove_dir_all(root.path().join("bus-feed")).expect("delete the mirror");
    world.dossier().await;
    publisher.caught_up(world.last_position()).await;
    let mut role = Role::start(root.path(), &bus, &world.catalog);
    let refilled = role.caught_up(world.last_position()).await;
    assert_eq!(refilled.resumed_after, 0);
    assert_eq!(refilled.events_mirrored, world.last_position());
    assert_eq!(
        refilled.events_folded,
        world.last_position() - folded,
        "only what is new is folded"
    );
    assert_same_views(
        &role.dump(),
        &world.embedded_dump(),
        "after losing the mirror",
    );

    // Read back, the mirror is the store's feed with bus positions (the same numbers here).
    let stored = world.store.read_feed(0, 10_000).expect("store feed");
    let mirrored = lp::FeedSource::read_feed(role.feed.as_ref(), 0, 10_000).expect("mirror feed");
    assert_eq!(mirrored, stored);
    let progress = role.until("no lag", |p| p.lag() == 0).await;
    assert_eq!(progress.bus_position, world.last_position());
    role.stop().await;
    publisher.stop().await;
}

async fn a_corrupted_payload_is_refused_and_never_folded(bus: Arc<dyn Bus>) {
    let world = World::new();
    let root = tempfile::tempdir().expect("temp dir");
    world.dossier().await;
    world.dossier().await;
    let end = world.last_position();
    let mut publisher = Publisher::start(&world, &bus, None);
    publisher.caught_up(end).await;
    publisher.stop().await;
    let mut role = Role::start(root.path(), &bus, &world.catalog);
    role.caught_up(end).await;
    let verified = role.dump();
    assert_same_views(&verified, &world.embedded_dump(), "before the corruption");

    // A new dossier's first event, altered on its way: one byte of the sealed bytes flipped
    // (its hash left as it was).
    let dossier = world.submit().await;
    let first = world.store.read_feed(end, 1).expect("store feed");
    let mut sealed = first[0].sealed.clone();
    let middle = sealed.raw.len() / 2;
    sealed.raw[middle] ^= 0x01;
    bus.publish_event(FeedEvent {
        dossier: dossier.0,
        seq: 1,
        payload: Bytes::from(sealed.encode_to_vec()),
    })
    .await
    .expect("publish the altered event");

    let refused = |e: &projections::Error| match e {
        projections::Error::Refused {
            position,
            dossier: d,
            seq,
            why,
        } => *position == end + 1 && *d == dossier.0 && *seq == 1 && why.contains("hash mismatch"),
        _ => false,
    };
    let error = role.failure().await;
    assert!(refused(&error), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("bus feed position {}", end + 1))
            && message.contains(&format!("{}/1", dossier.0)),
        "the message names the position and the event: {message}"
    );

    // Not folded, not kept; refused again after a restart.
    let root_feed = BusFeed::open(&root.path().join("bus-feed")).expect("mirror opens");
    assert_eq!(root_feed.stored_position().expect("stored"), end);
    assert_eq!(root_feed.checkpoint().expect("checkpoint").position, end);
    drop(root_feed);
    let role = Role::start(root.path(), &bus, &world.catalog);
    let again = role.failure().await;
    assert!(refused(&again), "{again}");
    let views = Projections::open(
        &root.path().join("projections"),
        world.store.clone(),
        world.catalog.clone(),
    )
    .expect("projections open");
    assert_eq!(
        views.dump().expect("dump"),
        verified,
        "the views are unchanged"
    );
}

async fn duplicates_beyond_the_bus_window_are_dropped(bus: Arc<dyn Bus>) {
    let world = World::new();
    let root = tempfile::tempdir().expect("temp dir");
    world.dossier().await;
    world.dossier().await;
    let all = world.last_position();
    let mut publisher = Publisher::start(&world, &bus, None);
    publisher.caught_up(all).await;
    publisher.stop().await;
    // After the window, an outbox from zero state puts everything on the feed again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut publisher = Publisher::start(&world, &bus, Some(0));
    publisher.caught_up(all).await;
    publisher.stop().await;
    assert_eq!(
        bus_last(bus.as_ref()).await,
        2 * all,
        "every event is on the feed twice"
    );

    let mut role = Role::start(root.path(), &bus, &world.catalog);
    let done = role
        .until("the whole feed mirrored", |p| {
            p.mirrored_position == 2 * all && p.folded_position == all
        })
        .await;
    assert_eq!(done.events_mirrored, all);
    assert_eq!(done.duplicates, all);
    assert_same_views(&role.dump(), &world.embedded_dump(), "with duplicates");
    assert_eq!(role.feed.stored_position().expect("stored"), all);
    role.stop().await;
}

/// The store's feed as bus records at positions `1..`.
fn as_records(feed: &[Recorded]) -> Vec<FeedRecord> {
    feed.iter()
        .map(|r| {
            let env = r.event.envelope.as_ref().expect("envelope");
            FeedRecord {
                position: env.global_position,
                dossier: env.dossier_id.parse().expect("uuid"),
                seq: env.seq,
                payload: Bytes::from(r.sealed.encode_to_vec()),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_checks_every_event() {
    let world = World::new();
    let a = world.dossier().await;
    let b = world.dossier().await;
    let stored = world.store.read_feed(0, 10_000).expect("store feed");
    let records = as_records(&stored);
    let dir = tempfile::tempdir().expect("temp dir");
    let mirror = BusFeed::open(dir.path()).expect("mirror opens");

    // A's events come first on the feed; keep its first two.
    assert!(records[..2].iter().all(|r| r.dossier == a.0));
    let applied = mirror.apply(&records[..2]).expect("the first two");
    assert_eq!(applied.stored, 2);
    let next = records[2].clone();
    let refuse = |bad: FeedRecord, says: &str| {
        let e = mirror.apply(&[bad]).expect_err("refused");
        assert!(
            matches!(&e, projections::Error::Refused { position, .. } if *position == next.position)
                && e.to_string().contains(says),
            "expected a refusal saying {says:?}: {e}"
        );
        assert_eq!(mirror.checkpoint().expect("checkpoint").position, 2);
        assert_eq!(mirror.stored_position().expect("stored"), 2);
    };

    // A gap: A's seq 4 before its seq 3.
    let a4 = records
        .iter()
        .find(|r| r.dossier == a.0 && r.seq == 4)
        .expect("a's seq 4");
    refuse(
        FeedRecord {
            position: next.position,
            ..a4.clone()
        },
        "gap",
    );
    // A fork: another event for A's seq 2.
    refuse(
        FeedRecord {
            position: next.position,
            payload: next.payload.clone(),
            ..records[1].clone()
        },
        "different event",
    );
    // Garbage.
    refuse(
        FeedRecord {
            payload: Bytes::from_static(b"not protobuf \xff\xff\xff"),
            ..next.clone()
        },
        "not a lienthong.v1.SealedEvent",
    );
    // B's first event, claimed by a dossier the mirror has not seen.
    let b1 = records
        .iter()
        .find(|r| r.dossier == b.0 && r.seq == 1)
        .expect("b's seq 1");
    refuse(
        FeedRecord {
            position: next.position,
            dossier: uuid::Uuid::from_u128(7),
            ..b1.clone()
        },
        "belongs to dossier",
    );
    // A's next event re-sealed with a prev_hash that is not its predecessor's: the hash checks,
    // the chain does not.
    let mut forged = pb::Event::decode(stored[2].sealed.raw.as_slice()).expect("event");
    forged.envelope.as_mut().expect("envelope").prev_hash = vec![1; 32];
    refuse(
        FeedRecord {
            payload: Bytes::from(chain::seal(&forged).encode_to_vec()),
            ..next.clone()
        },
        "prev_hash mismatch",
    );

    // An exact duplicate (after the bus's window) is dropped; replays before the checkpoint are
    // ignored; then the rest goes in.
    let duplicate = FeedRecord {
        position: next.position,
        ..records[1].clone()
    };
    let applied = mirror
        .apply(&[records[0].clone(), duplicate])
        .expect("a replay and a duplicate");
    assert_eq!(
        (applied.replayed, applied.duplicates, applied.stored),
        (1, 1, 0)
    );
    let shifted: Vec<FeedRecord> = records[2..]
        .iter()
        .map(|r| FeedRecord {
            position: r.position + 1,
            ..r.clone()
        })
        .collect();
    // In one batch, the records before a refused one are kept, and nothing from it on.
    let bad = FeedRecord {
        payload: Bytes::from_static(b"\x00"),
        ..shifted[1].clone()
    };
    let e = mirror
        .apply(&[shifted[0].clone(), bad, shifted[2].clone()])
        .expect_err("the second is refused");
    assert!(
        matches!(e, projections::Error::Refused { position, .. } if position == shifted[1].position)
    );
    assert_eq!(
        mirror.stored_position().expect("stored"),
        shifted[0].position
    );
    let applied = mirror.apply(&shifted).expect("the rest");
    assert_eq!(applied.replayed, 1);
    assert_eq!(applied.stored, records.len() as u64 - 3);

    // Read back: the store's events and sealed bytes, at the bus positions (shifted by one after
    // the duplicate).
    let feed = lp::FeedSource::read_feed(&mirror, 0, 10_000).expect("mirror feed");
    assert_eq!(feed.len(), stored.len());
    for (m, s) in feed.iter().zip(&stored) {
        assert_eq!(m.sealed, s.sealed);
        let shift = u64::from(s.position() > 2);
        assert_eq!(m.position(), s.position() + shift);
        let mut event = m.event.clone();
        event.envelope.as_mut().expect("envelope").global_position = s.position();
        assert_eq!(event, s.event);
    }
    for d in [a, b] {
        let mine: Vec<_> = lp::FeedSource::read_stream(&mirror, &d)
            .expect("mirror stream")
            .into_iter()
            .map(|r| r.sealed)
            .collect();
        let theirs: Vec<_> = world
            .store
            .read_stream(&d)
            .expect("store stream")
            .into_iter()
            .map(|r| r.sealed)
            .collect();
        assert_eq!(mine, theirs);
    }
    let last = lp::FeedSource::last_position(&mirror).expect("last");
    assert_eq!(last, stored.len() as u64 + 1);
    assert_eq!(
        lp::FeedSource::read_feed(&mirror, last, 10).expect("end"),
        vec![]
    );
}

fn memory(duplicate_window: Duration) -> Arc<dyn Bus> {
    let config = lienthong_bus::Config {
        duplicate_window,
        ..lienthong_bus::Config::default()
    };
    Arc::new(MemoryBus::new(config).expect("memory bus"))
}

async fn nats(server: &NatsServer, duplicate_window: Duration) -> Arc<dyn Bus> {
    let config = lienthong_bus::Config {
        duplicate_window,
        // The default 16 GiB is reserved by JetStream when the stream is created, and a server's
        // default storage limit is a share of the free disk: keep tests independent of it.
        feed_bytes_max: FEED_BYTES_MAX_TEST,
        ..lienthong_bus::Config::default()
    };
    let bus = NatsBus::connect(&server.url(), config)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()));
    Arc::new(bus)
}

/// The feed stream's byte limit in tests.
const FEED_BYTES_MAX_TEST: u64 = 64 * 1024 * 1024;
/// The bus's default duplicate window.
const WINDOW: Duration = lienthong_bus::config::DUPLICATE_WINDOW_DEFAULT;
/// A window short enough to outlive in a test.
const SHORT_WINDOW: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_views_equal_the_embedded_mode_across_restarts() {
    views_equal_the_embedded_mode_across_restarts(memory(WINDOW)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_views_equal_the_embedded_mode_across_restarts() {
    let server = NatsServer::start();
    views_equal_the_embedded_mode_across_restarts(nats(&server, WINDOW).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_corrupted_payload_is_refused_and_never_folded() {
    a_corrupted_payload_is_refused_and_never_folded(memory(WINDOW)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_corrupted_payload_is_refused_and_never_folded() {
    let server = NatsServer::start();
    a_corrupted_payload_is_refused_and_never_folded(nats(&server, WINDOW).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_duplicates_beyond_the_bus_window_are_dropped() {
    duplicates_beyond_the_bus_window_are_dropped(memory(SHORT_WINDOW)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_duplicates_beyond_the_bus_window_are_dropped() {
    let server = NatsServer::start();
    duplicates_beyond_the_bus_window_are_dropped(nats(&server, SHORT_WINDOW).await).await;
}
