//! Given/when/then tests of the legal clock rules (`DeadlinesMoved`) and of the deadline timers'
//! pure side (`current_deadlines`, `timers_for`, `FireTimer`), on the shipped birth group and
//! land transfer and the real `vn` calendar (office hours 07:30-11:30 and 13:00-17:00, so one
//! working day is 8 hours; March 2026 has no holiday). Every expected instant is worked out in a
//! comment next to it.

#[path = "support/dossier.rs"]
mod support;

use chrono::{DateTime, Utc};
use lienthong_calendar::Duration;
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{
    Timer, TimerKind, TimerOp, TimerPolicy, current_deadlines, needed_timers, next_timer,
    timers_for, warning_instant,
};
use lienthong_proto::v1::event::Body;
use support::*;

/// The last `DeadlinesMoved` of the dossier.
fn last_move(d: &Dossier) -> lienthong_proto::v1::DeadlinesMoved {
    d.events
        .iter()
        .rev()
        .find_map(|e| match &e.body {
            Some(Body::DeadlinesMoved(m)) => Some(m.clone()),
            _ => None,
        })
        .expect("a DeadlinesMoved event")
}

fn at(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    lienthong_engine::dossier::convert::instant(t)
}

fn due(d: &Dossier, step: &str) -> Option<DateTime<Utc>> {
    d.state.steps.get(step).and_then(|r| r.due)
}

#[test]
fn pause_excludes_the_working_time_spent_waiting() {
    // Given a birth dossier received Monday 2 March 09:00: appointment Thursday 09:00,
    // register-birth due Tuesday 09:00.
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    assert_eq!(d.state.appointment, Some(local(2026, 3, 5, 9, 0)));
    // When the justice officer asks for a supplement Monday 10:00 and it comes Tuesday 14:00
    d.now = local(2026, 3, 2, 10, 0);
    d.ok(TU_PHAP, request(Some("register-birth")));
    d.now = local(2026, 3, 3, 14, 0);
    let then = d.ok(CITIZEN, provide());
    // Then the waiting time is excluded: Monday 10:00-11:30, 13:00-17:00, Tuesday 07:30-11:30,
    // 13:00-14:00 = 10.5 working hours.
    assert_eq!(
        then,
        [
            "supplement provided",
            "deadlines moved (supplement-pause) excluding 37800s"
        ]
    );
    let m = last_move(&d);
    assert_eq!(m.calendar_hash, vn().hash());
    // Thursday 09:00 + 10.5h: Thursday 09:00-11:30 (2.5h), 13:00-17:00 (4h), Friday
    // 07:30-11:30 (4h): Friday 6 March 11:30.
    assert_eq!(at(m.appointment.as_ref()), Some(local(2026, 3, 6, 11, 30)));
    assert_eq!(d.state.appointment, Some(local(2026, 3, 6, 11, 30)));
    // register-birth, open since before the request, moves by the same 10.5h: Tuesday 09:00
    // -> Wednesday 11:30.
    assert_eq!(m.steps.len(), 1);
    assert_eq!(m.steps[0].step_id, "register-birth");
    assert_eq!(due(&d, "register-birth"), Some(local(2026, 3, 4, 11, 30)));
    assert_eq!(d.state.excluded_working_time().num_seconds(), 37_800);
    assert!(!d.state.late_by_rule());
}

/// The birth group with `supplement_clock = "restart"`.
fn birth_restart() -> Dossier {
    let source = birth().source.replace(
        "supplement_clock = \"pause\"",
        "supplement_clock = \"restart\"",
    );
    Dossier::new(workflow(&source))
}

