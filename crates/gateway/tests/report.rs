//! The report service over real gRPC: a tonic client against the real gateway (TestServer), whose
//! read models are projections of the same sled store the engine writes. Time is the engine's
//! `ManualClock`, so every report is judged at an instant the test chose.
//!
//! The story, shared by the tests: the desk files two birth dossiers on Monday 2 March 2026 at
//! 09:00 (Hanoi). Justice registers the birth of B at once, which hands B over to the police and to
//! social insurance; A stays with justice. Every step has 1 working day, the dossier 3 (its
//! appointment is Thursday 5 March, 09:00).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Clients, TestServer, birth, doc, monday_morning, req};
use lienthong_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// Seconds in one working day of the `vn` calendar (07:30-11:30, 13:00-17:00).
const WORKING_DAY_S: i64 = 8 * 3600;

/// The two dossiers of the story.
struct Story {
    /// Still with justice.
    a: String,
    /// With the police and social insurance.
    b: String,
}

async fn story(c: &mut Clients) -> Story {
    let mut codes = Vec::new();
    for key in ["a", "b"] {
        let r = c
            .dossiers
            .submit(req("desk", birth(key, 14)))
            .await
            .expect("submitted")
            .into_inner();
        codes.push(r.dossier_code);
    }
    c.agencies
        .complete_step(req(
            "tu-phap",
            pb::CompleteStepRequest {
                idempotency_key: "tp-b".into(),
                dossier: codes[1].clone(),
                step_id: "register-birth".into(),
                outcome: "approve".into(),
                results: vec![doc("trich-luc-khai-sinh")],
                note: String::new(),
                officer: "can-bo-tp".into(),
            },
        ))
        .await
        .expect("justice completes B");
    Story {
        b: codes.pop().expect("b"),
        a: codes.pop().expect("a"),
    }
}

fn board(agency: &str, due_soon: &str, now: Option<DateTime<Utc>>) -> pb::BoardRequest {
    pb::BoardRequest {
        agency: agency.into(),
        due_soon: due_soon.into(),
        now: now.map(lienthong_engine::dossier::convert::timestamp),
    }
}

fn breaches(agency: &str, month: &str) -> pb::BreachesRequest {
    pb::BreachesRequest {
        agency: agency.into(),
        month: month.into(),
        now: None,
    }
}

fn indicators(agency: &str, month: &str) -> pb::IndicatorsRequest {
    pb::IndicatorsRequest {
        agency: agency.into(),
        month: month.into(),
    }
}

/// Every report reflects every acknowledged event: nothing left to fold.
fn assert_fresh(h: &Option<pb::ReportHeader>) -> pb::ReportHeader {
    let h = h.clone().expect("header");
    assert!(
        h.checkpoint > 0 && h.checkpoint == h.head && h.lag == 0,
        "{h:?}"
    );
    h
}

fn steps_of(b: &pb::BoardReply) -> Vec<(String, String, String, pb::BoardState)> {
    b.steps
        .iter()
        .map(|s| {
            (
                s.agency.clone(),
                s.dossier_code.clone(),
                s.step_id.clone(),
                s.state(),
            )
        })
        .collect()
}

fn field_of(e: &tonic::Status) -> String {
    e.get_details_bad_request()
        .expect("bad request details")
        .field_violations[0]
        .field
        .clone()
}

