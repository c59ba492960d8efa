//! Focused checks of four rules the views must keep:
//!
//! 1. a replaced record subtracts from the counters exactly what it added (stored in its `d/`
//!    record), even when the catalog's calendars changed in between;
//! 2. publishing a calendar year file (which changes the family's hash) does not make a rebuild
//!    differ from the incremental fold;
//! 3. a hand-off's waits are its own deadline move, not the dossier's whole exclusion;
//! 4. the board holds exactly the deadlines the engine holds (`current_deadlines`).

mod support;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use lienthong_calendar::{Calendar, Duration};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::convert::timestamp;
use lienthong_engine::dossier::{DossierState, current_deadlines, evolve};
use lienthong_projections::record::Counters;
use lienthong_projections::{BoardQuery, BoardState, FeedSource, Projections, keys};
use lienthong_proto::v1::{self as pb, Channel, event::Body};
use lienthong_workflow::Catalog;
use support::{Dossier, MemFeed, catalog, local};

const BIRTH: &str = "2.000986";

fn vn(c: &Catalog) -> Calendar {
    c.calendar("vn").expect("vn is loaded").clone()
}

fn due(cal: &Calendar, from: DateTime<Utc>, budget: &str) -> DateTime<Utc> {
    let d: Duration = budget.parse().expect("a duration");
    cal.add(from, d).expect("covered")
}

/// The shipped catalog without the 2027 calendar file (the year not yet published).
fn catalog_without_2027(dir: &Path) -> Arc<Catalog> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    for sub in ["calendars", "procedures"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for f in std::fs::read_dir(src.join(sub)).expect("read_dir") {
            let f = f.expect("entry");
            if f.file_name() == "vn-2027.toml" {
                continue;
            }
            std::fs::copy(f.path(), dir.join(sub).join(f.file_name())).expect("copy");
        }
    }
    std::fs::copy(src.join("agencies.toml"), dir.join("agencies.toml")).expect("copy");
    Arc::new(Catalog::load(dir).unwrap_or_else(|d| panic!("{d:#?}")))
}

fn receive(
    feed: &MemFeed,
    d: &Dossier,
    procedure: &str,
    at: DateTime<Utc>,
    cal: &Calendar,
) -> DateTime<Utc> {
    let appointment = due(cal, at, "3wd");
    feed.push(
        d,
        at,
        "ubnd-xa",
        Body::Received(pb::DossierReceived {
            procedure_code: procedure.into(),
            procedure_version: 1,
            definition_hash: "test".into(),
            receiving_agency: "ubnd-xa".into(),
            channel: Channel::InPerson as i32,
            clock_started_at: Some(timestamp(at)),
            appointment: Some(timestamp(appointment)),
            calendar_name: "vn".into(),
            calendar_hash: cal.hash().into(),
            limit: "3wd".into(),
            ..Default::default()
        }),
    );
    appointment
}

fn open(
    feed: &MemFeed,
    d: &Dossier,
    at: DateTime<Utc>,
    by: &str,
    step: &str,
    agency: &str,
    due_at: DateTime<Utc>,
) {
    feed.push(
        d,
        at,
        by,
        Body::StepOpened(pb::StepOpened {
            step_id: step.into(),
            agency: agency.into(),
            budget: "1wd".into(),
            due: Some(timestamp(due_at)),
            calendar_hash: String::new(),
        }),
    );
}

fn complete(feed: &MemFeed, d: &Dossier, at: DateTime<Utc>, step: &str, agency: &str) {
    feed.push(
        d,
        at,
        agency,
        Body::StepCompleted(pb::StepCompleted {
            step_id: step.into(),
            agency: agency.into(),
            outcome: "approve".into(),
            ..Default::default()
        }),
    );
}

fn ask(feed: &MemFeed, d: &Dossier, at: DateTime<Utc>, step: &str, by: &str, to: &str) {
    feed.push(
        d,
        at,
        by,
        Body::SupplementRequested(pb::SupplementRequested {
            step_id: step.into(),
            requested_by: by.into(),
            items: vec!["giấy tờ".into()],
            reason: "thiếu".into(),
            addressed_to: to.into(),
            ordinal: 1,
            late_by_rule: false,
        }),
    );
}