#[test]
fn restart_counts_the_limit_again_from_the_provision() {
    // Given the same history under the restart rule
    let mut d = birth_restart().given(&[(DESK, submit(2))]);
    d.now = local(2026, 3, 2, 10, 0);
    d.ok(TU_PHAP, request(Some("register-birth")));
    d.now = local(2026, 3, 3, 14, 0);
    // When the supplement comes Tuesday 14:00
    let then = d.ok(CITIZEN, provide());
    assert_eq!(
        then,
        [
            "supplement provided",
            "deadlines moved (supplement-restart) excluding 0s"
        ]
    );
    // Then the appointment is 3wd from Tuesday 14:00: Tuesday 3h, Wednesday 8h, Thursday 8h,
    // Friday 5h = Friday 6 March 14:00; the asking step's due is 1wd from then: Wednesday 14:00.
    assert_eq!(d.state.appointment, Some(local(2026, 3, 6, 14, 0)));
    assert_eq!(due(&d, "register-birth"), Some(local(2026, 3, 4, 14, 0)));
    assert_eq!(d.state.excluded_working_time().num_seconds(), 0);
}

#[test]
fn restart_after_the_cutoff_counts_the_appointment_from_the_next_working_day() {
    let mut d = birth_restart().given(&[
        (DESK, submit(2)),
        (TU_PHAP, request(Some("register-birth"))),
    ]);
    // Provided Tuesday 16:00, after the 15:00 cut-off: the clock starts Wednesday 07:30, and
    // 3wd end Friday 17:00; the asking step's due counts from the same start (office hours and
    // the cut-off apply to it too): 1wd from Wednesday 07:30 = Wednesday 17:00.
    d.now = local(2026, 3, 3, 16, 0);
    d.ok(CITIZEN, provide());
    assert_eq!(d.state.appointment, Some(local(2026, 3, 6, 17, 0)));
    assert_eq!(due(&d, "register-birth"), Some(local(2026, 3, 4, 17, 0)));
}

#[test]
fn at_intake_the_clock_starts_when_the_dossier_is_complete() {
    // Given a dossier the desk finds incomplete at intake, Monday 09:30
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    d.now = local(2026, 3, 2, 9, 30);
    d.ok(DESK, request(None));
    // When the citizen completes it Wednesday 4 March 16:00, after the cut-off
    d.now = local(2026, 3, 4, 16, 0);
    let then = d.ok(CITIZEN, provide());
    assert_eq!(
        then,
        [
            "supplement provided",
            "deadlines moved (intake-complete) excluding 0s"
        ]
    );
    // Then the clock starts Thursday 07:30: appointment 3wd later = Monday 9 March 17:00, and
    // the open step's due 1wd later = Thursday 17:00.
    assert_eq!(d.state.appointment, Some(local(2026, 3, 9, 17, 0)));
    assert_eq!(due(&d, "register-birth"), Some(local(2026, 3, 5, 17, 0)));
    // A step opened before the clock starts counts from the clock start too.
    d.now = local(2026, 3, 4, 16, 30);
    d.ok(TU_PHAP, complete("register-birth"));
    assert_eq!(
        due(&d, "register-residence"),
        Some(local(2026, 3, 5, 17, 0))
    );
}

#[test]
fn a_second_supplement_request_makes_the_dossier_late_by_rule() {
    let mut d = Dossier::birth().given(&[
        (DESK, submit(2)),
        (TU_PHAP, request(Some("register-birth"))),
    ]);
    assert!(!d.state.late_by_rule(), "one request is allowed");
    d.now = local(2026, 3, 2, 10, 0);
    d.ok(CITIZEN, provide());
    d.now = local(2026, 3, 2, 11, 0);
    d.ok(TU_PHAP, request(Some("register-birth")));
    let Some(Body::SupplementRequested(r)) = &d.events.last().and_then(|e| e.body.clone()) else {
        panic!("the request is the last event");
    };
    assert_eq!((r.ordinal, r.late_by_rule), (2, true));
    assert!(d.state.late_by_rule());
    assert!(d.state.supplements[1].late_by_rule);
}

