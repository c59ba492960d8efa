//! `decide`: every rule of the dossier, and the routing that follows each act.
//!
//! `decide` is pure: the time, the actor, the pinned workflow and the calendar come in a
//! [`DecideContext`]; it reads no clock, no randomness and no storage. It returns the event
//! bodies to append (the runtime wraps them in envelopes) or a [`Rejection`] and no event.
//!
//! Routing after an act runs on a scratch copy of the state that each decided body is applied to
//! with [`evolve`], exactly as the runtime will apply it: what `decide` routes from is what
//! readers will see, so the two cannot drift apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lienthong_calendar::{Calendar, Duration};
use lienthong_proto::v1::{self as pb, Actor, Envelope, Event, Outcome, event::Body};
use lienthong_workflow::{AttrType, AttrValue, OnReject, Step, StepId, Workflow};

use super::clock;
use super::command::{
    Addressee, CITIZEN, Command, CompleteStep, Document, ENGINE, FireTimer, IssueApology,
    ProvideSupplement, RecordUndeliverable, Refuse, RejectStep, RequestSupplement, ReturnResult,
    Stop, Submit, Withdraw,
};
use super::convert::{attrs_to_proto, timestamp};
use super::rejection::{AttributeProblem, Rejection, when};
use super::state::{DossierState, Status, StepView, evolve};
use super::timers::{TimerKind, current_deadlines};

/// Most documents one command may carry.
pub const DOCUMENTS_PER_COMMAND_MAX: usize = 100;
/// Most attributes one dossier may carry.
pub const ATTRIBUTES_MAX: usize = 200;
/// Most items one supplement request may list.
pub const ITEMS_PER_REQUEST_MAX: usize = 100;
/// Longest reason, note, item or outcome, in bytes.
pub const TEXT_BYTES_MAX: usize = 4000;

/// Everything `decide` needs besides the state and the command.
#[derive(Clone, Copy)]
pub struct DecideContext<'a> {
    /// The engine's time of the decision (passed in; never read inside).
    pub now: DateTime<Utc>,
    /// Who acts: the agency code decides what it may do.
    pub actor: &'a Actor,
    /// The workflow definition the dossier is pinned to (for a submission: the current one).
    pub workflow: &'a Workflow,
    /// The working-day calendar of the workflow.
    pub calendar: &'a Calendar,
}

/// Decides what `command` does to a dossier in `state`: the events to append, or why not.
pub fn decide(
    state: &DossierState,
    command: &Command,
    ctx: &DecideContext<'_>,
) -> Result<Vec<Body>, Rejection> {
    let d = Decision::new(state, ctx);
    match command {
        Command::Submit(c) => d.submit(c),
        Command::CompleteStep(c) => d.guarded()?.complete_step(c),
        Command::RejectStep(c) => d.guarded()?.reject_step(c),
        Command::RequestSupplement(c) => d.guarded()?.request_supplement(c),
        Command::ProvideSupplement(c) => d.guarded()?.provide_supplement(c),
        Command::Refuse(c) => d.guarded()?.refuse(c),
        Command::Stop(c) => d.guarded()?.stop(c),
        Command::Withdraw(c) => d.guarded()?.withdraw(c),
        Command::IssueApology(c) => d.guarded()?.issue_apology(c),
        Command::ReturnResult(c) => d.guarded()?.return_result(c),
        // A timer of a dossier that ended (or never began) is stale: nothing to record.
        Command::FireTimer(_) if state.closed.is_some() || !state.is_received() => Ok(Vec::new()),
        Command::FireTimer(c) => d.guarded()?.fire_timer(c),
        // A dead letter of a dossier that ended (or never began) changes nothing for anyone.
        Command::RecordUndeliverable(_) if state.closed.is_some() || !state.is_received() => {
            Ok(Vec::new())
        }
        Command::RecordUndeliverable(c) => d.guarded()?.record_undeliverable(c),
    }
}

/// The dossier's name in messages: its code, else its id.
fn name(state: &DossierState) -> String {
    if !state.code.is_empty() {
        state.code.clone()
    } else if !state.id.is_empty() {
        state.id.clone()
    } else {
        "(new dossier)".to_string()
    }
}

