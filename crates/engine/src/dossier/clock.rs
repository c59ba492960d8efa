//! The legal clock rules: how supplements and the citizen's payment move a dossier's deadlines.
//!
//! Every rule ends in a `DeadlinesMoved` event that records the new appointment, the new dues of
//! the open steps it moves, the working time it excluded and the calendar's hash, so that readers
//! never recompute a deadline: the events say what was promised and when.
//!
//! - **intake-complete**: a supplement asked at intake (by the receiving desk, no step): the
//!   clock starts only when the dossier is complete. When it is provided at `t`, the clock starts
//!   at `s = clock_start(t, cutoff)`; appointment = `add(s, limit)`, each open step's due =
//!   `add(s, budget)`.
//! - **supplement-pause** (`supplement_clock = "pause"`, asked by a step): the working time
//!   spent waiting, `w = working_time_between(requested, provided)`, is excluded: appointment =
//!   `add_working(appointment, w)`; each open step's due moves by the waiting time since it opened
//!   (`working_time_between(max(requested, opened), provided)`).
//! - **supplement-restart** (`supplement_clock = "restart"`): the limit counts again from the
//!   provision: appointment = `add(clock_start(provided, cutoff), limit)`; the asking step's due
//!   = `add(provided, budget)`; other steps keep theirs.
//! - **payment-excluded** (`payment_counts = false`, a step with `payment = true` completes at
//!   `t`): the working time the payment step was open, `w = working_time_between(opened, t)`,
//!   is excluded from the appointment and from the other open steps' dues (for each, the part
//!   since it opened).
//!
//! Two refinements keep the rules honest: a recomputed appointment (intake, restart) is never
//! earlier than the current one (an extension granted by an apology stands), and time that two
//! exclusions share (a pause-rule supplement and a payment wait overlapping on parallel branches)
//! is excluded once: the exclusion that ends second leaves out its overlap with the first.
//!
//! A transfer between agencies (routing, rework) never moves a deadline: no rule here runs then.

use chrono::{DateTime, TimeDelta, Utc};
use lienthong_calendar::{Calendar, Error};
use lienthong_proto::v1 as pb;
use lienthong_workflow::{SupplementClock, Workflow};

use super::convert::timestamp;
use super::state::{DossierState, StepStatus, StepView, Supplement};

/// The `rule` texts of `DeadlinesMoved`.
pub mod rule {
    /// Supplement at intake: the clock starts when the dossier is complete.
    pub const INTAKE_COMPLETE: &str = "intake-complete";
    /// Supplement during processing, pause: the waiting time is excluded.
    pub const SUPPLEMENT_PAUSE: &str = "supplement-pause";
    /// Supplement during processing, restart: the limit counts again from the provision.
    pub const SUPPLEMENT_RESTART: &str = "supplement-restart";
    /// Waiting for the citizen's payment does not count.
    pub const PAYMENT_EXCLUDED: &str = "payment-excluded";
}

/// Working time inside both `[a, b]` and `[c, d]`.
fn overlap(
    calendar: &Calendar,
    (a, b): (DateTime<Utc>, DateTime<Utc>),
    (c, d): (DateTime<Utc>, DateTime<Utc>),
) -> Result<TimeDelta, Error> {
    let (from, to) = (a.max(c), b.min(d));
    if from >= to {
        return Ok(TimeDelta::zero());
    }
    calendar.working_time_between(from, to)
}

/// Working time in `[from, to]`, less what an earlier exclusion already took out of it.
fn excluded_between(
    calendar: &Calendar,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    earlier: &[(DateTime<Utc>, DateTime<Utc>)],
) -> Result<TimeDelta, Error> {
    if from >= to {
        return Ok(TimeDelta::zero());
    }
    let mut w = calendar.working_time_between(from, to)?;
    for period in earlier {
        w -= overlap(calendar, (from, to), *period)?;
    }
    Ok(w.max(TimeDelta::zero()))
}

/// `t` moved later by `w` of working time (unchanged when `w` is zero).
fn shifted(calendar: &Calendar, t: DateTime<Utc>, w: TimeDelta) -> Result<DateTime<Utc>, Error> {
    if w <= TimeDelta::zero() {
        return Ok(t);
    }
    calendar.add_working(t, w)
}

/// Periods of supplements answered under the pause rule (already excluded).
fn paused_periods(
    state: &DossierState,
    workflow: &Workflow,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    if workflow.supplement_clock != SupplementClock::Pause {
        return Vec::new();
    }
    state
        .supplements
        .iter()
        .filter(|s| s.step.is_some())
        .filter_map(|s| Some((s.requested_at?, s.provided_at?)))
        .collect()
}

/// The last open period of every completed payment step (already excluded).
fn payment_periods(
    state: &DossierState,
    workflow: &Workflow,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    if workflow.payment_counts {
        return Vec::new();
    }
    workflow
        .payment_steps()
        .filter_map(|p| state.steps.get(&p.id.0))
        .filter(|r| r.status == StepStatus::Completed)
        .filter_map(|r| Some((r.opened_at?, r.completed_at?)))
        .collect()
}