/// A land transfer up to the citizen's payment: received Monday 2 March 09:00 (appointment 10wd
/// later, Monday 16 March 09:00); the tax notice goes out Wednesday 4 March 10:00, which opens
/// the payment step.
fn land_until_payment(source: Option<String>) -> Dossier {
    let wf = source.map_or_else(land_transfer, |s| workflow(&s));
    let mut d = Dossier::new(wf).given(&[(TTHCC, submit_land(false))]);
    assert_eq!(d.state.appointment, Some(local(2026, 3, 16, 9, 0)));
    for (t, agency, step) in [
        (local(2026, 3, 2, 10, 0), TTHCC, "intake"),
        (local(2026, 3, 3, 10, 0), VPDK, "land-check"),
        (local(2026, 3, 4, 10, 0), THUE, "tax-assess"),
    ] {
        d.now = t;
        d.ok(agency, complete(step));
    }
    assert_eq!(d.step("confirm-payment"), "open");
    d
}

#[test]
fn waiting_for_the_payment_is_excluded_when_it_does_not_count() {
    let mut d = land_until_payment(None);
    // The payment step holds the appointment: no timer watches it while the citizen pays.
    assert!(current_deadlines(&d.state, &d.wf).is_empty());
    // When tax confirms the payment Monday 9 March 10:00
    d.now = local(2026, 3, 9, 10, 0);
    let then = d.ok(THUE, complete("confirm-payment"));
    // Then the 3 working days it was open (Wednesday 10:00 to Monday 10:00) are excluded:
    // the appointment moves from Monday 16 March 09:00 to Thursday 19 March 09:00.
    assert_eq!(
        then,
        [
            "completed confirm-payment @thue",
            "deadlines moved (payment-excluded) excluding 86400s",
            "opened issue-certificate @vpdk-dat"
        ]
    );
    assert_eq!(d.state.appointment, Some(local(2026, 3, 19, 9, 0)));
    assert!(last_move(&d).steps.is_empty(), "no other step was open");
}

#[test]
fn waiting_for_the_payment_counts_when_the_procedure_says_so() {
    let source = land_transfer()
        .source
        .replace("payment_counts = false", "payment_counts = true");
    let mut d = land_until_payment(Some(source));
    // The payment step is an ordinary deadline now.
    assert!(
        current_deadlines(&d.state, &d.wf)
            .iter()
            .any(|dl| dl.step.as_deref() == Some("confirm-payment"))
    );
    d.now = local(2026, 3, 9, 10, 0);
    let then = d.ok(THUE, complete("confirm-payment"));
    assert_eq!(
        then,
        [
            "completed confirm-payment @thue",
            "opened issue-certificate @vpdk-dat"
        ]
    );
    assert_eq!(d.state.appointment, Some(local(2026, 3, 16, 9, 0)));
}

#[test]
fn the_apology_is_judged_against_the_moved_appointment_and_issued_once() {
    // Given the pause history: the appointment moved from Thursday 09:00 to Friday 11:30.
    let paused = || {
        let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
        d.now = local(2026, 3, 2, 10, 0);
        d.ok(TU_PHAP, request(Some("register-birth")));
        d.now = local(2026, 3, 3, 14, 0);
        d.ok(CITIZEN, provide());
        assert_eq!(d.state.appointment, Some(local(2026, 3, 6, 11, 30)));
        d
    };
    // When the desk apologises Thursday 11:00 (after the original appointment): 1wd later is
    // Friday 11:00, before the moved appointment, so the notice is on time.
    let mut d = paused();
    d.now = local(2026, 3, 5, 11, 0);
    assert_eq!(
        d.ok(DESK, apology(None, local(2026, 3, 10, 9, 0))),
        ["apology by ubnd-xa late=false"]
    );
    let a = d.state.apology.clone().expect("recorded");
    assert_eq!(a.previous_appointment, Some(local(2026, 3, 6, 11, 30)));
    assert_eq!(d.state.appointment, Some(local(2026, 3, 10, 9, 0)));
    // At most once.
    assert_eq!(
        d.rejected(DESK, apology(None, local(2026, 3, 12, 9, 0)))
            .code(),
        "apology-already-issued"
    );
    // Thursday 13:01 (through the lunch break exactly one working day is left): 1wd later is
    // Friday 13:01, past the moved appointment: late.
    let mut d = paused();
    d.now = local(2026, 3, 5, 13, 1);
    assert_eq!(
        d.ok(DESK, apology(None, local(2026, 3, 10, 9, 0))),
        ["apology by ubnd-xa late=true"]
    );
}