/// The board judged at the engine's clock: on Monday every step is due within 1 working day;
/// on Wednesday each is 1 working day overdue, on the board of its own agency only. An agency
/// asking for another agency's board is denied; the auditor sees all; `now` in the request wins
/// over the clock; `due_soon` narrows the window; a command acknowledged just before a call shows
/// in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_shows_overdue_steps_to_their_agency() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let s = story(&mut c).await;

    // Monday 09:00: everything is due within a working day.
    let r = c
        .reports
        .board(req("auditor", board("", "", None)))
        .await
        .expect("board")
        .into_inner();
    let h = assert_fresh(&r.header);
    assert_eq!(
        (h.report.as_str(), h.agency.as_str(), r.due_soon.as_str()),
        ("board", "", "1wd")
    );
    assert_eq!(h.now_local, "2026-03-02T09:00:00+07:00");
    let want: BTreeSet<_> = [
        ("tu-phap", &s.a, "register-birth"),
        ("cong-an", &s.b, "register-residence"),
        ("bhxh", &s.b, "issue-health-card"),
    ]
    .into_iter()
    .map(|(a, d, st)| {
        (
            a.to_string(),
            d.clone(),
            st.to_string(),
            pb::BoardState::DueSoon,
        )
    })
    .collect();
    assert_eq!(steps_of(&r).into_iter().collect::<BTreeSet<_>>(), want);
    let a_step = r
        .steps
        .iter()
        .find(|x| x.dossier_code == s.a)
        .expect("A's step");
    assert_eq!(a_step.due_local, "2026-03-03T09:00:00+07:00");
    assert_eq!(
        a_step.due.as_ref().map(|t| t.seconds),
        Some((monday_morning() + TimeDelta::days(1)).timestamp())
    );
    assert!(r.dossiers.is_empty(), "nothing is past its appointment");

    // A narrower window: a day away is on track.
    let r = c
        .reports
        .board(req("tu-phap", board("", "4wh", None)))
        .await
        .expect("board")
        .into_inner();
    assert_eq!(r.due_soon, "4wh");
    assert_eq!(r.steps[0].state(), pb::BoardState::OnTrack);

    // Wednesday 09:00: one working day overdue, each on its own agency's board.
    server.clock.advance(TimeDelta::days(2));
    let r = c
        .reports
        .board(req("tu-phap", board("", "", None)))
        .await
        .expect("board")
        .into_inner();
    let h = assert_fresh(&r.header);
    assert_eq!(h.agency, "tu-phap", "an agency's board is its own");
    assert_eq!(h.now_local, "2026-03-04T09:00:00+07:00");
    assert_eq!(
        steps_of(&r),
        [(
            "tu-phap".to_string(),
            s.a.clone(),
            "register-birth".to_string(),
            pb::BoardState::Overdue
        )]
    );
    assert_eq!(r.steps[0].overdue_working_seconds, WORKING_DAY_S);
    assert_eq!(r.steps[0].overdue, "1wd");
    let r = c
        .reports
        .board(req("cong-an", board("cong-an", "", None)))
        .await
        .expect("own agency named")
        .into_inner();
    assert_eq!(
        steps_of(&r),
        [(
            "cong-an".to_string(),
            s.b.clone(),
            "register-residence".to_string(),
            pb::BoardState::Overdue
        )]
    );
    let r = c
        .reports
        .board(req("desk", board("", "", None)))
        .await
        .expect("desk board")
        .into_inner();
    assert!(r.steps.is_empty() && r.dossiers.is_empty(), "{r:?}");

    let e = c
        .reports
        .board(req("cong-an", board("tu-phap", "", None)))
        .await
        .expect_err("another agency's board");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.get_details_error_info().expect("error info").reason,
        "not-your-agency"
    );

    let r = c
        .reports
        .board(req("auditor", board("", "", None)))
        .await
        .expect("board")
        .into_inner();
    assert_eq!(r.steps.len(), 3);
    assert!(
        r.steps
            .iter()
            .all(|x| x.state() == pb::BoardState::Overdue && x.overdue_working_seconds > 0),
        "{r:?}"
    );
    let r = c
        .reports
        .board(req("admin", board("bhxh", "", None)))
        .await
        .expect("admin names an agency")
        .into_inner();
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.steps[0].agency, "bhxh");

    // The request's `now` wins over the clock: back on Monday, nothing is overdue.
    let r = c
        .reports
        .board(req("auditor", board("", "", Some(monday_morning()))))
        .await
        .expect("board at an instant")
        .into_inner();
    assert!(
        r.steps.iter().all(|x| x.state() == pb::BoardState::DueSoon),
        "{r:?}"
    );

    // Justice registers A's birth: its very next board has nothing of A.
    c.agencies
        .complete_step(req(
            "tu-phap",
            pb::CompleteStepRequest {
                idempotency_key: "tp-a".into(),
                dossier: s.a.clone(),
                step_id: "register-birth".into(),
                outcome: "approve".into(),
                results: vec![doc("trich-luc-a")],
                note: String::new(),
                officer: "can-bo-tp".into(),
            },
        ))
        .await
        .expect("justice completes A");
    let r = c
        .reports
        .board(req("tu-phap", board("", "", None)))
        .await
        .expect("board")
        .into_inner();
    assert_fresh(&r.header);
    assert!(r.steps.is_empty(), "{r:?}");
    server.stop().await;
}

