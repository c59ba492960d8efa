//! The engine node's command server over the in-process bus and a real nats-server (started per
//! test on a free port; without one these tests fail and say how to install it).
//!
//! What they prove, and how:
//! - `a_dossier_runs_end_to_end_over_bus_commands`: one engine node owns every partition. A
//!   requester speaking only the bus contract (`BusCommand` to `lienthong.cmd.<partition>`,
//!   `partition_of_key` for a submission, `partition_of` for the rest) files a birth dossier,
//!   completes the three agencies' steps, returns the result and reads the closed dossier; a
//!   retried submission is answered with the first answer; a bad request gets the gateway's
//!   INVALID_ARGUMENT with its field; another agency completing the justice step is refused by the
//!   engine's own rule.
//! - `two_nodes_split_the_partitions`: two engine nodes, each with its own store, own one of two
//!   partitions. Submissions routed by key land on the node owning that partition, and each new
//!   dossier's id is in a partition its node owns, so the commands that follow (routed by id) reach
//!   the node that holds it; the two nodes, each numbering codes from its own store, never issue
//!   the same code (each partition numbers its own stripe).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::memory::MemoryBus;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_bus::{Bus, Partition, PartitionCount, partition_of, partition_of_key};
use lienthong_engine::runtime::{Engine, ManualClock, Options, OwnedPartitions};
use lienthong_engine::store::SledStore;
use lienthong_gateway::shared::Shared;
use lienthong_gateway::{Limits, auth::Authenticator};
use lienthong_node::commands;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::bus_command::Command as C;
use prost::Message;
use tokio::sync::oneshot;
use tonic::Code;

/// How long a requester waits for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// An engine node: its store, engine, and the command server until dropped.
struct Node {
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    async fn start(bus: Arc<dyn Bus>, count: u32, owned: &[u32]) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let workflows = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let catalog = Arc::new(
            lienthong_workflow::Catalog::load(&workflows).expect("the project's workflows load"),
        );
        let store = Arc::new(SledStore::open(dir.path()).expect("store opens"));
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00+07:00")
            .expect("instant")
            .with_timezone(&chrono::Utc);
        let options = Options {
            partitions: Some(Arc::new(OwnedPartitions {
                count,
                owned: owned.iter().copied().collect(),
            })),
            ..Options::default()
        };
        let engine =
            Engine::with_options(store, catalog, Arc::new(ManualClock::new(start)), options);
        let shared = Shared::new(engine, Authenticator::default(), Limits::default());
        let partitions: Vec<Partition> = owned.iter().map(|p| Partition(*p)).collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let count = PartitionCount::new(count).expect("count");
            let serving = commands::serve(shared, bus, count, &partitions, async {
                let _ = stopped.await;
            });
            let _ = ready_tx.send(());
            serving.await.expect("the command server runs");
        });
        ready.await.expect("started");
        // The server subscribes before it waits for the shutdown; give it a moment to do so.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Node {
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// A requester that speaks only the bus contract.
struct Requester {
    bus: Arc<dyn Bus>,
    count: PartitionCount,
}

impl Requester {
    async fn send(&self, partition: Partition, actor: &str, command: C) -> pb::BusReply {
        let msg = pb::BusCommand {
            actor: Some(pb::Actor {
                agency: actor.into(),
                officer: "can-bo".into(),
                channel: pb::Channel::System as i32,
            }),
            command: Some(command),
            routed_only: false,
        };
        let bytes = self
            .bus
            .request(partition, Bytes::from(msg.encode_to_vec()), REPLY_TIMEOUT)
            .await
            .expect("a reply");
        pb::BusReply::decode(bytes.as_ref()).expect("a BusReply")
    }

    async fn submit(&self, actor: &str, key: &str) -> pb::BusReply {
        let p = partition_of_key(actor, key, self.count);
        self.send(p, actor, C::Submit(birth(key))).await
    }

    async fn on(&self, dossier: &str, actor: &str, command: C) -> pb::BusReply {
        let id: uuid::Uuid = dossier.parse().expect("uuid");
        self.send(partition_of(id, self.count), actor, command)
            .await
    }
}

fn birth(key: &str) -> pb::SubmitRequest {
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "child.age_months".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Integer(2)),
        },
    );
    attributes.insert(
        "child.birth_date".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Date("2026-01-10".into())),
        },
    );
    pb::SubmitRequest {
        idempotency_key: key.into(),
        procedure_code: "2.000986".into(),
        channel: pb::Channel::InPerson as i32,
        applicant: Some(pb::Applicant {
            full_name: "Phạm Văn E".into(),
            ..Default::default()
        }),
        attributes,
        documents: Vec::new(),
        officer: "can-bo".into(),
    }
}

fn complete(key: &str, dossier: &str, step: &str) -> C {
    C::CompleteStep(pb::CompleteStepRequest {
        idempotency_key: key.into(),
        dossier: dossier.into(),
        step_id: step.into(),
        outcome: "approve".into(),
        ..Default::default()
    })
}

