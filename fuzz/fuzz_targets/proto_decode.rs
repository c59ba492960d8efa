//! Fuzz target `proto_decode`: decoding of stored and received protobuf messages, through the
//! functions the store, the verifier, the gateway and the engine run on them.
//!
//! The first byte picks what the rest is (`lienthong_fuzz::ProtoKind`):
//! - a stored `SealedEvent` record: decoded as the store reads it, checked by the hash chain
//!   (`chain::check`) and the export verifier (`Verifier::push`);
//! - a stored stream: `Event` encodings (each behind a protobuf length delimiter) sealed with their
//!   true hashes, as a writer of another version could have stored them: checked in order
//!   (`StreamCheck`), folded into a dossier (`evolve`, which must never fail), and read back as
//!   the gateway shows it (`convert::dossier`) with the current deadlines of its procedure;
//! - the store's binary values: head, idempotency record, timer key/value, stream and feed keys;
//! - a `BusCommand` as the node receives it, or (next byte picks which) one of the gateway's gRPC
//!   request messages: decoded with prost as tonic does, converted into an engine command by the
//!   gateway's checks (`ToCommand::command`), and, when that succeeds, decided by the engine
//!   (`dossier::decide`) on a received birth dossier (or, for a submission, a new one) with the
//!   shipped workflow and calendar; accepted events are applied with `evolve`, which must record
//!   no anomaly (decide and evolve agree).

#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{self, Command, DecideContext, DossierState, current_deadlines};
use lienthong_engine::store::chain::{self, StreamCheck, Verifier};
use lienthong_engine::store::keys::{self, HeadValue, IdemValue};
use lienthong_fuzz::{ProtoKind, REQUESTS, catalog};
use lienthong_gateway::Limits;
use lienthong_gateway::commands::ToCommand;
use lienthong_gateway::convert;
use lienthong_proto::v1::{self as pb, Actor, Envelope, Event, SealedEvent};
use lienthong_workflow::Workflow;
use prost::Message;

/// Events read from one stream input, at most (a real stream is checked whatever its length; the
/// bound keeps one input fast).
const STREAM_EVENTS_MAX: usize = 64;

/// The agencies an actor may be, by a byte of the input.
const ACTORS: [&str; 6] = ["ubnd-xa", "tu-phap", "cong-an", "bhxh", "citizen", "engine"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match ProtoKind::from_byte(selector) {
        ProtoKind::StoredRecord => stored_record(payload),
        ProtoKind::StoredStream => stored_stream(payload),
        ProtoKind::StoreKeys => store_keys(payload),
        ProtoKind::BusCommand => bus_command(payload),
        ProtoKind::Request => request(payload),
    }
});

/// A store record's value: `SealedEvent` bytes, exactly as the store decodes them on read.
fn stored_record(payload: &[u8]) {
    let Ok(sealed) = SealedEvent::decode(payload) else {
        return;
    };
    let dossier = nil_dossier();
    if let Err(e) = chain::check(None, &dossier, 1, &sealed) {
        let _ = e.to_string();
    }
    let mut verifier = Verifier::new();
    verifier.push(sealed);
    let report = verifier.finish();
    for b in &report.breaks {
        let _ = b.to_string();
    }
}

/// A stream of events with true hashes, checked and folded as a store read and a replay do.
fn stored_stream(mut payload: &[u8]) {
    let mut sealed = Vec::new();
    while !payload.is_empty() && sealed.len() < STREAM_EVENTS_MAX {
        let Ok(len) = prost::decode_length_delimiter(&mut payload) else {
            break;
        };
        let raw = &payload[..len.min(payload.len())];
        payload = &payload[raw.len()..];
        sealed.push(SealedEvent {
            raw: raw.to_vec(),
            hash: chain::hash_of(raw).to_vec(),
        });
    }
    let Some(first) = sealed.first() else {
        return;
    };
    // The stream's dossier: the one its first event claims, as the export verifier groups them.
    let dossier = Event::decode(first.raw.as_slice())
        .ok()
        .and_then(|e| e.envelope)
        .and_then(|e| e.dossier_id.parse::<DossierId>().ok())
        .unwrap_or(nil_dossier());
    let mut check = StreamCheck::new(dossier);
    let mut checked = Vec::new();
    for s in &sealed {
        match check.next(s) {
            Some(event) => checked.push(event),
            None => break,
        }
    }
    let mut verifier = Verifier::new();
    verifier.stream(dossier, sealed.iter());
    let _ = verifier.finish();

    // Replay: `evolve` never fails, whatever the events say.
    let state = dossier::fold(&checked);
    let _ = dossier::state_at(&checked, far_future());
    let workflow = catalog().procedure(&state.procedure_code).cloned();
    let _ = convert::dossier(&state, workflow.as_deref());
    if let Some(wf) = workflow {
        let _ = current_deadlines(&state, &wf);
    }
    for (event, s) in checked.into_iter().zip(sealed) {
        let _ = convert::recorded(&lienthong_engine::store::Recorded { event, sealed: s });
    }
}

