//! The dossier's state, and `evolve`: how one event changes it.
//!
//! `evolve` holds no rules and never fails: it records what the events say. An event that makes no
//! sense where it stands (a completion of a step that was never opened, anything after `Closed`)
//! is kept as an [`Anomaly`] for operators, never a panic; `decide` refuses to continue from a
//! state with anomalies.
//!
//! Rework is the one subtle part. The contract has no "step reset" event: when a step is sent back
//! for rework, the steps downstream of it keep their last record here. Which of them are current
//! is derived from the workflow graph and the order in which steps were routed and finished (see
//! [`DossierState::step_view`]): a step is current only if it was routed after every step it
//! waits for last finished. Per-step records carry those orders for that reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lienthong_proto::v1::{Applicant, Channel, DocumentRef, Event, Outcome, event::Body};
use lienthong_workflow::{AttrValue, OnReject, Step, Workflow};

use super::command::Addressee;
use super::convert::{attrs_from_proto, instant};
use super::timers::TimerKind;

/// Where a dossier stands, for listings and for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Nothing received yet (an empty stream).
    New,
    /// At least one step is with an agency.
    Processing,
    /// A supplement request is outstanding.
    AwaitingSupplement,
    /// Every step is done: the result waits to be returned.
    ReadyToReturn,
    /// The dossier's life is over.
    Closed(Outcome),
}

impl Status {
    /// Stable text for listings and queries: `processing`, `closed:refused` ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Processing => "processing",
            Status::AwaitingSupplement => "awaiting-supplement",
            Status::ReadyToReturn => "ready-to-return",
            Status::Closed(o) => match o {
                Outcome::ResultReturned => "closed:result-returned",
                Outcome::Refused => "closed:refused",
                Outcome::Stopped => "closed:stopped",
                Outcome::Withdrawn => "closed:withdrawn",
                Outcome::Unspecified => "closed:unspecified",
            },
        }
    }

    /// Whether the dossier's life is over.
    pub fn is_closed(&self) -> bool {
        matches!(self, Status::Closed(_))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's status as its last event recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepStatus {
    /// With its agency.
    Open,
    /// Done by its agency.
    Completed,
    /// Its condition was false; counts as done for joins.
    Skipped,
    /// Rejected by its agency and sent back (rework) or ended the dossier (refuse).
    Rejected,
}

impl StepStatus {
    /// Stable text.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepStatus::Open => "open",
            StepStatus::Completed => "completed",
            StepStatus::Skipped => "skipped",
            StepStatus::Rejected => "rejected",
        }
    }
}

/// A step's status in the routing view (derived with the workflow, see [`DossierState::step_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepView {
    /// Not reached yet, sent back, or waiting for an upstream step's rework.
    Pending,
    /// With its agency.
    Open,
    /// Done by its agency.
    Completed,
    /// Not needed (condition false); counts as done.
    Skipped,
    /// Rejected to a rework-only step: reopens when that step completes.
    AwaitingRework,
    /// A rework-only step that is not running; nothing waits for it, so it counts as done.
    Idle,
}

impl StepView {
    /// Completed or skipped: counts as done for joins.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            StepView::Completed | StepView::Skipped | StepView::Idle
        )
    }

    /// Stable text.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepView::Pending => "pending",
            StepView::Open => "open",
            StepView::Completed => "completed",
            StepView::Skipped => "skipped",
            StepView::AwaitingRework => "awaiting-rework",
            StepView::Idle => "idle",
        }
    }
}

/// What the events say about one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// The step id.
    pub id: String,
    /// The agency that does it.
    pub agency: String,
    /// As last recorded (see the module docs about rework).
    pub status: StepStatus,
    /// The budget text from the workflow (e.g. `1wd`), from the last opening.
    pub budget: String,
    /// When it was last opened (handed to its agency).
    pub opened_at: Option<DateTime<Utc>>,
    /// Its own deadline from the last opening.
    pub due: Option<DateTime<Utc>>,
    /// When `due` was last set: the last opening, or the last clock rule that moved it. A
    /// deadline's warning is armed only if its instant was still ahead then.
    pub due_set_at: Option<DateTime<Utc>>,
    /// When it was last completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The outcome name of the last completion.
    pub outcome: Option<String>,
    /// Documents of the last completion.
    pub results: Vec<DocumentRef>,
    /// Note of the last completion.
    pub note: String,
    /// When it was last skipped, and the condition that was false.
    pub skipped: Option<(Option<DateTime<Utc>>, String)>,
    /// When and why it was last rejected.
    pub rejected: Option<(Option<DateTime<Utc>>, String)>,
    /// How many times it was opened (more than one after rework).
    pub times_opened: u32,
    /// Event ordinal (see [`DossierState::applied`]) of the last opening or skip.
    pub routed_order: u64,
    /// Event ordinal of the last completion or skip (0: never finished).
    pub finished_order: u64,
    /// Event ordinal of the last rejection (0: never rejected).
    pub rejected_order: u64,
}