/// Open steps (in the routing view) with their recorded due and opening.
fn open_steps(
    state: &DossierState,
    workflow: &Workflow,
) -> Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    state
        .step_view(workflow)
        .into_iter()
        .filter(|(_, v)| *v == StepView::Open)
        .filter_map(|(id, _)| {
            let rec = state.steps.get(&id)?;
            Some((id, rec.due?, rec.opened_at))
        })
        .collect()
}

fn moved(
    rule: &str,
    appointment: Option<DateTime<Utc>>,
    steps: Vec<(String, DateTime<Utc>)>,
    excluded: TimeDelta,
    calendar: &Calendar,
) -> pb::DeadlinesMoved {
    pb::DeadlinesMoved {
        rule: rule.to_string(),
        appointment: appointment.map(timestamp),
        steps: steps
            .into_iter()
            .map(|(step_id, due)| pb::StepDue {
                step_id,
                due: Some(timestamp(due)),
            })
            .collect(),
        excluded_working_seconds: excluded.num_seconds(),
        calendar_hash: calendar.hash().to_string(),
    }
}

/// The deadlines after `supplement` (the outstanding one, before its provision is applied) is
/// provided at `now`.
pub(super) fn after_supplement(
    state: &DossierState,
    workflow: &Workflow,
    calendar: &Calendar,
    supplement: &Supplement,
    now: DateTime<Utc>,
) -> Result<pb::DeadlinesMoved, Error> {
    let current = state.appointment;
    let open = open_steps(state, workflow);
    let requested = supplement.requested_at.unwrap_or(now);
    match (&supplement.step, workflow.supplement_clock) {
        (None, _) => {
            let start = calendar.clock_start(now, workflow.cutoff)?;
            let appointment = calendar.add(start, workflow.limit)?;
            let mut steps = Vec::new();
            for (id, _, _) in open {
                if let Some(step) = workflow.step(&id) {
                    steps.push((id, calendar.add(start, step.budget)?));
                }
            }
            Ok(moved(
                rule::INTAKE_COMPLETE,
                Some(current.map_or(appointment, |c| c.max(appointment))),
                steps,
                TimeDelta::zero(),
                calendar,
            ))
        }
        (Some(_), SupplementClock::Pause) => {
            let earlier = payment_periods(state, workflow);
            let waited = excluded_between(calendar, requested, now, &earlier)?;
            let appointment = current.map(|a| shifted(calendar, a, waited)).transpose()?;
            let mut steps = Vec::new();
            for (id, due, opened) in open {
                let since = opened.map_or(requested, |o| o.max(requested));
                let w = excluded_between(calendar, since, now, &earlier)?;
                steps.push((id, shifted(calendar, due, w)?));
            }
            Ok(moved(
                rule::SUPPLEMENT_PAUSE,
                appointment,
                steps,
                waited,
                calendar,
            ))
        }
        (Some(asking), SupplementClock::Restart) => {
            let start = calendar.clock_start(now, workflow.cutoff)?;
            let appointment = calendar.add(start, workflow.limit)?;
            let mut steps = Vec::new();
            if let Some(step) = workflow.step(asking)
                && open.iter().any(|(id, _, _)| id == asking)
            {
                // The same base as the appointment: office hours and the cut-off apply.
                steps.push((asking.clone(), calendar.add(start, step.budget)?));
            }
            Ok(moved(
                rule::SUPPLEMENT_RESTART,
                Some(current.map_or(appointment, |c| c.max(appointment))),
                steps,
                TimeDelta::zero(),
                calendar,
            ))
        }
    }
}

/// The deadlines after payment step `step_id` completes at `now` (its completion already
/// applied to `state`), when payment does not count; `None` when it counts.
pub(super) fn after_payment(
    state: &DossierState,
    workflow: &Workflow,
    calendar: &Calendar,
    step_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<pb::DeadlinesMoved>, Error> {
    if workflow.payment_counts {
        return Ok(None);
    }
    let Some(opened) = state.steps.get(step_id).and_then(|r| r.opened_at) else {
        return Ok(None);
    };
    let earlier = paused_periods(state, workflow);
    let waited = excluded_between(calendar, opened, now, &earlier)?;
    let appointment = state
        .appointment
        .map(|a| shifted(calendar, a, waited))
        .transpose()?;
    let mut steps = Vec::new();
    for (id, due, since) in open_steps(state, workflow) {
        if id == step_id {
            continue;
        }
        let since = since.map_or(opened, |s| s.max(opened));
        let w = excluded_between(calendar, since, now, &earlier)?;
        steps.push((id, shifted(calendar, due, w)?));
    }
    Ok(Some(moved(
        rule::PAYMENT_EXCLUDED,
        appointment,
        steps,
        waited,
        calendar,
    )))
}

/// When the dossier's clock started: at the receipt, or, once a supplement asked at intake was
/// provided, when the complete dossier's clock started (the last such provision).
pub(super) fn clock_base(
    state: &DossierState,
    workflow: &Workflow,
    calendar: &Calendar,
) -> Result<Option<DateTime<Utc>>, Error> {
    let completed = state
        .supplements
        .iter()
        .rev()
        .filter(|s| s.step.is_none())
        .find_map(|s| s.provided_at);
    match completed {
        Some(t) => calendar.clock_start(t, workflow.cutoff).map(Some),
        None => Ok(state.clock_started_at),
    }
}