/// Rejections common to every command on an existing dossier.
fn guard_open(state: &DossierState, ctx: &DecideContext<'_>) -> Result<(), Rejection> {
    if let Some(c) = &state.closed {
        let outcome = Status::Closed(c.outcome).as_str();
        return Err(Rejection::Closed {
            dossier: name(state),
            outcome: outcome.trim_start_matches("closed:").to_string(),
            since: when(c.at),
        });
    }
    if !state.is_received() {
        return Err(Rejection::NotReceived);
    }
    if let Some(a) = state.anomalies.first() {
        return Err(Rejection::Inconsistent {
            dossier: name(state),
            detail: format!(
                "event {} is unexpected ({}); an operator must review its history",
                a.seq, a.detail
            ),
        });
    }
    if state.definition_hash != ctx.workflow.hash {
        return Err(Rejection::Inconsistent {
            dossier: name(state),
            detail: format!(
                "it is pinned to definition {} but was given {}",
                state.definition_hash, ctx.workflow.hash
            ),
        });
    }
    Ok(())
}

fn text_limit(what: &str, text: &str) -> Result<(), Rejection> {
    if text.len() > TEXT_BYTES_MAX {
        return Err(Rejection::TooLarge {
            what: what.to_string(),
            max: TEXT_BYTES_MAX,
            got: text.len(),
        });
    }
    Ok(())
}

fn reason_required(action: &str, reason: &str) -> Result<(), Rejection> {
    if reason.trim().is_empty() {
        return Err(Rejection::ReasonRequired {
            action: action.to_string(),
        });
    }
    text_limit("the reason", reason)
}

fn documents(docs: &[Document]) -> Result<Vec<pb::DocumentRef>, Rejection> {
    if docs.len() > DOCUMENTS_PER_COMMAND_MAX {
        return Err(Rejection::TooLarge {
            what: "the document list".to_string(),
            max: DOCUMENTS_PER_COMMAND_MAX,
            got: docs.len(),
        });
    }
    Ok(docs.iter().map(pb::DocumentRef::from).collect())
}

fn calendar_err(e: impl std::fmt::Display) -> Rejection {
    Rejection::Calendar(e.to_string())
}

fn type_name(t: AttrType) -> &'static str {
    match t {
        AttrType::Text => "text",
        AttrType::Integer => "an integer",
        AttrType::Boolean => "a boolean",
        AttrType::Date => "a date",
    }
}

