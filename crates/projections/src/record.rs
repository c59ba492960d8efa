//! The per-dossier record, and what it contributes to the views.
//!
//! [`DossierRecord::build`] is a pure function of a dossier's event prefix and the loaded
//! calendars: it folds the events with the engine's own [`evolve`] (no second fold), and walks the
//! same events once more for what the state does not keep (every hand-off of the process-control
//! slip, every deadline move, the first "finished" instant). Working times that do not depend on
//! `now` are computed here, once, with the dossier's calendar.
//!
//! [`DossierRecord::entries`] and [`DossierRecord::counters`] say what the record puts into the
//! indexes and the indicator counters; the counter contributions are computed once, at build,
//! and stored in the record, so that replacing it takes off exactly what it added. Because all three are pure functions of the prefix, the
//! views after any sequence of feed batches equal the views after one replay: that is the
//! property `rebuild == catch_up` rests on.
//!
//! # Definitions (what the numbers mean)
//!
//! - **Finished**: the first of *processed* (every routed step done after a command: the
//!   completion that routes on and the openings it causes are one command), result returned,
//!   refused, processing stopped. A withdrawn dossier is not finished (it is counted apart as withdrawn),
//!   nor is one still open.
//! - **Rate appointment**: the receipt's appointment, moved by every `DeadlinesMoved` (supplement
//!   pause or restart, payment excluded, intake complete), but never by an apology: under the
//!   national rule an apology's new date does not make a dossier on time. A pause recorded after an
//!   apology shifts the rate appointment by the same excluded working time; a restart sets it to
//!   the moved appointment (a restart counts the whole limit again, whatever was promised before).
//! - **Verdict** (dossier and hand-off alike): *late* when working time elapsed between the due
//!   instant and the finish (`working_time_between(due, finished) > 0`: finishing at 17:30 after a
//!   17:00 due on the same day is not late, no office time was lost), or, for a dossier, when it
//!   had more than one supplement request (late by rule, whatever the dates); *early* when not late
//!   and finished on an earlier local day than the due; *on time* otherwise.
//! - **Processing time** (dossier): working time from the clock start to the finish, minus the
//!   working time the `DeadlinesMoved` events excluded (supplement and payment pauses).
//! - **Hand-off** (a line of the slip): a `StepOpened`. The giver is the actor of that event (the
//!   agency whose act routed the dossier on; the receiving agency when the actor is the citizen or
//!   the engine), the receiver is the step's agency. Budget = working time from the opening to the
//!   due it was opened with; waits = the working time between the step's due before and after
//!   each `DeadlinesMoved` that names it while it was open (the engine moves each step by the
//!   wait since *it* opened, not by the dossier's whole exclusion); actual = working time from opening to completion (or rejection) minus
//!   waits; overrun = working time from the step's final due to its end (equal to actual − budget
//!   when the only clock rule is a pause). A hand-off still open when the dossier ends is
//!   *cancelled* and not judged.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use lienthong_calendar::Calendar;
use lienthong_engine::dossier::command::Addressee;
use lienthong_engine::dossier::{
    DossierState, StepStatus, StepView, convert::instant, current_deadlines, evolve,
};
use lienthong_proto::v1::{Channel, Event, Outcome, event::Body};
use lienthong_workflow::{Catalog, Workflow};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys;

/// Agencies that are not a step holder: acts by them route on behalf of the receiving agency.
const NON_AGENCY_ACTORS: [&str; 3] = ["citizen", "engine", ""];

/// How an act ended up judged against its due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Finished on an earlier local day than the due.
    Early,
    /// Finished with no working time past the due.
    OnTime,
    /// Working time elapsed past the due (or, for a dossier, more than one supplement request).
    Late,
}

impl Verdict {
    /// Stable text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Early => "early",
            Verdict::OnTime => "on-time",
            Verdict::Late => "late",
        }
    }

    /// Vietnamese label.
    pub fn label_vi(&self) -> &'static str {
        match self {
            Verdict::Early => "trước hạn",
            Verdict::OnTime => "đúng hạn",
            Verdict::Late => "quá hạn",
        }
    }
}

/// How a dossier finished (the first of these acts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishKind {
    /// Every routed step done.
    Processed,
    /// The result was returned (before the steps were all done: only if the workflow allows it).
    Returned,
    /// Refused.
    Refused,
    /// Processing stopped.
    Stopped,
}

impl FinishKind {
    /// Stable text.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishKind::Processed => "processed",
            FinishKind::Returned => "returned",
            FinishKind::Refused => "refused",
            FinishKind::Stopped => "stopped",
        }
    }
}

/// How a hand-off ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandoffEnd {
    /// Completed with this outcome.
    Completed(String),
    /// Rejected (refusal or rework) with this reason.
    Rejected(String),
    /// Still open when the dossier ended; not judged.
    Cancelled,
}

