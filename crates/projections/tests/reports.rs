//! Snapshots of the three reports in table, JSON and CSV for a scenario whose numbers are known.
//!
//! The scenario is hand-written events (through an in-memory feed), not engine commands, so that
//! it says exactly what happened when, including the engine's clock-rule events, and does not
//! move when the engine's rules change. Birth group (2.000986, limit 3wd, `vn` calendar, office
//! hours 07:30-11:30 and 13:00-17:00), November 2026, judged at Mon 30 Nov 10:00:
//!
//! - A (in person, Mon 23 07:30, appointment Wed 25 17:00): justice finishes its 1wd step 2h30m
//!   late (due Mon 17:00, done Tue 10:00); police on time; social insurance early; the desk's
//!   4wh return step 4h late; processed Thu 26 09:00: 1h30m past the appointment. Breach
//!   attributed to tu-phap and ubnd-xa.
//! - B (online, Tue 24 09:00): one supplement (a full working day waited, the engine moved the
//!   deadlines by it); processed Thu, early against the moved appointment.
//! - C (post, Wed 25 07:30, appointment Fri 27 17:00): the police step (due Thu 26 16:00) is still
//!   open at Mon 30 10:00: overdue by 1wd 3h30m at cong-an; an apology moved the appointment to
//!   Wed 2 Dec, so the board does not list C as past its appointment, but the breach report does
//!   (0wd 2h30m past the pre-apology appointment), with the apology shown apart.
//! - D (in person, Mon 30 07:30): the justice step is due today 17:00: due soon.
//! - E: withdrawn. F: refused early (its open step is cancelled, not judged).
//! - G: two supplement requests: late by rule although processed early by the dates.
//!
//! November indicators, dossier level, ubnd-xa: received 7 (5 in person, 1 online, 1 post),
//! finished 4 (A late, B early, F early, G late by rule): on-time rate 50.0%; withdrawn 1.

mod support;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lienthong_calendar::{Calendar, Duration};
use lienthong_engine::dossier::convert::timestamp;
use lienthong_projections::report::{self, Format};
use lienthong_projections::{
    BoardQuery, BoardState, BreachQuery, IndicatorQuery, Month, Projections,
};
use lienthong_proto::v1::{self as pb, Channel, Outcome, event::Body};
use support::{Dossier, MemFeed, catalog, local};

const BIRTH: &str = "2.000986";

struct Scenario {
    feed: Arc<MemFeed>,
    cal: Calendar,
}

impl Scenario {
    fn due(&self, from: DateTime<Utc>, budget: &str) -> DateTime<Utc> {
        let d: Duration = budget.parse().expect("a duration");
        self.cal.add(from, d).expect("covered")
    }

    fn receive(&self, d: &Dossier, at: DateTime<Utc>, channel: Channel) -> DateTime<Utc> {
        let appointment = self.due(at, "3wd");
        self.feed.push(
            d,
            at,
            "ubnd-xa",
            Body::Received(pb::DossierReceived {
                procedure_code: BIRTH.into(),
                procedure_version: 1,
                definition_hash: "test".into(),
                receiving_agency: "ubnd-xa".into(),
                channel: channel as i32,
                clock_started_at: Some(timestamp(at)),
                appointment: Some(timestamp(appointment)),
                calendar_name: "vn".into(),
                calendar_hash: self.cal.hash().into(),
                limit: "3wd".into(),
                ..Default::default()
            }),
        );
        appointment
    }

    fn open(
        &self,
        d: &Dossier,
        at: DateTime<Utc>,
        by: &str,
        step: &str,
        agency: &str,
        budget: &str,
    ) {
        self.feed.push(
            d,
            at,
            by,
            Body::StepOpened(pb::StepOpened {
                step_id: step.into(),
                agency: agency.into(),
                budget: budget.into(),
                due: Some(timestamp(self.due(at, budget))),
                calendar_hash: self.cal.hash().into(),
            }),
        );
    }

