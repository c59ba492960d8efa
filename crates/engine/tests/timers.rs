//! Durable deadline timers through the embedded runtime, on a real sled store, the shipped
//! birth group and the `vn` calendar, with a [`ManualClock`] that the tests move.
//!
//! What they prove: a receipt stores the earliest timer its deadlines need in the same append,
//! and each firing sets the next; a warning fires exactly at `due - 1wd` and a miss at the first
//! second after the due, each once; a completed step's timer goes in the same append as the
//! completion; a stale timer (its deadline
//! met, or a warning whose deadline already passed) records nothing and is cleared; timers
//! survive closing and reopening the store; a firing whose clear was lost (a crash between the
//! notice and the clear) never doubles the notice; the timer loop fires on its own and stops on
//! shutdown; a wall clock stepping back neither reorders a stream nor moves a deadline; timers
//! left by the layout that stored every timer fire once; a timer whose calendar does not load is
//! kept for a later start.
//!
//! Birth dossier received Monday 2 March 2026 09:00: register-birth due Tuesday 09:00 (its
//! warning would be Monday 09:00, the receipt itself, so none is set), appointment Thursday
//! 09:00 (warning Wednesday 09:00).

#[path = "support/dossier.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lienthong_calendar::Duration;
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{Command, Status, TimerKind};
use lienthong_engine::runtime::{Engine, ManualClock, Options, Request};
use lienthong_engine::store::{
    self, AppendRequest, Appended, EventStore, Head, IdempotencyRecord, Recorded, SledStore, Timer,
    TimerOp, VerifyReport,
};
use lienthong_proto::v1::event::Body;
use lienthong_workflow::Catalog;
use tokio::sync::oneshot;

use support::{BHXH, CONG_AN, DESK, TU_PHAP, actor, complete, local, local_s, submit};

fn catalog() -> Arc<Catalog> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    Arc::new(Catalog::load(&dir).expect("workflows/ loads"))
}

fn engine(store: Arc<dyn EventStore>, clock: &ManualClock, lead: Duration) -> Engine {
    Engine::with_options(
        store,
        catalog(),
        Arc::new(clock.clone()),
        Options {
            warning_lead: lead,
            ..Options::default()
        },
    )
}

fn req(dossier: Option<DossierId>, agency: &str, key: &str, command: Command) -> Request {
    Request {
        dossier,
        actor: actor(agency),
        idempotency_key: key.to_string(),
        command,
    }
}

/// Submits the birth group at the clock's time; returns the dossier.
async fn received(e: &Engine) -> DossierId {
    e.execute(req(None, DESK, "submit", submit(2)))
        .await
        .expect("submit")
        .dossier
}

/// The notices in the dossier's stream, as `kind step`.
fn notices(store: &dyn EventStore, d: &DossierId) -> Vec<String> {
    store
        .read_stream(d)
        .expect("read")
        .iter()
        .filter_map(|r| match &r.event.body {
            Some(Body::DeadlineWarning(w)) => Some(format!("warning {} {}", w.step_id, w.lead)),
            Some(Body::DeadlineMissed(m)) => Some(format!("missed {}", m.step_id)),
            _ => None,
        })
        .map(|s| s.trim().to_string())
        .collect()
}

/// The dossier's timers as `(kind, step, at)`.
fn timers(
    store: &dyn EventStore,
    d: &DossierId,
) -> Vec<(TimerKind, Option<String>, DateTime<Utc>)> {
    store
        .due_timers(DateTime::<Utc>::MAX_UTC, store::TIMERS_READ_MAX)
        .expect("due_timers")
        .into_iter()
        .filter(|t| t.dossier == *d)
        .map(|t| (t.kind, t.step, t.at))
        .collect()
}

