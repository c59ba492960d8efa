//! The distributed mode as separate processes over a real nats-server (started here on a free
//! port by `lienthong_bus::testing::NatsServer`; without one the test fails and says to run
//! `scripts/nats-server.sh`): `lienthong serve --nats URL --role engine` owns every partition,
//! four `lienthong agent --nats URL --agency X` processes work their queues, and the test itself
//! speaks only the bus contract (docs/nats.md) to file dossiers and read them back.
//!
//! - `agents_over_nats_close_every_dossier`: every birth dossier filed on the bus is worked by the
//!   three agencies and returned by the desk, each agency completing exactly one step per dossier.
//! - `an_engine_killed_mid_load_loses_nothing_and_does_nothing_twice`: the engine is SIGKILLed
//!   while the agents work and started again on the same data; every acknowledged submission is
//!   there, every dossier still closes, the store's chains verify, and the feed on NATS holds
//!   each stored event exactly once (the restarted outbox resumed after the feed's end).
//! - `a_broker_restart_mid_load_loses_nothing`: nats-server is stopped and started again (same
//!   storage) while the agents work; every process reconnects, nothing is lost or published twice.
//! - `a_stalled_agency_does_not_hold_up_the_others`: with one agency's system down, the others
//!   finish their steps; its tasks wait and are delivered when it returns.
//! - `the_projections_role_sees_what_the_embedded_mode_sees`: `serve --role projections`, fed
//!   only by the bus, reports the same board, breaches and indicators as the engine's own views.
//! - `engine_gateway_and_projections_run_as_separate_processes`: `--role gateway` and `--role
//!   projections` each in their own process and data directory beside the engine node; agency
//!   systems (`lienthong agent --grpc`) work through the gateway, which forwards commands over the
//!   bus and keeps callers to their role; the projections process serves the report service.
//! - `a_partition_is_served_by_one_engine_node`: a second engine node configured with partitions
//!   the first one serves is refused, naming the holder (and one with another lease time to live
//!   at once); once the first is SIGKILLed, its leases expire and the second takes them.
//! - `a_cluster_node_killed_mid_load_loses_nothing`: the engine and the agencies on a 3-node
//!   JetStream cluster (every stream and the lease bucket replicated 3 times); one node is killed
//!   while dossiers are filed and worked; every dossier still closes, each step done once.
//! - `every_shipped_procedure_closes_over_nats`: the four shipped procedures, with branches that
//!   skip and take their conditional steps (including the land transfer's payment step), close
//!   with one agency process per agency.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_bus::{Commands, Feed, PartitionCount, partition_of, partition_of_key};
use lienthong_e2e::{
    Proc, bearer, birth, grpc_agent, lienthong_bin, repo_root, summary, worked_every_dossier,
};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::bus_command::Command as C;
use prost::Message;
use serde_json::Value;

/// Partitions of the deployment under test (every process must agree).
const PARTITIONS: u32 = 4;

/// `lienthong serve --nats URL --role engine --data DATA`, once it says it joined the bus.
fn engine(nats: &str, data: &std::path::Path) -> Proc {
    engine_with(nats, data, &[])
}

/// [`engine`] with more arguments.
fn engine_with(nats: &str, data: &std::path::Path, extra: &[&str]) -> Proc {
    lienthong_e2e::engine_node(nats, data, PARTITIONS, extra)
}

/// `lienthong agent --nats URL --agency X`, stopping after 4 s without a task.
fn agent(nats: &str, agency: &str) -> Child {
    agent_idle(nats, agency, "4s")
}

/// `lienthong agent --nats URL --agency X`, stopping after `idle` without a task.
fn agent_idle(nats: &str, agency: &str, idle: &str) -> Child {
    agent_with(nats, agency, idle, &[])
}

/// [`agent_idle`] with more arguments.
fn agent_with(nats: &str, agency: &str, idle: &str, extra: &[&str]) -> Child {
    Command::new(lienthong_bin())
        .args(["agent", "--nats", nats, "--agency", agency])
        .args(["--partition-count", &PARTITIONS.to_string()])
        .args(["--exit-when-idle", idle, "--json", "--delay", "20ms"])
        .args(extra)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lienthong agent")
}

/// A requester on the bus, as any NATS client could be.
struct Desk {
    bus: NatsBus,
    count: PartitionCount,
}

