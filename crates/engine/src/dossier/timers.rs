//! Deadlines and the durable timers that watch them: which deadlines of a dossier are current,
//! and which timers they need. Pure: the runtime stores the timers (in the same atomic batch as
//! the events that create the deadlines) and fires them through [`Command::FireTimer`].
//!
//! # Deadlines
//! A dossier has one deadline per open step (its due, from `StepOpened` or the last
//! `DeadlinesMoved`) and one for the whole dossier (the appointment) until it is processed or
//! closed. A deadline is **on hold** while the clock rules will move it anyway, so that nobody is
//! warned or blamed for time that will not count:
//! - a supplement asked at intake, or during processing under `supplement_clock = "pause"`,
//!   holds the appointment and every open step;
//! - under `"restart"` it holds the appointment and the asking step (the other steps' dues do
//!   not move);
//! - an open payment step of a procedure with `payment_counts = false` holds the appointment and
//!   every open step, and its own due is never a deadline (the wait is the citizen's).
//!
//! # Timers
//! Each current deadline needs a warning timer at `due - lead` in working time (the first instant
//! from which at most `lead` of working time is left; skipped if that instant had already come
//! when the deadline was set, or cannot be computed inside the calendar's coverage) and a miss
//! timer at the first whole second after the due. A deadline that was already warned (or missed)
//! needs no warning (or miss) timer any more. Which timers a state needs depends on the state
//! alone ([`needed_timers`]; when a deadline was set is in the state).
//!
//! Only the **earliest** of them is stored ([`next_timer`]): it wakes the dossier, and the append
//! its firing makes sets the next one. [`timers_for`] compares the earliest timer of the state
//! before and after an append: if it changed, the old one is cleared and the new one set, in the
//! append's batch. A birth-group dossier so costs 8 timer writes instead of 16 (`bench e2e`), and a
//! deadline added, moved or met behind an earlier one costs none. A timer that records nothing when
//! it fires (stale, or a warning whose deadline passed meanwhile) is cleared and the next one set
//! ([`rearm`]). A stored timer that is not the earliest (left by an engine that stored every timer,
//! or set under another warning lead) is harmless: it fires, and records its notice if its deadline
//! still needs it, or is cleared as stale.
//!
//! [`Command::FireTimer`]: super::Command::FireTimer

use super::command::Addressee;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use lienthong_calendar::{Calendar, Duration};
use lienthong_workflow::{SupplementClock, Workflow};
use serde::{Deserialize, Serialize};

use super::state::{DossierState, StepView};
use crate::ids::DossierId;

/// How far back from its due instant a warning may lie, in seconds (400 days: far beyond any
/// lead, and bounded by the calendar's coverage anyway).
pub const WARNING_SEARCH_SECONDS_MAX: i64 = 400 * 24 * 3600;

/// What a timer announces when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// The deadline is near (`DeadlineWarning`).
    Warning,
    /// The deadline passed with the work not done (`DeadlineMissed`).
    Missed,
}

impl TimerKind {
    /// Stable text for logs and keys: `warning`, `missed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimerKind::Warning => "warning",
            TimerKind::Missed => "missed",
        }
    }
}

/// One durable timer: at `at`, tell the dossier that its deadline `(step, due)` is near or passed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timer {
    /// When it fires; whole seconds (the store keys timers by the second).
    pub at: DateTime<Utc>,
    /// The dossier.
    pub dossier: DossierId,
    /// Warning or miss.
    pub kind: TimerKind,
    /// The step whose due it watches; `None` for the appointment.
    pub step: Option<String>,
    /// The deadline it watches, exactly as the events recorded it.
    pub due: DateTime<Utc>,
    /// For a warning, the lead it was computed with (written on the notice); `None` for a miss.
    pub lead: Option<Duration>,
}

/// A change to the durable timers, written in the same atomic batch as an append's events.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimerOp {
    /// Store the timer (idempotent).
    Set(Timer),
    /// Remove the timer (idempotent; a missing timer is fine).
    Clear(Timer),
}

impl TimerOp {
    /// The timer set or cleared.
    pub fn timer(&self) -> &Timer {
        let (TimerOp::Set(t) | TimerOp::Clear(t)) = self;
        t
    }
}

/// A deadline of a dossier, as the state says now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// The step; `None` for the dossier's appointment.
    pub step: Option<String>,
    /// Who holds the work: the step's agency, or the receiving agency for the appointment.
    pub agency: String,
    /// The instant it falls due.
    pub due: DateTime<Utc>,
    /// Whether a warning was recorded for exactly this deadline.
    pub warned: bool,
    /// Whether a miss was recorded for exactly this deadline.
    pub missed: bool,
    /// When the deadline was set (see [`StepRecord::due_set_at`]).
    ///
    /// [`StepRecord::due_set_at`]: super::state::StepRecord::due_set_at
    pub set_at: Option<DateTime<Utc>>,
}

