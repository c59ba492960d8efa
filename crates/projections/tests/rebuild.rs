//! Rebuild equals incremental, on a store filled by the real engine.
//!
//! What it proves: the projections database after folding the feed in small batches, with
//! catch-ups interleaved between the engine's commands (so a dossier's record is rebuilt many
//! times, and batches end anywhere between commands), is byte for byte the database a single
//! `rebuild` gives; and so are the reports. Also that closing and reopening the projections in the
//! middle changes nothing. How: the real `Engine` over a real `SledStore` with the shipped
//! `workflows/` and a clock the test moves, driving births and land transfers through
//! supplements (one and two), rejections with rework, parallel steps, an apology, a refusal, a
//! stop, a withdrawal, and dossiers left open and overdue.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{
    Applicant, Command, CompleteStep, IssueApology, ProvideSupplement, Refuse, RejectStep,
    RequestSupplement, ReturnResult, Stop, Submit, Withdraw,
};
use lienthong_engine::runtime::{Clock, Engine, Request};
use lienthong_engine::store::SledStore;
use lienthong_projections::report::{self, Format};
use lienthong_projections::{
    BoardQuery, BreachQuery, FOLD_CACHE_EVENTS_MAX, FeedSource, IndicatorQuery, Projections,
};
use lienthong_proto::v1::{Actor, Channel};
use lienthong_workflow::{AttrValue, StepId};
use parking_lot::Mutex;
use support::{catalog, local};

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

/// The engine, its clock, a key counter, and the projections folding as it goes.
struct Sim {
    engine: Engine,
    clock: Arc<TestClock>,
    keys: u64,
    /// Folds a few events after every third command, when set.
    projections: Option<Projections>,
    /// Events per interleaved batch.
    batch: usize,
}

fn actor(agency: &str) -> Actor {
    Actor {
        agency: agency.into(),
        officer: "test".into(),
        channel: if agency == "citizen" {
            Channel::Online
        } else {
            Channel::System
        } as i32,
    }
}

impl Sim {
    fn advance(&self, minutes: i64) {
        let mut t = self.clock.0.lock();
        *t += TimeDelta::minutes(minutes);
    }

    async fn run(
        &mut self,
        dossier: Option<DossierId>,
        agency: &str,
        command: Command,
    ) -> DossierId {
        self.keys += 1;
        let out = self
            .engine
            .execute(Request {
                dossier,
                actor: actor(agency),
                idempotency_key: format!("k-{}", self.keys),
                command,
            })
            .await
            .unwrap_or_else(|e| panic!("command {} by {agency} failed: {e}", self.keys));
        // Fold one small batch after every third command: the views trail the store, and
        // batches end anywhere between commands.
        if let Some(p) = &self.projections
            && self.keys.is_multiple_of(3)
        {
            p.apply_next(self.batch).expect("interleaved fold");
        }
        out.dossier
    }

    async fn birth(&mut self, age_months: i64, channel: Channel) -> DossierId {
        let attributes = BTreeMap::from([
            (
                "child.age_months".to_string(),
                AttrValue::Integer(age_months),
            ),
            (
                "child.birth_date".to_string(),
                AttrValue::Date(NaiveDate::from_ymd_opt(2026, 9, 1).expect("date")),
            ),
        ]);
        self.submit("2.000986", "ubnd-xa", channel, attributes)
            .await
    }

    async fn land(&mut self, exempt: bool) -> DossierId {
        let attributes = BTreeMap::from([
            ("transfer.exempt".to_string(), AttrValue::Boolean(exempt)),
            ("parcel.area_m2".to_string(), AttrValue::Integer(120)),
        ]);
        self.submit(
            "LT.CHUYEN-NHUONG-DAT",
            "tthcc",
            Channel::InPerson,
            attributes,
        )
        .await
    }

    async fn submit(
        &mut self,
        procedure: &str,
        desk: &str,
        channel: Channel,
        attributes: BTreeMap<String, AttrValue>,
    ) -> DossierId {
        let cmd = Command::Submit(Submit {
            procedure_code: procedure.into(),
            channel,
            applicant: Applicant {
                full_name: "Nguyễn Văn An".into(),
                id_number: "001190000001".into(),
                ..Applicant::default()
            },
            attributes,
            documents: Vec::new(),
        });
        self.run(None, desk, cmd).await
    }

