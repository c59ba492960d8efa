//! Between the wire (the generated messages) and the engine (commands, state), with every check
//! of client input that the engine does not make itself: required fields, attribute values,
//! counts against the configured [`Limits`].

use std::collections::BTreeMap;

use lienthong_engine::dossier::{
    self, Addressee, Command, Deadline, Document, DossierState, Status as DossierStatusKind,
    StepStatus as RecordStatus, StepView,
};
use lienthong_engine::store::Recorded;
use lienthong_proto::v1 as pb;
use lienthong_workflow::{StepId, Workflow};
use tonic::Status;

use crate::config::Limits;
use crate::status::{exhausted, invalid, invalid_fields};

/// A required text field.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        Err(invalid(field, "is required"))
    } else {
        Ok(value)
    }
}

/// The request's `channel` (`what`: what it says in this request). protobuf hands an enum value
/// the contract does not define to the server as its number: that, like an unset channel, is
/// INVALID_ARGUMENT naming the field and the number.
pub fn channel(value: i32, what: &str) -> Result<pb::Channel, Status> {
    match pb::Channel::try_from(value) {
        Ok(pb::Channel::Unspecified) => Err(invalid(
            "channel",
            format!("is required: {what} (CHANNEL_IN_PERSON, CHANNEL_ONLINE or CHANNEL_POST)"),
        )),
        Ok(c) => Ok(c),
        Err(_) => Err(invalid(
            "channel",
            format!(
                "{value} is not a value of lienthong.v1.Channel: {what} is CHANNEL_IN_PERSON, CHANNEL_ONLINE or CHANNEL_POST"
            ),
        )),
    }
}

/// An optional step id (empty = none).
pub fn opt_step(value: &str) -> Option<StepId> {
    (!value.is_empty()).then(|| StepId(value.to_string()))
}