/// The store's own binary values and keys, as the store and `verify` parse them.
fn store_keys(payload: &[u8]) {
    let _ = HeadValue::decode(payload).map(|h| h.encode());
    let _ = IdemValue::decode(payload).map(|i| i.encode());
    let (k, v) = payload.split_at(payload.len() / 2);
    let _ = keys::parse_timer(k, v);
    let _ = keys::parse_stream_key(payload);
    let _ = keys::parse_feed_key(payload);
    let _ = keys::parse_feed_group(payload);
    let _ = keys::parse_head_key(payload);
    let _ = keys::i64_from_sortable(payload);
}

/// A `BusCommand` as the node decodes it from the bus, then the request it carries.
fn bus_command(payload: &[u8]) {
    use pb::bus_command::Command as C;
    let Ok(cmd) = pb::BusCommand::decode(payload) else {
        return;
    };
    let actor = cmd.actor.unwrap_or_default();
    match &cmd.command {
        Some(C::Submit(r)) => convert_and_decide(r, &actor),
        Some(C::CompleteStep(r)) => convert_and_decide(r, &actor),
        Some(C::RejectStep(r)) => convert_and_decide(r, &actor),
        Some(C::RequestSupplement(r)) => convert_and_decide(r, &actor),
        Some(C::ProvideSupplement(r)) => convert_and_decide(r, &actor),
        Some(C::Refuse(r)) => convert_and_decide(r, &actor),
        Some(C::Stop(r)) => convert_and_decide(r, &actor),
        Some(C::IssueApology(r)) => convert_and_decide(r, &actor),
        Some(C::ReturnResult(r)) => convert_and_decide(r, &actor),
        Some(C::Withdraw(r)) => convert_and_decide(r, &actor),
        Some(C::Get(_)) | None => {}
    }
}

/// One gRPC request message (the first byte picks which, the second the actor).
fn request(payload: &[u8]) {
    let [which, who, body @ ..] = payload else {
        return;
    };
    let actor = Actor {
        agency: ACTORS[usize::from(*who) % ACTORS.len()].to_string(),
        officer: "fuzz".to_string(),
        channel: pb::Channel::System as i32,
    };
    fn go<R: ToCommand + Message + Default>(body: &[u8], actor: &Actor) {
        if let Ok(r) = R::decode(body) {
            convert_and_decide(&r, actor);
        }
    }
    match REQUESTS[usize::from(*which) % REQUESTS.len()] {
        "SubmitRequest" => go::<pb::SubmitRequest>(body, &actor),
        "CompleteStepRequest" => go::<pb::CompleteStepRequest>(body, &actor),
        "RejectStepRequest" => go::<pb::RejectStepRequest>(body, &actor),
        "RequestSupplementRequest" => go::<pb::RequestSupplementRequest>(body, &actor),
        "ProvideSupplementRequest" => go::<pb::ProvideSupplementRequest>(body, &actor),
        "RefuseRequest" => go::<pb::RefuseRequest>(body, &actor),
        "StopRequest" => go::<pb::StopRequest>(body, &actor),
        "IssueApologyRequest" => go::<pb::IssueApologyRequest>(body, &actor),
        "ReturnResultRequest" => go::<pb::ReturnResultRequest>(body, &actor),
        "WithdrawRequest" => go::<pb::WithdrawRequest>(body, &actor),
        _ => {
            let _ = pb::GetDossierRequest::decode(body);
        }
    }
}