#[tokio::test]
async fn warnings_and_misses_fire_at_their_instants_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    // Only the dossier's earliest timer is stored; each firing sets the next.
    assert_eq!(
        timers(&*store, &d),
        [(
            TimerKind::Missed,
            Some("register-birth".to_string()),
            local_s(2026, 3, 3, 9, 0, 1)
        )]
    );
    // The due instant itself is still on time.
    clock.set(local(2026, 3, 3, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    clock.set(local_s(2026, 3, 3, 9, 0, 1));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 1);
    assert_eq!(notices(&*store, &d), ["missed register-birth"]);
    assert_eq!(
        timers(&*store, &d),
        [(TimerKind::Warning, None, local(2026, 3, 4, 9, 0))]
    );
    clock.set(local_s(2026, 3, 4, 8, 59, 59));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    clock.set(local(2026, 3, 4, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 1);
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd"]
    );
    // Fired timers are gone: firing again records nothing.
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    assert_eq!(
        timers(&*store, &d),
        [(TimerKind::Missed, None, local_s(2026, 3, 5, 9, 0, 1))]
    );
    let state = e.state(d).await.expect("state");
    assert_eq!(state.notices.len(), 2);
    assert!(store.verify().expect("verify").is_clean());
}

/// A step whose budget equals the warning lead has its warning instant at its opening: that
/// instant has come when the deadline is set, so no warning is set, also when the clock is not
/// on a whole second (the timer's instant is rounded up to one; a real clock rarely is).
#[tokio::test]
async fn a_warning_due_at_the_opening_is_not_set_between_two_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0) + chrono::Duration::milliseconds(400));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    let kinds: Vec<_> = timers(&*store, &d)
        .into_iter()
        .map(|(kind, step, _)| (kind, step))
        .collect();
    // A warning for register-birth would be the earliest timer, so the one stored.
    assert_eq!(
        kinds,
        [(TimerKind::Missed, Some("register-birth".to_string()))],
        "no warning for register-birth (1wd budget, 1wd lead)"
    );
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
}

#[tokio::test]
async fn completing_a_step_clears_its_timers_with_the_completion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    clock.set(local(2026, 3, 2, 10, 0));
    e.execute(req(Some(d), TU_PHAP, "c1", complete("register-birth")))
        .await
        .expect("complete");
    // register-birth's miss is gone; the two new steps are due Tuesday 10:00 (their warnings
    // would be now: not set). Of the timers firing in the same second, the first by step id is
    // the one stored.
    assert_eq!(
        timers(&*store, &d),
        [(
            TimerKind::Missed,
            Some("issue-health-card".to_string()),
            local_s(2026, 3, 3, 10, 0, 1)
        )]
    );
    // Every step done (the dossier processed): no appointment timer either.
    for (agency, step) in [
        (CONG_AN, "register-residence"),
        (BHXH, "issue-health-card"),
        (DESK, "return-result"),
    ] {
        e.execute(req(Some(d), agency, step, complete(step)))
            .await
            .expect("complete");
    }
    assert_eq!(
        e.state(d).await.expect("state").status(),
        Status::ReadyToReturn
    );
    assert_eq!(timers(&*store, &d), []);
    clock.set(local(2026, 3, 20, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    assert_eq!(notices(&*store, &d), Vec::<String>::new());
}

#[tokio::test]
async fn stale_timers_record_nothing_and_are_cleared() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    // An engine warning 2wd ahead receives two dossiers: the appointment's warning is Tuesday
    // 09:00 (2wd before Thursday 09:00).
    let two = engine(store.clone(), &clock, Duration::WorkingDays(2));
    let a = received(&two).await;
    let b = two
        .execute(req(None, DESK, "submit-b", submit(2)))
        .await
        .expect("submit b")
        .dossier;
    assert!(timers(&*store, &a).contains(&(TimerKind::Warning, None, local(2026, 3, 3, 9, 0))));
    drop(two);

    // Restarted with a 1wd lead, it finishes dossier `a`: its diff clears the timers a 1wd
    // engine would have set, so the old 2wd warning stays behind, stale.
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    clock.set(local(2026, 3, 2, 10, 0));
    for (agency, step) in [
        (TU_PHAP, "register-birth"),
        (CONG_AN, "register-residence"),
        (BHXH, "issue-health-card"),
        (DESK, "return-result"),
    ] {
        e.execute(req(Some(a), agency, step, complete(step)))
            .await
            .expect("complete");
    }
    assert_eq!(
        timers(&*store, &a),
        [(TimerKind::Warning, None, local(2026, 3, 3, 9, 0))]
    );
    // On Tuesday 09:00 the stale warning of `a` (processed) records nothing and is cleared,
    // while `b`'s warning from the 2wd engine is still current and recorded with its lead.
    clock.set(local(2026, 3, 3, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 1);
    assert_eq!(
        notices(&*store, &a),
        Vec::<String>::new(),
        "stale: processed"
    );
    assert_eq!(timers(&*store, &a), [], "the stale timer is cleared");
    assert_eq!(notices(&*store, &b), ["warning  2wd"]);
    // Friday: `b`'s misses.
    clock.set(local(2026, 3, 6, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 2);
    assert_eq!(
        notices(&*store, &b),
        ["warning  2wd", "missed register-birth", "missed"]
    );
    assert_eq!(timers(&*store, &b), []);
    assert!(store.verify().expect("verify").is_clean());
}

#[tokio::test]
async fn a_warning_whose_deadline_passed_is_cleared_and_the_miss_recorded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    // The timer loop was down until Friday: the appointment's warning (Wednesday) comes due
    // with its miss (Thursday); the warning is moot and only the misses are recorded.
    clock.set(local(2026, 3, 6, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 2);
    assert_eq!(notices(&*store, &d), ["missed register-birth", "missed"]);
    assert_eq!(timers(&*store, &d), []);
}

/// A catalog like the shipped one but whose calendar family is `xx`, not `vn`: a dossier pinned
/// to `vn` cannot have its deadlines computed with it.
fn catalog_without_vn(dir: &Path) -> Arc<Catalog> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    for sub in ["", "calendars", "procedures"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(src.join(sub)).expect("read workflows") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let text = text
                    .replace("name = \"vn-", "name = \"xx-")
                    .replace("calendar = \"vn\"", "calendar = \"xx\"");
                let name = path.file_name().expect("name").to_string_lossy();
                std::fs::write(dir.join(sub).join(name.replace("vn-", "xx-")), text)
                    .expect("write");
            }
        }
    }
    Arc::new(Catalog::load(dir).expect("the renamed workflows load"))
}