/// One line of the process-control slip (phiếu kiểm soát quá trình).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The step handed over.
    pub step: String,
    /// Who gave the dossier (see the module docs).
    pub giver: String,
    /// Who received it: the step's agency.
    pub receiver: String,
    /// When it was handed over (the opening's recorded-at).
    #[serde(with = "crate::instant")]
    pub given_at: DateTime<Utc>,
    /// The budget as written in the workflow (`1wd`).
    pub budget: String,
    /// The due it was opened with.
    #[serde(with = "crate::instant::option")]
    pub due_at_open: Option<DateTime<Utc>>,
    /// The due after every deadline move.
    #[serde(with = "crate::instant::option")]
    pub due: Option<DateTime<Utc>>,
    /// Working seconds excluded for this step by deadline moves while it was open.
    pub waits_s: i64,
    /// When it ended; `None` while open.
    #[serde(with = "crate::instant::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended; `None` while open.
    pub end: Option<HandoffEnd>,
    /// Working seconds from the opening to the due it was opened with.
    pub budget_s: Option<i64>,
    /// Working seconds from the opening to the end, minus waits (`None` while open).
    pub actual_s: Option<i64>,
    /// Working seconds from the final due to the end, signed (`None` while open).
    pub overrun_s: Option<i64>,
    /// The verdict (`None` while open or cancelled).
    pub verdict: Option<Verdict>,
    /// While open: the engine's clock rules hold its due (it is not among
    /// [`current_deadlines`]): no warning, no miss, no lateness accrues. Always `false` once ended.
    pub held: bool,
    /// The agency's system never acknowledged a task of this step (a `TaskUndeliverable`
    /// while it was open): the bus's deliveries before it set the task aside; 0 otherwise.
    #[serde(default)]
    pub undeliverable_deliveries: u32,
}

impl Handoff {
    /// Still with its agency.
    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }
}

/// One supplement period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupplementPeriod {
    /// 1, 2 ...
    pub ordinal: u32,
    /// The asking step (empty at intake).
    pub step: String,
    /// The asking agency.
    pub requested_by: String,
    /// `citizen` or an agency code.
    pub addressed_to: String,
    /// When asked.
    #[serde(with = "crate::instant::option")]
    pub requested_at: Option<DateTime<Utc>>,
    /// When provided.
    #[serde(with = "crate::instant::option")]
    pub provided_at: Option<DateTime<Utc>>,
    /// Working seconds between the two (`None` while outstanding).
    pub waited_s: Option<i64>,
}

/// The dossier's apology, shown apart from the rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApologyNote {
    /// The apologising agency.
    pub agency: String,
    /// The late step, if named.
    pub step: String,
    /// When issued.
    #[serde(with = "crate::instant::option")]
    pub issued_at: Option<DateTime<Utc>>,
    /// The appointment before.
    #[serde(with = "crate::instant::option")]
    pub previous_appointment: Option<DateTime<Utc>>,
    /// The appointment promised instead.
    #[serde(with = "crate::instant::option")]
    pub new_appointment: Option<DateTime<Utc>>,
    /// Issued later than 1 working day before the previous appointment.
    pub late: bool,
}

/// Everything the views need about one dossier, folded from its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DossierRecord {
    /// Internal id.
    pub id: Uuid,
    /// The code for life.
    pub code: String,
    /// Seq of the last event folded (the record covers events 1..=seq).
    pub seq: u64,
    /// National procedure code.
    pub procedure: String,
    /// The receiving agency (one-stop desk): dossier-level indicators are attributed to it.
    pub receiving_agency: String,
    /// `in-person`, `online`, `post`, `system` or `unspecified`.
    pub channel: String,
    /// Status text from the engine (`processing`, `closed:refused` ...).
    pub status: String,
    /// Calendar family the dossier's deadlines were computed with.
    pub calendar: String,
    /// Problems met while measuring (calendar missing, beyond coverage ...); measures are `None`.
    pub problems: Vec<String>,
    /// When received.
    #[serde(with = "crate::instant::option")]
    pub received_at: Option<DateTime<Utc>>,
    /// When the clock started.
    #[serde(with = "crate::instant::option")]
    pub clock_started_at: Option<DateTime<Utc>>,
    /// The receipt's appointment.
    #[serde(with = "crate::instant::option")]
    pub first_appointment: Option<DateTime<Utc>>,
    /// The appointment the rate is judged against (see the module docs).
    #[serde(with = "crate::instant::option")]
    pub rate_appointment: Option<DateTime<Utc>>,
    /// The appointment in force (after an apology, the new one): what the board shows.
    #[serde(with = "crate::instant::option")]
    pub appointment: Option<DateTime<Utc>>,
    /// The apology, if any.
    pub apology: Option<ApologyNote>,
    /// Supplement periods in order.
    pub supplements: Vec<SupplementPeriod>,
    /// More than one supplement request: late by rule.
    pub late_by_rule: bool,
    /// Working seconds excluded by supplement (and intake) moves.
    pub supplement_excluded_s: i64,
    /// Working seconds excluded by payment moves.
    pub payment_excluded_s: i64,
    /// A supplement request is outstanding (the clock is paused or will restart).
    pub awaiting_supplement: bool,
    /// The outstanding supplement is addressed to the citizen: only then do the engine's clock
    /// rules hold anything (a request between agencies holds nothing and moves nothing).
    pub awaiting_citizen: bool,
    /// The engine holds the appointment (see [`current_deadlines`]) since this instant: the
    /// citizen's supplement request, or the opening of a payment step that does not count.
    #[serde(with = "crate::instant::option")]
    pub appointment_held_since: Option<DateTime<Utc>>,
    /// When and how it finished.
    #[serde(with = "crate::instant::option_pair")]
    pub finished: Option<(FinishKind, DateTime<Utc>)>,
    /// When it was withdrawn.
    #[serde(with = "crate::instant::option")]
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// When it was closed, with the outcome text.
    #[serde(with = "crate::instant::option_pair_option")]
    pub closed: Option<(String, Option<DateTime<Utc>>)>,
    /// The verdict, once finished.
    pub verdict: Option<Verdict>,
    /// Working seconds past the rate appointment at the finish (signed).
    pub overdue_s: Option<i64>,
    /// Working seconds from clock start to finish minus exclusions.
    pub processing_s: Option<i64>,
    /// Deadline warnings and misses the engine recorded.
    pub warnings: u32,
    /// Deadline misses the engine recorded.
    pub misses: u32,
    /// Every hand-off in order: the process-control slip.
    pub handoffs: Vec<Handoff>,
    /// What the record added to the indicator counters, computed once when it was built (with
    /// the calendar then loaded). A replaced record subtracts exactly these, never a
    /// recomputation: a calendar reloaded since cannot send the subtraction to another month.
    pub contributions: Vec<Contribution>,
}

