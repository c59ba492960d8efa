//! End-to-end over real gRPC: a tonic client against the real gateway on a free port, over a
//! real engine and sled store. Each test says what it proves.

mod common;

use common::{TestServer, birth, doc, next_tasks, req, tasks_until_caught_up};
use lienthong_proto::v1 as pb;
use tonic::Code;

fn complete(key: &str, dossier: &str, step: &str) -> pb::CompleteStepRequest {
    pb::CompleteStepRequest {
        idempotency_key: key.into(),
        dossier: dossier.into(),
        step_id: step.into(),
        outcome: "approve".into(),
        results: vec![doc(&format!("ket-qua-{step}"))],
        note: String::new(),
        officer: "can-bo".into(),
    }
}

fn stream_req(after: u64) -> pb::StreamTasksRequest {
    pb::StreamTasksRequest {
        after_position: after,
        agency: String::new(),
        backlog_only: false,
    }
}

/// The birth group end to end, as the integrators would do it: the desk submits, each
/// agency receives its task on its own stream and completes it, the desk completes the return
/// step and hands the result back; the history has every event with its hash chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birth_dossier_end_to_end() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;

    let submitted = c
        .dossiers
        .submit(req("desk", birth("sub-1", 14)))
        .await
        .expect("submitted")
        .into_inner();
    assert!(!submitted.replayed);
    let id = submitted.dossier_id.clone();
    let d = submitted.dossier.expect("state");
    assert_eq!(d.status(), pb::DossierStatus::Processing);
    assert!(d.code.starts_with("UBND.XA-260302-"), "{}", d.code);
    let open: Vec<_> = d
        .steps
        .iter()
        .filter(|s| s.status() == pb::StepStatus::Open)
        .map(|s| s.step_id.as_str())
        .collect();
    assert_eq!(open, ["register-birth"]);
    assert!(d.deadlines.iter().any(|x| x.step_id == "register-birth"));

    // Justice: one task, completed.
    let mut tp = c
        .agencies
        .stream_tasks(req("tu-phap", stream_req(0)))
        .await
        .expect("stream")
        .into_inner();
    let tasks = next_tasks(&mut tp, 1).await;
    assert_eq!(tasks[0].1.step_id, "register-birth");
    assert_eq!(tasks[0].1.dossier_id, id);
    assert_eq!(tasks[0].1.kind(), pb::TaskKind::StepOpened);
    c.agencies
        .complete_step(req("tu-phap", complete("tp-1", &id, "register-birth")))
        .await
        .expect("justice completes");

    // Police and social insurance get their tasks on their own streams (in parallel).
    for (who, step) in [
        ("cong-an", "register-residence"),
        ("bhxh", "issue-health-card"),
    ] {
        let mut s = c
            .agencies
            .stream_tasks(req(who, stream_req(0)))
            .await
            .expect("stream")
            .into_inner();
        let t = next_tasks(&mut s, 1).await;
        assert_eq!(
            (t[0].1.agency.as_str(), t[0].1.step_id.as_str()),
            (who, step)
        );
        c.agencies
            .complete_step(req(who, complete(&format!("{who}-1"), &id, step)))
            .await
            .expect("completes");
    }

    // The desk's own step, then the result goes back to the citizen.
    let mut desk = c
        .agencies
        .stream_tasks(req("desk", stream_req(0)))
        .await
        .expect("stream")
        .into_inner();
    let t = next_tasks(&mut desk, 1).await;
    assert_eq!(t[0].1.step_id, "return-result");
    c.agencies
        .complete_step(req("desk", complete("desk-rr", &id, "return-result")))
        .await
        .expect("desk completes its step");
    let closed = c
        .dossiers
        .return_result(req(
            "desk",
            pb::ReturnResultRequest {
                idempotency_key: "desk-return".into(),
                dossier: d.code.clone(),
                results: vec![doc("giay-khai-sinh")],
                channel: pb::Channel::InPerson as i32,
                officer: "can-bo-1".into(),
            },
        ))
        .await
        .expect("returned")
        .into_inner();
    let state = closed.dossier.expect("state");
    assert_eq!(state.status(), pb::DossierStatus::Closed);
    assert_eq!(state.outcome(), pb::Outcome::ResultReturned);

    // History: every event, seq 1..n, each hash = SHA-256(raw), chained.
    let mut h = c
        .dossiers
        .history(req(
            "desk",
            pb::HistoryRequest {
                dossier: id.clone(),
                after_seq: 0,
            },
        ))
        .await
        .expect("history")
        .into_inner();
    let mut prev = vec![0u8; 32];
    let mut n = 0u64;
    while let Some(e) = h.message().await.expect("stream ok") {
        n += 1;
        let sealed = e.sealed.expect("sealed");
        let env = e.event.expect("event").envelope.expect("envelope");
        assert_eq!(env.seq, n);
        assert_eq!(env.prev_hash, prev);
        use sha2::{Digest, Sha256};
        assert_eq!(Sha256::digest(&sealed.raw).to_vec(), sealed.hash);
        prev = sealed.hash;
    }
    assert!(n >= 10, "a full birth dossier has many events, got {n}");

    // The auditor verifies it.
    let v = c
        .audit
        .verify(req(
            "auditor",
            pb::VerifyRequest {
                dossier: id.clone(),
            },
        ))
        .await
        .expect("verify")
        .into_inner();
    assert!(v.clean && v.events == n, "{v:?}");
    server.stop().await;
}