/// The gateway's conversion, then the engine's decision on a dossier, then `evolve`.
fn convert_and_decide<R: ToCommand>(request: &R, actor: &Actor) {
    let _ = (
        request.dossier(),
        request.idempotency_key(),
        request.officer(),
    );
    let command = match request.command(&Limits::default()) {
        Ok(c) => c,
        Err(status) => {
            assert_ne!(status.code(), tonic::Code::Ok, "a refusal is never OK");
            return;
        }
    };
    let (state, workflow) = match &command {
        Command::Submit(s) => match catalog().procedure(&s.procedure_code) {
            Some(wf) => (DossierState::default(), wf.clone()),
            // The runtime refuses an unknown procedure before deciding.
            None => return,
        },
        _ => {
            let (state, wf) = received_birth();
            (state.clone(), wf.clone())
        }
    };
    let Some(calendar) = catalog().calendar(&workflow.calendar) else {
        return;
    };
    let ctx = DecideContext {
        now: monday_morning(),
        actor,
        workflow: &workflow,
        calendar,
    };
    let Ok(bodies) = dossier::decide(&state, &command, &ctx) else {
        return;
    };
    let mut state = state;
    for body in bodies {
        let seq = state.seq + 1;
        state = dossier::evolve(state, &wrap(seq, actor, body));
    }
    assert!(
        state.anomalies.is_empty(),
        "decide accepted {} but evolve recorded anomalies: {:?}",
        command.kind(),
        state.anomalies
    );
    let _ = current_deadlines(&state, &workflow);
}

/// A birth-group dossier just received at the commune desk: what commands on a dossier meet.
fn received_birth() -> &'static (DossierState, std::sync::Arc<Workflow>) {
    static RECEIVED: OnceLock<(DossierState, std::sync::Arc<Workflow>)> = OnceLock::new();
    RECEIVED.get_or_init(|| {
        let wf = catalog()
            .procedure("2.000986")
            .cloned()
            .expect("the birth group is shipped");
        let calendar = catalog()
            .calendar(&wf.calendar)
            .expect("its calendar is shipped");
        let desk = Actor {
            agency: wf.receiving_agency.0.clone(),
            officer: "fuzz".to_string(),
            channel: pb::Channel::InPerson as i32,
        };
        let submit = pb::SubmitRequest {
            procedure_code: wf.code.clone(),
            channel: pb::Channel::InPerson as i32,
            applicant: Some(pb::Applicant {
                full_name: "Nguyễn Thị Lan".to_string(),
                id_number: "001190000001".to_string(),
                ..Default::default()
            }),
            attributes: [
                ("child.age_months", pb::attribute_value::Kind::Integer(2)),
                (
                    "child.birth_date",
                    pb::attribute_value::Kind::Date("2026-01-02".to_string()),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), pb::AttributeValue { kind: Some(v) }))
            .collect(),
            documents: vec![pb::DocumentRef {
                kind: "to-khai-khai-sinh".to_string(),
                sha256: "0".repeat(64),
                ..Default::default()
            }],
            ..Default::default()
        };
        let command = submit
            .command(&Limits::default())
            .expect("a valid submission");
        let ctx = DecideContext {
            now: monday_morning(),
            actor: &desk,
            workflow: &wf,
            calendar,
        };
        let bodies = dossier::decide(&DossierState::default(), &command, &ctx)
            .expect("the birth submission is accepted");
        let mut state = DossierState::default();
        for body in bodies {
            let seq = state.seq + 1;
            state = dossier::evolve(state, &wrap(seq, &desk, body));
        }
        (state, wf)
    })
}

/// An event around a decided body, as the runtime wraps it.
fn wrap(seq: u64, actor: &Actor, body: pb::event::Body) -> Event {
    Event {
        envelope: Some(Envelope {
            dossier_id: "0190f000-0000-7000-8000-000000000001".to_string(),
            dossier_code: "UBND.XA-260302-0001".to_string(),
            seq,
            global_position: seq,
            recorded_at: Some(dossier::convert::timestamp(monday_morning())),
            actor: Some(actor.clone()),
            command_id: String::new(),
            prev_hash: Vec::new(),
        }),
        body: Some(body),
    }
}

/// Monday 2 March 2026, 09:00 in Hà Nội (02:00 UTC): a plain working morning.
fn monday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 2, 0, 0)
        .single()
        .unwrap_or_default()
}

fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2199, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The nil dossier id: where a record that names no valid dossier is checked.
fn nil_dossier() -> DossierId {
    "00000000-0000-0000-0000-000000000000"
        .parse()
        .expect("the nil UUID parses")
}