    async fn complete(&mut self, d: DossierId, agency: &str, step: &str) {
        let cmd = Command::CompleteStep(CompleteStep {
            step: StepId(step.into()),
            outcome: "approve".into(),
            results: Vec::new(),
            note: String::new(),
        });
        self.run(Some(d), agency, cmd).await;
    }

    async fn reject(&mut self, d: DossierId, agency: &str, step: &str) {
        let cmd = Command::RejectStep(RejectStep {
            step: StepId(step.into()),
            reason: "thông tin không khớp".into(),
        });
        self.run(Some(d), agency, cmd).await;
    }

    async fn ask(&mut self, d: DossierId, agency: &str, step: Option<&str>) {
        let cmd = Command::RequestSupplement(RequestSupplement {
            step: step.map(|s| StepId(s.into())),
            items: vec!["bản sao giấy chứng sinh".into()],
            reason: "thiếu giấy tờ".into(),
            addressed_to: Default::default(),
        });
        self.run(Some(d), agency, cmd).await;
    }

    async fn provide(&mut self, d: DossierId) {
        let cmd = Command::ProvideSupplement(ProvideSupplement {
            documents: Vec::new(),
            note: String::new(),
        });
        self.run(Some(d), "citizen", cmd).await;
    }

    async fn hand_back(&mut self, d: DossierId, desk: &str) {
        let cmd = Command::ReturnResult(ReturnResult {
            results: Vec::new(),
            channel: Channel::InPerson,
        });
        self.run(Some(d), desk, cmd).await;
    }

    /// A birth dossier through every step, on time.
    async fn birth_through(&mut self, d: DossierId, card: bool) {
        self.complete(d, "tu-phap", "register-birth").await;
        self.advance(60);
        self.complete(d, "cong-an", "register-residence").await;
        if card {
            self.complete(d, "bhxh", "issue-health-card").await;
        }
        self.advance(30);
        self.complete(d, "ubnd-xa", "return-result").await;
        self.hand_back(d, "ubnd-xa").await;
    }
}

/// Drives the scenario of the module docs. `projections`, when given, folds between commands.
async fn fill(
    store: Arc<SledStore>,
    projections: Option<Projections>,
    batch: usize,
) -> Option<Projections> {
    let clock = Arc::new(TestClock(Mutex::new(local(2026, 11, 23, 8, 0))));
    let engine = Engine::new(store, catalog(), clock.clone());
    let mut s = Sim {
        engine,
        clock,
        keys: 0,
        projections,
        batch,
    };
    // A plain birth, parallel police and health-card steps.
    let d1 = s.birth(3, Channel::InPerson).await;
    s.advance(90);
    s.birth_through(d1, true).await;

    // Supplement at justice, then the police send it back for rework; card skipped (age).
    let d2 = s.birth(100, Channel::Online).await;
    s.advance(60);
    s.ask(d2, "tu-phap", Some("register-birth")).await;
    s.advance(24 * 60);
    s.provide(d2).await;
    s.advance(60);
    s.complete(d2, "tu-phap", "register-birth").await;
    s.advance(120);
    s.reject(d2, "cong-an", "register-residence").await;
    s.advance(60);
    s.complete(d2, "tu-phap", "register-birth").await;
    s.advance(30);
    s.complete(d2, "cong-an", "register-residence").await;
    s.complete(d2, "ubnd-xa", "return-result").await;
    s.hand_back(d2, "ubnd-xa").await;

    // Two supplement requests: late by rule.
    let d3 = s.birth(5, Channel::Post).await;
    s.ask(d3, "tu-phap", Some("register-birth")).await;
    s.advance(30);
    s.provide(d3).await;
    s.ask(d3, "tu-phap", Some("register-birth")).await;
    s.advance(45);
    s.provide(d3).await;
    s.birth_through(d3, true).await;

    // Apology, then finished days late.
    let d4 = s.birth(4, Channel::InPerson).await;
    s.complete(d4, "tu-phap", "register-birth").await;
    let cmd = Command::IssueApology(IssueApology {
        step: Some(StepId("register-residence".into())),
        reason: "chờ xác minh".into(),
        new_appointment: local(2026, 12, 4, 17, 0),
    });
    s.run(Some(d4), "cong-an", cmd).await;

    // Withdrawn, refused, stopped.
    let d5 = s.birth(2, Channel::Online).await;
    s.run(
        Some(d5),
        "citizen",
        Command::Withdraw(Withdraw {
            reason: "nộp nhầm".into(),
        }),
    )
    .await;
    let d6 = s.birth(2, Channel::InPerson).await;
    s.run(
        Some(d6),
        "tu-phap",
        Command::Refuse(Refuse {
            step: Some(StepId("register-birth".into())),
            reason: "không thuộc thẩm quyền".into(),
        }),
    )
    .await;
    let d7 = s.birth(2, Channel::InPerson).await;
    s.run(
        Some(d7),
        "ubnd-xa",
        Command::Stop(Stop {
            reason: "người nộp không bổ sung".into(),
        }),
    )
    .await;

    // Land transfer: tax sends it back to the land office, then payment and certificate.
    let d8 = s.land(false).await;
    s.complete(d8, "tthcc", "intake").await;
    s.advance(8 * 60);
    s.complete(d8, "vpdk-dat", "land-check").await;
    s.advance(24 * 60);
    s.reject(d8, "thue", "tax-assess").await;
    s.advance(60);
    s.complete(d8, "vpdk-dat", "land-check").await;
    s.complete(d8, "thue", "tax-assess").await;
    s.advance(3 * 24 * 60);
    s.complete(d8, "thue", "confirm-payment").await;
    s.complete(d8, "vpdk-dat", "issue-certificate").await;
    s.complete(d8, "tthcc", "return-result").await;
    s.hand_back(d8, "tthcc").await;

    // Left open: an exempt land transfer stuck at the land office, a birth with a supplement
    // outstanding at intake, and the apologised birth at the police.
    let d9 = s.land(true).await;
    s.complete(d9, "tthcc", "intake").await;
    let d10 = s.birth(1, Channel::InPerson).await;
    s.ask(d10, "ubnd-xa", None).await;
    s.advance(10 * 24 * 60);
    s.projections.take()
}

