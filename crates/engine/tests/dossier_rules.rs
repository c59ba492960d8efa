//! Given/when/then tests of the dossier rules, on the shipped birth group (2.000986) and the
//! real `vn` calendar. Every accepted decision is appended and evolved by the harness, which also
//! checks `fold(events) == live state` after each command and that rejections append nothing.

#[path = "support/dossier.rs"]
mod support;

use lienthong_engine::dossier::{self, AttributeProblem, Command, Rejection, Status, state_at};
use lienthong_proto::v1::{Envelope, Event, Outcome, event::Body};
use lienthong_workflow::AttrValue;
use support::*;

fn ts(t: chrono::DateTime<chrono::Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

#[test]
fn submit_receives_with_appointment_and_opens_birth_registration() {
    let mut d = Dossier::birth();
    let then = d.ok(DESK, submit(2));
    assert_eq!(
        then,
        ["received 2.000986", "opened register-birth @tu-phap"]
    );
    let events = d.when(TU_PHAP, complete("register-birth"));
    assert!(events.is_ok());

    let Some(Body::Received(r)) = &d.events[0].body else {
        panic!("first event is the receipt");
    };
    // Monday 09:00 is inside office hours: the clock starts at once; 3wd = 24 working hours
    // (07:30-11:30, 13:00-17:00) ends Thursday 09:00.
    assert_eq!(r.clock_started_at, ts(local(2026, 3, 2, 9, 0)));
    assert_eq!(r.appointment, ts(local(2026, 3, 5, 9, 0)));
    assert_eq!(r.limit, "3wd");
    assert_eq!(r.calendar_name, vn().name());
    assert_eq!(r.calendar_hash, vn().hash());
    assert_eq!(r.definition_hash, birth().hash);
    assert_eq!(r.receiving_agency, DESK);
    let Some(Body::StepOpened(o)) = &d.events[1].body else {
        panic!("second event opens the first step");
    };
    assert_eq!(o.budget, "1wd");
    assert_eq!(o.due, ts(local(2026, 3, 3, 9, 0)));
    assert_eq!(o.calendar_hash, vn().hash());
    assert_eq!(d.state.code, CODE);
    assert_eq!(d.state.appointment, Some(local(2026, 3, 5, 9, 0)));
}

#[test]
fn after_the_cutoff_the_clock_starts_next_working_day() {
    // Friday 6 March 2026 at 15:30, after the procedure's 15:00 cut-off: counts from Monday.
    let d = Dossier::birth()
        .at(local(2026, 3, 6, 15, 30))
        .given(&[(DESK, submit(2))]);
    assert_eq!(d.state.clock_started_at, Some(local(2026, 3, 9, 7, 30)));
    // Three full working days from Monday 07:30 end on Wednesday at 17:00.
    assert_eq!(d.state.appointment, Some(local(2026, 3, 11, 17, 0)));
    assert_eq!(
        d.state.steps["register-birth"].due,
        Some(local(2026, 3, 9, 17, 0))
    );
}

#[test]
fn calendar_gaps_are_rejections_not_panics() {
    // The shipped calendars end with 2027: a deadline in 2028 cannot be computed.
    let mut d = Dossier::birth().at(local(2027, 12, 31, 10, 0));
    let r = d.rejected(DESK, submit(2));
    assert_eq!(r.code(), "calendar");
    assert!(r.to_string().contains("2028"), "{r}");
}

#[test]
fn attributes_are_checked_against_the_declaration() {
    let mut d = Dossier::birth();
    let mut attrs = child(2);
    attrs.remove("child.birth_date");
    attrs.insert("child.age_months".into(), AttrValue::Text("two".into()));
    attrs.insert("child.eye_colour".into(), AttrValue::Text("brown".into()));
    let r = d.rejected(DESK, submit_with(attrs));
    assert_eq!(r.code(), "invalid-attributes");
    let Rejection::Attributes { problems, .. } = &r else {
        panic!("attribute rejection expected, got {r}");
    };
    let codes: Vec<(&str, &str)> = problems.iter().map(|p| (p.name(), p.code())).collect();
    assert_eq!(
        codes,
        [
            ("child.age_months", "attribute-type"),
            ("child.birth_date", "missing-attribute"),
            ("child.eye_colour", "undeclared-attribute"),
        ]
    );
    assert!(matches!(problems[1], AttributeProblem::Missing { .. }));
    let msg = r.to_string();
    assert!(
        msg.contains("`child.birth_date` is required but missing"),
        "{msg}"
    );
    assert!(
        msg.contains("`child.age_months` must be an integer, got text"),
        "{msg}"
    );
}

#[test]
fn submit_only_once_only_by_desk_or_citizen_and_only_for_its_procedure() {
    let mut d = Dossier::birth();
    assert_eq!(d.rejected(BHXH, submit(2)).code(), "not-allowed");
    let Command::Submit(mut s) = submit(2) else {
        unreachable!()
    };
    s.procedure_code = "1.000001".into();
    assert_eq!(
        d.rejected(DESK, Command::Submit(s)).code(),
        "wrong-procedure"
    );
    assert_eq!(
        d.rejected(DESK, complete("register-birth")).code(),
        "not-received"
    );
    d.ok(CITIZEN, submit(2));
    assert_eq!(d.rejected(DESK, submit(2)).code(), "already-received");
}

#[test]
fn parallel_branches_join_before_the_return_step() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    assert_eq!(
        d.ok(TU_PHAP, complete("register-birth")),
        [
            "completed register-birth @tu-phap",
            "opened register-residence @cong-an",
            "opened issue-health-card @bhxh",
        ]
    );
    // One branch done: the join waits for the other.
    assert_eq!(
        d.ok(CONG_AN, complete("register-residence")),
        ["completed register-residence @cong-an"]
    );
    assert_eq!(d.step("return-result"), "pending");
    assert_eq!(
        d.ok(BHXH, complete("issue-health-card")),
        [
            "completed issue-health-card @bhxh",
            "opened return-result @ubnd-xa"
        ]
    );
    assert_eq!(d.status(), "processing");
    d.ok(DESK, complete("return-result"));
    assert_eq!(d.status(), "ready-to-return");
    assert!(d.state.processed);
    assert_eq!(
        d.ok(DESK, return_result()),
        [
            "result returned by ubnd-xa",
            "closed OUTCOME_RESULT_RETURNED"
        ]
    );
    assert_eq!(d.status(), "closed:result-returned");
}