impl Desk {
    async fn send(&self, partition: lienthong_bus::Partition, command: C) -> pb::BusReply {
        self.send_as("ubnd-xa", partition, command).await
    }

    /// Sends `command` as the receiving desk of `desk_agency`.
    async fn send_as(
        &self,
        desk_agency: &str,
        partition: lienthong_bus::Partition,
        command: C,
    ) -> pb::BusReply {
        let msg = pb::BusCommand {
            actor: Some(pb::Actor {
                agency: desk_agency.into(),
                officer: "can-bo-mot-cua".into(),
                channel: pb::Channel::InPerson as i32,
            }),
            command: Some(command),
            routed_only: false,
        };
        // Retried while no engine answers (it may be restarting): same key, same answer.
        let mut tries = 0;
        loop {
            match self
                .bus
                .request(
                    partition,
                    Bytes::from(msg.encode_to_vec()),
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(b) => return pb::BusReply::decode(b.as_ref()).expect("a BusReply"),
                Err(e) if e.is_retryable() && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no reply: {e}"),
            }
        }
    }

    async fn submit(&self, key: &str) -> String {
        let request = birth(key);
        let p = partition_of_key("ubnd-xa", key, self.count);
        match self.send(p, C::Submit(request)).await.result {
            Some(pb::bus_reply::Result::Response(r)) => r.dossier_id,
            other => panic!("submission {key}: {other:?}"),
        }
    }

    async fn get(&self, id: &str) -> pb::Dossier {
        let uuid: uuid::Uuid = id.parse().expect("uuid");
        let get = C::Get(pb::GetDossierRequest { dossier: id.into() });
        match self.send(partition_of(uuid, self.count), get).await.result {
            Some(pb::bus_reply::Result::Dossier(d)) => d,
            other => panic!("get {id}: {other:?}"),
        }
    }
}

async fn desk(server: &NatsServer) -> Desk {
    Desk {
        bus: NatsBus::connect(&server.url(), Default::default())
            .await
            .expect("connects"),
        count: PartitionCount::new(PARTITIONS).expect("count"),
    }
}