impl StepRecord {
    fn new(id: &str, agency: &str) -> Self {
        StepRecord {
            id: id.to_string(),
            agency: agency.to_string(),
            status: StepStatus::Open,
            budget: String::new(),
            opened_at: None,
            due: None,
            due_set_at: None,
            completed_at: None,
            outcome: None,
            results: Vec::new(),
            note: String::new(),
            skipped: None,
            rejected: None,
            times_opened: 0,
            routed_order: 0,
            finished_order: 0,
            rejected_order: 0,
        }
    }
}

/// One supplement request and, once it came, its provision.
#[derive(Clone, Debug, PartialEq)]
pub struct Supplement {
    /// 1 for the first request on the dossier, 2 for the second ...
    pub ordinal: u32,
    /// The asking step; `None` at intake.
    pub step: Option<String>,
    /// The asking agency.
    pub requested_by: String,
    /// Who must supplement.
    pub addressed_to: Addressee,
    /// What is missing.
    pub items: Vec<String>,
    /// Why.
    pub reason: String,
    /// When it was asked (the clock pauses or will restart from here).
    pub requested_at: Option<DateTime<Utc>>,
    /// Whether it was provided.
    pub provided: bool,
    /// When it was provided (the clock resumes or restarts from here).
    pub provided_at: Option<DateTime<Utc>>,
    /// What was handed in.
    pub documents: Vec<DocumentRef>,
    /// Flagged by the request: from the second request on, the dossier counts as late under the
    /// national rule (Decision 766).
    pub late_by_rule: bool,
}

impl Supplement {
    /// Whether it still waits for the supplement.
    pub fn is_outstanding(&self) -> bool {
        !self.provided
    }
}

/// The dossier's one apology and new appointment.
#[derive(Clone, Debug, PartialEq)]
pub struct Apology {
    /// The apologising agency.
    pub agency: String,
    /// The late step, if named.
    pub step: Option<String>,
    /// Why.
    pub reason: String,
    /// When it was issued.
    pub issued_at: Option<DateTime<Utc>>,
    /// The appointment before.
    pub previous_appointment: Option<DateTime<Utc>>,
    /// The appointment after.
    pub new_appointment: Option<DateTime<Utc>>,
    /// Issued later than 1 working day before the previous appointment.
    pub late: bool,
}

/// A deadline notice recorded by a timer (`DeadlineWarning` or `DeadlineMissed`).
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Warning or miss.
    pub kind: TimerKind,
    /// The step; `None` for the dossier's appointment.
    pub step: Option<String>,
    /// Who held the work.
    pub agency: String,
    /// The deadline noticed.
    pub due: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub at: Option<DateTime<Utc>>,
}

/// A change of the dossier's deadlines by a clock rule (`DeadlinesMoved`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeadlineMove {
    /// The rule: `supplement-pause`, `supplement-restart`, `intake-complete`, `payment-excluded`.
    pub rule: String,
    /// When it was recorded.
    pub at: Option<DateTime<Utc>>,
    /// The appointment before.
    pub previous_appointment: Option<DateTime<Utc>>,
    /// The appointment after.
    pub appointment: Option<DateTime<Utc>>,
    /// Working seconds excluded by a pause (0 for a restart).
    pub excluded_working_seconds: i64,
}

/// How and why the dossier ended (the act before `Closed`).
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// The acting agency (`citizen` for a withdrawal by the applicant).
    pub agency: String,
    /// The refusing step, for a refusal by a step.
    pub step: Option<String>,
    /// Why.
    pub reason: String,
    /// For a returned result: the documents handed back and how.
    pub results: Vec<DocumentRef>,
    /// For a returned result: the channel.
    pub channel: Channel,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// The closing of the dossier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closure {
    /// How it ended.
    pub outcome: Outcome,
    /// When.
    pub at: Option<DateTime<Utc>>,
}