fn now() -> DateTime<Utc> {
    local(2026, 12, 10, 10, 0)
}

/// Every report in every format, at the same `now`.
fn reports(p: &Projections) -> Vec<String> {
    let board = p.board(now(), &BoardQuery::default()).expect("board");
    let breaches = p
        .breaches(now(), &BreachQuery::default())
        .expect("breaches");
    let indicators = p
        .indicators(&IndicatorQuery::default())
        .expect("indicators");
    [Format::Table, Format::Json, Format::Csv]
        .into_iter()
        .flat_map(|f| {
            [
                report::board(&board, f),
                report::breaches(&breaches, f),
                report::indicators(&indicators, f),
            ]
        })
        .collect()
}

#[tokio::test]
async fn rebuild_equals_the_interleaved_incremental_fold() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(data.path()).expect("store"));
    let feed: Arc<dyn FeedSource> = store.clone();
    let incremental =
        Projections::open(&data.path().join("projections"), feed.clone(), catalog()).expect("open");
    let incremental = fill(store.clone(), Some(incremental), 2)
        .await
        .expect("projections back");
    let progress = incremental.catch_up_in(3).expect("catch up");
    assert!(
        progress.events > 0,
        "the interleaved batches left some behind"
    );
    let lag = incremental.lag().expect("lag");
    assert_eq!(lag.lag, 0);

    let rebuilt = Projections::open(&data.path().join("rebuilt"), feed, catalog()).expect("open");
    let replay = rebuilt.rebuild().expect("rebuild");
    assert_eq!(replay.from, 0);
    assert_eq!(replay.to, lag.head);
    assert_eq!(replay.events, lag.head);

    let (a, b) = (
        incremental.dump().expect("dump"),
        rebuilt.dump().expect("dump"),
    );
    assert_eq!(a.len(), b.len(), "same number of records");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x,
            y,
            "record {} differs",
            lienthong_projections::keys::printable(&x.0)
        );
    }
    assert_eq!(reports(&incremental), reports(&rebuilt));
    // Every record measured cleanly (calendar found, slip agrees with the engine's state).
    for (k, v) in b.iter().filter(|(k, _)| k.starts_with(b"d/")) {
        let record: lienthong_projections::record::DossierRecord =
            lienthong_projections::record::from_bytes(v).expect("record");
        assert!(
            record.problems.is_empty(),
            "{}: {:?}",
            lienthong_projections::keys::printable(k),
            record.problems
        );
    }

    // The scenario reached what it claims to cover.
    let breaches = rebuilt
        .breaches(now(), &BreachQuery::default())
        .expect("breaches");
    let reasons: Vec<String> = breaches
        .breaches
        .iter()
        .flat_map(|b| b.reasons.clone())
        .collect();
    assert!(reasons.iter().any(|r| r == "late-by-rule"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r == "open-past-appointment"),
        "{reasons:?}"
    );
    assert!(breaches.breaches.iter().any(|b| b.apology.is_some()));
    let ind = rebuilt
        .indicators(&IndicatorQuery::default())
        .expect("indicators");
    assert!(ind.rows.iter().any(|r| r.withdrawn > 0));
    assert!(
        ind.rows
            .iter()
            .all(|r| r.early + r.on_time + r.late == r.finished)
    );
    assert!(
        ind.rows
            .iter()
            .any(|r| r.level == "step" && r.agency == "thue")
    );

    // Rebuilding again over an existing database gives the same bytes.
    rebuilt.rebuild().expect("rebuild again");
    assert_eq!(rebuilt.dump().expect("dump"), b);
}