    fn complete(&self, d: &Dossier, at: DateTime<Utc>, step: &str, agency: &str) {
        self.feed.push(
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

    fn skip_card(&self, d: &Dossier, at: DateTime<Utc>, by: &str) {
        self.feed.push(
            d,
            at,
            by,
            Body::StepSkipped(pb::StepSkipped {
                step_id: "issue-health-card".into(),
                agency: "bhxh".into(),
                condition: "child.age_months < 72".into(),
            }),
        );
    }

    fn supplement(
        &self,
        d: &Dossier,
        asked: DateTime<Utc>,
        given: DateTime<Utc>,
        ordinal: u32,
        moved: DateTime<Utc>,
        step_due: DateTime<Utc>,
    ) {
        self.feed.push(
            d,
            asked,
            "tu-phap",
            Body::SupplementRequested(pb::SupplementRequested {
                step_id: "register-birth".into(),
                requested_by: "tu-phap".into(),
                items: vec!["bản sao giấy chứng sinh".into()],
                reason: "thiếu giấy tờ".into(),
                addressed_to: "citizen".into(),
                ordinal,
                late_by_rule: ordinal > 1,
            }),
        );
        self.feed.push(
            d,
            given,
            "citizen",
            Body::SupplementProvided(pb::SupplementProvided {
                step_id: "register-birth".into(),
                ..Default::default()
            }),
        );
        let waited = self
            .cal
            .working_time_between(asked, given)
            .expect("covered");
        self.feed.push(
            d,
            given,
            "engine",
            Body::DeadlinesMoved(pb::DeadlinesMoved {
                rule: "supplement-pause".into(),
                appointment: Some(timestamp(moved)),
                steps: vec![pb::StepDue {
                    step_id: "register-birth".into(),
                    due: Some(timestamp(step_due)),
                }],
                excluded_working_seconds: waited.num_seconds(),
                calendar_hash: self.cal.hash().into(),
            }),
        );
    }

    fn close(&self, d: &Dossier, at: DateTime<Utc>, outcome: Outcome) {
        if outcome == Outcome::ResultReturned {
            self.feed.push(
                d,
                at,
                "ubnd-xa",
                Body::ResultReturned(pb::ResultReturned {
                    agency: "ubnd-xa".into(),
                    results: Vec::new(),
                    channel: Channel::InPerson as i32,
                }),
            );
        }
        self.feed.push(
            d,
            at,
            "ubnd-xa",
            Body::Closed(pb::Closed {
                outcome: outcome as i32,
            }),
        );
    }
}

fn now() -> DateTime<Utc> {
    local(2026, 11, 30, 10, 0)
}

/// Builds the scenario of the module docs and returns the caught-up projections.
fn scenario(dir: &std::path::Path) -> Projections {
    let catalog = catalog();
    let cal = catalog.calendar("vn").expect("vn is shipped").clone();
    let s = Scenario {
        feed: Arc::new(MemFeed::default()),
        cal,
    };
    let h = |d, hh, mm| local(2026, 11, d, hh, mm);
    let (a, b, c) = (
        Dossier::new(1, "UBND.XA-261123-0001"),
        Dossier::new(2, "UBND.XA-261124-0001"),
        Dossier::new(3, "UBND.XA-261125-0001"),
    );
    let (dd, e, f, g) = (
        Dossier::new(4, "UBND.XA-261130-0001"),
        Dossier::new(5, "UBND.XA-261124-0002"),
        Dossier::new(6, "UBND.XA-261124-0003"),
        Dossier::new(7, "UBND.XA-261123-0002"),
    );

    // A: late at justice and at the desk's return step.
    let appt_a = s.receive(&a, h(23, 7, 30), Channel::InPerson);
    assert_eq!(appt_a, h(25, 17, 0));
    s.open(
        &a,
        h(23, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );
    s.complete(&a, h(24, 10, 0), "register-birth", "tu-phap");
    s.open(
        &a,
        h(24, 10, 0),
        "tu-phap",
        "register-residence",
        "cong-an",
        "1wd",
    );
    s.open(
        &a,
        h(24, 10, 0),
        "tu-phap",
        "issue-health-card",
        "bhxh",
        "1wd",
    );
    s.complete(&a, h(24, 16, 0), "issue-health-card", "bhxh");
    s.complete(&a, h(25, 9, 0), "register-residence", "cong-an");
    s.open(
        &a,
        h(25, 9, 0),
        "cong-an",
        "return-result",
        "ubnd-xa",
        "4wh",
    );
    s.complete(&a, h(26, 9, 0), "return-result", "ubnd-xa");
    s.close(&a, h(26, 9, 5), Outcome::ResultReturned);

    // B: one supplement of exactly one working day, early.
    let appt_b = s.receive(&b, h(24, 9, 0), Channel::Online);
    s.open(
        &b,
        h(24, 9, 0),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );
    let moved_b = s.due(appt_b, "1wd");
    let step_b = s.due(s.due(h(24, 9, 0), "1wd"), "1wd");
    s.supplement(&b, h(24, 14, 0), h(25, 14, 0), 1, moved_b, step_b);
    s.complete(&b, h(25, 15, 0), "register-birth", "tu-phap");
    s.open(
        &b,
        h(25, 15, 0),
        "tu-phap",
        "register-residence",
        "cong-an",
        "1wd",
    );
    s.open(
        &b,
        h(25, 15, 0),
        "tu-phap",
        "issue-health-card",
        "bhxh",
        "1wd",
    );
    s.complete(&b, h(26, 10, 0), "register-residence", "cong-an");
    s.complete(&b, h(26, 10, 0), "issue-health-card", "bhxh");
    s.open(&b, h(26, 10, 0), "bhxh", "return-result", "ubnd-xa", "4wh");
    s.complete(&b, h(26, 11, 0), "return-result", "ubnd-xa");
    s.close(&b, h(26, 11, 10), Outcome::ResultReturned);

    // C: police step still open and overdue; an apology moved the appointment.
    let appt_c = s.receive(&c, h(25, 7, 30), Channel::Post);
    assert_eq!(appt_c, h(27, 17, 0));
    s.open(
        &c,
        h(25, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );
    s.complete(&c, h(25, 16, 0), "register-birth", "tu-phap");
    s.open(
        &c,
        h(25, 16, 0),
        "tu-phap",
        "register-residence",
        "cong-an",
        "1wd",
    );
    s.skip_card(&c, h(25, 16, 0), "tu-phap");
    s.feed.push(
        &c,
        h(27, 9, 0),
        "cong-an",
        Body::ApologyIssued(pb::ApologyIssued {
            agency: "cong-an".into(),
            step_id: "register-residence".into(),
            reason: "chờ xác minh nơi cư trú".into(),
            previous_appointment: Some(timestamp(appt_c)),
            new_appointment: Some(timestamp(local(2026, 12, 2, 17, 0))),
            late: true,
        }),
    );

    // D: received this morning, justice due today.
    s.receive(&dd, h(30, 7, 30), Channel::InPerson);
    s.open(
        &dd,
        h(30, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );

    // E: withdrawn.
    s.receive(&e, h(24, 7, 30), Channel::InPerson);
    s.open(
        &e,
        h(24, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );
    s.feed.push(
        &e,
        h(24, 10, 0),
        "citizen",
        Body::Withdrawn(pb::Withdrawn {
            reason: "nộp nhầm".into(),
        }),
    );
    s.feed.push(
        &e,
        h(24, 10, 0),
        "citizen",
        Body::Closed(pb::Closed {
            outcome: Outcome::Withdrawn as i32,
        }),
    );

    // F: refused by justice (its step was already past due: cancelled, not judged).
    s.receive(&f, h(24, 7, 30), Channel::InPerson);
    s.open(
        &f,
        h(24, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );
    s.feed.push(
        &f,
        h(25, 9, 0),
        "tu-phap",
        Body::Refused(pb::Refused {
            step_id: "register-birth".into(),
            agency: "tu-phap".into(),
            reason: "không thuộc thẩm quyền".into(),
        }),
    );
    s.close(&f, h(25, 9, 0), Outcome::Refused);

    // G: two supplement requests, early by the dates, late by rule.
    let appt_g = s.receive(&g, h(23, 7, 30), Channel::InPerson);
    s.open(
        &g,
        h(23, 7, 30),
        "ubnd-xa",
        "register-birth",
        "tu-phap",
        "1wd",
    );
    let step_g = s.due(h(23, 7, 30), "1wd");
    s.supplement(
        &g,
        h(23, 9, 30),
        h(23, 10, 30),
        1,
        s.due(appt_g, "1wh"),
        s.due(step_g, "1wh"),
    );
    s.supplement(
        &g,
        h(23, 11, 0),
        h(23, 13, 0),
        2,
        s.cal
            .add_working(s.due(appt_g, "1wh"), chrono::TimeDelta::minutes(30))
            .expect("covered"),
        s.cal
            .add_working(s.due(step_g, "1wh"), chrono::TimeDelta::minutes(30))
            .expect("covered"),
    );
    s.complete(&g, h(23, 14, 0), "register-birth", "tu-phap");
    s.open(
        &g,
        h(23, 14, 0),
        "tu-phap",
        "register-residence",
        "cong-an",
        "1wd",
    );
    s.skip_card(&g, h(23, 14, 0), "tu-phap");
    s.complete(&g, h(24, 9, 0), "register-residence", "cong-an");
    s.open(
        &g,
        h(24, 9, 0),
        "cong-an",
        "return-result",
        "ubnd-xa",
        "4wh",
    );
    s.complete(&g, h(24, 10, 0), "return-result", "ubnd-xa");
    s.close(&g, h(24, 10, 5), Outcome::ResultReturned);

    let feed: Arc<dyn lienthong_projections::FeedSource> = s.feed.clone();
    let p = Projections::open(dir, feed, catalog).expect("open");
    p.catch_up().expect("catch up");
    p
}

#[test]
fn reports_show_the_known_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = scenario(dir.path());

    let board = p.board(now(), &BoardQuery::default()).expect("board");
    let c = board
        .steps
        .iter()
        .find(|s| s.dossier_code == "UBND.XA-261125-0001")
        .expect("C's police step is on the board");
    assert_eq!(
        (c.agency.as_str(), c.state),
        ("cong-an", BoardState::Overdue)
    );
    assert_eq!(c.overdue, "1wd 3h30m");
    let d = board
        .steps
        .iter()
        .find(|s| s.dossier_code == "UBND.XA-261130-0001")
        .expect("D's justice step is on the board");
    assert_eq!(d.state, BoardState::DueSoon);
    assert!(
        board.dossiers.is_empty(),
        "C's apology moved its appointment in force"
    );

    let breaches = p
        .breaches(now(), &BreachQuery::default())
        .expect("breaches");
    let codes: Vec<&str> = breaches
        .breaches
        .iter()
        .map(|b| b.dossier_code.as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "UBND.XA-261123-0001",
            "UBND.XA-261123-0002",
            "UBND.XA-261125-0001"
        ]
    );
    let a = &breaches.breaches[0];
    assert_eq!(a.overdue, "0wd 1h30m");
    assert_eq!(a.responsible, ["tu-phap", "ubnd-xa"]);
    let birth = a
        .slip
        .iter()
        .find(|l| l.step == "register-birth")
        .expect("slip");
    assert_eq!(
        (birth.verdict.as_str(), birth.overrun_working.as_str()),
        ("late", "0wd 2h30m")
    );
    let card = a
        .slip
        .iter()
        .find(|l| l.step == "issue-health-card")
        .expect("slip");
    assert_eq!(card.verdict, "early");
    let g = &breaches.breaches[1];
    assert_eq!(g.reasons, ["late-by-rule"]);
    assert_eq!(g.waiting_citizen, "0wd 1h30m");
    let c = &breaches.breaches[2];
    assert_eq!(c.reasons, ["open-past-appointment"]);
    assert_eq!(c.overdue, "0wd 2h30m");
    assert_eq!(c.responsible, ["cong-an"]);

    let ind = p
        .indicators(&IndicatorQuery {
            agency: Some("ubnd-xa".into()),
            month: Some("2026-11".parse::<Month>().expect("month")),
        })
        .expect("indicators");
    let row = ind
        .rows
        .iter()
        .find(|r| r.level == "dossier")
        .expect("the desk's dossier row");
    assert_eq!(
        (row.received, row.in_person, row.online, row.post),
        (7, 5, 1, 1)
    );
    assert_eq!(
        (row.finished, row.early, row.on_time, row.late),
        (4, 2, 0, 2)
    );
    assert_eq!((row.late_by_rule, row.withdrawn), (1, 1));
    assert_eq!(row.on_time_rate, "50.0%");
}

#[test]
fn report_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = scenario(dir.path());
    let board = p.board(now(), &BoardQuery::default()).expect("board");
    let breaches = p
        .breaches(now(), &BreachQuery::default())
        .expect("breaches");
    let indicators = p
        .indicators(&IndicatorQuery::default())
        .expect("indicators");
    // insta normalises line ends, so RFC 4180's CRLF is checked here.
    for csv in [
        report::board(&board, Format::Csv),
        report::breaches(&breaches, Format::Csv),
        report::indicators(&indicators, Format::Csv),
    ] {
        assert!(csv.split_inclusive('\n').all(|l| l.ends_with("\r\n")));
    }
    for (format, name) in [
        (Format::Table, "table"),
        (Format::Json, "json"),
        (Format::Csv, "csv"),
    ] {
        insta::assert_snapshot!(format!("board_{name}"), report::board(&board, format));
        insta::assert_snapshot!(
            format!("breaches_{name}"),
            report::breaches(&breaches, format)
        );
        insta::assert_snapshot!(
            format!("indicators_{name}"),
            report::indicators(&indicators, format)
        );
    }
}

#[test]
fn filters_narrow_by_agency_and_month() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = scenario(dir.path());
    let board = p
        .board(
            now(),
            &BoardQuery {
                agency: Some("tu-phap".into()),
                ..BoardQuery::default()
            },
        )
        .expect("board");
    assert!(board.steps.iter().all(|s| s.agency == "tu-phap"));
    assert_eq!(board.steps.len(), 1);
    let breaches = p
        .breaches(
            now(),
            &BreachQuery {
                agency: Some("cong-an".into()),
                month: None,
            },
        )
        .expect("breaches");
    assert_eq!(breaches.breaches.len(), 1);
    let december = p
        .indicators(&IndicatorQuery {
            agency: None,
            month: Some("2026-12".parse().expect("month")),
        })
        .expect("indicators");
    assert!(december.rows.is_empty());
}

/// The board's timeline of one dossier is the breach report's view of it, late or not: the same
/// slip for a late dossier, an empty `reasons` and a judged slip for one that is not, nothing
/// for an unknown id.
#[test]
fn the_timeline_is_the_breach_view_of_any_dossier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = scenario(dir.path());
    let breaches = p
        .breaches(now(), &BreachQuery::default())
        .expect("breaches");
    for b in &breaches.breaches {
        let t = p
            .timeline(&b.dossier_id, now())
            .expect("timeline")
            .expect("a late dossier has a timeline");
        assert_eq!(&t, b, "{}", b.dossier_code);
    }
    // D: open, its justice step due soon, not late.
    let d = Dossier::new(4, "UBND.XA-261130-0001");
    let t = p
        .timeline(&d.id, now())
        .expect("timeline")
        .expect("D is known");
    assert_eq!(t.dossier_code, d.code);
    assert!(t.reasons.is_empty(), "{:?}", t.reasons);
    assert!(t.overdue.is_empty());
    let birth = t
        .slip
        .iter()
        .find(|l| l.step == "register-birth")
        .expect("D's first hand-off");
    assert_eq!(
        (birth.giver.as_str(), birth.receiver.as_str()),
        ("ubnd-xa", "tu-phap")
    );
    assert_eq!(birth.verdict, "open");
    assert_eq!(
        p.timeline(&uuid::Uuid::from_u128(42), now())
            .expect("timeline"),
        None
    );
}