/// The database as printable text (readable diffs).
fn dump(p: &Projections) -> Vec<(String, String)> {
    p.dump()
        .expect("dump")
        .into_iter()
        .map(|(k, v)| {
            (
                keys::printable(&k),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

fn counters_valid(p: &Projections) {
    for (k, v) in p.dump().expect("dump") {
        if k.starts_with(keys::INDICATOR) {
            let c: Counters = lienthong_projections::record::from_bytes(&v).expect("counters");
            assert!(c.is_valid() && !c.is_zero(), "{c:?}");
        }
    }
}

/// 1 and 2: next year's calendar file is published between two folds. The dossier touched after
/// it is replaced without a negative counter, and a rebuild with the new catalog gives byte for
/// byte the incremental database (also for the dossier folded before the publication).
#[test]
fn publishing_a_calendar_year_keeps_rebuild_equal_to_incremental() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let before = catalog_without_2027(&tmp.path().join("catalog"));
    let after = catalog();
    assert_ne!(
        vn(&before).hash(),
        vn(&after).hash(),
        "the family hash changes"
    );
    let cal = vn(&before);
    let feed = Arc::new(MemFeed::default());
    let (x, y) = (Dossier::new(1, "X"), Dossier::new(2, "Y"));
    for d in [&x, &y] {
        let at = local(2026, 11, 2, 7, 30);
        receive(&feed, d, BIRTH, at, &cal);
        open(
            &feed,
            d,
            at,
            "ubnd-xa",
            "register-birth",
            "tu-phap",
            due(&cal, at, "1wd"),
        );
    }
    let incremental = tmp.path().join("incremental");
    {
        let p = Projections::open(&incremental, feed.clone(), before.clone()).expect("open");
        p.catch_up().expect("fold before the publication");
    }
    // Published: the same projections now fold with the catalog holding 2027.
    let at = local(2026, 11, 2, 15, 0);
    complete(&feed, &y, at, "register-birth", "tu-phap");
    let p = Projections::open(&incremental, feed.clone(), after.clone()).expect("reopen");
    p.catch_up().expect("fold after the publication");
    counters_valid(&p);
    let fresh =
        Projections::open(&tmp.path().join("rebuilt"), feed.clone(), after.clone()).expect("open");
    fresh.rebuild().expect("rebuild");
    assert_eq!(dump(&p), dump(&fresh));
    let x_rec = p.record(&x.id).expect("read").expect("x");
    assert!(x_rec.problems.is_empty(), "{:?}", x_rec.problems);
}

/// 1: a record folded while its calendar was not loaded counted its receipt in the UTC month;
/// once the calendar is loaded the replaced record's local month is another one. The stored
/// contribution is subtracted (recomputing it would take it off the other month: a stale count
/// left in November, or a counter below zero there), and the result equals a rebuild.
#[test]
fn a_replaced_record_subtracts_what_it_added() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let loaded = catalog();
    let mut without = (*loaded).clone();
    without.calendars.remove("vn");
    let without = Arc::new(without);
    let cal = vn(&loaded);
    let feed = Arc::new(MemFeed::default());
    let z = Dossier::new(3, "Z");
    // Tue 1 Dec 00:30 in Hà Nội is still 30 November in UTC.
    receive(&feed, &z, BIRTH, local(2026, 12, 1, 0, 30), &cal);
    let dir = tmp.path().join("incremental");
    {
        let p = Projections::open(&dir, feed.clone(), without).expect("open");
        p.catch_up().expect("fold without the calendar");
        let keys: Vec<_> = p
            .dump()
            .expect("dump")
            .into_iter()
            .filter(|(k, _)| k.starts_with(keys::INDICATOR))
            .map(|(k, _)| keys::parse_indicator_key(&k).expect("key").0)
            .collect();
        assert_eq!(keys, ["2026-11"]);
    }
    let at = local(2026, 12, 1, 8, 0);
    open(
        &feed,
        &z,
        at,
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        due(&cal, at, "1wd"),
    );
    let p = Projections::open(&dir, feed.clone(), loaded.clone()).expect("reopen");
    p.catch_up()
        .expect("the replaced record's counters come off cleanly");
    counters_valid(&p);
    let fresh = Projections::open(&tmp.path().join("rebuilt"), feed, loaded).expect("open");
    fresh.rebuild().expect("rebuild");
    assert_eq!(dump(&p), dump(&fresh));
}

/// 3: a pause supplement asked at Mon 09:00 by `register-residence` (opened 08:00), provided Tue
/// 09:00; `issue-health-card` opened at Mon 10:00, while the request was outstanding. The engine
/// moved the appointment and `register-residence` by 1wd (8h), `issue-health-card` by 7h only
/// (the wait since it opened): those are their waits, not 8h each.
#[test]
fn each_hand_off_waits_its_own_deadline_move() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = catalog();
    let cal = vn(&c);
    let feed = Arc::new(MemFeed::default());
    let d = Dossier::new(4, "W");
    let t = |day, h, m| local(2026, 11, day, h, m);
    let appointment = receive(&feed, &d, BIRTH, t(2, 7, 30), &cal);
    open(
        &feed,
        &d,
        t(2, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        due(&cal, t(2, 7, 30), "1wd"),
    );
    complete(&feed, &d, t(2, 8, 0), "register-birth", "tu-phap");
    let rr_due = due(&cal, t(2, 8, 0), "1wd");
    open(
        &feed,
        &d,
        t(2, 8, 0),
        "tu-phap",
        "register-residence",
        "cong-an",
        rr_due,
    );
    ask(
        &feed,
        &d,
        t(2, 9, 0),
        "register-residence",
        "cong-an",
        "citizen",
    );
    let hc_due = due(&cal, t(2, 10, 0), "1wd");
    open(
        &feed,
        &d,
        t(2, 10, 0),
        "tu-phap",
        "issue-health-card",
        "bhxh",
        hc_due,
    );
    feed.push(
        &d,
        t(3, 9, 0),
        "citizen",
        Body::SupplementProvided(pb::SupplementProvided {
            step_id: "register-residence".into(),
            ..Default::default()
        }),
    );
    let shift =
        |at: DateTime<Utc>, h: i64| cal.add_working(at, TimeDelta::hours(h)).expect("covered");
    feed.push(
        &d,
        t(3, 9, 0),
        "engine",
        Body::DeadlinesMoved(pb::DeadlinesMoved {
            rule: "supplement-pause".into(),
            appointment: Some(timestamp(shift(appointment, 8))),
            steps: vec![
                pb::StepDue {
                    step_id: "register-residence".into(),
                    due: Some(timestamp(shift(rr_due, 8))),
                },
                pb::StepDue {
                    step_id: "issue-health-card".into(),
                    due: Some(timestamp(shift(hc_due, 7))),
                },
            ],
            excluded_working_seconds: 8 * 3600,
            calendar_hash: cal.hash().into(),
        }),
    );
    complete(&feed, &d, t(3, 11, 0), "register-residence", "cong-an");
    complete(&feed, &d, t(3, 11, 0), "issue-health-card", "bhxh");
    let p = Projections::open(tmp.path(), feed, c).expect("open");
    p.catch_up().expect("fold");
    let rec = p.record(&d.id).expect("read").expect("record");
    let h = |step: &str| {
        rec.handoffs
            .iter()
            .find(|h| h.step == step)
            .unwrap_or_else(|| panic!("{step}"))
            .clone()
    };
    assert_eq!(rec.supplement_excluded_s, 8 * 3600);
    assert_eq!(h("register-residence").waits_s, 8 * 3600);
    assert_eq!(h("issue-health-card").waits_s, 7 * 3600);
    // Mon 10:00 → Tue 11:00 is 9h of office time, 7h of it waiting: 2h of work.
    assert_eq!(h("issue-health-card").actual_s, Some(2 * 3600));
    // Mon 08:00 → Tue 11:00 is 11h of office time, 8h of it waiting.
    assert_eq!(h("register-residence").actual_s, Some(3 * 3600));
}

/// A test workflow with two parallel steps, `a` and `b` (`b` a payment step when `payment`).
fn with_workflow(code: &str, clock: &str, payment: bool) -> Arc<Catalog> {
    let mut c = (*catalog()).clone();
    let supplement = !payment;
    let text = format!(
        r#"[procedure]
code = "{code}"
name = "test"
version = 1
limit = "3wd"
calendar = "vn"
supplement_clock = "{clock}"
payment_counts = false
receiving_agency = "ubnd-xa"

[[step]]
id = "a"
name = "a"
agency = "tu-phap"
budget = "1wd"

[[step]]
id = "b"
name = "b"
agency = "thue"
budget = "1wd"
payment = {payment}
supplement = {supplement}
"#
    );
    let wf = c
        .parse_workflow(&text, "test")
        .unwrap_or_else(|d| panic!("{d:#?}"));
    c.procedures.insert(code.to_string(), Arc::new(wf));
    Arc::new(c)
}

/// Folds `d` with the engine's own `evolve`, and returns the steps the engine watches.
fn engine_deadline_steps(feed: &MemFeed, c: &Catalog, code: &str, d: &Dossier) -> Vec<String> {
    let mut state = DossierState::default();
    for r in feed.read_stream(&DossierId(d.id)).expect("stream") {
        state = evolve(state, &r.event);
    }
    let wf = c.procedure(code).expect("workflow");
    let mut out: Vec<String> = current_deadlines(&state, wf)
        .into_iter()
        .filter_map(|d| d.step)
        .collect();
    out.sort();
    out
}

/// Receives at Mon 2 Nov 07:30 and opens `a` and `b` (1wd each, due Tue 07:30); then `extra`;
/// judged at Thu 5 Nov 10:00, when both dues are long past. Returns the board state of each
/// step, and the steps the engine watches.
fn board_of(
    code: &str,
    clock: &str,
    payment: bool,
    extra: impl Fn(&MemFeed, &Dossier),
) -> (Vec<(String, BoardState)>, Vec<String>) {
    let c = with_workflow(code, clock, payment);
    let cal = vn(&c);
    let feed = Arc::new(MemFeed::default());
    let d = Dossier::new(5, "B");
    let at = local(2026, 11, 2, 7, 30);
    receive(&feed, &d, code, at, &cal);
    open(
        &feed,
        &d,
        at,
        "ubnd-xa",
        "a",
        "tu-phap",
        due(&cal, at, "1wd"),
    );
    open(&feed, &d, at, "ubnd-xa", "b", "thue", due(&cal, at, "1wd"));
    extra(&feed, &d);
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = Projections::open(tmp.path(), feed.clone(), c.clone()).expect("open");
    p.catch_up().expect("fold");
    let board = p
        .board(local(2026, 11, 5, 10, 0), &BoardQuery::default())
        .expect("board");
    let mut states: Vec<(String, BoardState)> =
        board.steps.into_iter().map(|s| (s.step, s.state)).collect();
    states.sort_by(|x, y| x.0.cmp(&y.0));
    (states, engine_deadline_steps(&feed, &c, code, &d))
}

fn not_held(states: &[(String, BoardState)]) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s)| *s != BoardState::Paused)
        .map(|(step, _)| step.clone())
        .collect()
}