/// Something in the history that `evolve` did not expect; kept, never a panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// The event's seq.
    pub seq: u64,
    /// What was unexpected.
    pub detail: String,
}

/// Everything `decide` needs and readers want, folded from the events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DossierState {
    /// Internal id (UUID text) from the envelopes.
    pub id: String,
    /// The dossier code for life, from the envelopes.
    pub code: String,
    /// Seq of the last event applied (the expected seq of the next append).
    pub seq: u64,
    /// Number of events applied: orders step routing (see the module docs).
    pub applied: u64,
    /// Procedure code; empty until received.
    pub procedure_code: String,
    /// Procedure version as written.
    pub procedure_version: u32,
    /// Content hash of the definition the dossier is pinned to.
    pub definition_hash: String,
    /// The one-stop desk that received it and returns the result.
    pub receiving_agency: String,
    /// How it was filed.
    pub channel: Channel,
    /// The applicant.
    pub applicant: Option<Applicant>,
    /// The typed attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Documents handed in at receipt.
    pub documents: Vec<DocumentRef>,
    /// When it was received (the receipt's recorded-at).
    pub received_at: Option<DateTime<Utc>>,
    /// The latest recorded-at of any event so far: the runtime never records an event of this
    /// dossier earlier than it, so a wall clock that steps back cannot reorder the stream.
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// When the clock started (cut-off and office hours applied).
    pub clock_started_at: Option<DateTime<Utc>>,
    /// The current appointment (after a clock rule or an apology moved it, the new one).
    pub appointment: Option<DateTime<Utc>>,
    /// When `appointment` was last set: the receipt, a clock rule or the apology that moved it.
    pub appointment_set_at: Option<DateTime<Utc>>,
    /// Calendar name the deadlines were computed with.
    pub calendar_name: String,
    /// Calendar content hash the dossier is pinned to.
    pub calendar_hash: String,
    /// The procedure's limit as written.
    pub limit: String,
    /// Steps that have been routed, by id.
    pub steps: BTreeMap<String, StepRecord>,
    /// Every routed step is done: the dossier is processed and waits for its result's return.
    pub processed: bool,
    /// When it became processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// Supplement requests in order.
    pub supplements: Vec<Supplement>,
    /// The apology, if issued.
    pub apology: Option<Apology>,
    /// Deadline changes by the clock rules, in order.
    pub deadline_moves: Vec<DeadlineMove>,
    /// Deadline warnings and misses recorded, in order.
    pub notices: Vec<Notice>,
    /// The act that ended the dossier (refusal, stop, withdrawal, returned result).
    pub ending: Option<Ending>,
    /// The closing.
    pub closed: Option<Closure>,
    /// Unexpected events, for operators.
    pub anomalies: Vec<Anomaly>,
}

impl DossierState {
    /// Where the dossier stands.
    pub fn status(&self) -> Status {
        if let Some(c) = &self.closed {
            Status::Closed(c.outcome)
        } else if !self.is_received() {
            Status::New
        } else if self.outstanding_supplement().is_some() {
            Status::AwaitingSupplement
        } else if self.processed {
            Status::ReadyToReturn
        } else {
            Status::Processing
        }
    }

    /// Whether a receipt was recorded.
    pub fn is_received(&self) -> bool {
        !self.procedure_code.is_empty()
    }

    /// Late under the national rule: more than one supplement request (Decision 766).
    pub fn late_by_rule(&self) -> bool {
        self.supplements.iter().any(|s| s.late_by_rule)
    }

    /// Working time the clock rules excluded so far (supplement pauses, payment waits).
    pub fn excluded_working_time(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(
            self.deadline_moves
                .iter()
                .map(|m| m.excluded_working_seconds)
                .sum(),
        )
    }

    /// Whether a notice of `kind` was recorded for the deadline `(step, due)`.
    pub fn noticed(&self, kind: TimerKind, step: Option<&str>, due: DateTime<Utc>) -> bool {
        self.notices
            .iter()
            .any(|n| n.kind == kind && n.step.as_deref() == step && n.due == Some(due))
    }

