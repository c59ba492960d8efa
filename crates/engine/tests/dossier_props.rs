//! Property tests of the dossier state machine.
//!
//! What they prove: for random sequences of commands (valid and invalid, from the right and the
//! wrong agencies, with time moving forward) against the shipped birth group and land transfer,
//! - `fold(all events) == live state` after every command (checked by the harness), and the state
//!   never records an anomaly: `decide` and `evolve` agree on what may happen;
//! - a rejected command appends nothing (harness), and `decide` is deterministic;
//! - the stream is gap-free, nothing follows `Closed`, which comes once, right after its act;
//! - every step is open before it is completed or rejected;
//! - a step (in particular a join) never opens before every step in its `after` is done;
//! - "ready to return" means every step is done in the routing view, and the appointment only
//!   moves through the one apology or a clock rule (`DeadlinesMoved`), which never moves it
//!   earlier, excludes no negative time and names the calendar;
//! - timers (fired at random deadlines, current or stale) notice each deadline at most once, a
//!   miss only after its due, and only for a deadline that was current; a stale timer decides
//!   nothing.
//!
//! How: the harness applies each accepted decision with `evolve` as the runtime would; the
//! stream-level invariants are then checked by re-folding the history one event at a time.

#[path = "support/dossier.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lienthong_engine::dossier::{
    self, Command, DecideContext, DossierState, Status, TimerKind, current_deadlines,
};
use lienthong_proto::v1::event::Body;
use lienthong_workflow::{AttrValue, Workflow};
use proptest::prelude::*;
use support::*;

/// One generated act: who (0 = the agency that owns the step / the natural actor), what, and how
/// many minutes pass before it.
#[derive(Clone, Debug)]
struct Act {
    who: usize,
    what: What,
    minutes: u32,
}

#[derive(Clone, Debug)]
enum What {
    Submit {
        age_months: i64,
        valid: bool,
    },
    Complete(usize),
    Reject(usize),
    Request {
        step: Option<usize>,
        to_agency: bool,
    },
    Provide,
    Refuse(Option<usize>),
    Stop,
    Withdraw,
    Apology {
        step: Option<usize>,
        days: i64,
    },
    Return,
    /// Fire a timer for the `pick`-th current deadline (or a stale one when none).
    Fire {
        warning: bool,
        pick: usize,
    },
}

fn what() -> impl Strategy<Value = What> {
    prop_oneof![
        1 => (prop_oneof![Just(2i64), Just(80)], proptest::bool::weighted(0.8))
            .prop_map(|(age_months, valid)| What::Submit { age_months, valid }),
        20 => (0usize..5).prop_map(What::Complete),
        2 => (0usize..5).prop_map(What::Reject),
        4 => (proptest::option::weighted(0.8, 0usize..5), any::<bool>())
            .prop_map(|(step, to_agency)| What::Request { step, to_agency }),
        4 => Just(What::Provide),
        1 => proptest::option::of(0usize..5).prop_map(What::Refuse),
        1 => Just(What::Stop),
        1 => Just(What::Withdraw),
        1 => (proptest::option::of(0usize..5), -1i64..5)
            .prop_map(|(step, days)| What::Apology { step, days }),
        3 => Just(What::Return),
        4 => (any::<bool>(), 0usize..6).prop_map(|(warning, pick)| What::Fire { warning, pick }),
    ]
}

fn acts() -> impl Strategy<Value = Vec<Act>> {
    proptest::collection::vec(
        (
            prop_oneof![3 => Just(0usize), 2 => 1usize..7],
            what(),
            0u32..400,
        )
            .prop_map(|(who, what, minutes)| Act { who, what, minutes }),
        1..60,
    )
}

const AGENCIES: [&str; 6] = [DESK, TU_PHAP, CONG_AN, BHXH, CITIZEN, "thue"];

fn step_id(wf: &Workflow, i: usize) -> String {
    wf.steps
        .get(i)
        .map_or_else(|| format!("no-such-step-{i}"), |s| s.id.0.clone())
}