/// What one record adds to one indicator counter (one `i/` key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// `YYYY-MM`, local.
    pub month: String,
    /// `dossier` or `step`.
    pub level: String,
    /// The agency.
    pub agency: String,
    /// Procedure code.
    pub procedure: String,
    /// The amounts added.
    pub counters: Counters,
}

impl Contribution {
    /// Its `i/` key.
    pub fn key(&self) -> Vec<u8> {
        keys::indicator_key(&self.month, &self.level, &self.agency, &self.procedure)
    }
}

/// One open step on the deadline board (value of an `o/` key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenStepEntry {
    /// Dossier id.
    pub dossier: Uuid,
    /// Dossier code.
    pub code: String,
    /// Procedure code.
    pub procedure: String,
    /// The step.
    pub step: String,
    /// The holder.
    pub agency: String,
    /// When it was handed over.
    #[serde(with = "crate::instant")]
    pub opened_at: DateTime<Utc>,
    /// Its due.
    #[serde(with = "crate::instant")]
    pub due: DateTime<Utc>,
    /// The engine's clock rules hold this due (see [`Handoff::held`]): shown paused, never late.
    pub held: bool,
    /// The dossier waits for the citizen's supplement asked at this instant.
    #[serde(with = "crate::instant::option")]
    pub paused_since: Option<DateTime<Utc>>,
    /// Calendar family.
    pub calendar: String,
    /// See [`Handoff::undeliverable_deliveries`].
    #[serde(default)]
    pub undeliverable_deliveries: u32,
}

/// One open dossier by appointment (value of an `a/` key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDossierEntry {
    /// Dossier id.
    pub dossier: Uuid,
    /// Dossier code.
    pub code: String,
    /// Procedure code.
    pub procedure: String,
    /// The receiving agency.
    pub receiving_agency: String,
    /// Who holds it: the agencies of its open steps, else the receiving agency.
    pub holders: Vec<String>,
    /// The appointment in force.
    #[serde(with = "crate::instant")]
    pub appointment: DateTime<Utc>,
    /// Whether an apology set it.
    pub apologised: bool,
    /// The engine holds the appointment since this instant (the citizen's supplement request,
    /// or the opening of a payment step that does not count): its clock is frozen there.
    #[serde(with = "crate::instant::option")]
    pub paused_since: Option<DateTime<Utc>>,
    /// Calendar family.
    pub calendar: String,
}

/// Indicator counters of one (month, level, agency, procedure). Integers only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Dossiers received (dossier level) or hand-offs received (step level) in the month.
    pub received: i64,
    /// Of `received`, filed in person.
    pub in_person: i64,
    /// Of `received`, filed online.
    pub online: i64,
    /// Of `received`, filed by post.
    pub post: i64,
    /// Of `received`, any other channel.
    pub other_channel: i64,
    /// Finished in the month.
    pub finished: i64,
    /// Of `finished`, early.
    pub early: i64,
    /// Of `finished`, on time.
    pub on_time: i64,
    /// Of `finished`, late.
    pub late: i64,
    /// Of `late`, late by rule (more than one supplement request).
    pub late_by_rule: i64,
    /// Of `finished`, with an apology (still judged against the first appointment).
    pub apologised: i64,
    /// Of `finished`, those whose processing time could be measured.
    pub measured: i64,
    /// Sum of the measured processing times, in working seconds.
    pub processing_s: i64,
    /// Dossiers withdrawn in the month (dossier level).
    pub withdrawn: i64,
}

impl Counters {
    /// All zero: the record is deleted rather than kept.
    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }

    /// `self + sign * other`, field by field.
    pub fn add(&mut self, other: &Counters, sign: i64) {
        self.received += sign * other.received;
        self.in_person += sign * other.in_person;
        self.online += sign * other.online;
        self.post += sign * other.post;
        self.other_channel += sign * other.other_channel;
        self.finished += sign * other.finished;
        self.early += sign * other.early;
        self.on_time += sign * other.on_time;
        self.late += sign * other.late;
        self.late_by_rule += sign * other.late_by_rule;
        self.apologised += sign * other.apologised;
        self.measured += sign * other.measured;
        self.processing_s += sign * other.processing_s;
        self.withdrawn += sign * other.withdrawn;
    }

    /// No count below zero (an invariant checked on every write).
    pub fn is_valid(&self) -> bool {
        [
            self.received,
            self.in_person,
            self.online,
            self.post,
            self.other_channel,
            self.finished,
            self.early,
            self.on_time,
            self.late,
            self.late_by_rule,
            self.apologised,
            self.measured,
            self.processing_s,
            self.withdrawn,
        ]
        .iter()
        .all(|&n| n >= 0)
    }
}