    /// The supplement request waiting for an answer, if any.
    pub fn outstanding_supplement(&self) -> Option<&Supplement> {
        self.supplements.last().filter(|s| s.is_outstanding())
    }

    /// The routing view of every step of `workflow`, in the workflow's (topological) order.
    ///
    /// A step is current when it was routed (opened or skipped) after every step it waits for
    /// last finished, and every one of those is done in this view; a step that is not current
    /// is pending, whatever its last record says. That is how a rework sends downstream steps
    /// back to pending without a dedicated event. A step rejected to a rework-only step awaits
    /// that step's next completion; a rework-only step is open, completed or idle.
    pub fn step_view(&self, workflow: &Workflow) -> Vec<(String, StepView)> {
        let mut view: BTreeMap<&str, StepView> = BTreeMap::new();
        let mut out = Vec::with_capacity(workflow.steps.len());
        for step in &workflow.steps {
            let rec = self.steps.get(&step.id.0);
            let v = if step.rework_only {
                match rec.map(|r| r.status) {
                    Some(StepStatus::Open) => StepView::Open,
                    Some(StepStatus::Completed) => StepView::Completed,
                    _ => StepView::Idle,
                }
            } else if let Some(rec) = rec {
                let afters_done = step
                    .after
                    .iter()
                    .all(|a| view.get(a.0.as_str()).is_some_and(StepView::is_done));
                let last_after_finish = step
                    .after
                    .iter()
                    .filter_map(|a| self.steps.get(&a.0))
                    .map(|r| r.finished_order)
                    .max()
                    .unwrap_or(0);
                if !afters_done || rec.routed_order <= last_after_finish {
                    StepView::Pending
                } else {
                    match rec.status {
                        StepStatus::Open => StepView::Open,
                        StepStatus::Completed => StepView::Completed,
                        StepStatus::Skipped => StepView::Skipped,
                        StepStatus::Rejected => self.after_rejection(workflow, step, rec),
                    }
                }
            } else {
                StepView::Pending
            };
            view.insert(step.id.0.as_str(), v);
            out.push((step.id.0.clone(), v));
        }
        out
    }

    /// A current, rejected step: awaiting its rework-only target until that target completes
    /// after the rejection; otherwise pending (routed again once its `after` are done).
    fn after_rejection(&self, workflow: &Workflow, step: &Step, rec: &StepRecord) -> StepView {
        if let OnReject::Rework(target) = &step.on_reject
            && workflow.step(&target.0).is_some_and(|t| t.rework_only)
        {
            let back = self.steps.get(&target.0).is_some_and(|t| {
                t.status == StepStatus::Completed && t.finished_order > rec.rejected_order
            });
            if !back {
                return StepView::AwaitingRework;
            }
        }
        StepView::Pending
    }

    fn anomaly(&mut self, detail: String) {
        self.anomalies.push(Anomaly {
            seq: self.seq,
            detail,
        });
    }

    fn step_mut(&mut self, id: &str, agency: &str) -> &mut StepRecord {
        self.steps
            .entry(id.to_string())
            .or_insert_with(|| StepRecord::new(id, agency))
    }
}