/// A timer whose dossier's calendar does not load stays stored and is passed over (clearing it
/// would leave the dossier with no timer, as only the earliest is stored); once an engine with
/// the calendar runs again, it fires.
#[tokio::test]
async fn a_timer_whose_calendar_does_not_load_is_kept_for_a_later_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let d = received(&engine(store.clone(), &clock, Duration::WorkingDays(1))).await;
    let stored = timers(&*store, &d);
    assert_eq!(stored.len(), 1);

    let other = tempfile::tempdir().expect("temp dir");
    let without = Engine::with_options(
        store.clone(),
        catalog_without_vn(other.path()),
        Arc::new(clock.clone()),
        Options::default(),
    );
    clock.set(local(2026, 3, 3, 10, 0));
    assert_eq!(without.fire_due_timers().await.expect("fire"), 0);
    assert_eq!(without.fire_due_timers().await.expect("fire again"), 0);
    assert_eq!(timers(&*store, &d), stored, "kept");
    assert_eq!(notices(&*store, &d), Vec::<String>::new());
    drop(without);

    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 1);
    assert_eq!(notices(&*store, &d), ["missed register-birth"]);
    assert!(store.verify().expect("verify").is_clean());
}

/// A store written when every timer of a dossier was stored, not only its earliest, keeps
/// working: each left-over timer fires once, records its notice if the deadline still needs it
/// (or nothing, if moot), and is cleared; nothing is noticed twice.
#[tokio::test]
async fn timers_left_by_the_every_timer_layout_fire_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    let (step_due, appointment) = (local(2026, 3, 3, 9, 0), local(2026, 3, 5, 9, 0));
    let timer = |at, kind, step: Option<&str>, due| Timer {
        at,
        dossier: d,
        kind,
        step: step.map(str::to_string),
        due,
        lead: (kind == TimerKind::Warning).then_some(Duration::WorkingDays(1)),
    };
    let every = vec![
        timer(
            local_s(2026, 3, 3, 9, 0, 1),
            TimerKind::Missed,
            Some("register-birth"),
            step_due,
        ),
        timer(
            local(2026, 3, 4, 9, 0),
            TimerKind::Warning,
            None,
            appointment,
        ),
        timer(
            local_s(2026, 3, 5, 9, 0, 1),
            TimerKind::Missed,
            None,
            appointment,
        ),
    ];
    store
        .update_timers(every.into_iter().map(TimerOp::Set).collect())
        .await
        .expect("answer")
        .expect("set every timer");
    assert_eq!(timers(&*store, &d).len(), 3);
    // Wednesday 09:00: the step's miss, then the appointment's warning.
    clock.set(local(2026, 3, 4, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 2);
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd"]
    );
    assert_eq!(
        timers(&*store, &d),
        [(TimerKind::Missed, None, local_s(2026, 3, 5, 9, 0, 1))]
    );
    clock.set(local(2026, 3, 6, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 1);
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd", "missed"]
    );
    assert_eq!(timers(&*store, &d), []);
    assert!(store.verify().expect("verify").is_clean());
}