/// A retry with the same key gives the same answer and no second effect; the same key with a
/// different request is refused with ALREADY_EXISTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let first = c
        .dossiers
        .submit(req("desk", birth("same-key", 14)))
        .await
        .expect("first")
        .into_inner();
    let again = c
        .dossiers
        .submit(req("desk", birth("same-key", 14)))
        .await
        .expect("retry")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.dossier_id, first.dossier_id);
    assert_eq!(
        again.events, first.events,
        "the original events, not new ones"
    );

    let err = c
        .dossiers
        .submit(req("desk", birth("same-key", 30)))
        .await
        .expect_err("different payload");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // One dossier only.
    let export: Vec<_> = {
        let mut s = c
            .audit
            .export_feed(req(
                "auditor",
                pb::ExportFeedRequest {
                    after_position: 0,
                    limit: 0,
                },
            ))
            .await
            .expect("export")
            .into_inner();
        let mut v = Vec::new();
        while let Some(e) = s.message().await.expect("ok") {
            v.push(e);
        }
        v
    };
    let dossiers: std::collections::BTreeSet<_> = export
        .iter()
        .map(|e| {
            e.event
                .as_ref()
                .and_then(|e| e.envelope.as_ref())
                .map(|e| e.dossier_id.clone())
        })
        .collect();
    assert_eq!(dossiers.len(), 1);

    // A completed step retried: same answer.
    let id = first.dossier_id;
    let a = c
        .agencies
        .complete_step(req("tu-phap", complete("k1", &id, "register-birth")))
        .await
        .expect("done")
        .into_inner();
    let b = c
        .agencies
        .complete_step(req("tu-phap", complete("k1", &id, "register-birth")))
        .await
        .expect("retried")
        .into_inner();
    assert!(!a.replayed && b.replayed);
    assert_eq!(a.events, b.events);
    server.stop().await;
}