/// On Monday 9 March both dossiers are two working days past their appointment. Each breach is
/// attributed to the agencies whose hand-off overran (A: justice; B: police and social
/// insurance), with the slip line that overran; an agency sees only the breaches attributed to it
/// and is denied another's; the auditor sees both; the board lists both dossiers as past their
/// appointment; a month filter keeps those whose appointment falls in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_are_attributed_and_scoped() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let s = story(&mut c).await;

    let r = c
        .reports
        .breaches(req("auditor", breaches("", "")))
        .await
        .expect("breaches")
        .into_inner();
    assert!(r.breaches.is_empty(), "not late on Monday: {r:?}");

    server.clock.advance(TimeDelta::days(7));
    let r = c
        .reports
        .breaches(req("auditor", breaches("", "2026-03")))
        .await
        .expect("breaches")
        .into_inner();
    let h = assert_fresh(&r.header);
    assert_eq!(
        (h.report.as_str(), h.month.as_str()),
        ("breaches", "2026-03")
    );
    let codes: Vec<_> = r.breaches.iter().map(|b| b.dossier_code.as_str()).collect();
    assert_eq!(codes, [s.a.as_str(), s.b.as_str()]);
    let (a, b) = (&r.breaches[0], &r.breaches[1]);
    for x in [a, b] {
        assert_eq!(x.reasons, ["open-past-appointment"]);
        assert_eq!(x.appointment_local, "2026-03-05T09:00:00+07:00");
        assert_eq!(x.overdue_working_seconds, 2 * WORKING_DAY_S);
        assert_eq!(x.overdue, "2wd");
        assert!(x.finished.is_empty() && x.finished_at.is_none());
        assert_eq!(x.receiving_agency, "ubnd-xa");
        assert_eq!(x.procedure_code, "2.000986");
    }
    assert_eq!(a.responsible, ["tu-phap"]);
    assert_eq!(a.slip.len(), 1);
    let line = &a.slip[0];
    assert_eq!(
        (
            line.step_id.as_str(),
            line.giver.as_str(),
            line.receiver.as_str(),
            line.verdict.as_str(),
            line.end.as_str(),
            line.attributed
        ),
        (
            "register-birth",
            "ubnd-xa",
            "tu-phap",
            "open-late",
            "open",
            true
        )
    );
    assert_eq!(line.budget, "1wd");
    assert_eq!(line.budget_working_seconds, Some(WORKING_DAY_S));
    assert_eq!(line.overrun_working_seconds, Some(4 * WORKING_DAY_S));
    assert_eq!(line.overrun_working, "4wd");
    assert!(line.ended_at.is_none() && line.ended_at_local.is_empty());
    let responsible: BTreeSet<_> = b.responsible.iter().map(String::as_str).collect();
    assert_eq!(responsible, BTreeSet::from(["bhxh", "cong-an"]));
    let justice = b
        .slip
        .iter()
        .find(|l| l.step_id == "register-birth")
        .expect("justice's line");
    assert!(
        !justice.attributed,
        "justice was on time for B: {justice:?}"
    );
    assert!(justice.end.starts_with("completed:"), "{justice:?}");
    assert_eq!(b.slip.iter().filter(|l| l.attributed).count(), 2);

    // Each agency sees the breaches attributed to it.
    for (who, want) in [
        ("tu-phap", vec![s.a.clone()]),
        ("bhxh", vec![s.b.clone()]),
        ("cong-an", vec![s.b.clone()]),
        ("desk", vec![]),
    ] {
        let r = c
            .reports
            .breaches(req(who, breaches("", "")))
            .await
            .expect("breaches")
            .into_inner();
        let codes: Vec<_> = r.breaches.iter().map(|b| b.dossier_code.clone()).collect();
        assert_eq!(codes, want, "{who}");
    }
    let e = c
        .reports
        .breaches(req("bhxh", breaches("tu-phap", "")))
        .await
        .expect_err("another agency's breaches");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Another month: none.
    let r = c
        .reports
        .breaches(req("auditor", breaches("", "2026-04")))
        .await
        .expect("breaches")
        .into_inner();
    assert!(r.breaches.is_empty());

    // The board lists both dossiers as past their appointment.
    let r = c
        .reports
        .board(req("auditor", board("", "", None)))
        .await
        .expect("board")
        .into_inner();
    let late: Vec<_> = r.dossiers.iter().map(|d| d.dossier_code.as_str()).collect();
    assert_eq!(late, [s.a.as_str(), s.b.as_str()]);
    assert_eq!(r.dossiers[0].holders, ["tu-phap"]);
    assert_eq!(r.dossiers[0].overdue_working_seconds, 2 * WORKING_DAY_S);
    server.stop().await;
}