fn attributes(wf: &Workflow, age_months: i64, valid: bool) -> BTreeMap<String, AttrValue> {
    if wf.code == BIRTH {
        let mut a = child(age_months);
        if !valid {
            a.remove("child.birth_date");
        }
        a
    } else {
        let mut a = BTreeMap::from([
            (
                "transfer.exempt".to_string(),
                AttrValue::Boolean(age_months > 50),
            ),
            ("parcel.area_m2".to_string(), AttrValue::Integer(age_months)),
        ]);
        if !valid {
            a.insert("parcel.area_m2".into(), AttrValue::Text("x".into()));
        }
        a
    }
}

/// The command and the acting agency for one generated act.
fn command(d: &Dossier, act: &Act) -> (String, Command) {
    let wf = &d.wf;
    let owner = |i: usize| {
        wf.steps
            .get(i)
            .map_or_else(|| DESK.to_string(), |s| s.agency.0.clone())
    };
    let (natural, cmd) = match &act.what {
        What::Submit { age_months, valid } => {
            let Command::Submit(mut s) = submit_with(attributes(wf, *age_months, *valid)) else {
                unreachable!()
            };
            s.procedure_code = wf.code.clone();
            (wf.receiving_agency.0.clone(), Command::Submit(s))
        }
        What::Complete(i) => (owner(*i), complete(&step_id(wf, *i))),
        What::Reject(i) => (owner(*i), reject(&step_id(wf, *i))),
        What::Request { step, to_agency } => {
            let cmd = match (step, to_agency) {
                (Some(i), true) => request_from(&step_id(wf, *i), TU_PHAP),
                (Some(i), false) => request(Some(&step_id(wf, *i))),
                (None, _) => request(None),
            };
            let who = step.map_or_else(|| wf.receiving_agency.0.clone(), owner);
            (who, cmd)
        }
        What::Provide => {
            let who = d
                .state
                .outstanding_supplement()
                .map_or(CITIZEN.to_string(), |s| s.addressed_to.to_string());
            (who, provide())
        }
        What::Refuse(step) => {
            let who = step.map_or_else(|| wf.receiving_agency.0.clone(), owner);
            (who, refuse(step.map(|i| step_id(wf, i)).as_deref()))
        }
        What::Stop => (wf.receiving_agency.0.clone(), stop()),
        What::Withdraw => (CITIZEN.to_string(), withdraw()),
        What::Apology { step, days } => {
            let base = d.state.appointment.unwrap_or(d.now);
            let who = step.map_or_else(|| wf.receiving_agency.0.clone(), owner);
            let cmd = apology(
                step.map(|i| step_id(wf, i)).as_deref(),
                base + chrono::Duration::days(*days),
            );
            (who, cmd)
        }
        What::Return => (wf.receiving_agency.0.clone(), return_result()),
        What::Fire { warning, pick } => {
            let kind = if *warning {
                TimerKind::Warning
            } else {
                TimerKind::Missed
            };
            let deadlines = current_deadlines(&d.state, wf);
            let cmd = match deadlines.get(pick % deadlines.len().max(1)) {
                Some(dl) => fire(kind, dl.step.as_deref(), dl.due),
                // Stale: a deadline the dossier never had.
                None => fire(kind, None, d.now - chrono::Duration::days(1)),
            };
            (ENGINE.to_string(), cmd)
        }
    };
    let who = match act.who {
        0 => natural,
        n => AGENCIES[(n - 1) % AGENCIES.len()].to_string(),
    };
    (who, cmd)
}

