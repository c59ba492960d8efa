//! Named limits over real gRPC: a principal calling faster than `requests_per_s_max` gets
//! RESOURCE_EXHAUSTED with `RetryInfo` and the `rate-limited` reason, the refused call does
//! nothing, other principals are unaffected, and a retry after the delay passes. Oversized messages
//! and too many attributes are refused with RESOURCE_EXHAUSTED naming the limit; a stream ends at
//! the client's deadline.

mod common;

use std::time::Duration;

use common::{TestServer, birth, req};
use lienthong_gateway::Limits;
use lienthong_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_rate_is_told_when_to_retry_and_nothing_is_done() {
    // A burst of 3 calls, then 1 per second. Calls are sent until one is refused: however slow
    // the machine, one is refused within the burst plus one call per second spent.
    let server = TestServer::start_with_limits(Limits {
        requests_per_s_max: 1,
        request_burst_max: 3,
        ..Limits::default()
    })
    .await;
    let mut c = server.clients().await;
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    let (refused, refused_key) = loop {
        let key = format!("rate-{}", ids.len());
        match c.dossiers.submit(req("desk", birth(&key, 2))).await {
            Ok(r) => ids.push(r.into_inner().dossier_id),
            Err(s) => break (s, key),
        }
        let allowed = 3 + started.elapsed().as_secs() as usize + 1;
        assert!(
            ids.len() <= allowed,
            "{} calls passed in {:?}; at most {allowed} may",
            ids.len(),
            started.elapsed()
        );
    };
    assert!(ids.len() >= 3, "the burst passes: {refused:?}");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("requests_per_s_max"),
        "names the limit: {}",
        refused.message()
    );
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "rate-limited");
    let delay = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );

    // Another principal has its own bucket.
    c.dossiers
        .get(req(
            "auditor",
            pb::GetDossierRequest {
                dossier: ids[0].clone(),
            },
        ))
        .await
        .expect("the auditor is not limited by the desk's calls");

    // After the delay, the same request (same key) passes and is the first and only submission.
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    let ok = c
        .dossiers
        .submit(req("desk", birth(&refused_key, 2)))
        .await
        .expect("after the delay")
        .into_inner();
    assert!(!ok.replayed, "the refused call had done nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_by_name() {
    let server = TestServer::start_with_limits(Limits {
        message_bytes_max: 4096,
        attributes_max: 3,
        ..Limits::default()
    })
    .await;
    let mut c = server.clients().await;

    let mut big = birth("big", 2);
    big.applicant.get_or_insert_default().full_name = "x".repeat(8192);
    let s = c
        .dossiers
        .submit(req("desk", big))
        .await
        .expect_err("larger than message_bytes_max");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().starts_with("message_bytes_max:"),
        "{}",
        s.message()
    );

    let mut many = birth("many", 2);
    for i in 0..5 {
        many.attributes.insert(
            format!("extra.a{i}"),
            pb::AttributeValue {
                kind: Some(pb::attribute_value::Kind::Integer(i)),
            },
        );
    }
    let s = c
        .dossiers
        .submit(req("desk", many))
        .await
        .expect_err("more than attributes_max");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().starts_with("attributes_max:"),
        "{}",
        s.message()
    );
    let info = s.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("attributes_max")
    );
}

/// The server honours the client's deadline on a task stream (the `grpc-timeout` header is set by
/// hand so that only the server knows it): the backlog arrives, then the stream ends with
/// DEADLINE_EXCEEDED instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_ends_at_the_clients_deadline() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    c.dossiers
        .submit(req("desk", birth("deadline-1", 2)))
        .await
        .expect("submitted");
    let mut r = req("tu-phap", pb::StreamTasksRequest::default());
    r.metadata_mut()
        .insert("grpc-timeout", "400m".parse().expect("ascii"));
    let started = std::time::Instant::now();
    let mut s = c
        .agencies
        .stream_tasks(r)
        .await
        .expect("stream")
        .into_inner();
    let mut tasks = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.message()).await {
            Ok(Ok(Some(m))) => {
                if matches!(m.item, Some(pb::task_stream_message::Item::Task(_))) {
                    tasks += 1;
                }
            }
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream outlived the client's deadline by seconds"),
        }
    };
    assert_eq!(tasks, 1, "the backlog came first");
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}