const AGENCIES: [&str; 4] = ["tu-phap", "cong-an", "bhxh", "ubnd-xa"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_over_nats_close_every_dossier() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let _engine = engine(&server.url(), dir.path());
    let desk = desk(&server).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(desk.submit(&format!("nats-e2e-{i}")).await);
    }
    let agents: Vec<_> = AGENCIES.iter().map(|a| agent(&server.url(), a)).collect();
    for (child, a) in agents.into_iter().zip(AGENCIES) {
        worked_every_dossier(child, a, 10);
    }
    for id in &ids {
        let d = desk.get(id).await;
        assert_eq!(d.status_text, "closed:result-returned", "{}", d.code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_load_loses_nothing_and_does_nothing_twice() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut engine_proc = engine(&server.url(), dir.path());
    let desk = desk(&server).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(desk.submit(&format!("kill-{i}")).await);
    }
    let agents: Vec<_> = AGENCIES.iter().map(|a| agent(&server.url(), a)).collect();
    // Let the agents get going, then kill the engine without warning and start it again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SAFETY: kill(2) on a child we own and have not reaped.
    let rc = unsafe { libc::kill(engine_proc.0.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let _ = engine_proc.0.wait();
    drop(engine_proc);
    let engine_again = engine(&server.url(), dir.path());
    // Submissions acknowledged before the kill are all there; more can be filed.
    for i in 12..16 {
        ids.push(desk.submit(&format!("kill-{i}")).await);
    }
    let summaries: Vec<Value> = agents.into_iter().map(summary).collect();
    for id in &ids {
        let d = desk.get(id).await;
        assert_eq!(d.status_text, "closed:result-returned", "{}", d.code);
    }
    for (s, a) in summaries.iter().zip(AGENCIES) {
        assert_eq!(s["failed"], 0, "{a}: {s}");
        // A step completed just before the kill is answered as a replay to the retry after it:
        // first answers plus replays cover every step, first answers never exceed them.
        let (done, replayed) = (
            s["completed"].as_u64().expect("count"),
            s["replayed"].as_u64().expect("count"),
        );
        assert!(done <= 16 && done + replayed >= 16, "{a}: {s}");
    }
    // No double effect: every dossier went the same way, so each has the same number of events.
    let mut lengths = BTreeSet::new();
    for id in &ids {
        lengths.insert(desk.get(id).await.seq);
    }
    assert_eq!(lengths.len(), 1, "event counts per dossier: {lengths:?}");
    // Each stored event is on the NATS feed exactly once.
    let stored: u64 = {
        let mut total = 0;
        for id in &ids {
            total += desk.get(id).await.seq;
        }
        total
    };
    let (on_feed, _) = lienthong_e2e::bus_feed_len(&desk.bus).await;
    assert_eq!(on_feed, stored, "the feed holds every stored event once");

    // Every hash chain of the store verifies (the engine is stopped first: it holds the store).
    drop(engine_again);
    let out = lienthong_e2e::run(&["verify", "--data", &dir.path().display().to_string()]);
    assert!(
        out.status.success(),
        "verify: {}\n{}",
        lienthong_e2e::stdout(&out),
        lienthong_e2e::stderr(&out)
    );
}

/// The broker restarts while the agents work: the engine's and agents' connections come back by
/// themselves, the backlog drains, nothing is lost and the feed holds each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_load_loses_nothing() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let _engine = engine(&server.url(), dir.path());
    let desk = desk(&server).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(desk.submit(&format!("broker-{i}")).await);
    }
    // Agents wait longer before calling it a day: a publish in flight when the broker died is
    // retried only after its acknowledgement times out (the bus's JetStream timeout, 10 s).
    let agents: Vec<_> = AGENCIES
        .iter()
        .map(|a| agent_idle(&server.url(), a, "20s"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.start_again();
    for i in 10..14 {
        ids.push(desk.submit(&format!("broker-{i}")).await);
    }
    let summaries: Vec<Value> = agents.into_iter().map(summary).collect();
    for (s, a) in summaries.iter().zip(AGENCIES) {
        assert_eq!(s["failed"], 0, "{a}: {s}");
    }
    let mut stored = 0;
    for id in &ids {
        let d = desk.get(id).await;
        let open: Vec<_> = d
            .steps
            .iter()
            .filter(|s| s.status() == pb::StepStatus::Open)
            .map(|s| s.step_id.clone())
            .collect();
        assert_eq!(
            d.status_text, "closed:result-returned",
            "{} (open: {open:?}; agents: {summaries:?})",
            d.code
        );
        stored += d.seq;
    }
    let (on_feed, _) = lienthong_e2e::bus_feed_len(&desk.bus).await;
    assert_eq!(on_feed, stored, "the feed holds every stored event once");
}

/// One agency's system is down: the others work their queues undisturbed, its tasks wait in its
/// queue, and when it comes back it receives them and the dossiers close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_agency_does_not_hold_up_the_others() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let _engine = engine(&server.url(), dir.path());
    let desk = desk(&server).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(desk.submit(&format!("stall-{i}")).await);
    }
    // Social insurance (bhxh) is down; justice and police work.
    let first: Vec<_> = ["tu-phap", "cong-an"]
        .iter()
        .map(|a| agent(&server.url(), a))
        .collect();
    for (s, a) in first.into_iter().map(summary).zip(["tu-phap", "cong-an"]) {
        assert_eq!(s["completed"], 8, "{a} is not held up by bhxh: {s}");
    }
    for id in &ids {
        let d = desk.get(id).await;
        let health = d
            .steps
            .iter()
            .find(|s| s.step_id == "issue-health-card")
            .expect("step");
        assert_eq!(
            health.status(),
            pb::StepStatus::Open,
            "{} waits for bhxh",
            d.code
        );
    }
    // bhxh comes back: its queued tasks arrive; the desk then returns every result.
    let late: Vec<_> = ["bhxh", "ubnd-xa"]
        .iter()
        .map(|a| agent(&server.url(), a))
        .collect();
    for (s, a) in late.into_iter().map(summary).zip(["bhxh", "ubnd-xa"]) {
        assert_eq!(s["completed"], 8, "{a}: {s}");
    }
    for id in &ids {
        let d = desk.get(id).await;
        assert_eq!(d.status_text, "closed:result-returned", "{}", d.code);
    }
}