#[test]
fn the_warning_instant_is_the_lead_back_in_working_time() {
    let lead = Duration::WorkingDays(1);
    // 1wd before Tuesday 10:00 is Monday 10:00; before Tuesday 17:00, Monday 17:00 (from then
    // on at most one working day is left).
    assert_eq!(
        warning_instant(vn(), local(2026, 3, 3, 10, 0), lead),
        Some(local(2026, 3, 2, 10, 0))
    );
    assert_eq!(
        warning_instant(vn(), local(2026, 3, 3, 17, 0), lead),
        Some(local(2026, 3, 2, 17, 0))
    );
    // Over a weekend: 1wd before Monday 9 March 09:00 is Friday 6 March 09:00.
    assert_eq!(
        warning_instant(vn(), local(2026, 3, 9, 9, 0), lead),
        Some(local(2026, 3, 6, 9, 0))
    );
    // Over the 30/4-1/5 holidays (Thursday, Friday): 1wd before Monday 4 May 10:00 is
    // Wednesday 29 April 10:00.
    assert_eq!(
        warning_instant(vn(), local(2026, 5, 4, 10, 0), lead),
        Some(local(2026, 4, 29, 10, 0))
    );
    assert_eq!(
        warning_instant(vn(), local(2026, 3, 3, 10, 0), Duration::WorkingHours(2)),
        Some(local(2026, 3, 3, 8, 0))
    );
    assert_eq!(
        warning_instant(vn(), local(2026, 3, 3, 10, 0), Duration::Days(1)),
        Some(local(2026, 3, 2, 10, 0))
    );
    assert_eq!(
        warning_instant(vn(), local(2026, 3, 3, 10, 0), Duration::Hours(3)),
        Some(local(2026, 3, 3, 7, 0))
    );
}

fn policy(d: &Dossier) -> TimerPolicy<'_> {
    TimerPolicy {
        workflow: &d.wf,
        calendar: vn(),
        lead: Duration::WorkingDays(1),
    }
}

fn timer(kind: TimerKind, step: Option<&str>, due: DateTime<Utc>, at: DateTime<Utc>) -> Timer {
    Timer {
        at,
        dossier: id(),
        kind,
        step: step.map(str::to_string),
        due,
        lead: (kind == TimerKind::Warning).then_some(Duration::WorkingDays(1)),
    }
}

fn id() -> DossierId {
    "0190f000-0000-7000-8000-000000000001"
        .parse()
        .expect("a dossier id")
}