/// The Decision 766 counters of March: the desk's dossier row (two received in person, none
/// finished) and one step row per agency (justice received two and finished one early or on
/// time). Each agency gets only its own rows, the auditor all; a bad month or window is
/// INVALID_ARGUMENT naming the field; no token is UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicators_count_per_agency() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    story(&mut c).await;

    let r = c
        .reports
        .indicators(req("auditor", indicators("", "2026-03")))
        .await
        .expect("indicators")
        .into_inner();
    let h = assert_fresh(&r.header);
    assert!(h.now.is_none() && h.now_local.is_empty(), "{h:?}");
    let keys: Vec<_> = r
        .rows
        .iter()
        .map(|x| {
            (
                x.month.as_str(),
                x.level.as_str(),
                x.agency.as_str(),
                x.procedure_code.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("2026-03", "dossier", "ubnd-xa", "2.000986"),
            ("2026-03", "step", "bhxh", "2.000986"),
            ("2026-03", "step", "cong-an", "2.000986"),
            ("2026-03", "step", "tu-phap", "2.000986"),
        ]
    );
    let desk = &r.rows[0];
    assert_eq!(
        (desk.received, desk.in_person, desk.online, desk.finished),
        (2, 2, 0, 0)
    );
    assert_eq!(desk.online_permille, Some(0));
    assert_eq!(desk.on_time_permille, None);
    assert_eq!(desk.on_time_rate, "-");
    let justice = &r.rows[3];
    assert_eq!((justice.received, justice.finished), (2, 1));
    assert_eq!(justice.early + justice.on_time, 1);
    assert_eq!(justice.on_time_permille, Some(1000));
    assert_eq!(justice.on_time_rate, "100.0%");
    assert_eq!(justice.online_permille, None, "no channel shares for steps");
    for row in &r.rows[1..3] {
        assert_eq!((row.received, row.finished), (1, 0), "{row:?}");
    }

    // Each agency gets its own rows.
    for (who, agency) in [
        ("tu-phap", "tu-phap"),
        ("desk", "ubnd-xa"),
        ("bhxh", "bhxh"),
    ] {
        let r = c
            .reports
            .indicators(req(who, indicators("", "")))
            .await
            .expect("indicators")
            .into_inner();
        assert_eq!(assert_fresh(&r.header).agency, agency);
        assert_eq!(r.rows.len(), 1, "{who}: {r:?}");
        assert!(r.rows.iter().all(|x| x.agency == agency), "{who}: {r:?}");
    }
    let e = c
        .reports
        .indicators(req("tu-phap", indicators("ubnd-xa", "")))
        .await
        .expect_err("another agency's indicators");
    assert_eq!(e.code(), Code::PermissionDenied);
    let r = c
        .reports
        .indicators(req("auditor", indicators("", "2026-04")))
        .await
        .expect("another month")
        .into_inner();
    assert!(r.rows.is_empty());

    // Input errors name the field.
    for bad in ["2026-13", "March", "2026-3"] {
        let e = c
            .reports
            .indicators(req("auditor", indicators("", bad)))
            .await
            .expect_err("bad month");
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(field_of(&e), "month");
    }
    let e = c
        .reports
        .breaches(req("tu-phap", breaches("", "2026/03")))
        .await
        .expect_err("bad month");
    assert_eq!(
        (e.code(), field_of(&e)),
        (Code::InvalidArgument, "month".into())
    );
    let e = c
        .reports
        .board(req("auditor", board("", "soon", None)))
        .await
        .expect_err("bad window");
    assert_eq!(
        (e.code(), field_of(&e)),
        (Code::InvalidArgument, "due_soon".into())
    );
    let e = c
        .reports
        .board(req("auditor", board("no-such-agency", "", None)))
        .await
        .expect_err("unknown agency");
    assert_eq!(
        (e.code(), field_of(&e)),
        (Code::InvalidArgument, "agency".into())
    );
    let e = c
        .reports
        .indicators(tonic::Request::new(indicators("", "")))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    server.stop().await;
}

/// The warm-up loop (what `lienthong serve` runs) folds what the engine writes with no report
/// asked for, and ends as soon as its shutdown future completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_loop_keeps_the_views_warm_and_stops() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let looping = server
        .models
        .spawn_catch_up_loop(Duration::from_millis(20), async {
            let _ = stopped.await;
        });
    story(&mut c).await;
    let projections = server.models.projections().clone();
    let folded = async {
        loop {
            let lag = projections.lag().expect("lag");
            if lag.head > 0 && lag.lag == 0 {
                return lag;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), folded)
        .await
        .expect("the loop folds every event within 10 s");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), looping)
        .await
        .expect("the loop stops with its shutdown")
        .expect("the loop task ends cleanly");
    server.stop().await;
}