/// `lienthong serve --role projections` on its own data directory, fed only by the bus, ends
/// with the same board, breaches and indicators as the engine's own read models (the embedded
/// mode's) for the same dossiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_role_sees_what_the_embedded_mode_sees() {
    let server = NatsServer::start();
    let engine_dir = tempfile::tempdir().expect("temp dir");
    let views_dir = tempfile::tempdir().expect("temp dir");
    let mut engine_proc = engine(&server.url(), engine_dir.path());
    let mut views = Command::new(lienthong_bin())
        .args([
            "serve",
            "--role",
            "projections",
            "--nats",
            &server.url(),
            "--http",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(views_dir.path())
        .current_dir(repo_root())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the projections role");
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let stderr = views.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("projections: {line}");
            if let Some(rest) = line.strip_prefix("lienthong: projections folded to feed position ")
                && let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok())
            {
                let _ = tx.send(n);
            }
        }
    });
    let views = Proc(views);

    let desk = desk(&server).await;
    for i in 0..6 {
        desk.submit(&format!("views-{i}")).await;
    }
    // Justice and police work; social insurance does not, so some steps stay open on the board.
    let agents: Vec<_> = ["tu-phap", "cong-an"]
        .iter()
        .map(|a| agent(&server.url(), a))
        .collect();
    for s in agents.into_iter().map(summary) {
        assert_eq!(s["failed"], 0, "{s}");
    }
    // Wait until the projections have folded everything the feed holds.
    let last = desk
        .bus
        .last()
        .await
        .expect("feed")
        .expect("events")
        .position;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) if n >= last => break,
            Ok(_) => {}
            Err(e) => panic!("the projections did not reach feed position {last}: {e}"),
        }
    }
    // Stop both (the views and the store are read by `report` once their processes are gone).
    // SAFETY: kill(2) on children we own and have not reaped.
    unsafe {
        libc::kill(views.0.id() as libc::pid_t, libc::SIGTERM);
    }
    drop(views);
    // SAFETY: as above.
    unsafe {
        libc::kill(engine_proc.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = engine_proc.0.wait();
    drop(engine_proc);

    let now = "2026-12-31T10:00:00+07:00";
    for report in ["board", "breaches", "indicators"] {
        let read = |dir: &std::path::Path| {
            let out = lienthong_e2e::run(&[
                "report",
                report,
                "--data",
                &dir.display().to_string(),
                "--format",
                "json",
                "--now",
                now,
            ]);
            assert!(
                out.status.success(),
                "report {report}: {}",
                lienthong_e2e::stderr(&out)
            );
            let mut v: Value = serde_json::from_str(&lienthong_e2e::stdout(&out)).expect("json");
            // The header says how far each fold got, in its own feed's positions.
            if let Some(h) = v.get_mut("header") {
                h["lag"] = Value::Null;
            }
            v
        };
        let embedded = read(engine_dir.path());
        let distributed = read(views_dir.path());
        assert_eq!(distributed, embedded, "report {report}");
        if report == "board" {
            // Not two empty reports: social insurance's open steps are overdue on both.
            let text = embedded.to_string();
            assert_eq!(text.matches("issue-health-card").count(), 6, "{text}");
        }
    }
}

/// Every shipped procedure, each with branches that skip or take its conditional steps, runs to
/// the returned result over NATS with one agency process per agency involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_procedure_closes_over_nats() {
    use pb::attribute_value::Kind;
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let _engine = engine(&server.url(), dir.path());
    let desk = desk(&server).await;
    let b = |v: bool| Kind::Boolean(v);
    let i = |v: i64| Kind::Integer(v);
    // (procedure, receiving agency, attributes) for each dossier.
    type Case = (&'static str, &'static str, Vec<(&'static str, Kind)>);
    let cases: Vec<Case> = vec![
        (
            "2.000986",
            "ubnd-xa",
            vec![
                ("child.age_months", i(2)),
                ("child.birth_date", Kind::Date("2026-10-01".into())),
            ],
        ),
        (
            "2.000986",
            "ubnd-xa",
            vec![
                ("child.age_months", i(80)),
                ("child.birth_date", Kind::Date("2020-01-05".into())),
            ],
        ),
        (
            "LT.KHAI-TU",
            "ubnd-xa",
            vec![
                ("request.remove_residence", b(true)),
                ("request.benefit", b(true)),
                ("deceased.has_social_insurance", b(true)),
                ("deceased.social_protection", b(false)),
            ],
        ),
        (
            "LT.KHAI-TU",
            "ubnd-xa",
            vec![
                ("request.remove_residence", b(false)),
                ("request.benefit", b(true)),
                ("deceased.has_social_insurance", b(false)),
                ("deceased.social_protection", b(true)),
            ],
        ),
        (
            "LT.CHUYEN-NHUONG-DAT",
            "tthcc",
            vec![("transfer.exempt", b(false)), ("parcel.area_m2", i(120))],
        ),
        (
            "LT.CHUYEN-NHUONG-DAT",
            "tthcc",
            vec![("transfer.exempt", b(true)), ("parcel.area_m2", i(60))],
        ),
        (
            "LT.DKDN-BHXH",
            "dkkd",
            vec![
                ("enterprise.employees", i(12)),
                ("enterprise.kind", Kind::Text("tnhh-1tv".into())),
            ],
        ),
        (
            "LT.DKDN-BHXH",
            "dkkd",
            vec![
                ("enterprise.employees", i(0)),
                ("enterprise.kind", Kind::Text("tu-nhan".into())),
            ],
        ),
    ];
    let mut ids = Vec::new();
    for (n, (procedure, receiving, attributes)) in cases.into_iter().enumerate() {
        let key = format!("every-{n}");
        let request = pb::SubmitRequest {
            idempotency_key: key.clone(),
            procedure_code: procedure.into(),
            channel: pb::Channel::Online as i32,
            applicant: Some(pb::Applicant {
                full_name: "Vũ Văn H".into(),
                ..Default::default()
            }),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), pb::AttributeValue { kind: Some(v) }))
                .collect(),
            documents: Vec::new(),
            officer: "can-bo".into(),
        };
        let p = partition_of_key(receiving, &key, desk.count);
        match desk.send_as(receiving, p, C::Submit(request)).await.result {
            Some(pb::bus_reply::Result::Response(r)) => ids.push((procedure, r.dossier_id)),
            other => panic!("submission of {procedure}: {other:?}"),
        }
    }
    let agencies = [
        "tu-phap", "cong-an", "bhxh", "ldtbxh", "ubnd-xa", "tthcc", "vpdk-dat", "thue", "dkkd",
    ];
    let agents: Vec<_> = agencies.iter().map(|a| agent(&server.url(), a)).collect();
    for (s, a) in agents.into_iter().map(summary).zip(agencies) {
        assert_eq!(s["failed"], 0, "{a}: {s}");
    }
    for (procedure, id) in &ids {
        let d = desk.get(id).await;
        assert_eq!(
            d.status_text, "closed:result-returned",
            "{procedure} {}: {:?}",
            d.code, d.steps
        );
    }
}

