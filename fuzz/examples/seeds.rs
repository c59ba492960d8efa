//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/` from the real
//! definitions and from real encoded messages. Run once when the formats change, then minimise
//! (`cargo fuzz cmin`) and commit:
//!
//! ```text
//! cd fuzz && cargo run --example seeds
//! ```
//!
//! - `workflow`: every procedure file and `agencies.toml` of `workflows/`;
//! - `condition`: the `when` of every shipped procedure, and one condition per construct the
//!   language allows (so the fuzzer starts from every operator and function);
//! - `calendar`: every calendar file, and a synthetic one in a zone with daylight saving;
//! - `proto_decode`: a birth-group dossier driven through the engine (`decide`, sealed into a
//!   hash chain as the store does), written as stored records, stored streams, store values,
//!   bus commands and gRPC request messages, in the framing of `lienthong_fuzz::ProtoKind`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use lienthong_engine::dossier::{self, DecideContext, DossierState, StepView};
use lienthong_engine::store::chain;
use lienthong_engine::store::keys::{HeadValue, IdemValue};
use lienthong_fuzz::{ProtoKind, REQUESTS, catalog, workflows_dir};
use lienthong_gateway::Limits;
use lienthong_gateway::commands::ToCommand;
use lienthong_proto::v1::{self as pb, Actor, Envelope, Event};
use prost::Message;

/// Conditions that use each construct of the dialect once, over the `condition` target's
/// declared attributes.
const CONDITIONS: &[&str] = &[
    "child.age_months < 72",
    "child.age_months >= 6 && child.age_months <= 72",
    "child.birth_date < date('2025-07-01')",
    "child.birth_date == date('2024-02-29') || request.benefit",
    "has(child.has_health_card) && child.has_health_card",
    "!has(child.name) || child.name.startsWith('Nguyễn')",
    "has(child.name) ? child.name.endsWith('Lan') : false",
    "request.kind in ['co-phan', 'tnhh-1tv', 'tu-nhan']",
    "request.kind.contains('tnhh') && size(request.kind) > 3",
    "request.kind.matches('^[a-z-]+$')",
    "child.age_months % 12 == 0 && child.age_months / 12 != 3",
    "-child.age_months + 10 * 2 - 1 > 0",
    "has(request.count) && request.count * 2 > 9223372036854775800",
    "has(request.filed_on) && request.filed_on >= child.birth_date",
    "request.kind + '-x' == 'co-phan-x'",
    "true",
    "!(false)",
    "child.age_months in [1, 2, 3]",
];

/// A calendar in a zone with daylight saving, three segments a day, one at night across the
/// clock change (the one of the calendar crate's property tests).
const DST_CALENDAR: &str = r#"[calendar]
name = "dst-2026"
timezone = "Europe/Berlin"
weekend = ["sun"]
hours = ["01:30-03:30", "08:00-12:00", "13:00-17:00"]
holidays = ["2026-03-30", "2026-10-26..2026-10-27"]
working_days = ["2026-03-29", "2026-10-25"]
"#;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let workflows = workflows_dir();

    let out = corpus.join("workflow");
    std::fs::create_dir_all(&out)?;
    let mut files = toml_files(&workflows.join("procedures"))?;
    files.push(workflows.join("agencies.toml"));
    for f in &files {
        write(&out, &file_name(f), &std::fs::read(f)?)?;
    }

    let out = corpus.join("condition");
    std::fs::create_dir_all(&out)?;
    let mut conditions: Vec<String> = CONDITIONS.iter().map(|c| c.to_string()).collect();
    for wf in catalog().procedures.values() {
        for step in &wf.steps {
            if let Some(c) = &step.when {
                conditions.push(c.source().to_string());
            }
        }
    }
    for (i, c) in conditions.iter().enumerate() {
        write(&out, &format!("condition-{i:02}"), c.as_bytes())?;
    }

    let out = corpus.join("calendar");
    std::fs::create_dir_all(&out)?;
    for f in toml_files(&workflows.join("calendars"))? {
        write(&out, &file_name(&f), &std::fs::read(&f)?)?;
    }
    write(&out, "dst-2026.toml", DST_CALENDAR.as_bytes())?;

    proto_seeds(&corpus.join("proto_decode"))
}