#[test]
fn a_receipt_needs_a_warning_and_a_miss_per_deadline_and_stores_the_earliest() {
    let d = Dossier::birth().given(&[(DESK, submit(2))]);
    let step_due = local(2026, 3, 3, 9, 0);
    let appointment = local(2026, 3, 5, 9, 0);
    let step_miss = timer(
        TimerKind::Missed,
        Some("register-birth"),
        step_due,
        local_s(2026, 3, 3, 9, 0, 1),
    );
    assert_eq!(
        needed_timers(id(), &d.state, &policy(&d)),
        [
            // register-birth's warning would be Monday 09:00, when it was set: none.
            step_miss.clone(),
            timer(
                TimerKind::Warning,
                None,
                appointment,
                local(2026, 3, 4, 9, 0)
            ),
            timer(
                TimerKind::Missed,
                None,
                appointment,
                local_s(2026, 3, 5, 9, 0, 1)
            ),
        ]
    );
    // Only the earliest is stored: its firing sets the next.
    assert_eq!(
        timers_for(id(), &Default::default(), &d.state, &policy(&d), None),
        [TimerOp::Set(step_miss.clone())]
    );
    assert_eq!(
        next_timer(id(), &d.state, &policy(&d)),
        Some(step_miss.clone())
    );
    // An append that leaves the earliest timer as it is changes no timer: the appointment's
    // warning recorded while register-birth's miss is still ahead.
    let mut d = d;
    let before = d.state.clone();
    d.now = local(2026, 3, 4, 9, 0);
    assert_eq!(
        d.ok(ENGINE, fire(TimerKind::Warning, None, appointment)),
        ["warning appointment @ubnd-xa"]
    );
    assert_eq!(timers_for(id(), &before, &d.state, &policy(&d), None), []);
    // Fired by a timer that was not the earliest (stored by an engine that stored every timer):
    // the firing clears it and sets the earliest anyway, which may not be stored.
    let warning = timer(
        TimerKind::Warning,
        None,
        appointment,
        local(2026, 3, 4, 9, 0),
    );
    assert_eq!(
        timers_for(id(), &before, &d.state, &policy(&d), Some(&warning)),
        [TimerOp::Clear(warning.clone()), TimerOp::Set(step_miss)]
    );
}

#[test]
fn a_supplement_holds_the_timers_and_its_provision_sets_them_again() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    let before = d.state.clone();
    d.now = local(2026, 3, 2, 10, 0);
    d.ok(TU_PHAP, request(Some("register-birth")));
    let held = timers_for(id(), &before, &d.state, &policy(&d), None);
    let stored = next_timer(id(), &before, &policy(&d)).expect("a timer before");
    assert_eq!(
        held,
        [TimerOp::Clear(stored)],
        "the stored timer is cleared while the clock is paused"
    );
    assert!(current_deadlines(&d.state, &d.wf).is_empty());
    assert!(needed_timers(id(), &d.state, &policy(&d)).is_empty());
    let paused = d.state.clone();
    d.now = local(2026, 3, 3, 14, 0);
    d.ok(CITIZEN, provide());
    let needed: Vec<(TimerKind, Option<String>, DateTime<Utc>)> =
        needed_timers(id(), &d.state, &policy(&d))
            .into_iter()
            .map(|t| (t.kind, t.step, t.at))
            .collect();
    // register-birth is now due Wednesday 11:30 (warned Tuesday 11:30, which had passed when
    // the provision moved it at 14:00), the appointment Friday 11:30 (warned Thursday 11:30).
    assert_eq!(
        needed,
        [
            (
                TimerKind::Missed,
                Some("register-birth".to_string()),
                local_s(2026, 3, 4, 11, 30, 1)
            ),
            (TimerKind::Warning, None, local(2026, 3, 5, 11, 30)),
            (TimerKind::Missed, None, local_s(2026, 3, 6, 11, 30, 1)),
        ]
    );
    let resumed = timers_for(id(), &paused, &d.state, &policy(&d), None);
    assert_eq!(
        resumed,
        [TimerOp::Set(
            next_timer(id(), &d.state, &policy(&d)).expect("a timer after")
        )]
    );
    assert!(
        matches!(&resumed[0], TimerOp::Set(t) if t.kind == TimerKind::Missed
        && t.at == local_s(2026, 3, 4, 11, 30, 1))
    );
}