/// The whole distributed deployment as separate processes: an engine node (`--role engine`), a
/// gRPC gateway (`--role gateway`, its own data directory: a feed mirror only) and the read
/// models (`--role projections`, serving the report service), with the agencies' systems
/// connecting to the gateway over gRPC as integrators' would. The gateway forwards commands to
/// the engine over the bus, keeps its callers to their role (checked by the engine against the
/// dossier's current state), serves a History that includes the caller's own writes, task streams
/// from its mirror, and an audit Verify of its mirror; the projections process reports every
/// dossier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_gateway_and_projections_run_as_separate_processes() {
    use lienthong_e2e::Serving;
    use lienthong_proto::v1::audit_service_client::AuditServiceClient;
    use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
    use lienthong_proto::v1::report_service_client::ReportServiceClient;
    const DOSSIERS: usize = 8;

    let server = NatsServer::start();
    let url = server.url();
    let engine_dir = tempfile::tempdir().expect("temp dir");
    let gateway_dir = tempfile::tempdir().expect("temp dir");
    let views_dir = tempfile::tempdir().expect("temp dir");
    let _engine = engine(&url, engine_dir.path());
    let count = PARTITIONS.to_string();
    let remote = |role: &'static str| {
        [
            "--role",
            role,
            "--nats",
            url.as_str(),
            "--partition-count",
            count.as_str(),
        ]
    };
    let mut gateway = Serving::start_with(gateway_dir.path(), &remote("gateway"));
    let mut views = Serving::start_with(views_dir.path(), &remote("projections"));
    let gw = format!("http://{}", gateway.addr);
    let mut dossiers = DossierServiceClient::connect(gw.clone())
        .await
        .expect("connects to the gateway");

    // The desk files through the gateway; each History right after includes what was written.
    let mut ids = Vec::new();
    for i in 0..DOSSIERS {
        let answer = dossiers
            .submit(bearer("dev-desk", birth(&format!("gateway-{i}"))))
            .await
            .unwrap_or_else(|s| panic!("submit {i}: {s}\n{}", gateway.log_tail()))
            .into_inner();
        let mut history = dossiers
            .history(bearer(
                "dev-desk",
                pb::HistoryRequest {
                    dossier: answer.dossier_id.clone(),
                    after_seq: 0,
                },
            ))
            .await
            .expect("history")
            .into_inner();
        let mut seen = 0;
        while let Some(e) = history.message().await.expect("history event") {
            seen = e
                .event
                .as_ref()
                .and_then(|ev| ev.envelope.as_ref())
                .map_or(0, |e| e.seq);
        }
        assert_eq!(
            seen,
            answer.events.len() as u64,
            "History through the gateway holds the submission's own events"
        );
        ids.push(answer.dossier_id);
    }
    // Role checks over the bus: social insurance has no step on a new birth dossier yet (justice
    // comes first), so it may neither read it nor act on it.
    let denied = dossiers
        .get(bearer(
            "dev-bhxh",
            pb::GetDossierRequest {
                dossier: ids[0].clone(),
            },
        ))
        .await
        .expect_err("not routed to bhxh");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let mut agencies =
        lienthong_proto::v1::agency_service_client::AgencyServiceClient::connect(gw.clone())
            .await
            .expect("connects");
    let denied = agencies
        .complete_step(bearer(
            "dev-bhxh",
            pb::CompleteStepRequest {
                idempotency_key: "bhxh-jumps-the-queue".into(),
                dossier: ids[0].clone(),
                step_id: "issue-health-card".into(),
                outcome: "approve".into(),
                officer: "can-bo-bhxh".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("not routed to bhxh");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // The agencies' systems work their task streams through the gateway.
    let agents: Vec<_> = [
        ("tu-phap", "dev-tu-phap"),
        ("cong-an", "dev-cong-an"),
        ("bhxh", "dev-bhxh"),
        ("ubnd-xa", "dev-desk"),
    ]
    .iter()
    .map(|(a, t)| grpc_agent(&gateway.addr, a, t, &["--delay", "10ms"]))
    .collect();
    for (child, a) in agents.into_iter().zip(AGENCIES) {
        worked_every_dossier(child, a, DOSSIERS as u64);
    }
    lienthong_e2e::all_returned(&gateway.addr, "dev-desk", &ids).await;

    // An auditor verifies the gateway's copy of every history.
    let mut audit = AuditServiceClient::connect(gw).await.expect("connects");
    let verified = audit
        .verify(bearer("dev-auditor", pb::VerifyRequest::default()))
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.clean, "{verified:?}");
    assert_eq!(verified.dossiers, DOSSIERS as u64, "{verified:?}");

    // The projections process reports every dossier, filed and finished, once it has folded the
    // feed (it lags the engine by the bus's latency).
    let mut reports = ReportServiceClient::connect(format!("http://{}", views.addr))
        .await
        .expect("connects to the projections");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = reports
            .indicators(bearer(
                "dev-auditor",
                pb::IndicatorsRequest {
                    agency: "ubnd-xa".into(),
                    month: String::new(),
                },
            ))
            .await
            .expect("indicators")
            .into_inner()
            .rows;
        let (received, finished) = rows
            .iter()
            .filter(|r| r.level == "dossier" && r.procedure_code == "2.000986")
            .fold((0, 0), |(a, b), r| (a + r.received, b + r.finished));
        if received == DOSSIERS as i64 && finished == DOSSIERS as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projections report {received} received and {finished} finished, not {DOSSIERS}:\n{}",
            views.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gateway.stop(10_000).success(), "{}", gateway.log_tail());
    assert!(views.stop(10_000).success(), "{}", views.log_tail());
}