/// Document references, counted against the limit and checked for a well-formed SHA-256.
pub fn documents(
    field: &str,
    docs: &[pb::DocumentRef],
    limits: &Limits,
) -> Result<Vec<Document>, Status> {
    if docs.len() > limits.documents_max {
        return Err(exhausted(
            "documents_max",
            &format!("`{field}` count"),
            limits.documents_max as u64,
            docs.len() as u64,
        ));
    }
    let mut problems = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if d.kind.is_empty() {
            problems.push((format!("{field}[{i}].kind"), "is required".to_string()));
        }
        let hex_ok = d.sha256.len() == 64
            && d.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            problems.push((
                format!("{field}[{i}].sha256"),
                "must be the document's SHA-256 as 64 lower-case hex digits".to_string(),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(invalid_fields("invalid document references", problems));
    }
    Ok(docs.iter().map(Document::from).collect())
}

/// The submission command.
pub fn submit(req: &pb::SubmitRequest, limits: &Limits) -> Result<Command, Status> {
    required("procedure_code", &req.procedure_code)?;
    if req.attributes.len() > limits.attributes_max {
        return Err(exhausted(
            "attributes_max",
            "attribute count",
            limits.attributes_max as u64,
            req.attributes.len() as u64,
        ));
    }
    let channel = channel(req.channel, "how the dossier was handed in")?;
    let mut attributes = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in &req.attributes {
        match dossier::attr_from_proto(name, value) {
            Ok(v) => {
                attributes.insert(name.clone(), v);
            }
            Err(e) => problems.push((format!("attributes[{name}]"), e.to_string())),
        }
    }
    if !problems.is_empty() {
        return Err(invalid_fields("invalid attribute values", problems));
    }
    let applicant = req.applicant.clone().unwrap_or_default();
    Ok(Command::Submit(dossier::Submit {
        procedure_code: req.procedure_code.clone(),
        channel,
        applicant: dossier::Applicant {
            full_name: applicant.full_name,
            id_number: applicant.id_number,
            phone: applicant.phone,
            email: applicant.email,
        },
        attributes,
        documents: documents("documents", &req.documents, limits)?,
    }))
}

/// Who must supplement, from the wire text.
pub fn addressee(text: &str) -> Addressee {
    if text.is_empty() {
        Addressee::Citizen
    } else {
        Addressee::parse(text)
    }
}

/// A stored event for the wire.
pub fn recorded(r: &Recorded) -> pb::RecordedEvent {
    pb::RecordedEvent {
        event: Some(r.event.clone()),
        sealed: Some(r.sealed.clone()),
    }
}

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<prost_types::Timestamp> {
    t.map(dossier::convert::timestamp)
}

fn step_status(v: StepView) -> pb::StepStatus {
    match v {
        StepView::Pending => pb::StepStatus::Pending,
        StepView::Open => pb::StepStatus::Open,
        StepView::Completed => pb::StepStatus::Completed,
        StepView::Skipped => pb::StepStatus::Skipped,
        StepView::AwaitingRework => pb::StepStatus::AwaitingRework,
        StepView::Idle => pb::StepStatus::Idle,
    }
}

/// The dossier's state for the wire; `workflow` (the pinned definition) gives the routing view of
/// the steps and the running deadlines; without it the steps are shown as last recorded.
pub fn dossier(state: &DossierState, workflow: Option<&Workflow>) -> pb::Dossier {
    let status = state.status();
    let (status_enum, outcome) = match status {
        DossierStatusKind::New => (pb::DossierStatus::Unspecified, pb::Outcome::Unspecified),
        DossierStatusKind::Processing => (pb::DossierStatus::Processing, pb::Outcome::Unspecified),
        DossierStatusKind::AwaitingSupplement => (
            pb::DossierStatus::AwaitingSupplement,
            pb::Outcome::Unspecified,
        ),
        DossierStatusKind::ReadyToReturn => {
            (pb::DossierStatus::ReadyToReturn, pb::Outcome::Unspecified)
        }
        DossierStatusKind::Closed(o) => (pb::DossierStatus::Closed, o),
    };
    let step_msg = |id: &str, agency: &str, s: pb::StepStatus| {
        let rec = state.steps.get(id);
        pb::Step {
            step_id: id.to_string(),
            agency: agency.to_string(),
            status: s as i32,
            budget: rec.map(|r| r.budget.clone()).unwrap_or_default(),
            opened_at: ts(rec.and_then(|r| r.opened_at)),
            due: ts(rec.and_then(|r| r.due)),
            completed_at: ts(rec.and_then(|r| r.completed_at)),
            outcome: rec.and_then(|r| r.outcome.clone()).unwrap_or_default(),
        }
    };
    let (steps, deadlines) = match workflow {
        Some(wf) => {
            let steps = state
                .step_view(wf)
                .into_iter()
                .map(|(id, v)| {
                    let agency = wf.step(&id).map(|s| s.agency.0.clone()).unwrap_or_default();
                    step_msg(&id, &agency, step_status(v))
                })
                .collect();
            let deadlines = dossier::current_deadlines(state, wf)
                .into_iter()
                .map(|d: Deadline| pb::Deadline {
                    step_id: d.step.unwrap_or_default(),
                    agency: d.agency,
                    due: ts(Some(d.due)),
                    warned: d.warned,
                    missed: d.missed,
                })
                .collect();
            (steps, deadlines)
        }
        None => {
            let mut recs: Vec<_> = state.steps.values().collect();
            recs.sort_by_key(|r| r.routed_order);
            let steps = recs
                .into_iter()
                .map(|r| {
                    let s = match r.status {
                        RecordStatus::Open => pb::StepStatus::Open,
                        RecordStatus::Completed => pb::StepStatus::Completed,
                        RecordStatus::Skipped => pb::StepStatus::Skipped,
                        RecordStatus::Rejected => pb::StepStatus::Pending,
                    };
                    step_msg(&r.id, &r.agency, s)
                })
                .collect();
            (steps, Vec::new())
        }
    };
    pb::Dossier {
        id: state.id.clone(),
        code: state.code.clone(),
        status: status_enum as i32,
        outcome: outcome as i32,
        procedure_code: state.procedure_code.clone(),
        procedure_version: state.procedure_version,
        definition_hash: state.definition_hash.clone(),
        receiving_agency: state.receiving_agency.clone(),
        channel: state.channel as i32,
        received_at: ts(state.received_at),
        clock_started_at: ts(state.clock_started_at),
        appointment: ts(state.appointment),
        steps,
        deadlines,
        seq: state.seq,
        supplement_addressed_to: state
            .outstanding_supplement()
            .map(|s| s.addressed_to.as_str().to_string())
            .unwrap_or_default(),
        status_text: status.as_str().to_string(),
    }
}

/// Whether a dossier is routed to `agency`: it received it, a step of it was opened for it, or a
/// supplement was asked of it or by it. An agency reads and acts only on such dossiers.
pub fn involves(state: &DossierState, agency: &str) -> bool {
    state.receiving_agency == agency
        || state
            .steps
            .values()
            .any(|s| s.agency == agency && s.times_opened > 0)
        || state
            .supplements
            .iter()
            .any(|s| s.addressed_to.as_str() == agency || s.requested_by == agency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_need_a_hash() {
        let limits = Limits::default();
        let bad = pb::DocumentRef {
            kind: "to-khai".into(),
            uri: "x".into(),
            sha256: "nope".into(),
        };
        let e = documents("documents", &[bad], &limits).expect_err("bad hash");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let too_many = vec![pb::DocumentRef::default(); limits.documents_max + 1];
        let e = documents("documents", &too_many, &limits).expect_err("too many");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    }
}