/// Channel as stable text.
pub fn channel_text(c: Channel) -> &'static str {
    match c {
        Channel::InPerson => "in-person",
        Channel::Online => "online",
        Channel::Post => "post",
        Channel::System => "system",
        Channel::Unspecified => "unspecified",
    }
}

fn secs(d: TimeDelta) -> i64 {
    d.num_seconds()
}

/// Working seconds between two instants with `cal`, or a problem text.
fn between(cal: Option<&Calendar>, a: DateTime<Utc>, b: DateTime<Utc>) -> Result<i64, String> {
    let cal = cal.ok_or_else(|| "calendar not loaded".to_string())?;
    cal.working_time_between(a, b)
        .map(secs)
        .map_err(|e| e.to_string())
}

/// The local date of `t` in the calendar's zone (UTC without a calendar).
pub fn local_date(cal: Option<&Calendar>, t: DateTime<Utc>) -> NaiveDate {
    match cal {
        Some(c) => t.with_timezone(&c.timezone()).date_naive(),
        None => t.date_naive(),
    }
}

/// The local month `YYYY-MM` of `t`.
pub fn local_month(cal: Option<&Calendar>, t: DateTime<Utc>) -> String {
    let date = local_date(cal, t);
    let (year, month) = (date.year(), date.month());
    if !(0..=9999).contains(&year) {
        // `%Y` writes a sign and more digits there.
        return date.format("%Y-%m").to_string();
    }
    // Two integers, not a strftime pattern parsed on every call.
    format!("{year:04}-{month:02}")
}

/// The verdict of something finished at `end` against `due`, given the working time past the due.
pub fn verdict(
    cal: Option<&Calendar>,
    due: DateTime<Utc>,
    end: DateTime<Utc>,
    past_s: i64,
) -> Verdict {
    if past_s > 0 {
        Verdict::Late
    } else if local_date(cal, end) < local_date(cal, due) {
        Verdict::Early
    } else {
        Verdict::OnTime
    }
}

impl DossierRecord {
    /// Folds `events` (one dossier's stream, seq 1..n, in order) into its record; working times
    /// are measured with the dossier's calendar from `catalog`, and the clock rules' holds with
    /// the catalog's workflow of the procedure (see [`DossierRecord::build_with`]).
    pub fn build(id: Uuid, events: &[Event], catalog: &Catalog) -> DossierRecord {
        let code = events.iter().find_map(|e| match &e.body {
            Some(Body::Received(r)) => Some(r.procedure_code.as_str()),
            _ => None,
        });
        let workflow = code.and_then(|c| catalog.procedure(c));
        DossierRecord::build_with(id, events, catalog, workflow.map(AsRef::as_ref))
    }