/// Runs the acts; returns the dossier and how many commands were accepted.
fn run(wf: Arc<Workflow>, acts: &[Act]) -> Result<(Dossier, usize), TestCaseError> {
    let mut d = Dossier::new(wf.clone());
    let first = Act {
        who: 0,
        what: What::Submit {
            age_months: 2,
            valid: true,
        },
        minutes: 0,
    };
    let mut accepted = 0;
    for act in std::iter::once(&first).chain(acts) {
        d.now += chrono::Duration::minutes(i64::from(act.minutes));
        let (who, cmd) = command(&d, act);
        // Determinism: the same inputs give the same answer.
        let a = actor(&who);
        let ctx = DecideContext {
            now: d.now,
            actor: &a,
            workflow: &wf,
            calendar: vn(),
        };
        let again = dossier::decide(&d.state, &cmd, &ctx);
        let before = d.state.clone();
        let is_fire = matches!(cmd, Command::FireTimer(_));
        let result = d.when(&who, cmd);
        prop_assert_eq!(&again, &result);
        match result {
            Ok(bodies) => {
                prop_assert!(
                    is_fire || !bodies.is_empty(),
                    "an accepted command decides something"
                );
                if bodies.is_empty() {
                    prop_assert_eq!(&before, &d.state);
                } else {
                    accepted += 1;
                }
            }
            Err(_) => prop_assert_eq!(&before, &d.state),
        }
        prop_assert!(
            d.state.anomalies.is_empty(),
            "anomalies: {:?}",
            d.state.anomalies
        );
        check_status(&d)?;
    }
    check_stream(&d)?;
    Ok((d, accepted))
}

/// Status-level invariants of the live state.
fn check_status(d: &Dossier) -> Result<(), TestCaseError> {
    let view = d.state.step_view(&d.wf);
    match d.state.status() {
        Status::ReadyToReturn => {
            prop_assert!(view.iter().all(|(_, v)| v.is_done()), "ready but {view:?}");
        }
        Status::Processing | Status::AwaitingSupplement => {
            // Something is with an agency, or waits for a supplement.
            let open = view.iter().any(|(_, v)| !v.is_done());
            prop_assert!(
                open || d.state.outstanding_supplement().is_some(),
                "processing with nothing to do: {view:?}"
            );
        }
        Status::New | Status::Closed(_) => {}
    }
    Ok(())
}

