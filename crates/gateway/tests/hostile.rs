//! Hostile input over real gRPC (issue #7): each kind of malformed, oversized or abusive call
//! gets the status the gateway's error map (`gateway::status`) promises, writes nothing, and
//! leaves the server answering normally.
//!
//! How: a real server ([`common::TestServer`]: tonic over TCP, engine, sled store) and real tonic
//! clients. Well-formed messages go through the generated clients; bytes the generated types
//! cannot express (a string field that is not UTF-8, an enum number the contract does not define,
//! protobuf groups nested thousands deep) are written by hand as protobuf and sent through
//! `tonic::client::Grpc` with a pass-through message type ([`Raw`]), exactly as a buggy or
//! hostile client in another language would. After every refused call the feed's last position
//! is compared with the one before (nothing was written) and a normal call must succeed
//! ([`healthy`]). The stream test opens and abandons 2,000 task streams and then reads the
//! server's count of open streams (`Shared::streams_open`, exported to `/metrics` as
//! `lienthong_grpc_streams_open`): every abandoned stream must have released its slot.
//!
//! The attribute type (`AttributeValue`: text, integer, boolean, date) cannot nest, so "deeply
//! nested values" are tried where protobuf itself allows nesting: an unknown field made of groups
//! nested 5,000 deep, which the decoder must refuse (recursion limit) rather than overflow the
//! stack.

mod common;

use std::time::Duration;

use bytes::BufMut;
use common::{Clients, TestServer, birth, feed_end, req};
use lienthong_gateway::Limits;
use lienthong_gateway::config::{ATTRIBUTES_MAX_DEFAULT, MESSAGE_BYTES_MAX_DEFAULT};
use lienthong_proto::v1 as pb;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The longest any one call may take before the test counts it as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Task streams opened and abandoned in [`thousands_of_abandoned_task_streams_release_their_slots`].
const ABANDONED_STREAMS: usize = 2_000;

/// Streams opened at once in that test (below the default `streams_max`, 1,024).
const STREAMS_AT_ONCE: usize = 200;

/// Bytes that are already a protobuf message: encoded as they are, whatever they hold.
#[derive(Clone, Debug, Default, PartialEq)]
struct Raw(Vec<u8>);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Appends a length-delimited field `tag` holding `bytes` (a string, bytes or a message).
fn put_len(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.put_slice(bytes);
}