    /// [`DossierRecord::build`] with the workflow the dossier is pinned to (the engine's
    /// content-addressed copy when the store has it): which deadlines the engine holds is
    /// decided with it, by the engine's own [`current_deadlines`]. Without a workflow only a
    /// citizen's outstanding supplement holds (every open step and the appointment).
    pub fn build_with(
        id: Uuid,
        events: &[Event],
        catalog: &Catalog,
        workflow: Option<&Workflow>,
    ) -> DossierRecord {
        let mut state = DossierState::default();
        let mut rec = DossierRecord {
            id,
            code: String::new(),
            seq: 0,
            procedure: String::new(),
            receiving_agency: String::new(),
            channel: String::new(),
            status: String::new(),
            calendar: String::new(),
            problems: Vec::new(),
            received_at: None,
            clock_started_at: None,
            first_appointment: None,
            rate_appointment: None,
            appointment: None,
            apology: None,
            supplements: Vec::new(),
            late_by_rule: false,
            supplement_excluded_s: 0,
            payment_excluded_s: 0,
            awaiting_supplement: false,
            awaiting_citizen: false,
            appointment_held_since: None,
            finished: None,
            withdrawn_at: None,
            closed: None,
            verdict: None,
            overdue_s: None,
            processing_s: None,
            warnings: 0,
            misses: 0,
            handoffs: Vec::new(),
            contributions: Vec::new(),
        };
        // The open hand-off of each step, by index into `rec.handoffs`.
        let mut open: BTreeMap<String, usize> = BTreeMap::new();
        // The seq of the event that opened each open step (its task's id ends with it).
        let mut opened_seq: BTreeMap<String, u64> = BTreeMap::new();
        let mut cal: Option<&Calendar> = None;
        for (i, event) in events.iter().enumerate() {
            state = evolve(state, event);
            let env = event.envelope.as_ref();
            let at = env.and_then(|e| instant(e.recorded_at.as_ref()));
            let actor = env
                .and_then(|e| e.actor.as_ref())
                .map(|a| a.agency.clone())
                .unwrap_or_default();
            match &event.body {
                Some(Body::Received(r)) => {
                    cal = catalog.calendar(&r.calendar_name);
                    rec.first_appointment = instant(r.appointment.as_ref());
                    rec.rate_appointment = rec.first_appointment;
                    // No comparison with `r.calendar_hash`: a family's hash changes whenever a file
                    // is added to it (next year's holidays), so a flag stored here would say
                    // whether the dossier was folded before or after that publication, and a
                    // rebuild would differ from the incremental fold. The working times below
                    // only use the loaded calendar; the recorded dues come from the events.
                    if cal.is_none() {
                        rec.problems
                            .push(format!("calendar `{}` is not loaded", r.calendar_name));
                    }
                }
                Some(Body::StepOpened(o)) => {
                    let giver = if NON_AGENCY_ACTORS.contains(&actor.as_str()) {
                        state.receiving_agency.clone()
                    } else {
                        actor.clone()
                    };
                    if let Some(at) = at {
                        let due = instant(o.due.as_ref());
                        open.insert(o.step_id.clone(), rec.handoffs.len());
                        opened_seq.insert(o.step_id.clone(), env.map_or(0, |e| e.seq));
                        rec.handoffs.push(Handoff {
                            step: o.step_id.clone(),
                            giver,
                            receiver: o.agency.clone(),
                            given_at: at,
                            budget: o.budget.clone(),
                            due_at_open: due,
                            due,
                            waits_s: 0,
                            ended_at: None,
                            end: None,
                            budget_s: None,
                            actual_s: None,
                            overrun_s: None,
                            verdict: None,
                            held: false,
                            undeliverable_deliveries: 0,
                        });
                    }
                }
                Some(Body::StepCompleted(c)) => {
                    if let Some(i) = open.remove(&c.step_id)
                        && let Some(h) = rec.handoffs.get_mut(i)
                    {
                        h.ended_at = at;
                        h.end = Some(HandoffEnd::Completed(c.outcome.clone()));
                    }
                }
                Some(Body::StepRejected(r)) => {
                    if let Some(i) = open.remove(&r.step_id)
                        && let Some(h) = rec.handoffs.get_mut(i)
                    {
                        h.ended_at = at;
                        h.end = Some(HandoffEnd::Rejected(r.reason.clone()));
                    }
                }
                Some(Body::DeadlinesMoved(m)) => {
                    let moved = instant(m.appointment.as_ref());
                    let excluded = m.excluded_working_seconds.max(0);
                    if rec.apology.is_none() || excluded == 0 {
                        if moved.is_some() {
                            rec.rate_appointment = moved;
                        }
                    } else if let (Some(c), Some(t)) = (cal, rec.rate_appointment) {
                        match c.add_working(t, TimeDelta::seconds(excluded)) {
                            Ok(t) => rec.rate_appointment = Some(t),
                            Err(e) => rec.problems.push(e.to_string()),
                        }
                    }
                    if m.rule.starts_with("payment") {
                        rec.payment_excluded_s += excluded;
                    } else {
                        rec.supplement_excluded_s += excluded;
                    }
                    // Each step's own move: the engine moves a step's due by the wait since the step
                    // opened (pause, payment) or resets it (restart), never by the dossier's whole
                    // exclusion. Its wait is the working time between its due before and after.
                    for d in &m.steps {
                        if let Some(&i) = open.get(&d.step_id)
                            && let Some(h) = rec.handoffs.get_mut(i)
                        {
                            let after = instant(d.due.as_ref());
                            if let (Some(before), Some(after)) = (h.due, after)
                                && after > before
                            {
                                match between(cal, before, after) {
                                    Ok(w) => h.waits_s += w,
                                    Err(e) if !rec.problems.contains(&e) => rec.problems.push(e),
                                    Err(_) => {}
                                }
                            }
                            h.due = after;
                        }
                    }
                }
                Some(Body::SupplementRequested(s)) => {
                    rec.late_by_rule |= s.late_by_rule || s.ordinal > 1;
                    rec.supplements.push(SupplementPeriod {
                        ordinal: s.ordinal,
                        step: s.step_id.clone(),
                        requested_by: s.requested_by.clone(),
                        addressed_to: s.addressed_to.clone(),
                        requested_at: at,
                        provided_at: None,
                        waited_s: None,
                    });
                }
                Some(Body::SupplementProvided(_)) => {
                    if let Some(s) = rec.supplements.last_mut()
                        && s.provided_at.is_none()
                    {
                        s.provided_at = at;
                    }
                }
                Some(Body::ApologyIssued(_)) => {
                    if let Some(a) = &state.apology {
                        rec.apology = Some(ApologyNote {
                            agency: a.agency.clone(),
                            step: a.step.clone().unwrap_or_default(),
                            issued_at: a.issued_at,
                            previous_appointment: a.previous_appointment,
                            new_appointment: a.new_appointment,
                            late: a.late,
                        });
                    }
                }
                Some(Body::Refused(_)) => finish(&mut rec, FinishKind::Refused, at),
                Some(Body::ProcessingStopped(_)) => finish(&mut rec, FinishKind::Stopped, at),
                Some(Body::ResultReturned(_)) => finish(&mut rec, FinishKind::Returned, at),
                Some(Body::Withdrawn(_)) => {
                    if rec.finished.is_none() && rec.withdrawn_at.is_none() {
                        rec.withdrawn_at = at;
                    }
                }
                // Only the task that opened this hand-off: not a warning's, not an earlier
                // opening's of the same step.
                Some(Body::TaskUndeliverable(u)) => {
                    let task_seq = u
                        .task_id
                        .rsplit_once('/')
                        .and_then(|(_, n)| n.parse::<u64>().ok());
                    if u.kind == "TASK_KIND_STEP_OPENED"
                        && let Some(&i) = open.get(&u.step_id)
                        && opened_seq.get(&u.step_id).copied() == task_seq
                        && let Some(h) = rec.handoffs.get_mut(i)
                        && h.receiver == u.agency
                    {
                        h.undeliverable_deliveries = h.undeliverable_deliveries.max(u.deliveries);
                    }
                }
                Some(Body::DeadlineWarning(_)) => rec.warnings += 1,
                Some(Body::DeadlineMissed(_)) => rec.misses += 1,
                Some(Body::Closed(_)) => {
                    for i in std::mem::take(&mut open).into_values() {
                        if let Some(h) = rec.handoffs.get_mut(i) {
                            h.ended_at = at;
                            h.end = Some(HandoffEnd::Cancelled);
                        }
                    }
                }
                Some(Body::StepSkipped(_)) | None => {}
            }
            // Processed is judged between commands only: a completion and the openings it
            // routes to are one command, and between them every routed step looks done.
            let boundary = events
                .get(i + 1)
                .is_none_or(|next| command_of(next) != command_of(event));
            if boundary
                && state.processed
                && let Some(t) = state.processed_at
            {
                finish(&mut rec, FinishKind::Processed, Some(t));
            }
        }
        rec.seq = state.seq;
        rec.code.clone_from(&state.code);
        rec.procedure.clone_from(&state.procedure_code);
        rec.receiving_agency.clone_from(&state.receiving_agency);
        rec.channel = channel_text(state.channel).to_string();
        rec.status = state.status().as_str().to_string();
        rec.calendar.clone_from(&state.calendar_name);
        rec.received_at = state.received_at;
        rec.clock_started_at = state.clock_started_at;
        rec.appointment = state.appointment;
        rec.awaiting_supplement = state.outstanding_supplement().is_some();
        let citizen_supplement = state
            .outstanding_supplement()
            .filter(|s| s.addressed_to == Addressee::Citizen);
        rec.awaiting_citizen = citizen_supplement.is_some();
        rec.hold(
            &state,
            workflow,
            &open,
            citizen_supplement.and_then(|s| s.requested_at),
        );
        rec.closed = state
            .closed
            .map(|c| (outcome_text(c.outcome).to_string(), c.at));
        // Invariant: the slip's open hand-offs are the state's open steps.
        if rec.closed.is_none() && open.len() != state_open_steps(&state) {
            rec.problems.push(format!(
                "the slip has {} open hand-offs but the state {} open steps",
                open.len(),
                state_open_steps(&state)
            ));
        }
        rec.measure(cal);
        rec.contributions = rec
            .compute_counters(catalog)
            .into_iter()
            .filter_map(|(k, counters)| {
                let (month, level, agency, procedure) = keys::parse_indicator_key(&k)?;
                Some(Contribution {
                    month,
                    level,
                    agency,
                    procedure,
                    counters,
                })
            })
            .collect();
        rec
    }