/// Checks submitted attributes against the declaration; lists every problem, by name.
fn check_attributes(
    workflow: &Workflow,
    attrs: &BTreeMap<String, AttrValue>,
) -> Result<(), Rejection> {
    if attrs.len() > ATTRIBUTES_MAX {
        return Err(Rejection::TooLarge {
            what: "the attribute map".to_string(),
            max: ATTRIBUTES_MAX,
            got: attrs.len(),
        });
    }
    let mut problems = Vec::new();
    for (name, value) in attrs {
        match workflow.attributes.get(name) {
            None => problems.push(AttributeProblem::Undeclared { name: name.clone() }),
            Some(spec) if spec.ty != value.attr_type() => {
                problems.push(AttributeProblem::WrongType {
                    name: name.clone(),
                    expected: type_name(spec.ty).to_string(),
                    got: type_name(value.attr_type()).to_string(),
                });
            }
            Some(_) => {}
        }
        if let AttrValue::Text(t) = value {
            text_limit(&format!("attribute `{name}`"), t)?;
        }
    }
    for (name, spec) in &workflow.attributes {
        if spec.required && !attrs.contains_key(name) {
            problems.push(AttributeProblem::Missing { name: name.clone() });
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by(|a, b| a.name().cmp(b.name()));
    Err(Rejection::Attributes {
        procedure: workflow.code.clone(),
        problems,
    })
}

/// One decision in progress: the bodies decided so far and the state they lead to.
struct Decision<'c> {
    /// The state with every decided body applied.
    scratch: DossierState,
    /// The decided bodies, in order.
    out: Vec<Body>,
    /// The context.
    ctx: &'c DecideContext<'c>,
}

impl<'c> Decision<'c> {
    fn new(state: &DossierState, ctx: &'c DecideContext<'c>) -> Self {
        Decision {
            scratch: state.clone(),
            out: Vec::new(),
            ctx,
        }
    }

    /// Passes only a received, open, consistent dossier.
    fn guarded(self) -> Result<Self, Rejection> {
        guard_open(&self.scratch, self.ctx)?;
        Ok(self)
    }

    fn wf(&self) -> &'c Workflow {
        self.ctx.workflow
    }

    fn actor(&self) -> &'c str {
        &self.ctx.actor.agency
    }

    fn dossier(&self) -> String {
        name(&self.scratch)
    }

    fn is_receiving(&self) -> bool {
        self.actor() == self.wf().receiving_agency.0
    }

    /// Decides a body: applies it to the scratch state as the runtime will, and keeps it.
    fn emit(&mut self, body: Body) {
        let event = Event {
            envelope: Some(Envelope {
                dossier_id: self.scratch.id.clone(),
                dossier_code: self.scratch.code.clone(),
                seq: self.scratch.seq + 1,
                global_position: 0,
                recorded_at: Some(timestamp(self.ctx.now)),
                actor: Some(self.ctx.actor.clone()),
                command_id: String::new(),
                prev_hash: Vec::new(),
            }),
            body: Some(body),
        };
        self.scratch = evolve(std::mem::take(&mut self.scratch), &event);
        if let Some(body) = event.body {
            self.out.push(body);
        }
    }

    fn finish(self) -> Result<Vec<Body>, Rejection> {
        Ok(self.out)
    }

    fn view(&self) -> BTreeMap<String, StepView> {
        self.scratch.step_view(self.wf()).into_iter().collect()
    }

    fn step(&self, id: &StepId) -> Result<&'c Step, Rejection> {
        self.wf().step(&id.0).ok_or_else(|| Rejection::UnknownStep {
            procedure: self.wf().code.clone(),
            step: id.0.clone(),
        })
    }

    /// The step exists, is open, and the actor is its agency (or, when `receiving_may`, the
    /// receiving agency).
    fn open_step_of_actor(&self, id: &StepId, receiving_may: bool) -> Result<&'c Step, Rejection> {
        let step = self.step(id)?;
        if step.agency.0 != self.actor() && !(receiving_may && self.is_receiving()) {
            return Err(Rejection::NotYourStep {
                step: step.id.0.clone(),
                owner: step.agency.0.clone(),
                actor: self.actor().to_string(),
            });
        }
        let status = self
            .view()
            .get(&step.id.0)
            .copied()
            .unwrap_or(StepView::Pending);
        if status != StepView::Open {
            return Err(Rejection::StepNotOpen {
                dossier: self.dossier(),
                step: step.id.0.clone(),
                status: status.as_str().to_string(),
            });
        }
        Ok(step)
    }

    /// Whether the actor is the agency of an open step.
    fn actor_has_open_step(&self) -> bool {
        let view = self.view();
        self.wf()
            .steps
            .iter()
            .any(|s| s.agency.0 == self.actor() && view.get(&s.id.0) == Some(&StepView::Open))
    }

    /// The receiving agency or the agency of an open step.
    fn require_receiving_or_open_step(&self, action: &str) -> Result<(), Rejection> {
        if self.is_receiving() || self.actor_has_open_step() {
            return Ok(());
        }
        Err(Rejection::NotAllowed {
            actor: self.actor().to_string(),
            action: action.to_string(),
            dossier: self.dossier(),
            allowed: format!(
                "the receiving agency `{}` or the agency of an open step",
                self.wf().receiving_agency
            ),
        })
    }

    /// Rejects acting on `step` while a supplement it (or the intake desk) asked for is out.
    fn not_awaiting_supplement(&self, step: &Step) -> Result<(), Rejection> {
        if let Some(s) = self.scratch.outstanding_supplement() {
            let blocks = match &s.step {
                None => true,
                Some(asking) => asking == &step.id.0,
            };
            if blocks {
                return Err(Rejection::AwaitingSupplement {
                    step: step.id.0.clone(),
                    ordinal: s.ordinal,
                    addressed_to: s.addressed_to.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Opens a step: due from the later of now and the clock start, by the step's budget.
    fn open(&mut self, step: &Step) -> Result<(), Rejection> {
        let now = self.ctx.now;
        let base = clock::clock_base(&self.scratch, self.wf(), self.ctx.calendar)
            .map_err(calendar_err)?
            .map_or(now, |c| c.max(now));
        let due = self
            .ctx
            .calendar
            .add(base, step.budget)
            .map_err(calendar_err)?;
        self.emit(Body::StepOpened(pb::StepOpened {
            step_id: step.id.0.clone(),
            agency: step.agency.0.clone(),
            budget: step.budget.to_string(),
            due: Some(timestamp(due)),
            calendar_hash: self.ctx.calendar.hash().to_string(),
        }));
        Ok(())
    }

    /// Routes every pending step whose `after` are all done, in topological order, cascading
    /// through skips: opened when its condition holds (or it has none), skipped otherwise.
    fn route(&mut self) -> Result<(), Rejection> {
        let rounds_max = self.wf().steps.len() + 1;
        for _ in 0..rounds_max {
            let view = self.view();
            let next = self.wf().steps.iter().find(|s| {
                !s.rework_only
                    && view.get(&s.id.0) == Some(&StepView::Pending)
                    && s.after
                        .iter()
                        .all(|a| view.get(&a.0).is_some_and(StepView::is_done))
            });
            let Some(step) = next else {
                return Ok(());
            };
            let holds = match &step.when {
                None => true,
                Some(cond) => {
                    cond.evaluate(&self.scratch.attributes)
                        .map_err(|e| Rejection::Condition {
                            step: step.id.0.clone(),
                            message: e.to_string(),
                        })?
                }
            };
            if holds {
                self.open(step)?;
            } else {
                let condition = step
                    .when
                    .as_ref()
                    .map(|c| c.source().to_string())
                    .unwrap_or_default();
                self.emit(Body::StepSkipped(pb::StepSkipped {
                    step_id: step.id.0.clone(),
                    agency: step.agency.0.clone(),
                    condition,
                }));
            }
        }
        Err(Rejection::Inconsistent {
            dossier: self.dossier(),
            detail: "routing did not settle; the workflow graph is not a DAG".to_string(),
        })
    }

    fn close(&mut self, outcome: Outcome) {
        self.emit(Body::Closed(pb::Closed {
            outcome: outcome as i32,
        }));
    }

    fn submit(mut self, c: &Submit) -> Result<Vec<Body>, Rejection> {
        let state = &self.scratch;
        if let Some(closed) = &state.closed {
            return Err(Rejection::Closed {
                dossier: name(state),
                outcome: Status::Closed(closed.outcome)
                    .as_str()
                    .trim_start_matches("closed:")
                    .to_string(),
                since: when(closed.at),
            });
        }
        if state.is_received() {
            return Err(Rejection::AlreadyReceived {
                dossier: name(state),
            });
        }
        let wf = self.wf();
        if c.procedure_code != wf.code {
            return Err(Rejection::WrongProcedure {
                expected: wf.code.clone(),
                got: c.procedure_code.clone(),
            });
        }
        if !self.is_receiving() && self.actor() != CITIZEN {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: "file a dossier".to_string(),
                dossier: self.dossier(),
                allowed: format!(
                    "the receiving agency `{}` or the citizen",
                    wf.receiving_agency
                ),
            });
        }
        check_attributes(wf, &c.attributes)?;
        let docs = documents(&c.documents)?;
        let cal = self.ctx.calendar;
        let clock_start = cal
            .clock_start(self.ctx.now, wf.cutoff)
            .map_err(calendar_err)?;
        let appointment = cal.add(clock_start, wf.limit).map_err(calendar_err)?;
        self.emit(Body::Received(pb::DossierReceived {
            procedure_code: wf.code.clone(),
            procedure_version: wf.version,
            definition_hash: wf.hash.clone(),
            receiving_agency: wf.receiving_agency.0.clone(),
            channel: c.channel as i32,
            applicant: Some(pb::Applicant::from(&c.applicant)),
            attributes: attrs_to_proto(&c.attributes),
            documents: docs,
            clock_started_at: Some(timestamp(clock_start)),
            appointment: Some(timestamp(appointment)),
            calendar_name: cal.view_name(),
            calendar_hash: cal.hash().to_string(),
            limit: wf.limit.to_string(),
        }));
        self.route()?;
        self.finish()
    }

    fn complete_step(mut self, c: &CompleteStep) -> Result<Vec<Body>, Rejection> {
        let step = self.open_step_of_actor(&c.step, false)?;
        self.not_awaiting_supplement(step)?;
        text_limit("the outcome", &c.outcome)?;
        text_limit("the note", &c.note)?;
        let results = documents(&c.results)?;
        self.emit(Body::StepCompleted(pb::StepCompleted {
            step_id: step.id.0.clone(),
            agency: step.agency.0.clone(),
            outcome: c.outcome.clone(),
            results,
            note: c.note.clone(),
        }));
        if step.payment
            && let Some(m) = clock::after_payment(
                &self.scratch,
                self.wf(),
                self.ctx.calendar,
                &step.id.0,
                self.ctx.now,
            )
            .map_err(calendar_err)?
        {
            self.emit(Body::DeadlinesMoved(m));
        }
        self.route()?;
        self.finish()
    }

    fn reject_step(mut self, c: &RejectStep) -> Result<Vec<Body>, Rejection> {
        let step = self.open_step_of_actor(&c.step, false)?;
        self.not_awaiting_supplement(step)?;
        reason_required("reject a step", &c.reason)?;
        self.emit(Body::StepRejected(pb::StepRejected {
            step_id: step.id.0.clone(),
            agency: step.agency.0.clone(),
            reason: c.reason.clone(),
        }));
        match &step.on_reject {
            OnReject::Refuse => {
                self.emit(Body::Refused(pb::Refused {
                    step_id: step.id.0.clone(),
                    agency: step.agency.0.clone(),
                    reason: c.reason.clone(),
                }));
                self.close(Outcome::Refused);
            }
            OnReject::Rework(target) => {
                let target = self
                    .wf()
                    .step(&target.0)
                    .ok_or_else(|| Rejection::Inconsistent {
                        dossier: self.dossier(),
                        detail: format!(
                            "step `{}` sends rework to `{}`, which the workflow does not have",
                            step.id, target
                        ),
                    })?;
                // The target and everything downstream of it become pending through the
                // step view (routed before the target's new finish); only the target reopens.
                // A rework-only target may already be open for another step's rejection.
                let target_open = self.view().get(&target.id.0) == Some(&StepView::Open);
                if !target_open {
                    self.open(target)?;
                }
                self.route()?;
            }
        }
        self.finish()
    }

    fn request_supplement(mut self, c: &RequestSupplement) -> Result<Vec<Body>, Rejection> {
        let step_id = match &c.step {
            Some(id) => {
                let step = self.open_step_of_actor(id, false)?;
                if !step.supplement {
                    return Err(Rejection::SupplementNotAllowed {
                        step: step.id.0.clone(),
                    });
                }
                step.id.0.clone()
            }
            None => {
                if !self.is_receiving() {
                    return Err(Rejection::NotAllowed {
                        actor: self.actor().to_string(),
                        action: "ask for a supplement at intake".to_string(),
                        dossier: self.dossier(),
                        allowed: format!("the receiving agency `{}`", self.wf().receiving_agency),
                    });
                }
                String::new()
            }
        };
        if let Some(s) = self.scratch.outstanding_supplement() {
            return Err(Rejection::SupplementOutstanding {
                dossier: self.dossier(),
                ordinal: s.ordinal,
                requested_by: s.requested_by.clone(),
            });
        }
        if c.items.is_empty() {
            return Err(Rejection::NoItems);
        }
        if c.items.len() > ITEMS_PER_REQUEST_MAX {
            return Err(Rejection::TooLarge {
                what: "the item list".to_string(),
                max: ITEMS_PER_REQUEST_MAX,
                got: c.items.len(),
            });
        }
        for item in &c.items {
            text_limit("an item", item)?;
        }
        text_limit("the reason", &c.reason)?;
        if let Addressee::Agency(a) = &c.addressed_to
            && (a.0.is_empty() || a.0 == self.actor())
        {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: format!("address a supplement request to `{a}`"),
                dossier: self.dossier(),
                allowed: "requests addressed to the citizen or to another agency".to_string(),
            });
        }
        let ordinal = u32::try_from(self.scratch.supplements.len() + 1).unwrap_or(u32::MAX);
        // Decision 766: more than one request to the *citizen* makes the dossier late; requests
        // between agencies do not count.
        let to_citizen = c.addressed_to == Addressee::Citizen;
        let citizen_before = self
            .scratch
            .supplements
            .iter()
            .filter(|s| s.addressed_to == Addressee::Citizen)
            .count();
        self.emit(Body::SupplementRequested(pb::SupplementRequested {
            step_id,
            requested_by: self.actor().to_string(),
            items: c.items.clone(),
            reason: c.reason.clone(),
            addressed_to: c.addressed_to.as_str().to_string(),
            ordinal,
            late_by_rule: to_citizen && citizen_before >= 1,
        }));
        self.finish()
    }

    fn provide_supplement(mut self, c: &ProvideSupplement) -> Result<Vec<Body>, Rejection> {
        let Some(s) = self.scratch.outstanding_supplement() else {
            return Err(Rejection::NoSupplementOutstanding {
                dossier: self.dossier(),
            });
        };
        let (allowed, who) = match &s.addressed_to {
            Addressee::Citizen => (
                self.actor() == CITIZEN || self.is_receiving(),
                format!(
                    "the citizen or the receiving agency `{}`",
                    self.wf().receiving_agency
                ),
            ),
            Addressee::Agency(a) => (self.actor() == a.0, format!("the addressed agency `{a}`")),
        };
        if !allowed {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: format!("answer supplement request #{}", s.ordinal),
                dossier: self.dossier(),
                allowed: who,
            });
        }
        let step_id = s.step.clone().unwrap_or_default();
        text_limit("the note", &c.note)?;
        let docs = documents(&c.documents)?;
        // Only the citizen's supplement time moves the clock (Decision 766 subtracts the time the
        // citizen spent supplementing); a request between agencies is the agencies' own time.
        let moved = if s.addressed_to == Addressee::Citizen {
            let m = clock::after_supplement(
                &self.scratch,
                self.wf(),
                self.ctx.calendar,
                s,
                self.ctx.now,
            )
            .map_err(calendar_err)?;
            // A pause that excluded no working time (asked after hours, answered before the next
            // opening) moves nothing: recording it would only restate the deadlines.
            let nothing =
                m.rule == clock::rule::SUPPLEMENT_PAUSE && m.excluded_working_seconds == 0;
            (!nothing).then_some(m)
        } else {
            None
        };
        self.emit(Body::SupplementProvided(pb::SupplementProvided {
            step_id,
            documents: docs,
            note: c.note.clone(),
        }));
        if let Some(m) = moved {
            self.emit(Body::DeadlinesMoved(m));
        }
        self.finish()
    }

    fn refuse(mut self, c: &Refuse) -> Result<Vec<Body>, Rejection> {
        let step_id = match &c.step {
            Some(id) => self.open_step_of_actor(id, true)?.id.0.clone(),
            None => {
                self.require_receiving_or_open_step("refuse the dossier")?;
                String::new()
            }
        };
        reason_required("refuse a dossier", &c.reason)?;
        self.emit(Body::Refused(pb::Refused {
            step_id,
            agency: self.actor().to_string(),
            reason: c.reason.clone(),
        }));
        self.close(Outcome::Refused);
        self.finish()
    }

    fn stop(mut self, c: &Stop) -> Result<Vec<Body>, Rejection> {
        self.require_receiving_or_open_step("stop processing")?;
        reason_required("stop processing", &c.reason)?;
        self.emit(Body::ProcessingStopped(pb::ProcessingStopped {
            agency: self.actor().to_string(),
            reason: c.reason.clone(),
        }));
        self.close(Outcome::Stopped);
        self.finish()
    }

    fn withdraw(mut self, c: &Withdraw) -> Result<Vec<Body>, Rejection> {
        if self.actor() != CITIZEN && !self.is_receiving() {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: "withdraw the dossier".to_string(),
                dossier: self.dossier(),
                allowed: format!(
                    "the citizen or the receiving agency `{}` on their behalf",
                    self.wf().receiving_agency
                ),
            });
        }
        text_limit("the reason", &c.reason)?;
        self.emit(Body::Withdrawn(pb::Withdrawn {
            reason: c.reason.clone(),
        }));
        self.close(Outcome::Withdrawn);
        self.finish()
    }

    fn issue_apology(mut self, c: &IssueApology) -> Result<Vec<Body>, Rejection> {
        if let Some(a) = &self.scratch.apology {
            return Err(Rejection::ApologyAlreadyIssued {
                dossier: self.dossier(),
                at: when(a.issued_at),
            });
        }
        let step_id = match &c.step {
            Some(id) => self.open_step_of_actor(id, true)?.id.0.clone(),
            None => {
                self.require_receiving_or_open_step("apologise and set a new appointment")?;
                String::new()
            }
        };
        reason_required("apologise", &c.reason)?;
        let Some(current) = self.scratch.appointment else {
            return Err(Rejection::Inconsistent {
                dossier: self.dossier(),
                detail: "its receipt has no appointment".to_string(),
            });
        };
        if c.new_appointment <= current {
            return Err(Rejection::AppointmentNotLater {
                current: current.to_rfc3339(),
                proposed: c.new_appointment.to_rfc3339(),
            });
        }
        // Late: one working day from now already passes the appointment, i.e. the notice comes
        // later than 1 working day before it.
        let notice_limit = self
            .ctx
            .calendar
            .add(self.ctx.now, Duration::WorkingDays(1))
            .map_err(calendar_err)?;
        self.emit(Body::ApologyIssued(pb::ApologyIssued {
            agency: self.actor().to_string(),
            step_id,
            reason: c.reason.clone(),
            previous_appointment: Some(timestamp(current)),
            new_appointment: Some(timestamp(c.new_appointment)),
            late: notice_limit > current,
        }));
        self.finish()
    }

    /// Records a deadline notice when the timer's deadline is still current and not yet noticed
    /// (see [`current_deadlines`]); a stale timer records nothing.
    fn fire_timer(mut self, c: &FireTimer) -> Result<Vec<Body>, Rejection> {
        if self.actor() != ENGINE {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: "fire a deadline timer".to_string(),
                dossier: self.dossier(),
                allowed: format!("the engine (`{ENGINE}`)"),
            });
        }
        let step = c.step.as_ref().map(|s| s.0.as_str());
        let Some(deadline) = current_deadlines(&self.scratch, self.wf())
            .into_iter()
            .find(|d| d.step.as_deref() == step && d.due == c.due)
        else {
            return self.finish();
        };
        let now = self.ctx.now;
        match c.timer {
            // A warning after the deadline passed says nothing the miss does not.
            TimerKind::Warning if deadline.warned || deadline.missed || now > c.due => {}
            TimerKind::Warning => {
                self.emit(Body::DeadlineWarning(pb::DeadlineWarning {
                    step_id: deadline.step.unwrap_or_default(),
                    agency: deadline.agency,
                    due: Some(timestamp(c.due)),
                    lead: c.lead.map(|l| l.to_string()).unwrap_or_default(),
                }));
            }
            // The due instant itself is still on time.
            TimerKind::Missed if deadline.missed || now <= c.due => {}
            TimerKind::Missed => {
                self.emit(Body::DeadlineMissed(pb::DeadlineMissed {
                    step_id: deadline.step.unwrap_or_default(),
                    agency: deadline.agency,
                    due: Some(timestamp(c.due)),
                }));
            }
        }
        self.finish()
    }

    /// Records that a task never reached its agency's system (only the engine may).
    fn record_undeliverable(mut self, c: &RecordUndeliverable) -> Result<Vec<Body>, Rejection> {
        if self.actor() != ENGINE {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: "record an undeliverable task".to_string(),
                dossier: self.dossier(),
                allowed: format!("the engine (`{ENGINE}`)"),
            });
        }
        self.emit(Body::TaskUndeliverable(pb::TaskUndeliverable {
            agency: c.agency.clone(),
            task_id: c.task_id.clone(),
            step_id: c.step.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
            kind: c.task_kind.clone(),
            deliveries: c.deliveries,
        }));
        self.finish()
    }

    fn return_result(mut self, c: &ReturnResult) -> Result<Vec<Body>, Rejection> {
        if !self.is_receiving() {
            return Err(Rejection::NotAllowed {
                actor: self.actor().to_string(),
                action: "return the result".to_string(),
                dossier: self.dossier(),
                allowed: format!("the receiving agency `{}`", self.wf().receiving_agency),
            });
        }
        if let Some(s) = self.scratch.outstanding_supplement() {
            return Err(Rejection::AwaitingSupplement {
                step: s.step.clone().unwrap_or_else(|| "intake".to_string()),
                ordinal: s.ordinal,
                addressed_to: s.addressed_to.to_string(),
            });
        }
        let pending: Vec<String> = self
            .scratch
            .step_view(self.wf())
            .into_iter()
            .filter(|(_, v)| !v.is_done())
            .map(|(id, v)| format!("`{id}` ({})", v.as_str()))
            .collect();
        if !pending.is_empty() {
            return Err(Rejection::NotProcessed {
                dossier: self.dossier(),
                pending: pending.join(", "),
            });
        }
        let results = documents(&c.results)?;
        self.emit(Body::ResultReturned(pb::ResultReturned {
            agency: self.actor().to_string(),
            results,
            channel: c.channel as i32,
        }));
        self.close(Outcome::ResultReturned);
        self.finish()
    }
}