/// The proto seeds, from a birth dossier driven to its result.
fn proto_seeds(out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let wf = catalog()
        .procedure("2.000986")
        .expect("birth group")
        .clone();
    let calendar = catalog().calendar(&wf.calendar).expect("its calendar");
    let dossier_id = "0190f5c2-7d1e-7a3b-9c4d-5e6f708192a3";
    let desk = actor(&wf.receiving_agency.0);
    let mut now = local(2026, 3, 2, 9);
    let mut state = DossierState::default();
    let mut sealed = Vec::new();
    let mut requests: Vec<(pb::bus_command::Command, Actor)> = Vec::new();
    let mut prev = chain::GENESIS_HASH;

    let submit = pb::SubmitRequest {
        idempotency_key: "seed-1".into(),
        procedure_code: wf.code.clone(),
        channel: pb::Channel::InPerson as i32,
        applicant: Some(pb::Applicant {
            full_name: "Nguyễn Thị Lan".into(),
            id_number: "001190000001".into(),
            phone: "0912345678".into(),
            email: String::new(),
        }),
        attributes: BTreeMap::from([
            (
                "child.age_months".to_string(),
                attr(pb::attribute_value::Kind::Integer(2)),
            ),
            (
                "child.birth_date".to_string(),
                attr(pb::attribute_value::Kind::Date("2026-01-02".into())),
            ),
            (
                "child.has_health_card".to_string(),
                attr(pb::attribute_value::Kind::Boolean(false)),
            ),
        ]),
        documents: vec![doc("to-khai-khai-sinh")],
        officer: "Lê Văn Tâm".into(),
    };
    requests.push((pb::bus_command::Command::Submit(submit), desk.clone()));

    // Drive the dossier: each request is decided; accepted ones become sealed events.
    let mut i = 0;
    while i < requests.len() && i < 32 {
        let (request, who) = requests[i].clone();
        i += 1;
        let command = match &request {
            pb::bus_command::Command::Submit(r) => r.command(&Limits::default()),
            pb::bus_command::Command::CompleteStep(r) => r.command(&Limits::default()),
            pb::bus_command::Command::RequestSupplement(r) => r.command(&Limits::default()),
            pb::bus_command::Command::ProvideSupplement(r) => r.command(&Limits::default()),
            pb::bus_command::Command::ReturnResult(r) => r.command(&Limits::default()),
            _ => continue,
        }
        .expect("seed requests pass the gateway's checks");
        let ctx = DecideContext {
            now,
            actor: &who,
            workflow: &wf,
            calendar,
        };
        let bodies = match dossier::decide(&state, &command, &ctx) {
            Ok(b) => b,
            Err(r) => panic!("seed request {} rejected: {r}", command.kind()),
        };
        for body in bodies {
            let seq = state.seq + 1;
            let event = Event {
                envelope: Some(Envelope {
                    dossier_id: dossier_id.into(),
                    dossier_code: "UBND.XA-260302-0001".into(),
                    seq,
                    global_position: 100 + seq,
                    recorded_at: Some(dossier::convert::timestamp(now)),
                    actor: Some(who.clone()),
                    command_id: format!("seed-{i}"),
                    prev_hash: prev.to_vec(),
                }),
                body: Some(body),
            };
            let s = chain::seal(&event);
            prev = chain::hash_of(&s.raw);
            sealed.push(s);
            state = dossier::evolve(state, &event);
        }
        now += chrono::Duration::hours(3);
        if i < requests.len() {
            continue; // queued requests first
        }
        // Next: one supplement round on the first step, then complete every open step, then
        // return the result at the desk.
        let key = format!("seed-{}", i + 1);
        let open: Vec<(String, String)> = state
            .step_view(&wf)
            .into_iter()
            .filter(|(_, v)| *v == StepView::Open)
            .filter_map(|(id, _)| wf.step(&id).map(|s| (id, s.agency.0.clone())))
            .collect();
        if i == 1
            && let Some((step, agency)) = open.first()
        {
            let r = pb::RequestSupplementRequest {
                idempotency_key: key,
                dossier: dossier_id.into(),
                step_id: step.clone(),
                items: vec!["Giấy chứng sinh (birth certificate)".into()],
                reason: "thiếu giấy chứng sinh".into(),
                addressed_to: String::new(),
                officer: "Phạm Thu".into(),
            };
            requests.push((
                pb::bus_command::Command::RequestSupplement(r),
                actor(agency),
            ));
            let p = pb::ProvideSupplementRequest {
                idempotency_key: format!("seed-{}-p", i + 1),
                dossier: dossier_id.into(),
                documents: vec![doc("giay-chung-sinh")],
                note: "đã bổ sung".into(),
                officer: String::new(),
            };
            requests.push((
                pb::bus_command::Command::ProvideSupplement(p),
                actor("citizen"),
            ));
            continue;
        }
        if let Some((step, agency)) = open.first() {
            let r = pb::CompleteStepRequest {
                idempotency_key: key,
                dossier: "UBND.XA-260302-0001".into(),
                step_id: step.clone(),
                outcome: "approve".into(),
                results: vec![doc(&format!("ket-qua-{step}"))],
                note: "xong".into(),
                officer: "Trần Bình".into(),
            };
            requests.push((pb::bus_command::Command::CompleteStep(r), actor(agency)));
        } else if state.closed.is_none() && !state.steps.is_empty() {
            let r = pb::ReturnResultRequest {
                idempotency_key: key,
                dossier: dossier_id.into(),
                results: vec![doc("giay-khai-sinh")],
                channel: pb::Channel::InPerson as i32,
                officer: "Lê Văn Tâm".into(),
            };
            requests.push((pb::bus_command::Command::ReturnResult(r), desk.clone()));
        }
    }
    println!(
        "seed dossier: {} events, {} requests",
        sealed.len(),
        requests.len()
    );

    // Requests that the drive above does not make, so that every message has a seed.
    let other: Vec<pb::bus_command::Command> = vec![
        pb::bus_command::Command::RejectStep(pb::RejectStepRequest {
            idempotency_key: "seed-r".into(),
            dossier: dossier_id.into(),
            step_id: "register-birth".into(),
            reason: "sai thông tin".into(),
            officer: String::new(),
        }),
        pb::bus_command::Command::Refuse(pb::RefuseRequest {
            idempotency_key: "seed-f".into(),
            dossier: dossier_id.into(),
            step_id: String::new(),
            reason: "không đủ điều kiện".into(),
            officer: String::new(),
        }),
        pb::bus_command::Command::Stop(pb::StopRequest {
            idempotency_key: "seed-s".into(),
            dossier: dossier_id.into(),
            reason: "theo yêu cầu".into(),
            officer: String::new(),
        }),
        pb::bus_command::Command::IssueApology(pb::IssueApologyRequest {
            idempotency_key: "seed-a".into(),
            dossier: dossier_id.into(),
            step_id: "register-birth".into(),
            reason: "trễ hạn".into(),
            new_appointment: Some(dossier::convert::timestamp(local(2026, 3, 20, 16))),
            officer: String::new(),
        }),
        pb::bus_command::Command::Withdraw(pb::WithdrawRequest {
            idempotency_key: "seed-w".into(),
            dossier: dossier_id.into(),
            reason: "rút hồ sơ".into(),
            officer: String::new(),
        }),
        pb::bus_command::Command::Get(pb::GetDossierRequest {
            dossier: "UBND.XA-260302-0001".into(),
        }),
    ];
    requests.extend(other.into_iter().map(|c| (c, desk.clone())));

    let stored = ProtoKind::StoredRecord.byte();
    for (n, s) in sealed.iter().enumerate() {
        write(
            out,
            &format!("record-{n:02}"),
            &framed(stored, &[], &s.encode_to_vec()),
        )?;
    }
    let stream = ProtoKind::StoredStream.byte();
    for len in [1, 2, sealed.len() / 2, sealed.len()] {
        let mut payload = Vec::new();
        for s in &sealed[..len.min(sealed.len())] {
            prost::encode_length_delimiter(s.raw.len(), &mut payload).expect("vec grows");
            payload.extend_from_slice(&s.raw);
        }
        write(
            out,
            &format!("stream-{len:02}"),
            &framed(stream, &[], &payload),
        )?;
    }
    let keys = ProtoKind::StoreKeys.byte();
    let head = HeadValue {
        seq: sealed.len() as u64,
        last_position: 100 + sealed.len() as u64,
        first_position: 101,
        hash: prev,
        code: "UBND.XA-260302-0001".into(),
    };
    write(out, "head", &framed(keys, &[], &head.encode()))?;
    let idem = IdemValue {
        fingerprint: [7; 32],
        dossier: dossier_id.parse().expect("uuid"),
        first_seq: 1,
        last_seq: 3,
        position: 103,
    };
    write(out, "idempotency", &framed(keys, &[], &idem.encode()))?;

    let bus = ProtoKind::BusCommand.byte();
    let request = ProtoKind::Request.byte();
    for (n, (command, who)) in requests.iter().enumerate() {
        let b = pb::BusCommand {
            actor: Some(who.clone()),
            command: Some(command.clone()),
            routed_only: n % 2 == 0,
        };
        write(
            out,
            &format!("bus-{n:02}"),
            &framed(bus, &[], &b.encode_to_vec()),
        )?;
        let (name, body) = request_body(command);
        let which = REQUESTS.iter().position(|r| *r == name).expect("known") as u8;
        let agency = ["ubnd-xa", "tu-phap", "cong-an", "bhxh", "citizen", "engine"]
            .iter()
            .position(|a| *a == who.agency)
            .unwrap_or(0) as u8;
        write(
            out,
            &format!("request-{n:02}"),
            &framed(request, &[which, agency], &body),
        )?;
    }
    Ok(())
}