#[tokio::test]
async fn reopened_projections_catch_up_to_what_a_rebuild_gives() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("projections");
    let store = Arc::new(SledStore::open(data.path()).expect("store"));
    let feed: Arc<dyn FeedSource> = store.clone();
    let clock = Arc::new(TestClock(Mutex::new(local(2026, 11, 23, 8, 0))));
    let engine = Engine::new(store.clone(), catalog(), clock.clone());
    let mut s = Sim {
        engine,
        clock,
        keys: 0,
        projections: None,
        batch: 1,
    };
    let d1 = s.birth(3, Channel::InPerson).await;
    s.complete(d1, "tu-phap", "register-birth").await;

    let p = Projections::open(&dir, feed.clone(), catalog()).expect("open");
    p.catch_up().expect("catch up");
    let first = p.checkpoint().expect("checkpoint");
    p.flush().expect("flush");
    drop(p);

    s.advance(60);
    s.complete(d1, "cong-an", "register-residence").await;
    s.complete(d1, "bhxh", "issue-health-card").await;
    let d2 = s.birth(100, Channel::Online).await;
    s.ask(d2, "tu-phap", Some("register-birth")).await;
    s.advance(120);
    s.provide(d2).await;

    let p = Projections::open(&dir, feed.clone(), catalog()).expect("reopen");
    assert_eq!(
        p.checkpoint().expect("checkpoint"),
        first,
        "the checkpoint survived"
    );
    assert!(p.lag().expect("lag").lag > 0);
    let progress = p.catch_up().expect("catch up");
    assert_eq!(progress.from, first);
    assert_eq!(p.lag().expect("lag").lag, 0);

    let rebuilt = Projections::open(&data.path().join("rebuilt"), feed, catalog()).expect("open");
    rebuilt.rebuild().expect("rebuild");
    assert_eq!(p.dump().expect("dump"), rebuilt.dump().expect("dump"));
    assert_eq!(reports(&p), reports(&rebuilt));
}

/// The store's feed, counting the streams read; with `unlinked`, the feed's events come without
/// their hashes, so that no event links to the one before it and the fold must read every
/// stream it continues from the store.
struct CountingFeed {
    store: Arc<SledStore>,
    unlinked: bool,
    streams_read: AtomicU64,
    feed_events_read: AtomicU64,
    /// The feed ends here: events past it are not returned, and a read after it fails
    /// (`u64::MAX`: never).
    fail_after: u64,
    /// Feed reads made by the catch-up's read-ahead thread.
    reads_ahead: AtomicU64,
    /// The event at this position comes without its dossier id, which the fold refuses
    /// (`u64::MAX`: none).
    damaged_at: u64,
}

impl CountingFeed {
    fn new(store: Arc<SledStore>, unlinked: bool, fail_after: u64) -> Self {
        CountingFeed {
            store,
            unlinked,
            streams_read: AtomicU64::new(0),
            feed_events_read: AtomicU64::new(0),
            fail_after,
            reads_ahead: AtomicU64::new(0),
            damaged_at: u64::MAX,
        }
    }
}

