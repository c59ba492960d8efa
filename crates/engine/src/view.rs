//! Human and JSON views of stored events, for timelines (`lienthong replay`) and exports, and
//! the one rule that says which events are tasks for which agency ([`task_target`], [`task`]):
//! the gateway's task streams and the outbox to the bus (`lienthong-node`) both use it, so an
//! agency gets the same tasks whichever way it connects.
//!
//! These views are for reading only: they are never hashed or parsed back. What the hash covers
//! is always the stored `raw` bytes.

use chrono::{DateTime, TimeZone, Utc};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::{
    AttributeValue, Channel, DocumentRef, Event, Outcome, attribute_value, event::Body,
};
use serde_json::{Value, json};

use crate::dossier::{Addressee, DossierState};
use crate::store::Recorded;

/// The event kind as a stable kebab-case name (`received`, `step-opened`, ...).
pub fn kind(event: &Event) -> &'static str {
    match &event.body {
        Some(Body::Received(_)) => "received",
        Some(Body::StepOpened(_)) => "step-opened",
        Some(Body::StepCompleted(_)) => "step-completed",
        Some(Body::StepRejected(_)) => "step-rejected",
        Some(Body::StepSkipped(_)) => "step-skipped",
        Some(Body::SupplementRequested(_)) => "supplement-requested",
        Some(Body::SupplementProvided(_)) => "supplement-provided",
        Some(Body::Refused(_)) => "refused",
        Some(Body::ProcessingStopped(_)) => "processing-stopped",
        Some(Body::Withdrawn(_)) => "withdrawn",
        Some(Body::ApologyIssued(_)) => "apology-issued",
        Some(Body::ResultReturned(_)) => "result-returned",
        Some(Body::Closed(_)) => "closed",
        Some(Body::DeadlinesMoved(_)) => "deadlines-moved",
        Some(Body::DeadlineWarning(_)) => "deadline-warning",
        Some(Body::DeadlineMissed(_)) => "deadline-missed",
        Some(Body::TaskUndeliverable(_)) => "task-undeliverable",
        None => "unknown",
    }
}

/// An instant from a protobuf timestamp (the Unix epoch for a missing or invalid one).
pub fn instant(ts: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_default()
}

/// When the event was recorded.
pub fn recorded_at(event: &Event) -> DateTime<Utc> {
    instant(event.envelope.as_ref().and_then(|e| e.recorded_at.as_ref()))
}

/// The channel's stable name.
pub fn channel_name(c: i32) -> &'static str {
    match Channel::try_from(c).unwrap_or(Channel::Unspecified) {
        Channel::Unspecified => "unspecified",
        Channel::InPerson => "in-person",
        Channel::Online => "online",
        Channel::Post => "post",
        Channel::System => "system",
    }
}

/// The outcome's stable name.
pub fn outcome_name(o: i32) -> &'static str {
    match Outcome::try_from(o).unwrap_or(Outcome::Unspecified) {
        Outcome::Unspecified => "unspecified",
        Outcome::ResultReturned => "result-returned",
        Outcome::Refused => "refused",
        Outcome::Stopped => "stopped",
        Outcome::Withdrawn => "withdrawn",
    }
}