#[test]
fn a_skipped_step_counts_as_done_for_the_join() {
    // 80 months old: no health card under the procedure's condition.
    let mut d = Dossier::birth().given(&[(DESK, submit(80))]);
    assert_eq!(
        d.ok(TU_PHAP, complete("register-birth")),
        [
            "completed register-birth @tu-phap",
            "opened register-residence @cong-an",
            "skipped issue-health-card",
        ]
    );
    let Some(Body::StepSkipped(s)) = &d.events.last().and_then(|e| e.body.clone()) else {
        panic!("last event is the skip");
    };
    assert!(
        s.condition.contains("child.age_months < 72"),
        "{}",
        s.condition
    );
    assert_eq!(
        d.ok(CONG_AN, complete("register-residence")),
        [
            "completed register-residence @cong-an",
            "opened return-result @ubnd-xa"
        ]
    );
}

#[test]
fn an_optional_attribute_can_skip_too() {
    let mut attrs = child(3);
    attrs.insert("child.has_health_card".into(), AttrValue::Boolean(true));
    let mut d = Dossier::birth().given(&[(DESK, submit_with(attrs))]);
    let then = d.ok(TU_PHAP, complete("register-birth"));
    assert!(
        then.contains(&"skipped issue-health-card".to_string()),
        "{then:?}"
    );
}

#[test]
fn wrong_agency_and_wrong_step_state_are_rejected_with_names() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    let r = d.rejected(CONG_AN, complete("register-birth"));
    assert_eq!(r.code(), "not-your-step");
    assert_eq!(
        r.to_string(),
        "step `register-birth` belongs to `tu-phap`, not to `cong-an`"
    );
    let r = d.rejected(CONG_AN, complete("register-residence"));
    assert_eq!(r.code(), "step-not-open");
    assert!(r.to_string().contains("`register-residence`"), "{r}");
    assert!(r.to_string().contains("pending"), "{r}");
    assert_eq!(
        d.rejected(TU_PHAP, complete("no-such-step")).code(),
        "unknown-step"
    );
    d.ok(TU_PHAP, complete("register-birth"));
    let r = d.rejected(TU_PHAP, complete("register-birth"));
    assert_eq!(r.code(), "step-not-open");
    assert!(r.to_string().contains("completed"), "{r}");
}