/// 4: an open payment step that does not count holds every open step, and its own due is never a
/// deadline: nothing is overdue while the citizen pays.
#[test]
fn board_holds_steps_while_a_payment_that_does_not_count_is_open() {
    let (states, engine) = board_of("T.PAY", "pause", true, |_, _| {});
    assert_eq!(
        states,
        [
            ("a".to_string(), BoardState::Paused),
            ("b".to_string(), BoardState::Paused)
        ]
    );
    assert_eq!(not_held(&states), engine);
}

/// 4: under `supplement_clock = "restart"` the citizen's supplement holds only the asking step.
#[test]
fn board_holds_only_the_asking_step_under_restart() {
    let (states, engine) = board_of("T.RESTART", "restart", false, |feed, d| {
        ask(feed, d, local(2026, 11, 2, 9, 0), "a", "tu-phap", "citizen");
    });
    assert_eq!(
        states,
        [
            ("a".to_string(), BoardState::Paused),
            ("b".to_string(), BoardState::Overdue)
        ]
    );
    assert_eq!(not_held(&states), engine);
}

/// 4: under "pause" the citizen's supplement holds every open step.
#[test]
fn board_holds_every_step_for_the_citizens_supplement_under_pause() {
    let (states, engine) = board_of("T.PAUSE", "pause", false, |feed, d| {
        ask(feed, d, local(2026, 11, 2, 9, 0), "a", "tu-phap", "citizen");
    });
    assert!(
        states.iter().all(|(_, s)| *s == BoardState::Paused),
        "{states:?}"
    );
    assert_eq!(not_held(&states), engine);
}

/// 4: a supplement addressed to another agency holds nothing: the steps stay overdue.
#[test]
fn board_holds_nothing_for_a_supplement_between_agencies() {
    let (states, engine) = board_of("T.AGENCY", "pause", false, |feed, d| {
        ask(feed, d, local(2026, 11, 2, 9, 0), "a", "tu-phap", "thue");
    });
    assert_eq!(
        states,
        [
            ("a".to_string(), BoardState::Overdue),
            ("b".to_string(), BoardState::Overdue)
        ]
    );
    assert_eq!(not_held(&states), engine);
}