/// Applies one event. Never fails: surprises become anomalies.
pub fn evolve(mut state: DossierState, event: &Event) -> DossierState {
    let env = event.envelope.as_ref();
    let at = env.and_then(|e| instant(e.recorded_at.as_ref()));
    state.last_recorded_at = state.last_recorded_at.max(at);
    if let Some(env) = env {
        state.seq = env.seq;
        if !env.dossier_code.is_empty() {
            state.code.clone_from(&env.dossier_code);
        }
        if !env.dossier_id.is_empty() {
            state.id.clone_from(&env.dossier_id);
        }
    } else {
        state.anomaly("event without envelope".into());
    }
    state.applied += 1;
    let order = state.applied;
    let Some(body) = &event.body else {
        state.anomaly("event with an unknown or empty body".into());
        return state;
    };
    if let Some(c) = &state.closed {
        let outcome = c.outcome.as_str_name();
        state.anomaly(format!("event after the dossier was closed ({outcome})"));
        return state;
    }
    if !state.is_received() && !matches!(body, Body::Received(_)) {
        state.anomaly("event before the receipt".into());
    }
    match body {
        Body::Received(r) => {
            if state.is_received() {
                state.anomaly("second receipt".into());
                return state;
            }
            state.procedure_code.clone_from(&r.procedure_code);
            state.procedure_version = r.procedure_version;
            state.definition_hash.clone_from(&r.definition_hash);
            state.receiving_agency.clone_from(&r.receiving_agency);
            state.channel = Channel::try_from(r.channel).unwrap_or(Channel::Unspecified);
            state.applicant.clone_from(&r.applicant);
            match attrs_from_proto(&r.attributes) {
                Ok(a) => state.attributes = a,
                Err(e) => state.anomaly(format!("receipt: {e}")),
            }
            state.documents.clone_from(&r.documents);
            state.received_at = at;
            state.clock_started_at = instant(r.clock_started_at.as_ref());
            state.appointment = instant(r.appointment.as_ref());
            state.appointment_set_at = at;
            state.calendar_name.clone_from(&r.calendar_name);
            state.calendar_hash.clone_from(&r.calendar_hash);
            state.limit.clone_from(&r.limit);
        }
        Body::StepOpened(o) => {
            let rec = state.step_mut(&o.step_id, &o.agency);
            rec.agency.clone_from(&o.agency);
            rec.status = StepStatus::Open;
            rec.budget.clone_from(&o.budget);
            rec.opened_at = at;
            rec.due = instant(o.due.as_ref());
            rec.due_set_at = at;
            rec.completed_at = None;
            rec.outcome = None;
            rec.results.clear();
            rec.note.clear();
            rec.times_opened += 1;
            rec.routed_order = order;
        }
        Body::StepCompleted(c) => {
            let was_open = state
                .steps
                .get(&c.step_id)
                .is_some_and(|r| r.status == StepStatus::Open);
            if !was_open {
                state.anomaly(format!("step `{}` completed while not open", c.step_id));
            }
            let rec = state.step_mut(&c.step_id, &c.agency);
            rec.status = StepStatus::Completed;
            rec.completed_at = at;
            rec.outcome = Some(c.outcome.clone());
            rec.results.clone_from(&c.results);
            rec.note.clone_from(&c.note);
            rec.finished_order = order;
        }
        Body::StepRejected(r) => {
            let was_open = state
                .steps
                .get(&r.step_id)
                .is_some_and(|s| s.status == StepStatus::Open);
            if !was_open {
                state.anomaly(format!("step `{}` rejected while not open", r.step_id));
            }
            let rec = state.step_mut(&r.step_id, &r.agency);
            rec.status = StepStatus::Rejected;
            rec.rejected = Some((at, r.reason.clone()));
            rec.rejected_order = order;
        }
        Body::StepSkipped(s) => {
            let rec = state.step_mut(&s.step_id, &s.agency);
            rec.status = StepStatus::Skipped;
            rec.skipped = Some((at, s.condition.clone()));
            rec.opened_at = None;
            rec.due = None;
            rec.routed_order = order;
            rec.finished_order = order;
        }
        Body::SupplementRequested(r) => {
            if let Some(s) = state.outstanding_supplement() {
                let n = s.ordinal;
                state.anomaly(format!("supplement requested while #{n} is outstanding"));
            }
            state.supplements.push(Supplement {
                ordinal: r.ordinal,
                step: (!r.step_id.is_empty()).then(|| r.step_id.clone()),
                requested_by: r.requested_by.clone(),
                addressed_to: Addressee::parse(&r.addressed_to),
                items: r.items.clone(),
                reason: r.reason.clone(),
                requested_at: at,
                provided: false,
                provided_at: None,
                documents: Vec::new(),
                late_by_rule: r.late_by_rule,
            });
        }
        Body::SupplementProvided(p) => match state.supplements.last_mut() {
            Some(s) if s.is_outstanding() => {
                s.provided = true;
                s.provided_at = at;
                s.documents.clone_from(&p.documents);
            }
            _ => state.anomaly("supplement provided while none was outstanding".into()),
        },
        Body::Refused(r) => {
            state.ending = Some(Ending {
                agency: r.agency.clone(),
                step: (!r.step_id.is_empty()).then(|| r.step_id.clone()),
                reason: r.reason.clone(),
                results: Vec::new(),
                channel: Channel::Unspecified,
                at,
            });
        }
        Body::ProcessingStopped(s) => {
            state.ending = Some(Ending {
                agency: s.agency.clone(),
                step: None,
                reason: s.reason.clone(),
                results: Vec::new(),
                channel: Channel::Unspecified,
                at,
            });
        }
        Body::Withdrawn(w) => {
            let agency = env
                .and_then(|e| e.actor.as_ref())
                .map(|a| a.agency.clone())
                .unwrap_or_default();
            state.ending = Some(Ending {
                agency,
                step: None,
                reason: w.reason.clone(),
                results: Vec::new(),
                channel: Channel::Unspecified,
                at,
            });
        }
        Body::DeadlinesMoved(m) => {
            let previous_appointment = state.appointment;
            if let Some(t) = instant(m.appointment.as_ref()) {
                state.appointment = Some(t);
                state.appointment_set_at = at;
            }
            state.deadline_moves.push(DeadlineMove {
                rule: m.rule.clone(),
                at,
                previous_appointment,
                appointment: state.appointment,
                excluded_working_seconds: m.excluded_working_seconds,
            });
            for d in &m.steps {
                match state.steps.get_mut(&d.step_id) {
                    Some(rec) => {
                        rec.due = instant(d.due.as_ref());
                        rec.due_set_at = at;
                    }
                    None => {
                        state.anomaly(format!("deadline moved for unknown step `{}`", d.step_id))
                    }
                }
            }
        }
        Body::DeadlineWarning(w) => state.notices.push(Notice {
            kind: TimerKind::Warning,
            step: (!w.step_id.is_empty()).then(|| w.step_id.clone()),
            agency: w.agency.clone(),
            due: instant(w.due.as_ref()),
            at,
        }),
        Body::DeadlineMissed(m) => state.notices.push(Notice {
            kind: TimerKind::Missed,
            step: (!m.step_id.is_empty()).then(|| m.step_id.clone()),
            agency: m.agency.clone(),
            due: instant(m.due.as_ref()),
            at,
        }),
        // A record of the bus's delivery, not of the procedure: nothing changes for the state
        // machine (the read models show it).
        Body::TaskUndeliverable(_) => {}
        Body::ApologyIssued(a) => {
            if state.apology.is_some() {
                state.anomaly("second apology".into());
            }
            let new_appointment = instant(a.new_appointment.as_ref());
            state.apology = Some(Apology {
                agency: a.agency.clone(),
                step: (!a.step_id.is_empty()).then(|| a.step_id.clone()),
                reason: a.reason.clone(),
                issued_at: at,
                previous_appointment: instant(a.previous_appointment.as_ref()),
                new_appointment,
                late: a.late,
            });
            if new_appointment.is_some() {
                state.appointment = new_appointment;
                state.appointment_set_at = at;
            }
        }
        Body::ResultReturned(r) => {
            state.ending = Some(Ending {
                agency: r.agency.clone(),
                step: None,
                reason: String::new(),
                results: r.results.clone(),
                channel: Channel::try_from(r.channel).unwrap_or(Channel::Unspecified),
                at,
            });
        }
        Body::Closed(c) => {
            state.closed = Some(Closure {
                outcome: Outcome::try_from(c.outcome).unwrap_or(Outcome::Unspecified),
                at,
            });
        }
    }
    // Processed: every routed step is done. Routing happens in the same decision as the
    // completion that allows it, so a transient "all done" between a completion and the
    // openings that follow it is reset by those openings.
    let all_done = !state.steps.is_empty()
        && state
            .steps
            .values()
            .all(|s| matches!(s.status, StepStatus::Completed | StepStatus::Skipped));
    if all_done && !state.processed {
        state.processed_at = at;
    } else if !all_done {
        state.processed_at = None;
    }
    state.processed = all_done;
    state
}

/// The state after all `events`, in order.
pub fn fold(events: &[Event]) -> DossierState {
    events.iter().fold(DossierState::default(), evolve)
}

/// The state as it was at `instant`: the longest prefix of `events` recorded at or before it.
///
/// A prefix, not a filter: if the engine's clock ever stepped back, a later event with an earlier
/// time must not be folded without the events before it.
pub fn state_at(events: &[Event], instant_max: DateTime<Utc>) -> DossierState {
    events
        .iter()
        .take_while(|e| {
            e.envelope
                .as_ref()
                .and_then(|env| instant(env.recorded_at.as_ref()))
                .is_some_and(|t| t <= instant_max)
        })
        .fold(DossierState::default(), evolve)
}