/// What the timers of a dossier are computed with.
#[derive(Clone, Copy)]
pub struct TimerPolicy<'a> {
    /// The workflow the dossier is pinned to.
    pub workflow: &'a Workflow,
    /// Its calendar.
    pub calendar: &'a Calendar,
    /// How long before a deadline the holder is warned.
    pub lead: Duration,
}

/// Which deadlines the clock rules hold (see the module docs).
struct Hold {
    /// The appointment is held.
    appointment: bool,
    /// Every open step is held.
    all_steps: bool,
    /// This step is held.
    step: Option<String>,
}

fn hold(state: &DossierState, workflow: &Workflow, view: &BTreeMap<String, StepView>) -> Hold {
    let mut h = Hold {
        appointment: false,
        all_steps: false,
        step: None,
    };
    // Only the citizen's supplement time does not count; a request between agencies holds nothing.
    if let Some(s) = state
        .outstanding_supplement()
        .filter(|s| s.addressed_to == Addressee::Citizen)
    {
        h.appointment = true;
        match (&s.step, workflow.supplement_clock) {
            (Some(asking), SupplementClock::Restart) => h.step = Some(asking.clone()),
            _ => h.all_steps = true,
        }
    }
    if !workflow.payment_counts
        && workflow
            .payment_steps()
            .any(|p| view.get(&p.id.0) == Some(&StepView::Open))
    {
        h.appointment = true;
        h.all_steps = true;
    }
    h
}

/// The dossier's current deadlines: open steps (in workflow order), then the appointment. Held
/// deadlines and, when payment does not count, payment steps are left out.
pub fn current_deadlines(state: &DossierState, workflow: &Workflow) -> Vec<Deadline> {
    if !state.is_received() || state.closed.is_some() {
        return Vec::new();
    }
    let view: BTreeMap<String, StepView> = state.step_view(workflow).into_iter().collect();
    let hold = hold(state, workflow, &view);
    let mut out = Vec::new();
    let mut push = |step: Option<String>, agency: &str, due, set_at| {
        let warned = state.noticed(TimerKind::Warning, step.as_deref(), due);
        let missed = state.noticed(TimerKind::Missed, step.as_deref(), due);
        out.push(Deadline {
            step,
            agency: agency.to_string(),
            due,
            warned,
            missed,
            set_at,
        });
    };
    if !hold.all_steps {
        for step in &workflow.steps {
            if view.get(&step.id.0) != Some(&StepView::Open)
                || hold.step.as_deref() == Some(step.id.0.as_str())
                || (step.payment && !workflow.payment_counts)
            {
                continue;
            }
            if let Some(rec) = state.steps.get(&step.id.0)
                && let Some(due) = rec.due
            {
                push(Some(step.id.0.clone()), &rec.agency, due, rec.due_set_at);
            }
        }
    }
    if !hold.appointment
        && !state.processed
        && let Some(due) = state.appointment
    {
        push(None, &state.receiving_agency, due, state.appointment_set_at);
    }
    out
}

/// The timers the dossier's current deadlines need (see the module docs), in a stable order.
pub fn needed_timers(
    dossier: DossierId,
    state: &DossierState,
    policy: &TimerPolicy<'_>,
) -> Vec<Timer> {
    let mut out = Vec::new();
    for d in current_deadlines(state, policy.workflow) {
        if d.missed {
            continue;
        }
        // A warning's instant is rounded up to the second: compare it with the setting instant
        // rounded the same way, or a warning due exactly then (a step whose budget is the lead)
        // would be set a fraction of a second ahead and fire at once.
        if !d.warned
            && let Some(at) = warning_instant(policy.calendar, d.due, policy.lead).map(ceil_second)
            && d.set_at.is_none_or(|set| at > ceil_second(set))
        {
            out.push(Timer {
                at,
                dossier,
                kind: TimerKind::Warning,
                step: d.step.clone(),
                due: d.due,
                lead: Some(policy.lead),
            });
        }
        out.push(Timer {
            at: miss_instant(d.due),
            dossier,
            kind: TimerKind::Missed,
            step: d.step,
            due: d.due,
            lead: None,
        });
    }
    out
}

/// The order timers fire in, the store's: by instant, then misses before warnings, then by due
/// and step.
fn firing_order(t: &Timer) -> (DateTime<Utc>, bool, DateTime<Utc>, Option<&str>) {
    (t.at, t.kind == TimerKind::Warning, t.due, t.step.as_deref())
}

/// The first of `timers` to fire.
fn earliest(timers: impl IntoIterator<Item = Timer>) -> Option<Timer> {
    timers
        .into_iter()
        .min_by(|a, b| firing_order(a).cmp(&firing_order(b)))
}