impl FeedSource for CountingFeed {
    fn read_feed(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<lienthong_engine::store::Recorded>, lienthong_engine::store::Error> {
        if std::thread::current().name() == Some("projections-read-ahead") {
            self.reads_ahead.fetch_add(1, Ordering::Relaxed);
        }
        if after_position >= self.fail_after {
            return Err(lienthong_engine::store::Error::Backend(format!(
                "test: no reads past {}",
                self.fail_after
            )));
        }
        let mut feed = FeedSource::read_feed(&*self.store, after_position, limit)?;
        feed.retain(|r| r.position() <= self.fail_after);
        self.feed_events_read
            .fetch_add(feed.len() as u64, Ordering::Relaxed);
        if self.unlinked {
            for r in &mut feed {
                r.sealed.hash.clear();
            }
        }
        for r in feed.iter_mut().filter(|r| r.position() == self.damaged_at) {
            if let Some(env) = r.event.envelope.as_mut() {
                env.dossier_id.clear();
            }
        }
        Ok(feed)
    }

    fn read_stream(
        &self,
        dossier: &DossierId,
    ) -> Result<Vec<lienthong_engine::store::Recorded>, lienthong_engine::store::Error> {
        self.streams_read.fetch_add(1, Ordering::Relaxed);
        FeedSource::read_stream(&*self.store, dossier)
    }

    fn last_position(&self) -> Result<u64, lienthong_engine::store::Error> {
        FeedSource::last_position(&*self.store)
    }

    fn definition(&self, hash: &str) -> Result<Option<String>, lienthong_engine::store::Error> {
        FeedSource::definition(&*self.store, hash)
    }
}

#[tokio::test]
async fn folds_from_the_cache_equal_folds_from_the_streams() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(data.path()).expect("store"));
    fill(store.clone(), None, 1).await;
    let feed: Arc<dyn FeedSource> = store.clone();
    let rebuilt = Projections::open(&data.path().join("rebuilt"), feed, catalog()).expect("open");
    rebuilt.rebuild().expect("rebuild");
    let expected = rebuilt.dump().expect("dump");
    let longest = rebuilt
        .dump()
        .expect("dump")
        .iter()
        .filter(|(k, _)| k.starts_with(b"d/"))
        .map(|(k, v)| {
            let seq = lienthong_projections::record::from_bytes::<
                lienthong_projections::record::DossierRecord,
            >(v)
            .expect("record")
            .seq;
            (seq, k.clone())
        })
        .max()
        .expect("records");

    let mut n = 0;
    // Cache sizes: none, smaller than any stream, smaller than the longest stream (some
    // dossiers kept, the longest never, others evicted), and the default. Batches end
    // anywhere, so most dossiers are split across many of them.
    for cache in [0, 1, 12, longest.0 as usize - 1, FOLD_CACHE_EVENTS_MAX] {
        for batch in [1, 3, 7] {
            for unlinked in [false, true] {
                n += 1;
                let counting = Arc::new(CountingFeed::new(store.clone(), unlinked, u64::MAX));
                let p = Projections::open(
                    &data.path().join(format!("fold-{n}")),
                    counting.clone(),
                    catalog(),
                )
                .expect("open");
                p.set_fold_cache_events_max(cache).expect("cache size");
                let progress = p.catch_up_in(batch).expect("catch up");
                assert!(progress.batches > 1);
                let streams_read = counting.streams_read.load(Ordering::Relaxed);
                let what = format!("cache {cache}, batch {batch}, unlinked {unlinked}");
                // The event read to see where a batch's last append ends starts the next batch.
                assert_eq!(
                    counting.feed_events_read.load(Ordering::Relaxed),
                    progress.events,
                    "{what}: no feed event read twice"
                );
                assert_eq!(p.dump().expect("dump"), expected, "{what}");
                if unlinked || cache < 12 {
                    assert!(streams_read > 0, "{what}: the streams were read");
                } else if cache == FOLD_CACHE_EVENTS_MAX {
                    // Every dossier was folded from its events in the feed and the cache.
                    assert_eq!(streams_read, 0, "{what}");
                }
                // And a rebuild over the same handle (cache warm) gives the same again.
                p.rebuild().expect("rebuild");
                assert_eq!(p.dump().expect("dump"), expected, "{what}, rebuilt");
            }
        }
    }
}

