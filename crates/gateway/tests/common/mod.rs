//! A real gateway on a free port over a real engine and sled store in a temporary directory (its
//! projections in `<dir>/projections`, over the same store), stopped on `Drop`; and a client
//! helper that adds a principal's bearer token.

#![allow(dead_code)]

pub mod pki;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lienthong_engine::runtime::{Engine, ManualClock};
use lienthong_engine::store::SledStore;
use lienthong_gateway::auth::{Authenticator, token_hash_hex};
use lienthong_gateway::server::{Services, serve_shared};
use lienthong_gateway::shared::Shared;
use lienthong_gateway::{Config, Limits, ReadModels, Tls};
use lienthong_projections::{FeedSource, Projections};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_client::AgencyServiceClient;
use lienthong_proto::v1::audit_service_client::AuditServiceClient;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use lienthong_proto::v1::report_service_client::ReportServiceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Principals of the test auth file: (id, agency, role, token, client_cert).
pub const PRINCIPALS: &[(&str, &str, &str, &str)] = &[
    ("desk", "ubnd-xa", "desk", "tok-desk"),
    ("tu-phap", "tu-phap", "agency", "tok-tu-phap"),
    ("cong-an", "cong-an", "agency", "tok-cong-an"),
    ("bhxh", "bhxh", "agency", "tok-bhxh"),
    ("auditor", "kiem-toan", "auditor", "tok-auditor"),
    ("admin", "quan-tri", "admin", "tok-admin"),
];

/// The auth file for [`PRINCIPALS`]; `cert_agencies` also authenticate by client certificate.
pub fn auth_toml(cert_agencies: &[&str]) -> String {
    let mut s = String::new();
    for (id, agency, role, token) in PRINCIPALS {
        s.push_str(&format!(
            "[[principal]]\nid = \"{id}\"\nagency = \"{agency}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\nclient_cert = {}\n\n",
            token_hash_hex(token),
            cert_agencies.contains(agency)
        ));
    }
    s
}

/// Monday 2 March 2026, 09:00 in Hanoi: a working morning well inside the calendars.
pub fn monday_morning() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T09:00:00+07:00")
        .expect("valid instant")
        .with_timezone(&Utc)
}

/// A running gateway; stops (gracefully) when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The engine's clock (tests move time by hand).
    pub clock: ManualClock,
    /// The read models the report service answers from (a clone of the server's handle).
    pub models: ReadModels,
    /// The server's shared state (to observe its open streams).
    pub shared: Arc<Shared>,
    /// Keeps the store's directory alive.
    _dir: tempfile::TempDir,
    /// Fires the shutdown.
    stop: Option<oneshot::Sender<()>>,
    /// The server task.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Plaintext on 127.0.0.1, port 0.
    pub async fn start() -> TestServer {
        Self::start_with(None, &[]).await
    }

    /// With optional TLS material and the agencies that may authenticate by certificate.
    pub async fn start_with(tls: Option<Tls>, cert_agencies: &[&str]) -> TestServer {
        Self::start_full(tls, cert_agencies, Limits::default()).await
    }

    /// Plaintext, with these limits.
    pub async fn start_with_limits(limits: Limits) -> TestServer {
        Self::start_full(None, &[], limits).await
    }

    /// TLS material, certificate agencies and limits.
    pub async fn start_full(
        tls: Option<Tls>,
        cert_agencies: &[&str],
        limits: Limits,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let workflows = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let catalog = Arc::new(
            lienthong_workflow::Catalog::load(&workflows).expect("the project's workflows load"),
        );
        let store = Arc::new(SledStore::open(dir.path()).expect("store opens"));
        let feed: Arc<dyn FeedSource> = store.clone();
        let projections = Projections::open(&dir.path().join("projections"), feed, catalog.clone())
            .expect("projections open");
        let models = ReadModels::new(Arc::new(projections));
        let server_models = models.clone();
        let clock = ManualClock::new(monday_morning());
        let engine = Engine::new(store, catalog, Arc::new(clock.clone()));
        let auth = Authenticator::from_toml(&auth_toml(cert_agencies), "test").expect("auth");
        let config = Config {
            auth,
            tls,
            limits,
            ..Config::default()
        };
        let shared = Shared::new(engine, config.auth.clone(), config.limits);
        let server_shared = shared.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_shared(
                listener,
                server_shared,
                Some(server_models),
                Services::All,
                config,
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("server runs");
        });
        TestServer {
            addr,
            clock,
            models,
            shared,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A plaintext channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connects")
    }

    /// Clients of the four services over one plaintext channel.
    pub async fn clients(&self) -> Clients {
        Clients::over(self.channel().await)
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
        }
    }
}