/// Stream-level invariants, re-folding the history one event at a time.
fn check_stream(d: &Dossier) -> Result<(), TestCaseError> {
    let mut state = DossierState::default();
    let mut open: BTreeSet<String> = BTreeSet::new();
    let mut closed = false;
    let mut appointment = None;
    let mut noticed: BTreeSet<(bool, String, Option<chrono::DateTime<chrono::Utc>>)> =
        BTreeSet::new();
    for (i, event) in d.events.iter().enumerate() {
        prop_assert!(!closed, "event {} after Closed", i + 1);
        let seq = event.envelope.as_ref().map_or(0, |e| e.seq);
        prop_assert_eq!(seq, i as u64 + 1, "gap-free seq");
        let Some(body) = &event.body else {
            return Err(TestCaseError::fail("event without body"));
        };
        match body {
            Body::StepOpened(o) => {
                let step =
                    d.wf.step(&o.step_id)
                        .ok_or_else(|| TestCaseError::fail("unknown step"))?;
                let view: BTreeMap<String, _> = state.step_view(&d.wf).into_iter().collect();
                for a in &step.after {
                    prop_assert!(
                        view.get(&a.0).is_some_and(|v| v.is_done()),
                        "`{}` opened before `{}` was done",
                        o.step_id,
                        a
                    );
                }
                open.insert(o.step_id.clone());
            }
            Body::StepCompleted(c) => {
                prop_assert!(
                    open.remove(&c.step_id),
                    "`{}` completed while not open",
                    c.step_id
                );
            }
            Body::StepRejected(r) => {
                prop_assert!(
                    open.remove(&r.step_id),
                    "`{}` rejected while not open",
                    r.step_id
                );
            }
            Body::Closed(_) => {
                closed = true;
                let prev = i.checked_sub(1).and_then(|p| d.events[p].body.as_ref());
                prop_assert!(
                    matches!(
                        prev,
                        Some(
                            Body::Refused(_)
                                | Body::ProcessingStopped(_)
                                | Body::Withdrawn(_)
                                | Body::ResultReturned(_)
                        )
                    ),
                    "Closed must follow its act"
                );
            }
            Body::Received(r) => {
                prop_assert_eq!(i, 0, "the receipt comes first");
                appointment = r.appointment;
            }
            Body::DeadlinesMoved(m) => {
                prop_assert!(
                    dossier_instant(m.appointment) >= dossier_instant(appointment),
                    "a clock rule never moves the appointment earlier"
                );
                prop_assert!(m.excluded_working_seconds >= 0);
                prop_assert_eq!(&m.calendar_hash, vn().hash());
                appointment = m.appointment;
            }
            Body::DeadlineWarning(_) | Body::DeadlineMissed(_) => {
                let (warning, step_id, due) = match body {
                    Body::DeadlineWarning(w) => (true, &w.step_id, dossier_instant(w.due)),
                    Body::DeadlineMissed(m) => (false, &m.step_id, dossier_instant(m.due)),
                    _ => unreachable!(),
                };
                prop_assert!(
                    noticed.insert((warning, step_id.clone(), due)),
                    "deadline {step_id} {due:?} noticed twice"
                );
                let step = (!step_id.is_empty()).then_some(step_id.as_str());
                prop_assert!(
                    current_deadlines(&state, &d.wf)
                        .iter()
                        .any(|dl| dl.step.as_deref() == step && Some(dl.due) == due),
                    "a notice for a deadline that was not current"
                );
                let at = event
                    .envelope
                    .as_ref()
                    .and_then(|e| dossier_instant(e.recorded_at));
                if !warning {
                    prop_assert!(at > due, "a miss before its due");
                }
            }
            Body::ApologyIssued(a) => {
                prop_assert_eq!(a.previous_appointment, appointment);
                prop_assert!(
                    dossier_instant(a.new_appointment) > dossier_instant(a.previous_appointment)
                );
                appointment = a.new_appointment;
            }
            _ => {}
        }
        state = dossier::evolve(state, event);
        prop_assert_eq!(
            state.appointment,
            dossier_instant(appointment),
            "the appointment moves only through the apology or a clock rule"
        );
    }
    prop_assert_eq!(&state, &d.state);
    Ok(())
}

fn dossier_instant(ts: Option<prost_types::Timestamp>) -> Option<chrono::DateTime<chrono::Utc>> {
    dossier::convert::instant(ts.as_ref())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn birth_group_histories_hold_the_invariants(acts in acts()) {
        run(birth(), &acts)?;
    }

    #[test]
    fn land_transfer_histories_hold_the_invariants(acts in acts()) {
        let wf = catalog()
            .procedure("LT.CHUYEN-NHUONG-DAT")
            .cloned()
            .ok_or_else(|| TestCaseError::fail("land transfer is shipped"))?;
        run(wf, &acts)?;
    }
}

/// The generator reaches the interesting places: a sanity check on the property tests' reach.
#[test]
fn generated_histories_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..400 {
        let acts = acts()
            .new_tree(&mut runner)
            .map_err(|e| e.to_string())
            .expect("strategy generates")
            .current();
        let Ok((d, _)) = run(birth(), &acts) else {
            panic!("a history broke an invariant: {acts:?}");
        };
        seen.insert(d.status().to_string());
        for r in d.state.steps.values() {
            if r.times_opened > 1 {
                seen.insert("rework".to_string());
            }
        }
        if d.state.supplements.len() > 1 {
            seen.insert("second-supplement".to_string());
        }
        if !d.state.notices.is_empty() {
            seen.insert("deadline-notice".to_string());
        }
        if !d.state.deadline_moves.is_empty() {
            seen.insert("deadlines-moved".to_string());
        }
    }
    for want in [
        "closed:result-returned",
        "closed:refused",
        "closed:stopped",
        "closed:withdrawn",
        "rework",
        "second-supplement",
        "deadline-notice",
        "deadlines-moved",
    ] {
        assert!(seen.contains(want), "never reached {want}: {seen:?}");
    }
}