#[test]
fn rejection_with_on_reject_refuse_refuses_and_closes() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    assert_eq!(
        d.ok(TU_PHAP, reject("register-birth")),
        [
            "rejected register-birth @tu-phap",
            "refused by tu-phap",
            "closed OUTCOME_REFUSED"
        ]
    );
    assert_eq!(d.status(), "closed:refused");
    let r = d.rejected(TU_PHAP, complete("register-birth"));
    assert_eq!(r.code(), "closed");
    assert_eq!(
        r.to_string(),
        format!(
            "dossier {CODE} is closed (refused) since {}: nothing may follow",
            monday_morning().to_rfc3339()
        )
    );
    let empty = Command::RejectStep(lienthong_engine::dossier::RejectStep {
        step: lienthong_workflow::StepId("register-birth".into()),
        reason: " ".into(),
    });
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    assert_eq!(d.rejected(TU_PHAP, empty).code(), "reason-required");
}

#[test]
fn rework_goes_back_and_never_restarts_the_appointment() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2)), (TU_PHAP, complete("register-birth"))]);
    let appointment = d.state.appointment;
    // Tuesday afternoon the police send the dossier back to the justice officer.
    d.now = local(2026, 3, 3, 14, 0);
    assert_eq!(
        d.ok(CONG_AN, reject("register-residence")),
        [
            "rejected register-residence @cong-an",
            "opened register-birth @tu-phap"
        ]
    );
    assert_eq!(d.step("register-birth"), "open");
    assert_eq!(d.step("register-residence"), "pending");
    // The parallel branch is on hold while its upstream step is reworked.
    assert_eq!(d.step("issue-health-card"), "pending");
    assert_eq!(
        d.rejected(BHXH, complete("issue-health-card")).code(),
        "step-not-open"
    );
    // The reopened step's own due counts from now; the dossier's appointment does not move.
    assert_eq!(
        d.state.steps["register-birth"].due,
        Some(local(2026, 3, 4, 14, 0))
    );
    assert_eq!(d.state.steps["register-birth"].times_opened, 2);
    assert_eq!(d.state.appointment, appointment);
    assert_eq!(d.status(), "processing");

    assert_eq!(
        d.ok(TU_PHAP, complete("register-birth")),
        [
            "completed register-birth @tu-phap",
            "opened register-residence @cong-an",
            "opened issue-health-card @bhxh",
        ]
    );
    d.ok(CONG_AN, complete("register-residence"));
    let then = d.ok(BHXH, complete("issue-health-card"));
    assert!(
        then.contains(&"opened return-result @ubnd-xa".to_string()),
        "{then:?}"
    );
    d.ok(DESK, complete("return-result"));
    assert_eq!(d.status(), "ready-to-return");
    assert_eq!(d.state.appointment, appointment);
    assert!(
        !d.events
            .iter()
            .any(|e| matches!(e.body, Some(Body::DeadlinesMoved(_)))),
        "a transfer never moves a deadline"
    );
    assert!(d.state.deadline_moves.is_empty());
}

#[test]
fn rework_of_completed_downstream_steps_sends_them_back_to_pending() {
    // Land transfer: intake -> land-check -> tax-assess -> confirm-payment -> issue-certificate.
    // The land office rejects the certificate back to its own land check: tax must assess again.
    let wf = catalog()
        .procedure("LT.CHUYEN-NHUONG-DAT")
        .cloned()
        .expect("land transfer is shipped");
    let attrs = std::collections::BTreeMap::from([
        ("transfer.exempt".to_string(), AttrValue::Boolean(false)),
        ("parcel.area_m2".to_string(), AttrValue::Integer(120)),
    ]);
    let Command::Submit(mut s) = submit(2) else {
        unreachable!()
    };
    s.procedure_code = wf.code.clone();
    s.attributes = attrs;
    let mut d = Dossier::new(wf).given(&[
        ("tthcc", Command::Submit(s)),
        ("tthcc", complete("intake")),
        ("vpdk-dat", complete("land-check")),
        ("thue", complete("tax-assess")),
        ("thue", complete("confirm-payment")),
    ]);
    assert_eq!(
        d.ok("vpdk-dat", reject("issue-certificate")),
        [
            "rejected issue-certificate @vpdk-dat",
            "opened land-check @vpdk-dat"
        ]
    );
    for step in [
        "tax-assess",
        "confirm-payment",
        "issue-certificate",
        "return-result",
    ] {
        assert_eq!(d.step(step), "pending", "{step}");
    }
    assert_eq!(d.step("intake"), "completed");
    assert_eq!(
        d.ok("vpdk-dat", complete("land-check")),
        ["completed land-check @vpdk-dat", "opened tax-assess @thue"]
    );
    // Tax may send the dossier back to the land office too (its way to ask for a supplement).
    assert_eq!(
        d.ok("thue", reject("tax-assess")),
        ["rejected tax-assess @thue", "opened land-check @vpdk-dat"]
    );
}