impl Clients {
    /// Clients of the four services over `ch`.
    pub fn over(ch: Channel) -> Clients {
        Clients {
            dossiers: DossierServiceClient::new(ch.clone()),
            agencies: AgencyServiceClient::new(ch.clone()),
            audit: AuditServiceClient::new(ch.clone()),
            reports: ReportServiceClient::new(ch),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The four service clients.
#[derive(Clone)]
pub struct Clients {
    /// Submit, get, history, supplement, return, withdraw.
    pub dossiers: DossierServiceClient<Channel>,
    /// The task stream and the agencies' acts.
    pub agencies: AgencyServiceClient<Channel>,
    /// Replay, verify, export.
    pub audit: AuditServiceClient<Channel>,
    /// Board, breaches, indicators.
    pub reports: ReportServiceClient<Channel>,
}

/// A request carrying the token of the principal `id` (an empty id: no token).
pub fn req<T>(id: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some((_, _, _, token)) = PRINCIPALS.iter().find(|p| p.0 == id) {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    r
}

/// A document reference with a well-formed hash.
pub fn doc(kind: &str) -> pb::DocumentRef {
    use sha2::{Digest, Sha256};
    pb::DocumentRef {
        kind: kind.into(),
        uri: format!("s3://docs/{kind}"),
        sha256: hex::encode(Sha256::digest(kind.as_bytes())),
    }
}

/// A birth-group submission (child of `age_months`).
pub fn birth(key: &str, age_months: i64) -> pb::SubmitRequest {
    use pb::attribute_value::Kind;
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert(
        "child.age_months".to_string(),
        pb::AttributeValue {
            kind: Some(Kind::Integer(age_months)),
        },
    );
    attributes.insert(
        "child.birth_date".to_string(),
        pb::AttributeValue {
            kind: Some(Kind::Date("2026-01-05".into())),
        },
    );
    pb::SubmitRequest {
        idempotency_key: key.into(),
        procedure_code: "2.000986".into(),
        channel: pb::Channel::InPerson as i32,
        applicant: Some(pb::Applicant {
            full_name: "Trần Thị B".into(),
            id_number: "001090000001".into(),
            phone: String::new(),
            email: String::new(),
        }),
        attributes,
        documents: vec![doc("to-khai-khai-sinh"), doc("giay-chung-sinh")],
        officer: "can-bo-1".into(),
    }
}

/// Reads `n` tasks (skipping caught-up markers) from a task stream, with a timeout.
pub async fn next_tasks(
    stream: &mut tonic::Streaming<pb::TaskStreamMessage>,
    n: usize,
) -> Vec<(u64, pb::Task)> {
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("a task within 10 s")
            .expect("stream ok")
            .expect("stream open");
        if let Some(pb::task_stream_message::Item::Task(t)) = msg.item {
            out.push((msg.position, t));
        }
    }
    out
}

/// Reads until a caught-up marker; returns the tasks seen before it.
pub async fn tasks_until_caught_up(
    stream: &mut tonic::Streaming<pb::TaskStreamMessage>,
) -> Vec<(u64, pb::Task)> {
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("a message within 10 s")
            .expect("stream ok")
            .expect("stream open");
        match msg.item {
            Some(pb::task_stream_message::Item::Task(t)) => out.push((msg.position, t)),
            _ => return out,
        }
    }
}

/// The last position of the global feed (read by the auditor), reading only what lies after
/// `known` (a position already read, so that each look costs only the new events).
pub async fn feed_end(c: &mut Clients, known: u64) -> Result<u64, tonic::Status> {
    let msg = pb::ExportFeedRequest {
        after_position: known,
        limit: 0,
    };
    let mut s = c.audit.export_feed(req("auditor", msg)).await?.into_inner();
    let mut end = known;
    while let Some(e) = s.message().await? {
        if let Some(env) = e.event.and_then(|e| e.envelope) {
            end = end.max(env.global_position);
        }
    }
    Ok(end)
}