/// Runs an engine node for partitions 2-3 with `--lease-ttl ttl` on `data` to its end (it is
/// expected to be refused) and returns its output.
fn engine_refused(nats: &str, data: &std::path::Path, ttl: &str) -> std::process::Output {
    Command::new(lienthong_bin())
        .args(["serve", "--role", "engine", "--nats", nats])
        .args(["--partition-count", &PARTITIONS.to_string()])
        .args(["--partitions", "2-3", "--lease-ttl", ttl, "--data"])
        .arg(data)
        .current_dir(repo_root())
        .output()
        .expect("run an engine node")
}

/// Each partition is served by exactly one engine node: a second node configured with partitions
/// the first one holds waits for their leases, is refused with the holder's id, and exits; when
/// the first node dies (SIGKILL: no release), its leases expire and the second node takes them
/// and serves their dossiers' commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_served_by_one_engine_node() {
    let server = NatsServer::start();
    let url = server.url();
    let first_dir = tempfile::tempdir().expect("temp dir");
    let second_dir = tempfile::tempdir().expect("temp dir");
    let ttl = ["--lease-ttl", "2s"];
    let mut first = engine_with(&url, first_dir.path(), &ttl);
    let first_id = std::fs::read_to_string(first_dir.path().join("node-id"))
        .expect("the engine node keeps its id in its data directory");
    let refused = engine_refused(&url, second_dir.path(), "2s");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("partition 2 is served by") && stderr.contains(first_id.trim()),
        "the refusal names the partition and the holder: {stderr}"
    );

    // A node with another lease time to live than the deployment's is refused at once.
    let mismatched = engine_refused(&url, second_dir.path(), "3s");
    let stderr = String::from_utf8_lossy(&mismatched.stderr);
    assert!(
        !mismatched.status.success() && stderr.contains("the same --lease-ttl"),
        "a mismatched lease time to live is refused: {stderr}"
    );

    // A dossier filed while the first node serves everything.
    let desk = desk(&server).await;
    let id = desk.submit("lease-before").await;
    let filed = desk.get(&id).await;
    // The first node dies without releasing; the second, configured for every partition, takes
    // them once the leases expire, and serves commands (its own store: new dossiers).
    // SAFETY: kill(2) on a child we own and have not reaped.
    unsafe {
        libc::kill(first.0.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = first.0.wait();
    let _second = engine_with(&url, second_dir.path(), &ttl);
    let other = desk.submit("lease-after").await;
    assert_ne!(other, id);
    let d = desk.get(&other).await;
    assert_eq!(
        (d.seq, d.status_text.as_str()),
        (filed.seq, filed.status_text.as_str()),
        "the second node serves a new dossier as the first did"
    );
}

/// The engine node and the agency systems on a 3-node JetStream cluster, `--replicas 3`: one node
/// is killed while dossiers are filed and worked. The processes reconnect to the other nodes,
/// the streams keep every message, and every dossier closes with each agency completing exactly
/// one step per dossier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_mid_load_loses_nothing() {
    const DOSSIERS: usize = 12;
    let mut cluster = lienthong_bus::testing::NatsCluster::start(3);
    let urls = cluster.urls();
    let config = lienthong_bus::Config {
        replicas: 3,
        ..lienthong_bus::Config::default()
    };
    // The cluster elects its JetStream leader first: the desk's connection (which creates the
    // replicated streams) is retried until it can.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let bus = loop {
        match NatsBus::connect(&urls, config.clone()).await {
            Ok(b) => break b,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("cluster not ready: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the cluster never became ready: {e}"),
        }
    };
    let desk = Desk {
        bus,
        count: PartitionCount::new(PARTITIONS).expect("count"),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let replicated = ["--replicas", "3"];
    let _engine = engine_with(
        &urls,
        dir.path(),
        &["--replicas", "3", "--lease-ttl", "30s"],
    );
    let mut ids = Vec::new();
    for i in 0..DOSSIERS / 2 {
        ids.push(desk.submit(&format!("cluster-{i}")).await);
    }
    let agents: Vec<_> = AGENCIES
        .iter()
        .map(|a| agent_with(&urls, a, "20s", &replicated))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A node dies without warning, mid-load.
    cluster.nodes[0].stop();
    for i in DOSSIERS / 2..DOSSIERS {
        ids.push(desk.submit(&format!("cluster-{i}")).await);
    }
    for (child, a) in agents.into_iter().zip(AGENCIES) {
        worked_every_dossier(child, a, DOSSIERS as u64);
    }
    for id in &ids {
        let d = desk.get(id).await;
        assert_eq!(d.status_text, "closed:result-returned", "{}", d.code);
    }
}