/// A workflow with a rework-only step: the tax office sends the dossier to a side step of the
/// land office, which returns it to tax when done.
const SIDE_STEP: &str = r#"
[procedure]
code = "TEST.REWORK-ONLY"
name = "test"
version = 1
limit = "5wd"
calendar = "vn"
receiving_agency = "ubnd-xa"

[[step]]
id = "check"
agency = "vpdk-dat"
budget = "1wd"

[[step]]
id = "assess"
agency = "thue"
after = ["check"]
budget = "1wd"
on_reject = "fix-slip"

[[step]]
id = "fix-slip"
agency = "vpdk-dat"
budget = "1wd"
rework_only = true
"#;

#[test]
fn a_rework_only_step_returns_the_dossier_to_the_sender() {
    let wf = workflow(SIDE_STEP);
    let Command::Submit(mut s) = submit(2) else {
        unreachable!()
    };
    s.procedure_code = wf.code.clone();
    s.attributes.clear();
    let mut d = Dossier::new(wf).given(&[(DESK, Command::Submit(s))]);
    // The side step is not part of the normal flow.
    assert_eq!(d.step("fix-slip"), "idle");
    d.ok("vpdk-dat", complete("check"));
    assert_eq!(
        d.ok("thue", reject("assess")),
        ["rejected assess @thue", "opened fix-slip @vpdk-dat"]
    );
    assert_eq!(d.step("assess"), "awaiting-rework");
    assert_eq!(
        d.ok("vpdk-dat", complete("fix-slip")),
        ["completed fix-slip @vpdk-dat", "opened assess @thue"]
    );
    d.ok("thue", complete("assess"));
    assert_eq!(d.status(), "ready-to-return");
}

#[test]
fn supplement_round_trip_and_second_request_ordinal() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    assert_eq!(
        d.ok(TU_PHAP, request(Some("register-birth"))),
        ["supplement #1 requested by tu-phap to citizen"]
    );
    assert_eq!(d.status(), "awaiting-supplement");
    // Everything missing is asked at once: no second request while one is out.
    let r = d.rejected(TU_PHAP, request(Some("register-birth")));
    assert_eq!(r.code(), "supplement-outstanding");
    let r = d.rejected(TU_PHAP, complete("register-birth"));
    assert_eq!(r.code(), "awaiting-supplement");
    assert_eq!(d.rejected(BHXH, provide()).code(), "not-allowed");
    d.now = local(2026, 3, 2, 15, 0);
    // 09:00-11:30 and 13:00-15:00 waited: 4.5 working hours excluded (the birth group pauses).
    assert_eq!(
        d.ok(CITIZEN, provide()),
        [
            "supplement provided",
            "deadlines moved (supplement-pause) excluding 16200s"
        ]
    );
    assert_eq!(d.status(), "processing");
    assert_eq!(
        d.rejected(CITIZEN, provide()).code(),
        "no-supplement-outstanding"
    );
    let s = &d.state.supplements[0];
    assert_eq!(
        (s.requested_at, s.provided_at),
        (Some(monday_morning()), Some(local(2026, 3, 2, 15, 0)))
    );
    d.ok(TU_PHAP, complete("register-birth"));
    // The police ask the justice officer (not the citizen) this time.
    assert_eq!(
        d.ok(CONG_AN, request_from("register-residence", TU_PHAP)),
        ["supplement #2 requested by cong-an to tu-phap"]
    );
    // Other branches go on meanwhile.
    d.ok(BHXH, complete("issue-health-card"));
    assert_eq!(d.rejected(CITIZEN, provide()).code(), "not-allowed");
    let appointment = d.state.appointment;
    // Time between agencies is the agencies' own: nothing is moved, and a request to another
    // agency does not make the dossier late under the citizen-supplement rule.
    assert_eq!(d.ok(TU_PHAP, provide()), ["supplement provided"]);
    assert_eq!(d.state.appointment, appointment);
    assert_eq!(d.state.supplements.len(), 2);
    assert_eq!(d.state.supplements[1].ordinal, 2);
    assert!(!d.state.late_by_rule());
}