#[tokio::test]
async fn reading_ahead_cuts_the_batches_apply_next_cuts_and_stops_at_a_failed_read() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(data.path()).expect("store"));
    fill(store.clone(), None, 1).await;
    let head = store.last_position().expect("head");
    let batch = 3;
    assert!(
        head > 10 * batch as u64,
        "{head} events: too few to read ahead"
    );
    let feed: Arc<dyn FeedSource> = store.clone();

    // One batch at a time, read on the folding thread: the reference.
    let one = Projections::open(&data.path().join("one"), feed.clone(), catalog()).expect("open");
    let mut batches = 0;
    while one.apply_next(batch).expect("fold") > 0 {
        batches += 1;
    }
    let expected = one.dump().expect("dump");

    // Far behind: the catch-up reads ahead on a second thread, cuts the same batches, and reads
    // each feed event once.
    let counting = Arc::new(CountingFeed::new(store.clone(), false, u64::MAX));
    let ahead =
        Projections::open(&data.path().join("ahead"), counting.clone(), catalog()).expect("open");
    let progress = ahead.catch_up_in(batch).expect("catch up");
    assert_eq!((progress.events, progress.batches), (head, batches));
    assert_eq!(ahead.dump().expect("dump"), expected);
    assert!(
        counting.reads_ahead.load(Ordering::Relaxed) > 0,
        "no read ahead"
    );
    assert_eq!(counting.feed_events_read.load(Ordering::Relaxed), head);

    // A read that fails half-way: the error comes back, and the views stop where one batch at a
    // time, on the folding thread, stops on the same feed.
    let fail_after = head / 2 + 1;
    let dir = data.path().join("failing");
    let (p, err) = fail_both_ways(&dir, batch, || {
        Arc::new(CountingFeed::new(store.clone(), false, fail_after))
    });
    assert!(err.to_string().contains("no reads past"), "{err}");
    let checkpoint = p.checkpoint().expect("checkpoint");
    assert!(checkpoint > 0, "{checkpoint}");
    drop(p);
    let p = Projections::open(&dir, feed, catalog()).expect("reopen");
    let progress = p.catch_up_in(batch).expect("catch up the rest");
    assert_eq!(progress.from, checkpoint);
    assert_eq!(p.dump().expect("dump"), expected);
}

#[tokio::test]
async fn a_fold_that_fails_while_reading_ahead_stops_where_one_batch_at_a_time_stops() {
    let data = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SledStore::open(data.path()).expect("store"));
    fill(store.clone(), None, 1).await;
    let head = store.last_position().expect("head");
    let batch = 3;
    let damaged_at = head / 2;
    let damaged = || {
        let mut feed = CountingFeed::new(store.clone(), false, u64::MAX);
        feed.damaged_at = damaged_at;
        Arc::new(feed)
    };

    // The reader may be blocked on a full channel when the fold fails: the catch-up must still
    // return, where and as one batch at a time does.
    let dir = data.path().join("ahead");
    let (p, err) = fail_both_ways(&dir, batch, damaged);
    assert!(
        err.to_string().contains("without a valid dossier id"),
        "{err}"
    );
    let checkpoint = p.checkpoint().expect("checkpoint");
    assert!(checkpoint > 0 && checkpoint < damaged_at, "{checkpoint}");
    // Reopened over the whole feed, it goes on from that checkpoint to what a rebuild gives.
    drop(p);
    let feed: Arc<dyn FeedSource> = store.clone();
    let p = Projections::open(&dir, feed.clone(), catalog()).expect("reopen");
    p.catch_up_in(batch).expect("catch up the rest");
    let rebuilt = Projections::open(&data.path().join("rebuilt"), feed, catalog()).expect("open");
    rebuilt.rebuild().expect("rebuild");
    assert_eq!(p.dump().expect("dump"), rebuilt.dump().expect("dump"));
}

/// Folds a feed that fails (`feed` makes a fresh one) into two fresh databases beside `dir`:
/// one batch at a time with `apply_next`, and in `dir` with `catch_up_in`, which must read
/// ahead. Both must fail, at the same checkpoint, with the same error and the same views.
/// Answers the catch-up's handle and its error.
fn fail_both_ways(
    dir: &std::path::Path,
    batch: usize,
    feed: impl Fn() -> Arc<CountingFeed>,
) -> (Projections, lienthong_projections::Error) {
    let one = Projections::open(&dir.with_extension("one"), feed(), catalog()).expect("open");
    let reference = loop {
        match one.apply_next(batch) {
            Ok(0) => panic!("the feed ended without failing"),
            Ok(_) => {}
            Err(e) => break (one.checkpoint().expect("checkpoint"), e.to_string()),
        }
    };
    let ahead = feed();
    let p = Projections::open(dir, ahead.clone(), catalog()).expect("open");
    let err = p.catch_up_in(batch).expect_err("the catch-up fails");
    assert!(
        ahead.reads_ahead.load(Ordering::Relaxed) > 0,
        "no read ahead"
    );
    assert_eq!(
        (p.checkpoint().expect("checkpoint"), err.to_string()),
        reference
    );
    assert_eq!(
        p.dump().expect("dump"),
        one.dump().expect("dump"),
        "views at the failure"
    );
    (p, err)
}