/// Calls `path` (`/package.Service/Method`) with `body` as the request's protobuf bytes and the
/// desk's token; the answer is decoded as `R`.
async fn raw_call<R>(server: &TestServer, path: &'static str, body: Vec<u8>) -> Result<R, Status>
where
    R: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Raw, R>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(req("desk", Raw(body)), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Runs a future that must not hang.
async fn timed<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .expect("the call answered in time")
}

/// After a refused call (`what`, for the failure message): nothing was written since the feed
/// position `end`, and the server still answers a normal call.
async fn unharmed(c: &mut Clients, end: u64, known: &str, what: &str) {
    assert_eq!(
        feed_end(c, end).await.expect("feed"),
        end,
        "{what}: nothing written"
    );
    healthy(c, known).await;
}

/// The server answers a normal call: the desk reads the dossier `known`.
async fn healthy(c: &mut Clients, known: &str) {
    let d = timed(c.dossiers.get(req(
        "desk",
        pb::GetDossierRequest {
            dossier: known.to_string(),
        },
    )))
    .await
    .expect("the server still answers a normal call")
    .into_inner();
    assert_eq!(d.id, known);
}

/// A server with the default limits and one dossier (its id) to read back.
async fn server_with_a_dossier() -> (TestServer, Clients, String) {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let id = c
        .dossiers
        .submit(req("desk", birth("baseline", 2)))
        .await
        .expect("a normal submission")
        .into_inner()
        .dossier_id;
    (server, c, id)
}

/// `req` with the applicant's name padded so that the message is exactly `bytes` long.
fn padded(mut req: pb::SubmitRequest, bytes: usize) -> pb::SubmitRequest {
    let mut n = bytes.saturating_sub(req.encoded_len());
    for _ in 0..10 {
        req.applicant.get_or_insert_default().full_name = "x".repeat(n);
        let len = req.encoded_len();
        if len == bytes {
            return req;
        }
        // Length prefixes grow with the name: step by the difference.
        n = (n + bytes).saturating_sub(len);
    }
    panic!("cannot pad a submission to exactly {bytes} bytes");
}

/// Checks that `outcome` is an error with `code`; returns it.
fn refused<T: std::fmt::Debug>(what: &str, outcome: Result<T, Status>, code: Code) -> Status {
    let s = match outcome {
        Ok(v) => panic!("{what}: expected {code:?}, the call succeeded: {v:?}"),
        Err(s) => s,
    };
    assert_eq!(s.code(), code, "{what}: {s:?}");
    s
}

/// The first field a `BadRequest` detail names.
fn bad_field(s: &Status) -> String {
    s.get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_else(|| panic!("a BadRequest naming the field: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_size_limit_are_refused_by_name_and_the_limit_is_exact() {
    let (server, mut c, known) = server_with_a_dossier().await;
    let end = feed_end(&mut c, 0).await.expect("feed");

    // One byte over: tonic's decoder refuses it before any handler runs; the gateway answers
    // RESOURCE_EXHAUSTED naming the limit.
    let over = padded(birth("over", 2), MESSAGE_BYTES_MAX_DEFAULT + 1);
    let s = refused(
        "one byte over message_bytes_max",
        timed(c.dossiers.submit(req("desk", over))).await,
        Code::ResourceExhausted,
    );
    assert!(
        s.message().starts_with("message_bytes_max:"),
        "{}",
        s.message()
    );
    let info = s.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("message_bytes_max")
    );
    unharmed(&mut c, end, &known, "").await;

    // Exactly at the limit: the decoder lets it through, and the next limit judges it (an event
    // is at most 32 KiB in the store): still RESOURCE_EXHAUSTED, not the message limit, nothing
    // written.
    let at = padded(birth("at", 2), MESSAGE_BYTES_MAX_DEFAULT);
    let s = refused(
        "exactly message_bytes_max",
        timed(c.dossiers.submit(req("desk", at))).await,
        Code::ResourceExhausted,
    );
    assert!(
        !s.message().contains("message_bytes_max"),
        "the decoder accepted it: {}",
        s.message()
    );
    unharmed(&mut c, end, &known, "").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_attribute_maps_are_refused_with_a_bounded_answer() {
    let (server, mut c, known) = server_with_a_dossier().await;
    let end = feed_end(&mut c, 0).await.expect("feed");
    let text = |t: String| pb::AttributeValue {
        kind: Some(pb::attribute_value::Kind::Text(t)),
    };

    // Count: one more than attributes_max.
    let mut many = birth("many", 2);
    for i in 0..=ATTRIBUTES_MAX_DEFAULT {
        many.attributes
            .insert(format!("extra.a{i:04}"), text("x".into()));
    }
    let s = refused(
        "attributes_max + 1 attributes",
        timed(c.dossiers.submit(req("desk", many))).await,
        Code::ResourceExhausted,
    );
    assert!(
        s.message().starts_with("attributes_max:"),
        "{}",
        s.message()
    );

    // One value over the engine's text limit (4,000 bytes).
    let mut long = birth("long-value", 2);
    long.attributes
        .insert("extra.note".into(), text("y".repeat(5_000)));
    let s = refused(
        "a 5,000-byte attribute value",
        timed(c.dossiers.submit(req("desk", long))).await,
        Code::ResourceExhausted,
    );
    let info = s.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "too-large");

    // Total bytes: as many attributes as allowed, each with a 1,000-byte name (undeclared) and a
    // 200-byte value: 240 KB, just under message_bytes_max. Every name is wrong, and the answer
    // must still be a readable INVALID_ARGUMENT of bounded size: echoing the names made response
    // headers larger than the client accepts (it saw an HTTP/2 PROTOCOL_ERROR, as INTERNAL).
    let mut wide = birth("wide", 2);
    for i in 0..ATTRIBUTES_MAX_DEFAULT - wide.attributes.len() {
        wide.attributes
            .insert(format!("{i:04}{}", "n".repeat(996)), text("v".repeat(200)));
    }
    assert!(wide.encoded_len() < MESSAGE_BYTES_MAX_DEFAULT);
    assert!(wide.encoded_len() > MESSAGE_BYTES_MAX_DEFAULT * 9 / 10);
    let s = refused(
        "200 attributes with 1,000-byte names",
        timed(c.dossiers.submit(req("desk", wide))).await,
        Code::InvalidArgument,
    );
    let info = s.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "invalid-attributes");
    assert!(bad_field(&s).starts_with("attributes["), "{s:?}");
    assert!(
        s.message().len() <= 4_096,
        "the message is bounded: {} bytes",
        s.message().len()
    );

    // One attribute whose name alone is 100 KB.
    let mut huge_name = birth("huge-name", 2);
    huge_name
        .attributes
        .insert("k".repeat(100_000), text("v".into()));
    let s = refused(
        "a 100 KB attribute name",
        timed(c.dossiers.submit(req("desk", huge_name))).await,
        Code::InvalidArgument,
    );
    assert!(
        s.message().len() <= 4_096,
        "the message is bounded: {} bytes",
        s.message().len()
    );

    unharmed(&mut c, end, &known, "").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_that_are_not_utf8_are_invalid_argument_naming_the_field() {
    let (server, mut c, known) = server_with_a_dossier().await;
    let end = feed_end(&mut c, 0).await.expect("feed");
    const SUBMIT: &str = "/lienthong.v1.DossierService/Submit";
    let not_utf8: &[u8] = &[b'2', 0xff, 0xfe, b'.', 0xc3, 0x28];
    let valid = birth("utf8", 2).encode_to_vec();

    // A later occurrence of a field replaces (a string) or merges into (a message) the earlier
    // one, so appending a field to a valid submission makes exactly that field wrong.
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut top = valid.clone();
    put_len(&mut top, 2, not_utf8); // procedure_code
    cases.push(("procedure_code", top, "procedure_code"));
    let mut nested = valid.clone();
    let mut applicant = Vec::new();
    put_len(&mut applicant, 1, not_utf8); // Applicant.full_name
    put_len(&mut nested, 4, &applicant);
    cases.push(("applicant.full_name", nested, "applicant.full_name"));
    let mut value = Vec::new();
    put_len(&mut value, 1, not_utf8); // AttributeValue.text
    let mut entry = Vec::new();
    put_len(&mut entry, 1, b"child.note");
    put_len(&mut entry, 2, &value);
    let mut in_map = valid.clone();
    put_len(&mut in_map, 5, &entry); // attributes
    cases.push(("an attribute's text", in_map, "attributes"));
    let mut key_entry = Vec::new();
    put_len(&mut key_entry, 1, not_utf8);
    let mut in_key = valid.clone();
    put_len(&mut in_key, 5, &key_entry);
    cases.push(("an attribute's name", in_key, "attributes"));
    let mut key = valid.clone();
    put_len(&mut key, 1, not_utf8); // idempotency_key
    cases.push(("idempotency_key", key, "idempotency_key"));

    for (what, body, field) in cases {
        let s = refused(
            what,
            timed(raw_call::<pb::CommandResponse>(&server, SUBMIT, body)).await,
            Code::InvalidArgument,
        );
        let named = bad_field(&s);
        assert!(named.starts_with(field), "{what}: names `{named}`: {s:?}");
        assert!(s.message().contains("UTF-8"), "{what}: {}", s.message());
        unharmed(&mut c, end, &known, what).await;
    }

    // The same bytes with the string made valid are accepted: the test's encoding is right.
    let mut fixed = valid.clone();
    put_len(&mut fixed, 7, "cán bộ một cửa".as_bytes()); // officer
    let ok = timed(raw_call::<pb::CommandResponse>(&server, SUBMIT, fixed))
        .await
        .expect("hand-written valid protobuf is accepted");
    assert!(!ok.dossier_id.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_nested_thousands_deep_is_refused_without_harm() {
    let (server, mut c, known) = server_with_a_dossier().await;
    let end = feed_end(&mut c, 0).await.expect("feed");
    // An unknown field 99 made of 5,000 nested groups, after a valid submission. The decoder
    // skips unknown fields, recursing into groups: it must stop at its recursion limit.
    let mut body = birth("deep", 2).encode_to_vec();
    const DEPTH: usize = 5_000;
    for _ in 0..DEPTH {
        encode_key(99, WireType::StartGroup, &mut body);
    }
    for _ in 0..DEPTH {
        encode_key(99, WireType::EndGroup, &mut body);
    }
    let s = refused(
        "groups nested 5,000 deep",
        timed(raw_call::<pb::CommandResponse>(
            &server,
            "/lienthong.v1.DossierService/Submit",
            body,
        ))
        .await,
        Code::InvalidArgument,
    );
    assert!(s.message().contains("recursion limit"), "{}", s.message());
    unharmed(&mut c, end, &known, "").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_values_the_contract_does_not_define_are_invalid_argument_naming_the_field() {
    let (server, mut c, known) = server_with_a_dossier().await;
    let end = feed_end(&mut c, 0).await.expect("feed");

    // The generated type carries an enum as its number, so any i32 goes on the wire.
    let mut unknown = birth("enum-99", 2);
    unknown.channel = 99;
    let s = refused(
        "Submit with channel 99",
        timed(c.dossiers.submit(req("desk", unknown))).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_field(&s), "channel");
    assert!(s.message().contains("99"), "{}", s.message());
    let mut negative = birth("enum-neg", 2);
    negative.channel = -7;
    let s = refused(
        "Submit with channel -7",
        timed(c.dossiers.submit(req("desk", negative))).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_field(&s), "channel");

    let s = refused(
        "ReturnResult with channel 42",
        timed(c.dossiers.return_result(req(
            "desk",
            pb::ReturnResultRequest {
                idempotency_key: "enum-42".into(),
                dossier: known.clone(),
                results: vec![common::doc("giay-khai-sinh")],
                channel: 42,
                officer: "can-bo".into(),
            },
        )))
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_field(&s), "channel");
    assert!(s.message().contains("42"), "{}", s.message());

    unharmed(&mut c, end, &known, "").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_key_returns_the_first_answer_and_a_changed_payload_is_already_exists() {
    let (server, mut c, known) = server_with_a_dossier().await;
    let first = timed(c.dossiers.submit(req("desk", birth("replay-1", 2))))
        .await
        .expect("first submission")
        .into_inner();
    assert!(!first.replayed);
    let end = feed_end(&mut c, 0).await.expect("feed");

    // The identical request again: the first answer, marked as a replay, nothing new written.
    let again = timed(c.dossiers.submit(req("desk", birth("replay-1", 2))))
        .await
        .expect("identical replay")
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.dossier_id, first.dossier_id);
    assert_eq!(again.dossier_code, first.dossier_code);
    assert_eq!(again.events, first.events, "the same events, not new ones");
    assert_eq!(
        feed_end(&mut c, end).await.expect("feed"),
        end,
        "nothing written"
    );

    // The same key with a changed payload: ALREADY_EXISTS (docs/decisions/0005), nothing written.
    let mut changed = birth("replay-1", 2);
    changed.applicant.get_or_insert_default().full_name = "Người Khác".into();
    let s = refused(
        "the same key, another applicant",
        timed(c.dossiers.submit(req("desk", changed))).await,
        Code::AlreadyExists,
    );
    let info = s.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "idempotency-key-reused");
    assert_eq!(
        feed_end(&mut c, end).await.expect("feed"),
        end,
        "nothing written"
    );

    // The same for an agency's act: complete, replay, then the same key with another outcome.
    let complete = |outcome: &str| pb::CompleteStepRequest {
        idempotency_key: "replay-act".into(),
        dossier: first.dossier_id.clone(),
        step_id: "register-birth".into(),
        outcome: outcome.into(),
        results: vec![common::doc("giay-khai-sinh")],
        note: String::new(),
        officer: "can-bo".into(),
    };
    let done = timed(
        c.agencies
            .complete_step(req("tu-phap", complete("approve"))),
    )
    .await
    .expect("completed")
    .into_inner();
    let end = feed_end(&mut c, end).await.expect("feed");
    let again = timed(
        c.agencies
            .complete_step(req("tu-phap", complete("approve"))),
    )
    .await
    .expect("identical replay")
    .into_inner();
    assert!(again.replayed);
    assert_eq!(again.events, done.events);
    let s = refused(
        "the same key, another outcome",
        timed(c.agencies.complete_step(req("tu-phap", complete("reject")))).await,
        Code::AlreadyExists,
    );
    assert_eq!(
        s.get_details_error_info().expect("ErrorInfo").reason,
        "idempotency-key-reused"
    );
    unharmed(&mut c, end, &known, "").await;
    server.stop().await;
}

/// A task-stream request of `tu-phap` that never ends by itself.
fn follow() -> tonic::Request<pb::StreamTasksRequest> {
    req(
        "tu-phap",
        pb::StreamTasksRequest {
            after_position: 0,
            agency: String::new(),
            backlog_only: false,
        },
    )
}

/// Opens `STREAMS_AT_ONCE` task streams of `tu-phap` on a new connection and abandons each at
/// once, from its own task: the even ones without reading, the odd ones after reading one message
/// (cancelled mid-stream).
async fn open_and_abandon_one_by_one(server: &TestServer) {
    let c = server.clients().await;
    let mut tasks = Vec::with_capacity(STREAMS_AT_ONCE);
    for i in 0..STREAMS_AT_ONCE {
        let mut agencies = c.agencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = agencies
                .stream_tasks(follow())
                .await
                .expect("the stream opens")
                .into_inner();
            if i % 2 == 1 {
                stream
                    .message()
                    .await
                    .expect("a message")
                    .expect("the stream is open");
            }
            // Dropped here: the client resets the stream.
        }));
    }
    for t in tasks {
        timed(t).await.expect("the stream was opened and abandoned");
    }
}

/// Opens `STREAMS_AT_ONCE` task streams of `tu-phap` on a new connection, holds them all unread
/// (each has more tasks than its buffer: the server's sender waits on a full buffer), then drops
/// them and the connection at once.
async fn open_hold_and_abandon(server: &TestServer) {
    let c = server.clients().await;
    let mut held = Vec::with_capacity(STREAMS_AT_ONCE);
    for _ in 0..STREAMS_AT_ONCE {
        let mut agencies = c.agencies.clone();
        let stream = timed(agencies.stream_tasks(follow()))
            .await
            .expect("the stream opens")
            .into_inner();
        held.push(stream);
    }
    assert!(
        server.shared.streams_open() >= STREAMS_AT_ONCE,
        "the held streams are counted: {}",
        server.shared.streams_open()
    );
    drop(held);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_abandoned_task_streams_release_their_slots() {
    // 2,000 stream opens plus the set-up exceed the default burst of one principal's request
    // rate (2,000): this test is about streams, so the rate is raised.
    let server = TestServer::start_full(
        None,
        &[],
        Limits {
            request_burst_max: 100_000,
            requests_per_s_max: 100_000,
            ..Limits::default()
        },
    )
    .await;
    let mut c = server.clients().await;
    // More tasks for tu-phap than a stream buffers (64): an unread stream's sender is blocked
    // on a full buffer when its client goes, the case most likely to leak.
    let mut known = String::new();
    for i in 0..80 {
        known = c
            .dossiers
            .submit(req("desk", birth(&format!("backlog-{i}"), 2)))
            .await
            .expect("submitted")
            .into_inner()
            .dossier_id;
    }
    assert_eq!(server.shared.streams_open(), 0, "the baseline");
    let end = feed_end(&mut c, 0).await.expect("feed");

    for round in 0..ABANDONED_STREAMS / STREAMS_AT_ONCE {
        if round % 2 == 0 {
            open_and_abandon_one_by_one(&server).await;
        } else {
            open_hold_and_abandon(&server).await;
        }
    }

    // Every abandoned stream gives its slot back once the server sees the reset; wait for that
    // (bounded), then check the count itself, not the time it took.
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    while server.shared.streams_open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.shared.streams_open(),
        0,
        "abandoned task streams still hold their slots"
    );

    // The server still streams and acts normally, and the streams wrote nothing.
    assert_eq!(
        feed_end(&mut c, end).await.expect("feed"),
        end,
        "nothing written"
    );
    let mut s = timed(c.agencies.stream_tasks(req(
        "tu-phap",
        pb::StreamTasksRequest {
            after_position: 0,
            agency: String::new(),
            backlog_only: true,
        },
    )))
    .await
    .expect("a new stream opens")
    .into_inner();
    let tasks = timed(common::tasks_until_caught_up(&mut s)).await;
    assert_eq!(tasks.len(), 80, "the whole backlog, once");
    drop(s);
    healthy(&mut c, &known).await;
    c.dossiers
        .submit(req("desk", birth("after-the-storm", 2)))
        .await
        .expect("a normal submission");
    server.stop().await;
}