#[test]
fn who_may_ask_for_a_supplement() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    // Intake: only the receiving desk.
    assert_eq!(d.rejected(TU_PHAP, request(None)).code(), "not-allowed");
    assert_eq!(
        d.rejected(CONG_AN, request(Some("register-birth"))).code(),
        "not-your-step"
    );
    let Command::RequestSupplement(mut empty) = request(None) else {
        unreachable!()
    };
    empty.items.clear();
    assert_eq!(
        d.rejected(DESK, Command::RequestSupplement(empty)).code(),
        "no-items"
    );
    d.ok(DESK, request(None));
    // An intake request holds every step.
    assert_eq!(
        d.rejected(TU_PHAP, complete("register-birth")).code(),
        "awaiting-supplement"
    );
    d.ok(DESK, provide());
    // The return step may not ask (`supplement = false`).
    let mut d = Dossier::birth().given(&[
        (DESK, submit(80)),
        (TU_PHAP, complete("register-birth")),
        (CONG_AN, complete("register-residence")),
    ]);
    assert_eq!(
        d.rejected(DESK, request(Some("return-result"))).code(),
        "supplement-not-allowed"
    );
}

/// Drives a fresh birth dossier into each open status.
fn in_each_open_status() -> Vec<(&'static str, Dossier)> {
    vec![
        ("processing", Dossier::birth().given(&[(DESK, submit(2))])),
        (
            "awaiting-supplement",
            Dossier::birth().given(&[
                (DESK, submit(2)),
                (TU_PHAP, request(Some("register-birth"))),
            ]),
        ),
        ("ready-to-return", processed_birth()),
    ]
}

#[test]
fn refuse_stop_and_withdraw_close_from_every_open_status() {
    // (actor, command, first event, status after)
    type Case = (&'static str, fn() -> Command, &'static str, &'static str);
    let acts: [Case; 3] = [
        (
            DESK,
            || refuse(None),
            "refused by ubnd-xa",
            "closed:refused",
        ),
        (DESK, stop, "stopped by ubnd-xa", "closed:stopped"),
        (CITIZEN, withdraw, "withdrawn", "closed:withdrawn"),
    ];
    for (agency, cmd, first, status) in acts {
        for (from, mut d) in in_each_open_status() {
            assert_eq!(d.status(), from);
            let then = d.ok(agency, cmd());
            assert_eq!(then[0], first, "from {from}");
            assert_eq!(then.len(), 2, "from {from}");
            assert_eq!(d.status(), status, "from {from}");
            assert_eq!(d.rejected(agency, cmd()).code(), "closed");
        }
    }
}

#[test]
fn who_may_refuse_stop_and_withdraw() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    // BHXH has no open step yet; the citizen cannot refuse their own dossier.
    assert_eq!(d.rejected(BHXH, stop()).code(), "not-allowed");
    assert_eq!(d.rejected(CITIZEN, refuse(None)).code(), "not-allowed");
    assert_eq!(d.rejected(TU_PHAP, withdraw()).code(), "not-allowed");
    assert_eq!(
        d.rejected(CONG_AN, refuse(Some("register-birth"))).code(),
        "not-your-step"
    );
    // The receiving desk withdraws on the citizen's behalf; an open step's agency refuses.
    let mut w = Dossier::birth().given(&[(DESK, submit(2))]);
    w.ok(DESK, withdraw());
    let then = d.ok(TU_PHAP, refuse(Some("register-birth")));
    assert_eq!(then, ["refused by tu-phap", "closed OUTCOME_REFUSED"]);
    assert_eq!(
        d.state
            .ending
            .as_ref()
            .and_then(|e| e.step.clone())
            .as_deref(),
        Some("register-birth")
    );
}

#[test]
fn apology_at_most_once_with_a_later_appointment() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    let old = local(2026, 3, 5, 9, 0);
    let new = local(2026, 3, 9, 9, 0);
    assert_eq!(
        d.rejected(TU_PHAP, apology(None, local(2026, 3, 5, 8, 0)))
            .code(),
        "appointment-not-later"
    );
    assert_eq!(d.rejected(BHXH, apology(None, new)).code(), "not-allowed");
    // Monday morning, three days ahead: on time.
    assert_eq!(
        d.ok(TU_PHAP, apology(Some("register-birth"), new)),
        ["apology by tu-phap late=false"]
    );
    let a = d.state.apology.clone().expect("apology recorded");
    assert_eq!(a.previous_appointment, Some(old));
    assert_eq!(d.state.appointment, Some(new));
    let r = d.rejected(DESK, apology(None, local(2026, 3, 10, 9, 0)));
    assert_eq!(r.code(), "apology-already-issued");
}