fn response(r: pb::BusReply) -> pb::CommandResponse {
    match r.result {
        Some(pb::bus_reply::Result::Response(x)) => x,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn error(r: pb::BusReply) -> tonic::Status {
    match r.result {
        Some(pb::bus_reply::Result::Error(e)) => lienthong_gateway::status::from_bus_error(&e),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn end_to_end(bus: Arc<dyn Bus>) {
    let count = PartitionCount::new(4).expect("count");
    let node = Node::start(bus.clone(), 4, &[0, 1, 2, 3]).await;
    let r = Requester { bus, count };

    let first = response(r.submit("ubnd-xa", "bus-1").await);
    assert!(!first.replayed);
    let id = first.dossier_id.clone();
    let again = response(r.submit("ubnd-xa", "bus-1").await);
    assert!(again.replayed, "a retried submission is the first answer");
    assert_eq!(again.dossier_id, id);

    let wrong = error(
        r.on(&id, "cong-an", complete("ca-x", &id, "register-birth"))
            .await,
    );
    assert_eq!(wrong.code(), Code::PermissionDenied, "{wrong:?}");

    for (agency, step) in [
        ("tu-phap", "register-birth"),
        ("cong-an", "register-residence"),
        ("bhxh", "issue-health-card"),
        ("ubnd-xa", "return-result"),
    ] {
        let done = response(
            r.on(&id, agency, complete(&format!("{agency}-1"), &id, step))
                .await,
        );
        assert!(!done.events.is_empty(), "{agency} completed {step}");
    }
    let closed = response(
        r.on(
            &id,
            "ubnd-xa",
            C::ReturnResult(pb::ReturnResultRequest {
                idempotency_key: "return-1".into(),
                dossier: id.clone(),
                results: Vec::new(),
                channel: pb::Channel::InPerson as i32,
                officer: "can-bo".into(),
            }),
        )
        .await,
    );
    assert_eq!(
        closed.dossier.expect("state").status(),
        pb::DossierStatus::Closed
    );
    let got = match r
        .on(
            &id,
            "kiem-toan",
            C::Get(pb::GetDossierRequest {
                dossier: id.clone(),
            }),
        )
        .await
        .result
    {
        Some(pb::bus_reply::Result::Dossier(d)) => d,
        other => panic!("expected a dossier, got {other:?}"),
    };
    assert_eq!(got.status_text, "closed:result-returned");

    // A sender whose partition count differs sends to the wrong partition: refused, not run.
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let wrong = Partition((partition_of(uuid, count).0 + 1) % count.get());
    let misrouted = error(
        r.send(
            wrong,
            "kiem-toan",
            C::Get(pb::GetDossierRequest {
                dossier: id.clone(),
            }),
        )
        .await,
    );
    assert_eq!(misrouted.code(), Code::FailedPrecondition, "{misrouted:?}");
    assert!(
        misrouted.message().contains("partition"),
        "{}",
        misrouted.message()
    );

    let mut bad = birth("bus-bad");
    bad.procedure_code.clear();
    let p = partition_of_key("ubnd-xa", "bus-bad", count);
    let e = error(r.send(p, "ubnd-xa", C::Submit(bad)).await);
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("procedure_code"), "{}", e.message());
    node.stop().await;
}

async fn two_nodes(bus: Arc<dyn Bus>) {
    let count = PartitionCount::new(2).expect("count");
    let a = Node::start(bus.clone(), 2, &[0]).await;
    let b = Node::start(bus.clone(), 2, &[1]).await;
    let r = Requester { bus, count };
    let mut seen = BTreeSet::new();
    let mut codes = BTreeSet::new();
    for i in 0..12 {
        let key = format!("split-{i}");
        let via = partition_of_key("ubnd-xa", &key, count);
        let d = response(r.submit("ubnd-xa", &key).await);
        assert!(
            codes.insert(d.dossier_code.clone()),
            "two engine nodes never issue the same code: {} again",
            d.dossier_code
        );
        let id: uuid::Uuid = d.dossier_id.parse().expect("uuid");
        assert_eq!(
            partition_of(id, count),
            via,
            "the node that took the submission gave the dossier an id in its own partition"
        );
        seen.insert(via.0);
        // The next command, routed by id, reaches the node that holds the dossier.
        let done = response(
            r.on(
                &d.dossier_id,
                "tu-phap",
                complete(&format!("tp-{i}"), &d.dossier_id, "register-birth"),
            )
            .await,
        );
        assert!(!done.replayed);
    }
    assert_eq!(seen.len(), 2, "both partitions took submissions");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_runs_end_to_end_over_bus_commands_in_process() {
    end_to_end(Arc::new(MemoryBus::new(Default::default()).expect("bus"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_runs_end_to_end_over_bus_commands_on_nats() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(&server.url(), Default::default())
        .await
        .expect("connects");
    end_to_end(Arc::new(bus)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_the_partitions_in_process() {
    two_nodes(Arc::new(MemoryBus::new(Default::default()).expect("bus"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_the_partitions_on_nats() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(&server.url(), Default::default())
        .await
        .expect("connects");
    two_nodes(Arc::new(bus)).await;
}