/// Authentication and the role rules: no or unknown token is UNAUTHENTICATED; an agency acting
/// on another agency's step, reading a dossier not routed to it, or calling a desk-only RPC is
/// PERMISSION_DENIED; the auditor reads everything and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_roles() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;

    let e = c
        .dossiers
        .submit(tonic::Request::new(birth("k", 14)))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut bad = tonic::Request::new(birth("k", 14));
    bad.metadata_mut().insert(
        "authorization",
        "Bearer not-a-token".parse().expect("ascii"),
    );
    let e = c.dossiers.submit(bad).await.expect_err("bad token");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        !e.message().contains("not-a-token"),
        "tokens are never echoed"
    );

    let e = c
        .dossiers
        .submit(req("tu-phap", birth("k", 14)))
        .await
        .expect_err("agencies do not submit");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .dossiers
        .submit(req("auditor", birth("k", 14)))
        .await
        .expect_err("auditors do not submit");
    assert_eq!(e.code(), Code::PermissionDenied);

    let id = c
        .dossiers
        .submit(req("desk", birth("k", 14)))
        .await
        .expect("desk submits")
        .into_inner()
        .dossier_id;

    // Police: not routed yet, cannot read; and cannot act on the justice step.
    let e = c
        .dossiers
        .get(req(
            "cong-an",
            pb::GetDossierRequest {
                dossier: id.clone(),
            },
        ))
        .await
        .expect_err("not routed");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .agencies
        .complete_step(req("cong-an", complete("x", &id, "register-birth")))
        .await
        .expect_err("not its dossier");
    assert_eq!(e.code(), Code::PermissionDenied);

    // The justice officer reads it; the desk (routed, receiving) acts on the justice step: the
    // engine says not-your-step.
    c.dossiers
        .get(req(
            "tu-phap",
            pb::GetDossierRequest {
                dossier: id.clone(),
            },
        ))
        .await
        .expect("routed to justice");
    let e = c
        .agencies
        .complete_step(req("desk", complete("y", &id, "register-birth")))
        .await
        .expect_err("not the desk's step");
    assert_eq!(e.code(), Code::PermissionDenied);
    use tonic_types::StatusExt;
    assert_eq!(
        e.get_details_error_info().expect("error info").reason,
        "not-your-step"
    );

    // The auditor reads and verifies, never acts.
    c.dossiers
        .get(req(
            "auditor",
            pb::GetDossierRequest {
                dossier: id.clone(),
            },
        ))
        .await
        .expect("auditor reads");
    let e = c
        .agencies
        .complete_step(req("auditor", complete("z", &id, "register-birth")))
        .await
        .expect_err("auditor acts");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .audit
        .verify(req("tu-phap", pb::VerifyRequest::default()))
        .await
        .expect_err("audit is for auditors");
    assert_eq!(e.code(), Code::PermissionDenied);
    let v = c
        .audit
        .verify(req("auditor", pb::VerifyRequest::default()))
        .await
        .expect("whole store")
        .into_inner();
    assert!(v.clean, "{v:?}");

    // Streams: only one's own agency, unless auditor.
    let e = c
        .agencies
        .stream_tasks(req(
            "cong-an",
            pb::StreamTasksRequest {
                agency: "tu-phap".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another agency's tasks");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Input errors name the field; state errors carry the rejection code.
    let e = c
        .agencies
        .complete_step(req("tu-phap", complete("", &id, "register-birth")))
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request()
            .expect("bad request")
            .field_violations[0]
            .field,
        "idempotency_key"
    );
    let e = c
        .agencies
        .complete_step(req("tu-phap", complete("k2", &id, "no-such-step")))
        .await
        .expect_err("unknown step");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .dossiers
        .get(req(
            "auditor",
            pb::GetDossierRequest {
                dossier: "UBND.XA-000000-9999".into(),
            },
        ))
        .await
        .expect_err("no such dossier");
    assert_eq!(e.code(), Code::NotFound);
    let mut wrong = birth("k3", 14);
    wrong.attributes.insert(
        "child.nickname".into(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Text("Bi".into())),
        },
    );
    let e = c
        .dossiers
        .submit(req("desk", wrong))
        .await
        .expect_err("undeclared attribute");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.get_details_bad_request()
            .expect("bad request")
            .field_violations
            .iter()
            .any(|v| v.field == "attributes[child.nickname]"),
        "{e:?}"
    );

    // An admin acts as an agency with the act-as header.
    let mut r = req("admin", complete("adm-1", &id, "register-birth"));
    r.metadata_mut()
        .insert("lienthong-act-as", "tu-phap".parse().expect("ascii"));
    let done = c
        .agencies
        .complete_step(r)
        .await
        .expect("admin acts as tu-phap")
        .into_inner();
    let env = done.events[0]
        .event
        .as_ref()
        .and_then(|e| e.envelope.as_ref())
        .expect("env");
    let actor = env.actor.as_ref().expect("actor");
    assert_eq!(
        (actor.agency.as_str(), actor.officer.as_str()),
        ("tu-phap", "admin:admin")
    );
    server.stop().await;
}

/// A task stream resumed from the position of the last task handled loses no task, even with
/// tasks routed while no stream was open, and repeats none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_stream_loses_no_task() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let mut submitted = Vec::new();
    for i in 0..3 {
        let r = c
            .dossiers
            .submit(req("desk", birth(&format!("a{i}"), 14)))
            .await
            .expect("submit")
            .into_inner();
        submitted.push(r.dossier_id);
    }
    let mut s = c
        .agencies
        .stream_tasks(req("tu-phap", stream_req(0)))
        .await
        .expect("stream")
        .into_inner();
    let first = next_tasks(&mut s, 2).await;
    let cursor = first[1].0;
    drop(s); // the agency's system goes away after handling two tasks

    for i in 3..6 {
        let r = c
            .dossiers
            .submit(req("desk", birth(&format!("a{i}"), 14)))
            .await
            .expect("submit")
            .into_inner();
        submitted.push(r.dossier_id);
    }
    let mut s = c
        .agencies
        .stream_tasks(req("tu-phap", stream_req(cursor)))
        .await
        .expect("resumed")
        .into_inner();
    let rest = tasks_until_caught_up(&mut s).await;
    // A new dossier while the stream is open arrives live.
    let live = c
        .dossiers
        .submit(req("desk", birth("a6", 14)))
        .await
        .expect("submit")
        .into_inner();
    submitted.push(live.dossier_id);
    let live_task = next_tasks(&mut s, 1).await;

    let seen: Vec<String> = first
        .iter()
        .chain(rest.iter())
        .chain(live_task.iter())
        .map(|(_, t)| t.dossier_id.clone())
        .collect();
    assert_eq!(seen, submitted, "every task once, in routing order");
    server.stop().await;
}