    /// Marks the open hand-offs whose due the engine holds, and when the appointment's hold
    /// began: exactly the engine's [`current_deadlines`] (its `hold` rule: a citizen's
    /// supplement holds every open step, or only the asking one under `supplement_clock =
    /// "restart"`; an open payment step that does not count holds every open step and is never
    /// a deadline itself; a supplement between agencies holds nothing).
    fn hold(
        &mut self,
        state: &DossierState,
        workflow: Option<&Workflow>,
        open: &BTreeMap<String, usize>,
        citizen_since: Option<DateTime<Utc>>,
    ) {
        let Some(wf) = workflow else {
            for &i in open.values() {
                if let Some(h) = self.handoffs.get_mut(i) {
                    h.held = citizen_since.is_some();
                }
            }
            self.appointment_held_since = citizen_since;
            return;
        };
        let current = current_deadlines(state, wf);
        for (step, &i) in open {
            if let Some(h) = self.handoffs.get_mut(i) {
                h.held = !current
                    .iter()
                    .any(|d| d.step.as_deref() == Some(step.as_str()));
            }
        }
        let appointment_current = current.iter().any(|d| d.step.is_none());
        if appointment_current || state.processed || state.appointment.is_none() {
            return;
        }
        // Held: since the citizen's request, or since the payment step that does not count was
        // opened (the earlier, when both).
        let view: BTreeMap<String, StepView> = state.step_view(wf).into_iter().collect();
        let payment_since = if wf.payment_counts {
            None
        } else {
            wf.payment_steps()
                .filter(|p| view.get(&p.id.0) == Some(&StepView::Open))
                .filter_map(|p| state.steps.get(&p.id.0).and_then(|r| r.opened_at))
                .min()
        };
        self.appointment_held_since = match (citizen_since, payment_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Computes the working-time measures that do not depend on `now`.
    fn measure(&mut self, cal: Option<&Calendar>) {
        let mut problems = Vec::new();
        for s in &mut self.supplements {
            if let (Some(a), Some(b)) = (s.requested_at, s.provided_at) {
                match between(cal, a, b) {
                    Ok(w) => s.waited_s = Some(w),
                    Err(e) => problems.push(e),
                }
            }
        }
        for h in &mut self.handoffs {
            if let Some(due) = h.due_at_open {
                match between(cal, h.given_at, due) {
                    Ok(w) => h.budget_s = Some(w),
                    Err(e) => problems.push(e),
                }
            }
            let (Some(end), Some(kind)) = (h.ended_at, &h.end) else {
                continue;
            };
            if *kind == HandoffEnd::Cancelled {
                continue;
            }
            match between(cal, h.given_at, end) {
                Ok(w) => h.actual_s = Some((w - h.waits_s).max(0)),
                Err(e) => problems.push(e),
            }
            if let Some(due) = h.due {
                match between(cal, due, end) {
                    Ok(w) => {
                        h.overrun_s = Some(w);
                        h.verdict = Some(verdict(cal, due, end, w));
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        if let Some((_, end)) = self.finished {
            if let Some(due) = self.rate_appointment {
                match between(cal, due, end) {
                    Ok(w) => {
                        self.overdue_s = Some(w);
                        self.verdict = Some(if self.late_by_rule {
                            Verdict::Late
                        } else {
                            verdict(cal, due, end, w)
                        });
                    }
                    Err(e) => problems.push(e),
                }
            }
            if let Some(start) = self.clock_started_at {
                match between(cal, start, end) {
                    Ok(w) => {
                        let excluded = self.supplement_excluded_s + self.payment_excluded_s;
                        self.processing_s = Some((w - excluded).max(0));
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        for p in problems {
            if !self.problems.contains(&p) {
                self.problems.push(p);
            }
        }
    }

    /// When the outstanding supplement request was made, if one addressed to the citizen is
    /// outstanding: the dossier's clock is frozen there (pause), or will restart from the
    /// provision (restart); either way no lateness accrues while it waits. A request between
    /// agencies does not stop the clock (the engine holds nothing for it).
    pub fn paused_since(&self) -> Option<DateTime<Utc>> {
        if !self.awaiting_citizen {
            return None;
        }
        self.supplements
            .last()
            .filter(|s| s.provided_at.is_none())
            .and_then(|s| s.requested_at)
    }

    /// Neither finished nor withdrawn (nor closed some other way).
    pub fn is_open(&self) -> bool {
        self.finished.is_none() && self.withdrawn_at.is_none() && self.closed.is_none()
    }

    /// The agencies holding the dossier: those of its open hand-offs, else the receiving agency.
    pub fn holders(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in self.handoffs.iter().filter(|h| h.is_open()) {
            if !out.contains(&h.receiver) {
                out.push(h.receiver.clone());
            }
        }
        if out.is_empty() {
            out.push(self.receiving_agency.clone());
        }
        out
    }

    /// Index entries (`o/`, `a/`, `r/`, `k/`) with their values; the `d/` record is apart.
    pub fn entries(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, postcard::Error> {
        self.index(true)
    }

    /// The keys of [`DossierRecord::entries`], without encoding their values.
    pub fn entry_keys(&self) -> Vec<Vec<u8>> {
        // Nothing is encoded, so nothing can fail.
        self.index(false)
            .map(BTreeMap::into_keys)
            .map(Iterator::collect)
            .unwrap_or_default()
    }

    /// The index entries, with their values encoded when `values` (else empty).
    fn index(&self, values: bool) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, postcard::Error> {
        let mut out = BTreeMap::new();
        if self.procedure.is_empty() {
            return Ok(out);
        }
        if self.closed.is_none() {
            for h in self.handoffs.iter().filter(|h| h.is_open()) {
                let Some(due) = h.due else { continue };
                let entry = || OpenStepEntry {
                    dossier: self.id,
                    code: self.code.clone(),
                    procedure: self.procedure.clone(),
                    step: h.step.clone(),
                    agency: h.receiver.clone(),
                    opened_at: h.given_at,
                    due,
                    held: h.held,
                    paused_since: self.paused_since(),
                    calendar: self.calendar.clone(),
                    undeliverable_deliveries: h.undeliverable_deliveries,
                };
                out.insert(
                    keys::open_step_key(&h.receiver, due, &self.id, &h.step),
                    encode_if(values, entry)?,
                );
            }
            if let Some(appointment) = self.appointment {
                let entry = || OpenDossierEntry {
                    dossier: self.id,
                    code: self.code.clone(),
                    procedure: self.procedure.clone(),
                    receiving_agency: self.receiving_agency.clone(),
                    holders: self.holders(),
                    appointment,
                    apologised: self.apology.is_some(),
                    paused_since: self.appointment_held_since,
                    calendar: self.calendar.clone(),
                };
                out.insert(
                    keys::open_dossier_key(appointment, &self.id),
                    encode_if(values, entry)?,
                );
            }
        }
        if self.is_open()
            && let Some(t) = self.rate_appointment
        {
            out.insert(keys::rate_due_key(t, &self.id), Vec::new());
        }
        if self.verdict == Some(Verdict::Late) || (self.late_by_rule && self.is_open()) {
            out.insert(keys::late_key(&self.id), Vec::new());
        }
        Ok(out)
    }

    /// What the record adds to the indicator counters, by `i/` key: its stored
    /// [`DossierRecord::contributions`], as computed when it was built.
    pub fn counters(&self) -> BTreeMap<Vec<u8>, Counters> {
        let mut out: BTreeMap<Vec<u8>, Counters> = BTreeMap::new();
        for c in &self.contributions {
            out.entry(c.key()).or_default().add(&c.counters, 1);
        }
        out
    }

    /// The contributions, computed with the loaded calendar (local months).
    fn compute_counters(&self, catalog: &Catalog) -> BTreeMap<Vec<u8>, Counters> {
        let mut out: BTreeMap<Vec<u8>, Counters> = BTreeMap::new();
        if self.procedure.is_empty() {
            return out;
        }
        let cal = catalog.calendar(&self.calendar);
        let mut bump = |month: String, level: &str, agency: &str, f: &dyn Fn(&mut Counters)| {
            let k = keys::indicator_key(&month, level, agency, &self.procedure);
            f(out.entry(k).or_default());
        };
        let desk = self.receiving_agency.as_str();
        if let Some(t) = self.received_at {
            bump(local_month(cal, t), "dossier", desk, &|c| {
                c.received += 1;
                match self.channel.as_str() {
                    "in-person" => c.in_person += 1,
                    "online" => c.online += 1,
                    "post" => c.post += 1,
                    _ => c.other_channel += 1,
                }
            });
        }
        if let (Some((_, t)), Some(v)) = (self.finished, self.verdict) {
            bump(local_month(cal, t), "dossier", desk, &|c| {
                c.finished += 1;
                count_verdict(c, v);
                if self.late_by_rule {
                    c.late_by_rule += 1;
                }
                if self.apology.is_some() {
                    c.apologised += 1;
                }
                if let Some(p) = self.processing_s {
                    c.measured += 1;
                    c.processing_s += p;
                }
            });
        }
        if let Some(t) = self.withdrawn_at {
            bump(local_month(cal, t), "dossier", desk, &|c| c.withdrawn += 1);
        }
        for h in &self.handoffs {
            bump(local_month(cal, h.given_at), "step", &h.receiver, &|c| {
                c.received += 1;
            });
            if let (Some(t), Some(v)) = (h.ended_at, h.verdict) {
                bump(local_month(cal, t), "step", &h.receiver, &|c| {
                    c.finished += 1;
                    count_verdict(c, v);
                    if let Some(a) = h.actual_s {
                        c.measured += 1;
                        c.processing_s += a;
                    }
                });
            }
        }
        out
    }
}

/// A value as the projections database stores it (see [`crate::keys`]): postcard, the fields
/// in declaration order without their names, instants as seconds and nanoseconds.
pub fn to_bytes<T: Serialize>(v: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(v)
}

/// A value stored by [`to_bytes`], read back.
pub fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// `make()` encoded when `values`, else nothing (and `make` is not called).
fn encode_if<T: Serialize>(
    values: bool,
    make: impl FnOnce() -> T,
) -> Result<Vec<u8>, postcard::Error> {
    if values {
        to_bytes(&make())
    } else {
        Ok(Vec::new())
    }
}

/// Which command an event came from: its idempotency key and acting agency (events appended by
/// one command share both).
pub fn command_of(e: &Event) -> Option<(&str, &str)> {
    let env = e.envelope.as_ref()?;
    let agency = env.actor.as_ref().map_or("", |a| a.agency.as_str());
    Some((env.command_id.as_str(), agency))
}

fn count_verdict(c: &mut Counters, v: Verdict) {
    match v {
        Verdict::Early => c.early += 1,
        Verdict::OnTime => c.on_time += 1,
        Verdict::Late => c.late += 1,
    }
}

fn finish(rec: &mut DossierRecord, kind: FinishKind, at: Option<DateTime<Utc>>) {
    if rec.finished.is_none()
        && rec.withdrawn_at.is_none()
        && let Some(at) = at
    {
        rec.finished = Some((kind, at));
    }
}

fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::ResultReturned => "result-returned",
        Outcome::Refused => "refused",
        Outcome::Stopped => "stopped",
        Outcome::Withdrawn => "withdrawn",
        Outcome::Unspecified => "unspecified",
    }
}

/// The steps whose last record says open (cross-checks the slip).
fn state_open_steps(state: &DossierState) -> usize {
    state
        .steps
        .values()
        .filter(|s| s.status == StepStatus::Open)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_months_are_what_strftime_writes() {
        for (secs, nano) in [
            (0, 0),
            (-1, 0),
            (1_796_000_000, 5),
            (253_402_300_799, 0), // 9999-12-31
            (253_402_300_800, 0), // 10000-01-01
            (-62_167_219_200, 0), // 0000-01-01
            (-62_167_219_201, 0), // -0001-12-31
            (1_709_164_800, 0),   // 2024-02-29
        ] {
            let t = DateTime::from_timestamp(secs, nano).expect("instant");
            assert_eq!(
                local_month(None, t),
                t.date_naive().format("%Y-%m").to_string(),
                "{t:?}"
            );
        }
    }
}