/// The one timer stored for the dossier: the earliest it needs (see the module docs).
pub fn next_timer(
    dossier: DossierId,
    state: &DossierState,
    policy: &TimerPolicy<'_>,
) -> Option<Timer> {
    earliest(needed_timers(dossier, state, policy))
}

/// The timer changes an append makes: when the earliest timer the state `after` needs differs
/// from the one `before` needed, the old one is cleared and the new one set. An append that
/// `fired` a timer also clears that one and sets the next even when the earliest did not change:
/// the timer that fired may not have been the earliest (one left by an engine with another
/// warning lead), so the next may not be stored.
pub fn timers_for(
    dossier: DossierId,
    before: &DossierState,
    after: &DossierState,
    policy: &TimerPolicy<'_>,
    fired: Option<&Timer>,
) -> Vec<TimerOp> {
    timer_changes(
        next_timer(dossier, before, policy),
        next_timer(dossier, after, policy),
        fired,
    )
}

/// [`timers_for`] from the earliest timers themselves: `old`, what the state before the append
/// needed, and `new`, what the state after it needs ([`next_timer`] of each). For a caller that
/// evolves the state in place and so keeps no copy of the state before.
pub fn timer_changes(
    old: Option<Timer>,
    new: Option<Timer>,
    fired: Option<&Timer>,
) -> Vec<TimerOp> {
    let mut ops = Vec::new();
    if let Some(t) = fired
        && new.as_ref() != Some(t)
    {
        ops.push(TimerOp::Clear(t.clone()));
    }
    if fired.is_none() && old == new {
        return ops;
    }
    if let Some(o) = old
        && Some(&o) != new.as_ref()
        && Some(&o) != fired
    {
        ops.push(TimerOp::Clear(o));
    }
    ops.extend(new.map(TimerOp::Set));
    ops
}

/// The timer changes when `fired` recorded nothing at `now`: it is cleared, and the earliest
/// timer the state needs is set, leaving out warnings whose deadline has passed (they would
/// record nothing either: the miss is what remains). Setting a timer already stored is harmless.
pub fn rearm(
    dossier: DossierId,
    state: &DossierState,
    policy: &TimerPolicy<'_>,
    fired: &Timer,
    now: DateTime<Utc>,
) -> Vec<TimerOp> {
    let next = earliest(
        needed_timers(dossier, state, policy)
            .into_iter()
            .filter(|t| !(t.kind == TimerKind::Warning && now > t.due)),
    );
    std::iter::once(TimerOp::Clear(fired.clone()))
        .chain(next.map(TimerOp::Set))
        .collect()
}

/// The first whole second after `due`: when a deadline has passed.
pub fn miss_instant(due: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(due.timestamp().saturating_add(1), 0).unwrap_or(due)
}

fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    if t.timestamp_subsec_nanos() == 0 {
        return t;
    }
    DateTime::from_timestamp(t.timestamp().saturating_add(1), 0).unwrap_or(t)
}

/// `due` minus `lead`: for working units, the first instant from which at most `lead` of working
/// time is left before `due` (so 1wd before Tuesday 17:00 is Monday 17:00, and before Tuesday
/// 10:00 is Monday 10:00); for `d`, the same local time `n` days earlier; for `h`, wall-clock
/// hours. `None` when the calendar cannot tell (outside its coverage).
///
/// For working units this is [`Calendar::working_start_before`] (one walk back over the office
/// segments), in whole seconds back from `due`.
pub fn warning_instant(
    calendar: &Calendar,
    due: DateTime<Utc>,
    lead: Duration,
) -> Option<DateTime<Utc>> {
    let amount = match lead {
        Duration::WorkingDays(n) => calendar.working_day_length() * i32::try_from(n).ok()?,
        Duration::WorkingHours(n) => TimeDelta::hours(i64::from(n)),
        Duration::Days(n) => {
            let tz = calendar.timezone();
            let local = due.with_timezone(&tz).naive_local();
            let earlier = local.checked_sub_days(chrono::Days::new(u64::from(n)))?;
            return tz
                .from_local_datetime(&earlier)
                .earliest()
                .map(|t| t.with_timezone(&Utc));
        }
        Duration::Hours(n) => return due.checked_sub_signed(TimeDelta::hours(i64::from(n))),
    };
    // The earliest instant with at most `amount` left, in whole seconds back from `due`.
    let start = calendar.working_start_before(due, amount).ok()?;
    let back_s = (due - start).num_seconds();
    if back_s > WARNING_SEARCH_SECONDS_MAX {
        return None;
    }
    due.checked_sub_signed(TimeDelta::seconds(back_s))
}