#[tokio::test]
async fn timers_survive_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let d = {
        let store = Arc::new(SledStore::open(dir.path()).expect("open"));
        let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
        let d = received(&e).await;
        drop(e);
        store.close().expect("close");
        d
    };
    // Reopened on Wednesday 09:00: register-birth's miss and the appointment's warning fire.
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("reopen"));
    clock.set(local(2026, 3, 4, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 2);
    assert_eq!(e.fire_due_timers().await.expect("fire again"), 0);
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd"],
        "exactly once"
    );
}

/// A store that loses every timer clear: what a crash between a firing's notice and its clear
/// would leave behind, on every firing.
struct LosesClears(SledStore);

impl EventStore for LosesClears {
    fn append(&self, mut req: AppendRequest) -> oneshot::Receiver<Result<Appended, store::Error>> {
        req.timers.retain(|op| matches!(op, TimerOp::Set(_)));
        self.0.append(req)
    }
    fn read_stream(&self, d: &DossierId) -> Result<Vec<Recorded>, store::Error> {
        self.0.read_stream(d)
    }
    fn head(&self, d: &DossierId) -> Result<Option<Head>, store::Error> {
        self.0.head(d)
    }
    fn read_feed(&self, after: u64, limit: usize) -> Result<Vec<Recorded>, store::Error> {
        self.0.read_feed(after, limit)
    }
    fn last_position(&self) -> Result<u64, store::Error> {
        self.0.last_position()
    }
    fn dossiers(&self) -> Result<Vec<(DossierId, lienthong_engine::DossierCode)>, store::Error> {
        self.0.dossiers()
    }
    fn dossier_by_code(&self, code: &str) -> Result<Option<DossierId>, store::Error> {
        self.0.dossier_by_code(code)
    }
    fn idempotency(&self, a: &str, k: &str) -> Result<Option<IdempotencyRecord>, store::Error> {
        self.0.idempotency(a, k)
    }
    fn definition(&self, hash: &str) -> Result<Option<String>, store::Error> {
        self.0.definition(hash)
    }
    fn verify(&self) -> Result<VerifyReport, store::Error> {
        self.0.verify()
    }
    fn due_timers(&self, until: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, store::Error> {
        self.0.due_timers(until, limit)
    }
    fn update_timers(&self, mut ops: Vec<TimerOp>) -> oneshot::Receiver<Result<(), store::Error>> {
        ops.retain(|op| matches!(op, TimerOp::Set(_)));
        self.0.update_timers(ops)
    }
}

#[tokio::test]
async fn a_firing_whose_clear_was_lost_never_doubles_the_notice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> =
        Arc::new(LosesClears(SledStore::open(dir.path()).expect("open")));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    clock.set(local(2026, 3, 4, 9, 0));
    assert_eq!(e.fire_due_timers().await.expect("fire"), 2);
    // The timers are still there, as after a crash before the clear ...
    assert_eq!(timers(&*store, &d).len(), 3);
    // ... and firing them again (the same process, or a restarted one) records nothing more.
    assert_eq!(e.fire_due_timers().await.expect("fire again"), 0);
    let restarted = engine(store.clone(), &clock, Duration::WorkingDays(1));
    assert_eq!(restarted.fire_due_timers().await.expect("after restart"), 0);
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd"]
    );
}