fn local<Tz: TimeZone>(t: Option<&prost_types::Timestamp>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    instant(t)
        .with_timezone(tz)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn target(step_id: &str) -> String {
    if step_id.is_empty() {
        "the dossier's appointment".to_string()
    } else {
        format!("step {step_id}")
    }
}

fn docs(d: &[DocumentRef]) -> String {
    d.iter()
        .map(|d| d.kind.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line saying what happened, with instants shown in `tz`.
pub fn summary<Tz: TimeZone>(event: &Event, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match &event.body {
        Some(Body::Received(r)) => format!(
            "received for procedure {} v{} ({}), clock from {}, appointment {}",
            r.procedure_code,
            r.procedure_version,
            channel_name(r.channel),
            local(r.clock_started_at.as_ref(), tz),
            local(r.appointment.as_ref(), tz),
        ),
        Some(Body::StepOpened(s)) => format!(
            "step {} opened for {} (budget {}, due {})",
            s.step_id,
            s.agency,
            s.budget,
            local(s.due.as_ref(), tz)
        ),
        Some(Body::StepCompleted(s)) => {
            let mut line = format!(
                "step {} completed by {}: {}",
                s.step_id, s.agency, s.outcome
            );
            if !s.results.is_empty() {
                line.push_str(&format!(" [results: {}]", docs(&s.results)));
            }
            line
        }
        Some(Body::StepRejected(s)) => {
            format!("step {} rejected by {}: {}", s.step_id, s.agency, s.reason)
        }
        Some(Body::StepSkipped(s)) => format!(
            "step {} ({}) skipped: condition `{}` is false",
            s.step_id, s.agency, s.condition
        ),
        Some(Body::SupplementRequested(s)) => format!(
            "supplement #{} requested by {} from {}: {} ({})",
            s.ordinal,
            s.requested_by,
            s.addressed_to,
            s.items.join(", "),
            s.reason
        ),
        Some(Body::SupplementProvided(s)) => {
            format!("supplement provided: {}", docs(&s.documents))
        }
        Some(Body::Refused(r)) => format!("refused by {}: {}", r.agency, r.reason),
        Some(Body::ProcessingStopped(s)) => {
            format!("processing stopped by {}: {}", s.agency, s.reason)
        }
        Some(Body::Withdrawn(w)) => format!("withdrawn: {}", w.reason),
        Some(Body::ApologyIssued(a)) => format!(
            "apology by {}{}: {}; appointment {} -> {}",
            a.agency,
            if a.late { " (late)" } else { "" },
            a.reason,
            local(a.previous_appointment.as_ref(), tz),
            local(a.new_appointment.as_ref(), tz)
        ),
        Some(Body::ResultReturned(r)) => format!(
            "result returned by {} ({}) [{}]",
            r.agency,
            channel_name(r.channel),
            docs(&r.results)
        ),
        Some(Body::Closed(c)) => format!("closed: {}", outcome_name(c.outcome)),
        Some(Body::DeadlinesMoved(m)) => {
            let mut line = format!(
                "deadlines moved ({}): appointment {}",
                m.rule,
                local(m.appointment.as_ref(), tz)
            );
            for d in &m.steps {
                line.push_str(&format!(
                    ", {} due {}",
                    d.step_id,
                    local(d.due.as_ref(), tz)
                ));
            }
            line
        }
        Some(Body::DeadlineWarning(w)) => format!(
            "deadline warning to {}: {} due {} (lead {})",
            w.agency,
            target(&w.step_id),
            local(w.due.as_ref(), tz),
            w.lead
        ),
        Some(Body::DeadlineMissed(m)) => format!(
            "DEADLINE MISSED by {}: {} was due {}",
            m.agency,
            target(&m.step_id),
            local(m.due.as_ref(), tz)
        ),
        Some(Body::TaskUndeliverable(u)) => format!(
            "TASK UNDELIVERABLE to {}: {} ({}, task {}) never acknowledged after {} deliveries",
            u.agency,
            target(&u.step_id),
            u.kind,
            u.task_id,
            u.deliveries
        ),
        None => "unknown event (written by a newer version?)".to_string(),
    }
}

fn ts_json(t: Option<&prost_types::Timestamp>) -> Value {
    match t {
        Some(_) => json!(instant(t).to_rfc3339()),
        None => Value::Null,
    }
}

fn docs_json(d: &[DocumentRef]) -> Value {
    d.iter()
        .map(|d| json!({"kind": d.kind, "uri": d.uri, "sha256": d.sha256}))
        .collect()
}

fn attr_json(v: &AttributeValue) -> Value {
    match &v.kind {
        Some(attribute_value::Kind::Text(s)) => json!(s),
        Some(attribute_value::Kind::Integer(i)) => json!(i),
        Some(attribute_value::Kind::Boolean(b)) => json!(b),
        Some(attribute_value::Kind::Date(d)) => json!(d),
        None => Value::Null,
    }
}

/// The decoded event as JSON, for humans and tools reading an export.
pub fn to_json(event: &Event) -> Value {
    let env = event.envelope.clone().unwrap_or_default();
    let actor = env.actor.clone().unwrap_or_default();
    let body = match &event.body {
        Some(Body::Received(r)) => json!({
            "procedure_code": r.procedure_code,
            "procedure_version": r.procedure_version,
            "definition_hash": r.definition_hash,
            "receiving_agency": r.receiving_agency,
            "channel": channel_name(r.channel),
            "applicant": r.applicant.as_ref().map(|a| json!({
                "full_name": a.full_name, "id_number": a.id_number, "phone": a.phone, "email": a.email
            })),
            "attributes": r.attributes.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect::<serde_json::Map<_, _>>(),
            "documents": docs_json(&r.documents),
            "clock_started_at": ts_json(r.clock_started_at.as_ref()),
            "appointment": ts_json(r.appointment.as_ref()),
            "calendar_name": r.calendar_name,
            "calendar_hash": r.calendar_hash,
            "limit": r.limit,
        }),
        Some(Body::StepOpened(s)) => json!({
            "step_id": s.step_id, "agency": s.agency, "budget": s.budget,
            "due": ts_json(s.due.as_ref()), "calendar_hash": s.calendar_hash,
        }),
        Some(Body::StepCompleted(s)) => json!({
            "step_id": s.step_id, "agency": s.agency, "outcome": s.outcome,
            "results": docs_json(&s.results), "note": s.note,
        }),
        Some(Body::StepRejected(s)) => {
            json!({"step_id": s.step_id, "agency": s.agency, "reason": s.reason})
        }
        Some(Body::StepSkipped(s)) => {
            json!({"step_id": s.step_id, "agency": s.agency, "condition": s.condition})
        }
        Some(Body::SupplementRequested(s)) => json!({
            "step_id": s.step_id, "requested_by": s.requested_by, "items": s.items,
            "reason": s.reason, "addressed_to": s.addressed_to, "ordinal": s.ordinal,
            "late_by_rule": s.late_by_rule,
        }),
        Some(Body::SupplementProvided(s)) => json!({
            "step_id": s.step_id, "documents": docs_json(&s.documents), "note": s.note,
        }),
        Some(Body::Refused(r)) => {
            json!({"step_id": r.step_id, "agency": r.agency, "reason": r.reason})
        }
        Some(Body::ProcessingStopped(s)) => json!({"agency": s.agency, "reason": s.reason}),
        Some(Body::Withdrawn(w)) => json!({"reason": w.reason}),
        Some(Body::ApologyIssued(a)) => json!({
            "agency": a.agency, "step_id": a.step_id, "reason": a.reason,
            "previous_appointment": ts_json(a.previous_appointment.as_ref()),
            "new_appointment": ts_json(a.new_appointment.as_ref()), "late": a.late,
        }),
        Some(Body::ResultReturned(r)) => json!({
            "agency": r.agency, "results": docs_json(&r.results), "channel": channel_name(r.channel),
        }),
        Some(Body::Closed(c)) => json!({"outcome": outcome_name(c.outcome)}),
        Some(Body::DeadlinesMoved(m)) => json!({
            "rule": m.rule, "appointment": ts_json(m.appointment.as_ref()),
            "steps": m.steps.iter().map(|d| json!({"step_id": d.step_id, "due": ts_json(d.due.as_ref())})).collect::<Vec<_>>(),
            "excluded_working_seconds": m.excluded_working_seconds, "calendar_hash": m.calendar_hash,
        }),
        Some(Body::DeadlineWarning(w)) => json!({
            "step_id": w.step_id, "agency": w.agency, "due": ts_json(w.due.as_ref()), "lead": w.lead,
        }),
        Some(Body::DeadlineMissed(m)) => json!({
            "step_id": m.step_id, "agency": m.agency, "due": ts_json(m.due.as_ref()),
        }),
        Some(Body::TaskUndeliverable(u)) => json!({
            "agency": u.agency, "task_id": u.task_id, "step_id": u.step_id, "kind": u.kind,
            "deliveries": u.deliveries,
        }),
        None => Value::Null,
    };
    json!({
        "kind": kind(event),
        "dossier_id": env.dossier_id,
        "dossier_code": env.dossier_code,
        "seq": env.seq,
        "global_position": env.global_position,
        "recorded_at": ts_json(env.recorded_at.as_ref()),
        "actor": {"agency": actor.agency, "officer": actor.officer, "channel": channel_name(actor.channel)},
        "command_id": env.command_id,
        "body": body,
    })
}

/// The dossier's state as JSON (for `replay --json` and tools).
pub fn state_to_json(state: &DossierState) -> Value {
    let t = |x: &Option<DateTime<Utc>>| x.map(|t| t.to_rfc3339());
    let steps: Vec<Value> = state
        .steps
        .values()
        .map(|s| {
            json!({
                "id": s.id, "agency": s.agency, "status": s.status.as_str(), "budget": s.budget,
                "opened_at": t(&s.opened_at), "due": t(&s.due), "completed_at": t(&s.completed_at),
                "outcome": s.outcome, "times_opened": s.times_opened,
            })
        })
        .collect();
    let supplements: Vec<Value> = state
        .supplements
        .iter()
        .map(|s| {
            json!({
                "ordinal": s.ordinal, "step": s.step, "requested_by": s.requested_by,
                "addressed_to": s.addressed_to.as_str(), "items": s.items, "reason": s.reason,
                "requested_at": t(&s.requested_at), "provided_at": t(&s.provided_at),
            })
        })
        .collect();
    json!({
        "id": state.id,
        "code": state.code,
        "seq": state.seq,
        "status": state.status().as_str(),
        "procedure_code": state.procedure_code,
        "procedure_version": state.procedure_version,
        "definition_hash": state.definition_hash,
        "receiving_agency": state.receiving_agency,
        "channel": channel_name(state.channel as i32),
        "received_at": t(&state.received_at),
        "clock_started_at": t(&state.clock_started_at),
        "appointment": t(&state.appointment),
        "calendar": {"name": state.calendar_name, "hash": state.calendar_hash},
        "limit": state.limit,
        "steps": steps,
        "supplements": supplements,
        "apology": state.apology.as_ref().map(|a| json!({
            "agency": a.agency, "reason": a.reason, "late": a.late,
            "new_appointment": t(&a.new_appointment),
        })),
        "closed": state.closed.as_ref().map(|c| json!({
            "outcome": outcome_name(c.outcome as i32), "at": t(&c.at),
        })),
        "anomalies": state.anomalies.iter().map(|a| json!({"seq": a.seq, "detail": a.detail})).collect::<Vec<_>>(),
    })
}

/// The dossier's state as a short text block: status, appointment and each step.
pub fn render_state<Tz: TimeZone>(state: &DossierState, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let t = |x: &Option<DateTime<Utc>>| {
        x.map(|t| t.with_timezone(tz).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".to_string())
    };
    let mut s = String::new();
    s.push_str(&format!(
        "state after seq {}: {}\n  procedure {} v{} (definition {})\n  received {}, clock from {}, appointment {} (limit {}, calendar {} {})\n",
        state.seq,
        state.status().as_str(),
        state.procedure_code,
        state.procedure_version,
        state.definition_hash.get(..12).unwrap_or(&state.definition_hash),
        t(&state.received_at),
        t(&state.clock_started_at),
        t(&state.appointment),
        state.limit,
        state.calendar_name,
        state.calendar_hash.get(..12).unwrap_or(&state.calendar_hash),
    ));
    s.push_str(&format!(
        "  {:<24} {:<10} {:<10} {:<6} {:<16} {:<16} {:<16}\n",
        "STEP", "AGENCY", "STATUS", "BUDGET", "OPENED", "DUE", "DONE"
    ));
    let mut steps: Vec<_> = state.steps.values().collect();
    steps.sort_by_key(|r| r.routed_order);
    for r in steps {
        s.push_str(&format!(
            "  {:<24} {:<10} {:<10} {:<6} {:<16} {:<16} {:<16}\n",
            r.id,
            r.agency,
            r.status.as_str(),
            r.budget,
            t(&r.opened_at),
            t(&r.due),
            t(&r.completed_at)
        ));
    }
    for sup in &state.supplements {
        s.push_str(&format!(
            "  supplement #{} by {} from {}: requested {}, provided {}\n",
            sup.ordinal,
            sup.requested_by,
            sup.addressed_to.as_str(),
            t(&sup.requested_at),
            t(&sup.provided_at)
        ));
    }
    if let Some(a) = &state.apology {
        s.push_str(&format!(
            "  apology by {}{}: new appointment {}\n",
            a.agency,
            if a.late { " (late)" } else { "" },
            t(&a.new_appointment)
        ));
    }
    for a in &state.anomalies {
        s.push_str(&format!("  ANOMALY at seq {}: {}\n", a.seq, a.detail));
    }
    s
}

/// Who must act on an event, and on what: the task an event makes, before it is addressed.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskTarget {
    /// The agency code whose work it is (never the citizen).
    pub agency: String,
    /// What kind of work.
    pub kind: pb::TaskKind,
    /// The step concerned (empty for a supplement asked at intake or the appointment's deadline).
    pub step: String,
    /// For a step: its due; for a deadline notice: the deadline; none for a supplement request.
    pub due: Option<prost_types::Timestamp>,
}

/// The task an event makes for an agency, if any: a step opened for it, a supplement another
/// agency asked of it (one asked of the citizen is no agency's task), a warning or a miss of a
/// deadline it holds. An event makes at most one task.
pub fn task_target(r: &Recorded) -> Option<TaskTarget> {
    let (agency, kind, step, due) = match r.event.body.as_ref()? {
        Body::StepOpened(s) => (&s.agency, pb::TaskKind::StepOpened, &s.step_id, s.due),
        Body::SupplementRequested(s) => match Addressee::parse(&s.addressed_to) {
            Addressee::Agency(_) => (
                &s.addressed_to,
                pb::TaskKind::SupplementRequested,
                &s.step_id,
                None,
            ),
            Addressee::Citizen => return None,
        },
        Body::DeadlineWarning(w) => (&w.agency, pb::TaskKind::DeadlineWarning, &w.step_id, w.due),
        Body::DeadlineMissed(m) => (&m.agency, pb::TaskKind::DeadlineMissed, &m.step_id, m.due),
        _ => return None,
    };
    if agency.is_empty() {
        return None;
    }
    Some(TaskTarget {
        agency: agency.clone(),
        kind,
        step: step.clone(),
        due,
    })
}

/// A task's stable id: `<dossier id>/<seq>` of the event that made it (also its feed message id).
pub fn task_id(r: &Recorded) -> String {
    let (dossier, seq) = r
        .event
        .envelope
        .as_ref()
        .map_or(("", 0), |e| (e.dossier_id.as_str(), e.seq));
    format!("{dossier}/{seq}")
}

/// The task an event makes ([`task_target`]) as the wire message agencies receive, carrying the
/// event exactly as stored.
pub fn task(r: &Recorded) -> Option<pb::Task> {
    let target = task_target(r)?;
    let env = r.event.envelope.clone().unwrap_or_default();
    Some(pb::Task {
        task_id: task_id(r),
        kind: target.kind as i32,
        dossier_id: env.dossier_id,
        dossier_code: env.dossier_code,
        step_id: target.step,
        agency: target.agency,
        due: target.due,
        event: Some(pb::RecordedEvent {
            event: Some(r.event.clone()),
            sealed: Some(r.sealed.clone()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_proto::v1::{Closed, Envelope};

    #[test]
    fn closed_event_reads_well() {
        let e = Event {
            envelope: Some(Envelope {
                seq: 9,
                ..Default::default()
            }),
            body: Some(Body::Closed(Closed {
                outcome: Outcome::Refused as i32,
            })),
        };
        assert_eq!(kind(&e), "closed");
        assert_eq!(summary(&e, &Utc), "closed: refused");
        assert_eq!(to_json(&e)["body"]["outcome"], "refused");
        assert_eq!(to_json(&e)["seq"], 9);
    }

    fn recorded(body: Body) -> Recorded {
        let event = Event {
            envelope: Some(Envelope {
                dossier_id: "d1".into(),
                seq: 4,
                ..Default::default()
            }),
            body: Some(body),
        };
        Recorded {
            event,
            sealed: Default::default(),
        }
    }

    #[test]
    fn a_supplement_asked_of_the_citizen_is_no_task() {
        let asked = |to: &str| {
            recorded(Body::SupplementRequested(pb::SupplementRequested {
                step_id: "tham-dinh".into(),
                addressed_to: to.into(),
                ..Default::default()
            }))
        };
        assert_eq!(task_target(&asked("citizen")), None);
        let t = task(&asked("vpdk-dat")).expect("a task for the land office");
        assert_eq!(t.agency, "vpdk-dat");
        assert_eq!(t.task_id, "d1/4");
        assert_eq!(t.kind, pb::TaskKind::SupplementRequested as i32);
    }

    #[test]
    fn a_step_opened_is_a_task_for_its_agency() {
        let r = recorded(Body::StepOpened(pb::StepOpened {
            step_id: "ky".into(),
            agency: "tu-phap".into(),
            ..Default::default()
        }));
        let t = task_target(&r).expect("a task");
        assert_eq!((t.agency.as_str(), t.step.as_str()), ("tu-phap", "ky"));
        assert_eq!(
            task_target(&recorded(Body::Closed(Closed::default()))),
            None
        );
    }
}