#[test]
fn an_apology_later_than_one_working_day_before_is_flagged_late() {
    // Appointment Thursday 09:00; Wednesday 10:00 is less than a working day before it.
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    d.now = local(2026, 3, 4, 10, 0);
    assert_eq!(
        d.ok(DESK, apology(None, local(2026, 3, 10, 9, 0))),
        ["apology by ubnd-xa late=true"]
    );
    // Wednesday 09:00 is exactly one working day before: still on time.
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    d.now = local(2026, 3, 4, 9, 0);
    assert_eq!(
        d.ok(DESK, apology(None, local(2026, 3, 10, 9, 0))),
        ["apology by ubnd-xa late=false"]
    );
}

#[test]
fn the_result_is_returned_only_when_processed_and_only_by_the_desk() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2)), (TU_PHAP, complete("register-birth"))]);
    let r = d.rejected(DESK, return_result());
    assert_eq!(r.code(), "not-processed");
    assert!(r.to_string().contains("`register-residence` (open)"), "{r}");
    let mut d = processed_birth();
    assert_eq!(d.rejected(TU_PHAP, return_result()).code(), "not-allowed");
    // A desk supplement request holds the return too.
    d.ok(DESK, request(None));
    assert_eq!(
        d.rejected(DESK, return_result()).code(),
        "awaiting-supplement"
    );
    d.ok(CITIZEN, provide());
    d.ok(DESK, return_result());
    assert_eq!(d.status(), "closed:result-returned");
    let ending = d.state.ending.clone().expect("ending recorded");
    assert_eq!(ending.results.len(), 1);
}

#[test]
fn nothing_is_accepted_after_closing() {
    let mut d = processed_birth();
    d.ok(DESK, return_result());
    let all = [
        (DESK, submit(2)),
        (DESK, complete("return-result")),
        (DESK, reject("return-result")),
        (DESK, request(None)),
        (CITIZEN, provide()),
        (DESK, refuse(None)),
        (DESK, stop()),
        (CITIZEN, withdraw()),
        (DESK, apology(None, local(2026, 3, 20, 9, 0))),
        (DESK, return_result()),
    ];
    for (agency, cmd) in all {
        let kind = cmd.kind();
        let r = d.rejected(agency, cmd);
        assert_eq!(r.code(), "closed", "{kind}: {r}");
        assert!(
            r.to_string().contains("is closed (result-returned) since"),
            "{r}"
        );
    }
}

#[test]
fn state_at_an_instant_folds_the_prefix_recorded_by_then() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    d.now = local(2026, 3, 3, 8, 0);
    d.ok(TU_PHAP, complete("register-birth"));
    d.now = local(2026, 3, 3, 10, 0);
    d.ok(CONG_AN, refuse(Some("register-residence")));
    let at_monday = state_at(&d.events, local(2026, 3, 2, 17, 0));
    assert_eq!(at_monday.status(), Status::Processing);
    assert_eq!(at_monday.steps.len(), 1);
    let at_tuesday = state_at(&d.events, local(2026, 3, 3, 9, 0));
    assert_eq!(at_tuesday.steps.len(), 3);
    assert_eq!(at_tuesday.status(), Status::Processing);
    let later = state_at(&d.events, local(2026, 3, 4, 0, 0));
    assert_eq!(later, d.state);
    assert_eq!(later.status(), Status::Closed(Outcome::Refused));
    assert_eq!(later.status().to_string(), "closed:refused");
    assert_eq!(
        state_at(&d.events, local(2026, 3, 1, 0, 0)).status(),
        Status::New
    );
}

#[test]
fn evolve_records_surprises_as_anomalies_and_decide_stops() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    let odd = Event {
        envelope: Some(Envelope {
            seq: d.state.seq + 1,
            ..Envelope::default()
        }),
        body: Some(Body::StepCompleted(lienthong_proto::v1::StepCompleted {
            step_id: "issue-health-card".into(),
            agency: BHXH.into(),
            ..Default::default()
        })),
    };
    d.state = dossier::evolve(d.state, &odd);
    assert_eq!(d.state.anomalies.len(), 1);
    assert_eq!(
        d.rejected(TU_PHAP, complete("register-birth")).code(),
        "inconsistent-history"
    );
    // Unknown bodies and events after closing never panic either.
    let s = dossier::evolve(d.state.clone(), &Event::default());
    assert_eq!(s.anomalies.len(), 3, "{:?}", s.anomalies);
    assert_eq!(s.status().as_str(), "processing");
}