#[tokio::test]
async fn the_timer_loop_fires_on_its_own_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    // The loop sleeps in real time, which a manual clock's jump does not shorten: a short bound
    // on its sleeps stands in for the time a real clock would take to reach the deadline.
    let e = Engine::with_options(
        store.clone(),
        catalog(),
        Arc::new(clock.clone()),
        Options {
            warning_lead: Duration::WorkingDays(1),
            timer_sleep_ms_max: 100,
            ..Options::default()
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = e.spawn_timer_loop(async move {
        let _ = stopped.await;
    });
    let d = received(&e).await;
    clock.set(local(2026, 3, 4, 9, 0));
    // The submission's timers are days ahead, after the loop's next look: they do not wake it.
    // At its next look the warning and the miss are long past by the manual clock, and it fires
    // both in one call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while notices(&*store, &d).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop did not fire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), handle)
        .await
        .expect("the loop stops on shutdown")
        .expect("the loop task did not panic");
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd"]
    );
}

/// A sleeping loop (the default bound: a minute) is woken by an append that sets a timer due
/// before it would look again. On this one-thread runtime the loop runs only when the test
/// waits, so the clock is back at the later instant when the woken loop looks.
#[tokio::test]
async fn an_earlier_timer_wakes_the_sleeping_loop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let later = local(2026, 3, 4, 9, 0);
    let clock = ManualClock::new(later);
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = e.spawn_timer_loop(async move {
        let _ = stopped.await;
    });
    // The loop finds no timer and sleeps until a minute after `later`.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // A dossier received two days earlier: its timers fall before the loop's next look.
    clock.set(local(2026, 3, 2, 9, 0));
    let d = received(&e).await;
    clock.set(later);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while notices(&*store, &d).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the append did not wake the loop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    handle.await.expect("the loop task did not panic");
    assert_eq!(
        notices(&*store, &d),
        ["missed register-birth", "warning  1wd"]
    );
}

/// The wall clock steps back two days after the receipt (a VM restored from a snapshot, a bad
/// NTP step): the next command is recorded no earlier than the receipt, so the stream stays in
/// time order and the state at any instant is a prefix; the deadlines, worked out from recorded
/// times, do not move; and the miss still fires once, when the clock comes back past the due.
#[tokio::test]
async fn a_clock_stepping_back_neither_reorders_the_stream_nor_moves_deadlines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let clock = ManualClock::new(local(2026, 3, 2, 9, 0));
    let e = engine(store.clone(), &clock, Duration::WorkingDays(1));
    let d = received(&e).await;
    let due = e.state(d).await.expect("state").appointment;

    clock.set(local(2026, 2, 28, 9, 0));
    e.execute(req(Some(d), TU_PHAP, "tp", complete("register-birth")))
        .await
        .expect("complete with the clock behind");
    let recorded: Vec<DateTime<Utc>> = store
        .read_stream(&d)
        .expect("read")
        .iter()
        .map(|r| {
            let t = r
                .event
                .envelope
                .as_ref()
                .and_then(|e| e.recorded_at)
                .expect("time");
            DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("instant")
        })
        .collect();
    assert!(
        recorded.windows(2).all(|w| w[0] <= w[1]),
        "recorded times out of order: {recorded:?}"
    );
    assert_eq!(recorded.last(), Some(&local(2026, 3, 2, 9, 0)));
    let state = e.state(d).await.expect("state");
    assert_eq!(state.appointment, due, "the appointment did not move");
    assert_eq!(
        state.steps.get("register-birth").map(|s| s.status),
        Some(lienthong_engine::dossier::StepStatus::Completed)
    );
    // Nothing fires while the clock is behind; the appointment's miss fires once it is past.
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    // The appointment's miss: the first whole second after it.
    let missed = due.expect("an appointment") + chrono::TimeDelta::seconds(1);
    clock.set(missed);
    assert!(e.fire_due_timers().await.expect("fire") >= 1);
    assert!(
        notices(&*store, &d).iter().any(|n| n == "missed"),
        "{:?}",
        notices(&*store, &d)
    );
    assert_eq!(e.fire_due_timers().await.expect("fire"), 0);
    assert!(store.verify().expect("verify").is_clean());
}