/// The request's message name and encoding.
fn request_body(c: &pb::bus_command::Command) -> (&'static str, Vec<u8>) {
    use pb::bus_command::Command as C;
    match c {
        C::Submit(r) => ("SubmitRequest", r.encode_to_vec()),
        C::CompleteStep(r) => ("CompleteStepRequest", r.encode_to_vec()),
        C::RejectStep(r) => ("RejectStepRequest", r.encode_to_vec()),
        C::RequestSupplement(r) => ("RequestSupplementRequest", r.encode_to_vec()),
        C::ProvideSupplement(r) => ("ProvideSupplementRequest", r.encode_to_vec()),
        C::Refuse(r) => ("RefuseRequest", r.encode_to_vec()),
        C::Stop(r) => ("StopRequest", r.encode_to_vec()),
        C::IssueApology(r) => ("IssueApologyRequest", r.encode_to_vec()),
        C::ReturnResult(r) => ("ReturnResultRequest", r.encode_to_vec()),
        C::Withdraw(r) => ("WithdrawRequest", r.encode_to_vec()),
        C::Get(r) => ("GetDossierRequest", r.encode_to_vec()),
    }
}

fn framed(kind: u8, extra: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(extra);
    v.extend_from_slice(payload);
    v
}

fn attr(kind: pb::attribute_value::Kind) -> pb::AttributeValue {
    pb::AttributeValue { kind: Some(kind) }
}

fn doc(kind: &str) -> pb::DocumentRef {
    pb::DocumentRef {
        kind: kind.into(),
        uri: format!("s3://ho-so/{kind}.pdf"),
        sha256: "a".repeat(64),
    }
}

fn actor(agency: &str) -> Actor {
    Actor {
        agency: agency.into(),
        officer: String::new(),
        channel: pb::Channel::System as i32,
    }
}

/// Local time in Hà Nội (UTC+7) as a UTC instant.
fn local(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("valid")
        - chrono::Duration::hours(7)
}

fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(dir.join(name), bytes)
}