/// The API's services.
const SERVICES: [&str; 4] = [
    "lienthong.v1.DossierService",
    "lienthong.v1.AgencyService",
    "lienthong.v1.AuditService",
    "lienthong.v1.ReportService",
];

/// Standard health checking answers SERVING for every service, and reflection lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection() {
    let server = TestServer::start().await;
    let ch = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in SERVICES {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            r.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(ch);
    let out = tokio_stream::once(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    });
    let mut resp = refl
        .server_reflection_info(out)
        .await
        .expect("reflection")
        .into_inner();
    let msg = resp.message().await.expect("ok").expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    server.stop().await;
}

/// A supplement addressed to something that is neither the citizen nor an agency of the
/// workflows is refused with INVALID_ARGUMENT on `addressed_to`, and nothing is written: its task
/// would have no queue to land in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplement_to_an_unknown_agency_is_refused() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let d = c
        .dossiers
        .submit(req("desk", birth("addr-1", 3)))
        .await
        .expect("submitted")
        .into_inner();
    let before = d.dossier.as_ref().expect("state").seq;
    let e = c
        .agencies
        .request_supplement(req(
            "tu-phap",
            pb::RequestSupplementRequest {
                idempotency_key: "addr-sup".into(),
                dossier: d.dossier_id.clone(),
                step_id: "register-birth".into(),
                items: vec!["giay-xac-nhan".into()],
                reason: "cần xác minh".into(),
                addressed_to: "Tư Pháp tỉnh".into(),
                officer: String::new(),
            },
        ))
        .await
        .expect_err("not an agency code");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("addressed_to"), "{}", e.message());
    let now = c
        .dossiers
        .get(req(
            "desk",
            pb::GetDossierRequest {
                dossier: d.dossier_id,
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.seq, before, "nothing written");
    server.stop().await;
}

/// Events that are no task for a stream's agency move its cursor with caught-up markers: after
/// the backlog's, at most one per `CAUGHT_UP_EVERY_MS` while they keep coming, and the one held
/// back arrives once the feed is quiet, carrying the feed's head.
#[tokio::test]
async fn caught_up_markers_are_spaced_and_the_last_one_carries_the_head() {
    use lienthong_gateway::agency_svc::CAUGHT_UP_EVERY_MS;
    const SUBMISSIONS: u64 = 20;
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let mut police = c
        .agencies
        .stream_tasks(req("cong-an", stream_req(0)))
        .await
        .expect("stream")
        .into_inner();
    assert!(tasks_until_caught_up(&mut police).await.is_empty());

    // Each submission moves the feed; none is a task for the police (justice goes first).
    let started = std::time::Instant::now();
    let mut head = 0;
    for i in 0..SUBMISSIONS {
        let answer = c
            .dossiers
            .submit(req("desk", birth(&format!("burst-{i}"), 2)))
            .await
            .expect("submit")
            .into_inner();
        for r in &answer.events {
            let env = r.event.as_ref().and_then(|e| e.envelope.as_ref());
            head = head.max(env.map_or(0, |e| e.global_position));
        }
    }
    let burst_ms = started.elapsed().as_millis() as u64;

    let mut markers = 0;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), police.message())
            .await
            .expect("the held marker arrives")
            .expect("stream ok")
            .expect("stream open");
        match msg.item {
            Some(pb::task_stream_message::Item::CaughtUp(m)) => {
                markers += 1;
                assert_eq!(m.position, msg.position);
                if m.position >= head {
                    assert_eq!(m.position, head, "no further than the feed's head");
                    break;
                }
            }
            other => panic!("no task for the police before justice completes: {other:?}"),
        }
    }
    // One per interval of the burst, one for its start and one held back for its end.
    let allowed = burst_ms / CAUGHT_UP_EVERY_MS + 2;
    assert!(
        markers <= allowed.min(SUBMISSIONS),
        "{markers} markers for {SUBMISSIONS} submissions in {burst_ms} ms"
    );
    server.stop().await;
}