#[test]
fn fired_timers_notice_a_current_deadline_once_and_stale_ones_nothing() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    let step_due = local(2026, 3, 3, 9, 0);
    let appointment = local(2026, 3, 5, 9, 0);
    // Only the engine fires timers.
    assert_eq!(
        d.rejected(DESK, fire(TimerKind::Warning, None, appointment))
            .code(),
        "not-allowed"
    );
    // Wednesday 09:00: the appointment is a working day away.
    d.now = local(2026, 3, 4, 9, 0);
    assert_eq!(
        d.ok(ENGINE, fire(TimerKind::Warning, None, appointment)),
        ["warning appointment @ubnd-xa"]
    );
    assert!(
        d.ok(ENGINE, fire(TimerKind::Warning, None, appointment))
            .is_empty(),
        "once"
    );
    // register-birth passed its due Tuesday 09:00.
    assert_eq!(
        d.ok(
            ENGINE,
            fire(TimerKind::Missed, Some("register-birth"), step_due)
        ),
        ["missed register-birth @tu-phap"]
    );
    let warned = d.state.notices.len();
    // Stale: a due the step does not have, a step that is done, an appointment once processed.
    assert!(
        d.ok(
            ENGINE,
            fire(TimerKind::Missed, Some("register-birth"), appointment)
        )
        .is_empty()
    );
    d.ok(TU_PHAP, complete("register-birth"));
    d.now = local(2026, 3, 5, 10, 0);
    assert!(
        d.ok(
            ENGINE,
            fire(TimerKind::Missed, Some("register-birth"), step_due)
        )
        .is_empty()
    );
    d.ok(CONG_AN, complete("register-residence"));
    d.ok(BHXH, complete("issue-health-card"));
    d.ok(DESK, complete("return-result"));
    assert_eq!(d.status(), "ready-to-return");
    assert!(
        d.ok(ENGINE, fire(TimerKind::Missed, None, appointment))
            .is_empty()
    );
    assert_eq!(d.state.notices.len(), warned);
    // And nothing on a closed dossier.
    d.ok(DESK, return_result());
    assert!(
        d.ok(ENGINE, fire(TimerKind::Missed, None, appointment))
            .is_empty()
    );
}

#[test]
fn a_miss_is_noticed_only_after_the_due_instant() {
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    let step_due = local(2026, 3, 3, 9, 0);
    d.now = step_due;
    assert!(
        d.ok(
            ENGINE,
            fire(TimerKind::Missed, Some("register-birth"), step_due)
        )
        .is_empty()
    );
    d.now = local_s(2026, 3, 3, 9, 0, 1);
    assert_eq!(
        d.ok(
            ENGINE,
            fire(TimerKind::Missed, Some("register-birth"), step_due)
        ),
        ["missed register-birth @tu-phap"]
    );
    // A warning after the due says nothing more.
    assert!(
        d.ok(
            ENGINE,
            fire(TimerKind::Warning, Some("register-birth"), step_due)
        )
        .is_empty()
    );
    // The missed deadline needs no timer any more.
    let needed = needed_timers(id(), &d.state, &policy(&d));
    assert!(needed.iter().all(|t| t.step.is_none()), "{needed:?}");
}

/// A task its agency's system never acknowledged is recorded as undeliverable: only by the
/// engine, and not once the dossier has ended; the state machine itself is unchanged by it.
#[test]
fn an_undeliverable_task_is_recorded_by_the_engine_only_while_the_dossier_lives() {
    use lienthong_engine::dossier::{Command, RecordUndeliverable};
    let dead = || {
        Command::RecordUndeliverable(RecordUndeliverable {
            agency: TU_PHAP.into(),
            task_id: "0190a1b2-0000-7000-8000-000000000001/2".into(),
            step: Some(lienthong_workflow::StepId("register-birth".into())),
            task_kind: "TASK_KIND_STEP_OPENED".into(),
            deliveries: 10,
        })
    };
    let mut d = Dossier::birth().given(&[(DESK, submit(2))]);
    assert_eq!(d.rejected(TU_PHAP, dead()).code(), "not-allowed");
    assert_eq!(
        d.ok(ENGINE, dead()),
        ["undeliverable register-birth @tu-phap after 10"]
    );
    assert_eq!(d.step("register-birth"), "open", "the step is still open");
    d.ok(DESK, withdraw());
    assert!(
        d.ok(ENGINE, dead()).is_empty(),
        "a dead letter of an ended dossier changes nothing"
    );
}
