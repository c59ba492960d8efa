//! The crash matrix: the engine SIGKILLed again and again under load, as separate processes,
//! and everything it acknowledged checked afterwards.
//!
//! How: [`WORKERS`] clients in this process play the desk and the three agencies of the birth
//! group over gRPC, each taking dossiers one after another through all six commands (submit,
//! four steps, return the result), each command with its own idempotency key. A command whose
//! answer is lost (the engine died, the connection broke, the gateway timed out) is sent again
//! with the same key until it is answered, as a real agency system does. Meanwhile the test
//! kills the engine process with SIGKILL at random moments (some rounds within milliseconds of a
//! restart, so recovery itself is cut) and starts it again on the same data directory.
//!
//! Then it checks, for every command ever acknowledged:
//! - its events are in the dossier's history at the same seqs with the same hashes (nothing
//!   acknowledged was lost or rewritten);
//! - a retried key answered with what the first answer said (no double effect), every dossier
//!   closed with each step completed exactly once, and no dossier was created twice;
//! - the store verifies (`lienthong verify`: every chain, no gap, heads, feed and codes agree);
//! - the read models kept up to date through the crashes equal a fresh rebuild of the same feed
//!   (`lienthong projections digest` before and after `projections rebuild`).
//!
//! Two deployments: `embedded_engine_killed_under_load_loses_no_acknowledged_command` (one
//! `lienthong serve` process: engine, gateway and read models; killed whole) and
//! `engine_node_killed_under_load_loses_no_acknowledged_command` (`serve --role engine` over a
//! real nats-server, behind a `--role gateway` process that stays up, with a `--role projections`
//! process following the bus; only the engine node is killed; the bus feed must also hold each
//! stored event exactly once).
//!
//! Kills per test: [`KILLS`], or `LIENTHONG_FAULT_KILLS` for the long run (`scripts/faults.sh`);
//! the kill points come from `LIENTHONG_FAULT_SEED`. Nothing here judges a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_e2e::{Serving, bearer, birth, engine_node, run, stderr, stdout};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_client::AgencyServiceClient;
use lienthong_proto::v1::audit_service_client::AuditServiceClient;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use lienthong_proto::v1::report_service_client::ReportServiceClient;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Kills per test in a normal (CI) run.
const KILLS: u64 = 3;
/// Concurrent clients, each working one dossier at a time.
const WORKERS: usize = 8;
/// Longest the engine runs under load before a kill, in milliseconds.
const KILL_AFTER_MS_MAX: u64 = 1_500;
/// One round in this many (the second, sixth, ...) kills the engine within
/// [`EARLY_KILL_MS_MAX`] of its restart, while it recovers.
const EARLY_KILL_EVERY: u64 = 4;
/// Latest kill of an early round, in milliseconds after the engine said it serves.
const EARLY_KILL_MS_MAX: u64 = 60;
/// Longest one command may take to be answered, retries included, before the test fails.
const COMMAND_SECS_MAX: u64 = 120;
/// Longest wait for the load to make progress after a restart.
const PROGRESS_SECS_MAX: u64 = 90;
/// Load after the last restart before the workers are told to finish their dossiers.
const SETTLE_MS: u64 = 1_000;
/// Partitions of the distributed deployment (every process must agree).
const PARTITIONS: u32 = 4;

/// splitmix64: a small seeded generator for the kill points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One acknowledged command: where its events landed.
#[derive(Clone, Debug, PartialEq)]
struct Ack {
    /// The dossier it acted on (or created).
    dossier: String,
    /// (seq, SHA-256) of each event it appended.
    events: Vec<(u64, Vec<u8>)>,
    /// Whether it was a submission (it created `dossier`).
    submit: bool,
}

/// What the workers share with the test.
#[derive(Default)]
struct Ledger {
    /// Every acknowledged command by idempotency key.
    acks: Mutex<BTreeMap<String, Ack>>,
    /// Dossiers taken through to their returned result.
    closed: Mutex<Vec<String>>,
    /// Anything that must fail the test.
    problems: Mutex<Vec<String>>,
    /// Answers that came only after at least one retry of the same key.
    retried: AtomicU64,
    /// Answers that were replays of an earlier answer that did not reach this client.
    replayed: AtomicU64,
}

impl Ledger {
    fn problem(&self, p: String) {
        self.problems.lock().expect("ledger").push(p);
    }
}

/// The six commands of a birth dossier, in order, with the caller's development token.
fn commands(key: &str, dossier: &str) -> Vec<(&'static str, Cmd)> {
    let step = |id: &str| {
        Cmd::Complete(pb::CompleteStepRequest {
            idempotency_key: format!("{key}-{id}"),
            dossier: dossier.to_string(),
            step_id: id.to_string(),
            outcome: "approve".into(),
            ..Default::default()
        })
    };
    vec![
        ("dev-tu-phap", step("register-birth")),
        ("dev-cong-an", step("register-residence")),
        ("dev-bhxh", step("issue-health-card")),
        ("dev-desk", step("return-result")),
        (
            "dev-desk",
            Cmd::Return(pb::ReturnResultRequest {
                idempotency_key: format!("{key}-return"),
                dossier: dossier.to_string(),
                results: vec![pb::DocumentRef {
                    kind: "giay-khai-sinh".into(),
                    uri: "s3://docs/giay-khai-sinh".into(),
                    // SHA-256 of the empty document: any well-formed digest will do here.
                    sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                        .into(),
                }],
                channel: pb::Channel::InPerson as i32,
                officer: "can-bo-1".into(),
            }),
        ),
    ]
}

/// A mutating call.
#[derive(Clone)]
enum Cmd {
    Submit(pb::SubmitRequest),
    Complete(pb::CompleteStepRequest),
    Return(pb::ReturnResultRequest),
}

impl Cmd {
    fn key(&self) -> &str {
        match self {
            Cmd::Submit(r) => &r.idempotency_key,
            Cmd::Complete(r) => &r.idempotency_key,
            Cmd::Return(r) => &r.idempotency_key,
        }
    }
}

/// Codes that say the command was refused for what it is: retrying cannot help, and for a
/// command of this test each is a defect.
fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// A client that follows the gateway's address (it changes when an embedded engine restarts).
struct Client {
    addr: watch::Receiver<String>,
    channel: Option<(String, Channel)>,
}

impl Client {
    async fn channel(&mut self) -> Result<Channel, String> {
        let addr = self.addr.borrow().clone();
        if let Some((a, c)) = &self.channel
            && *a == addr
        {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(15))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        self.channel = Some((addr, c.clone()));
        Ok(c)
    }

    /// Sends `cmd` until it is answered; an answer after a retry must be a replay or the first.
    async fn call(&mut self, token: &str, cmd: Cmd, ledger: &Ledger) -> Option<Ack> {
        let deadline = Instant::now() + Duration::from_secs(COMMAND_SECS_MAX);
        let mut attempts = 0u32;
        let mut last = String::new();
        while Instant::now() < deadline {
            attempts += 1;
            let answer = match self.channel().await {
                Err(e) => Err(tonic::Status::unavailable(e)),
                Ok(ch) => match cmd.clone() {
                    Cmd::Submit(r) => DossierServiceClient::new(ch).submit(bearer(token, r)).await,
                    Cmd::Complete(r) => {
                        AgencyServiceClient::new(ch)
                            .complete_step(bearer(token, r))
                            .await
                    }
                    Cmd::Return(r) => {
                        DossierServiceClient::new(ch)
                            .return_result(bearer(token, r))
                            .await
                    }
                },
            };
            match answer {
                Ok(a) => {
                    let a = a.into_inner();
                    // A replay is an answer to a retry: this client's, or, on the first attempt,
                    // the bus redelivering the command to a restarted engine node.
                    if attempts > 1 {
                        ledger.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    if a.replayed {
                        ledger.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    let ack = Ack {
                        submit: matches!(cmd, Cmd::Submit(_)),
                        dossier: a.dossier_id.clone(),
                        events: a
                            .events
                            .iter()
                            .map(|e| {
                                let seq = e
                                    .event
                                    .as_ref()
                                    .and_then(|e| e.envelope.as_ref())
                                    .map_or(0, |env| env.seq);
                                let hash = e
                                    .sealed
                                    .as_ref()
                                    .map(|s| s.hash.clone())
                                    .unwrap_or_default();
                                (seq, hash)
                            })
                            .collect(),
                    };
                    if ack.events.is_empty() {
                        ledger.problem(format!("{}: acknowledged with no event", cmd.key()));
                    }
                    let mut acks = ledger.acks.lock().expect("ledger");
                    if let Some(first) = acks.get(cmd.key())
                        && *first != ack
                    {
                        ledger.problem(format!(
                            "{}: answered twice, differently: {first:?} then {ack:?}",
                            cmd.key()
                        ));
                    }
                    acks.insert(cmd.key().to_string(), ack.clone());
                    return Some(ack);
                }
                Err(s) if permanent(s.code()) => {
                    ledger.problem(format!(
                        "{} (attempt {attempts}): refused {:?}: {}",
                        cmd.key(),
                        s.code(),
                        s.message()
                    ));
                    return None;
                }
                Err(s) => {
                    last = format!("{:?}: {}", s.code(), s.message());
                    self.channel = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        ledger.problem(format!(
            "{}: not answered within {COMMAND_SECS_MAX} s ({attempts} attempts; last: {last})",
            cmd.key()
        ));
        None
    }
}

/// One worker: dossiers one after another until `stop`, each taken to its returned result.
async fn worker(
    w: usize,
    addr: watch::Receiver<String>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut client = Client {
        addr,
        channel: None,
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("f{w}-{n}");
        n += 1;
        let Some(submitted) = client
            .call("dev-desk", Cmd::Submit(birth(&key)), &ledger)
            .await
        else {
            return;
        };
        for (token, cmd) in commands(&key, &submitted.dossier) {
            if client.call(token, cmd, &ledger).await.is_none() {
                return;
            }
        }
        ledger
            .closed
            .lock()
            .expect("ledger")
            .push(submitted.dossier);
    }
}

/// Runs the load against `addr` while `kill_and_restart` is called [`KILLS`] times (or
/// `LIENTHONG_FAULT_KILLS`) at random moments; returns the ledger once every worker finished.
async fn under_fire(
    addr: watch::Receiver<String>,
    mut kill_and_restart: impl FnMut(u64),
) -> Arc<Ledger> {
    let kills = env_u64("LIENTHONG_FAULT_KILLS", KILLS);
    let mut rng = Rng(env_u64("LIENTHONG_FAULT_SEED", 0x0D05_51E5));
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(w, addr.clone(), ledger.clone(), stop.clone())))
        .collect();
    for round in 0..kills {
        // One round in EARLY_KILL_EVERY kills the engine right after the previous restart,
        // while it recovers; every other round kills it only under load: once the restarted
        // engine has answered new commands (a distributed gateway answers the commands in flight
        // at a kill only after its reply timeout). No progress at all is a failure.
        let ms = if round % EARLY_KILL_EVERY == 1 {
            rng.below(EARLY_KILL_MS_MAX)
        } else {
            let before = ledger.acks.lock().expect("ledger").len();
            let deadline = Instant::now() + Duration::from_secs(PROGRESS_SECS_MAX);
            while ledger.acks.lock().expect("ledger").len() < before + WORKERS {
                assert!(
                    Instant::now() < deadline,
                    "no progress within {PROGRESS_SECS_MAX} s of restart {round}: {:?}",
                    ledger.problems.lock().expect("ledger")
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            200 + rng.below(KILL_AFTER_MS_MAX - 200)
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let acked = ledger.acks.lock().expect("ledger").len();
        eprintln!(
            "faults: kill {} of {kills} after {ms} ms ({acked} commands acknowledged so far)",
            round + 1
        );
        tokio::task::block_in_place(|| kill_and_restart(round));
    }
    tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    ledger
}

/// Reads every dossier's history as the auditor and checks the ledger against it; returns the
/// number of events checked.
async fn check_histories(addr: &str, ledger: &Ledger) -> usize {
    let problems = ledger.problems.lock().expect("ledger").clone();
    assert!(
        problems.is_empty(),
        "during the run:\n{}",
        problems.join("\n")
    );
    let acks = ledger.acks.lock().expect("ledger").clone();
    let closed = ledger.closed.lock().expect("ledger").clone();
    assert!(!closed.is_empty(), "no dossier closed: the load never ran");
    let mut client = DossierServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let dossiers: BTreeSet<&String> = acks.values().map(|a| &a.dossier).collect();
    let mut histories: BTreeMap<String, BTreeMap<u64, (Vec<u8>, pb::Event)>> = BTreeMap::new();
    let mut events = 0;
    for d in dossiers {
        let mut s = client
            .history(bearer(
                "dev-auditor",
                pb::HistoryRequest {
                    dossier: d.clone(),
                    after_seq: 0,
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("history of {d}: {e}"))
            .into_inner();
        let mut h = BTreeMap::new();
        while let Some(r) = s.message().await.expect("history stream") {
            let e = r.event.expect("event");
            let seq = e.envelope.as_ref().expect("envelope").seq;
            h.insert(seq, (r.sealed.expect("sealed").hash, e));
        }
        let seqs: Vec<u64> = h.keys().copied().collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "{d}: seqs with a gap");
        events += h.len();
        histories.insert(d.clone(), h);
    }
    for (key, ack) in &acks {
        let h = &histories[&ack.dossier];
        for (seq, hash) in &ack.events {
            let Some((stored, _)) = h.get(seq) else {
                panic!("{key}: acknowledged event {seq} of {} is lost", ack.dossier);
            };
            assert_eq!(
                stored, hash,
                "{key}: acknowledged event {seq} of {} was rewritten",
                ack.dossier
            );
        }
    }
    // Every submission made one dossier, and the feed holds no other (a submission retried after
    // a lost answer did not file a second dossier).
    let submitted: BTreeSet<&String> = acks
        .values()
        .filter(|a| a.submit)
        .map(|a| &a.dossier)
        .collect();
    let submits = acks.values().filter(|a| a.submit).count();
    assert_eq!(
        submitted.len(),
        submits,
        "two submissions answered with one dossier"
    );
    let received = feed(addr)
        .await
        .into_iter()
        .filter(|r| {
            matches!(
                r.event.as_ref().and_then(|e| e.body.as_ref()),
                Some(pb::event::Body::Received(_))
            )
        })
        .count();
    assert_eq!(
        received, submits,
        "dossiers in the feed against submissions acknowledged"
    );
    // Every closed dossier completed each of its four steps once and was returned once.
    for d in &closed {
        let mut done: BTreeMap<String, usize> = BTreeMap::new();
        let mut returned = 0;
        for (_, e) in histories[d].values() {
            match &e.body {
                Some(pb::event::Body::StepCompleted(c)) => {
                    *done.entry(c.step_id.clone()).or_default() += 1
                }
                Some(pb::event::Body::ResultReturned(_)) => returned += 1,
                _ => {}
            }
        }
        assert!(
            done.values().all(|n| *n == 1) && done.len() == 4,
            "{d}: steps completed {done:?}"
        );
        assert_eq!(returned, 1, "{d}: results returned");
    }
    events
}

/// `lienthong verify --data DIR` must pass.
fn verified(data: &Path) {
    let out = run(&["verify", "--data", &data.display().to_string()]);
    assert!(
        out.status.success(),
        "verify {}:\n{}\n{}",
        data.display(),
        stdout(&out),
        stderr(&out)
    );
}

/// `lienthong projections digest` of `data` (after catching up) equals that of a copy rebuilt
/// from nothing; returns the number of view records compared.
fn views_equal_a_rebuild(data: &Path) -> u64 {
    let digest = |dir: &Path| {
        let out = run(&[
            "projections",
            "digest",
            "--data",
            &dir.display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "digest: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    let kept = digest(data);
    let copy = tempfile::tempdir().expect("temp dir");
    copy_dir(data, copy.path());
    let out = run(&[
        "projections",
        "rebuild",
        "--data",
        &copy.path().display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "rebuild: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let rebuilt = digest(copy.path());
    assert_eq!(
        kept, rebuilt,
        "the views kept through the crashes differ from a rebuild"
    );
    kept.lines()
        .find_map(|l| l.strip_prefix("records "))
        .and_then(|n| n.parse().ok())
        .expect("records line")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_engine_killed_under_load_loses_no_acknowledged_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Arc::new(Mutex::new(Serving::start(dir.path())));
    let (tx, rx) = watch::channel(server.lock().expect("server").addr.clone());
    let s = server.clone();
    let data = dir.path().to_path_buf();
    let ledger = under_fire(rx, move |_| {
        let mut s = s.lock().expect("server");
        // Child::kill is SIGKILL: no shutdown path runs.
        s.child.kill().expect("SIGKILL");
        let _ = s.child.wait();
        *s = Serving::start(&data);
        tx.send_replace(s.addr.clone());
    })
    .await;
    let mut server = Arc::try_unwrap(server)
        .ok()
        .expect("one owner")
        .into_inner()
        .expect("server");
    let events = check_histories(&server.addr, &ledger).await;
    assert!(server.stop(30_000).success(), "{}", server.log_tail());
    verified(dir.path());
    let records = views_equal_a_rebuild(dir.path());
    eprintln!(
        "faults: embedded: {} commands acknowledged, {} dossiers closed, {events} events checked, {} retries ({} replays), {records} view records equal to a rebuild",
        ledger.acks.lock().expect("ledger").len(),
        ledger.closed.lock().expect("ledger").len(),
        ledger.retried.load(Ordering::Relaxed),
        ledger.replayed.load(Ordering::Relaxed),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_node_killed_under_load_loses_no_acknowledged_command() {
    let nats = NatsServer::start();
    let url = nats.url();
    let engine_dir = tempfile::tempdir().expect("temp dir");
    let gateway_dir = tempfile::tempdir().expect("temp dir");
    let views_dir = tempfile::tempdir().expect("temp dir");
    let count = PARTITIONS.to_string();
    let role = |r: &'static str| {
        ["--role", r, "--nats", &url, "--partition-count", &count].map(str::to_string)
    };
    let engine = Arc::new(Mutex::new(engine_node(
        &url,
        engine_dir.path(),
        PARTITIONS,
        &[],
    )));
    let gateway_args = role("gateway");
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let mut gateway = Serving::start_with(gateway_dir.path(), &gateway_args);
    let views_args = role("projections");
    let views_args: Vec<&str> = views_args.iter().map(String::as_str).collect();
    let mut views = Serving::start_with(views_dir.path(), &views_args);
    let (_tx, rx) = watch::channel(gateway.addr.clone());
    let (e, data, nats_url) = (engine.clone(), engine_dir.path().to_path_buf(), url.clone());
    let ledger = under_fire(rx, move |_| {
        let mut e = e.lock().expect("engine");
        // Child::kill is SIGKILL: no shutdown path runs.
        e.0.kill().expect("SIGKILL");
        let _ = e.0.wait();
        *e = engine_node(&nats_url, &data, PARTITIONS, &[]);
    })
    .await;
    let events = check_histories(&gateway.addr, &ledger).await;

    // The bus feed holds each stored event exactly once: the restarted outboxes resumed after
    // what was already published.
    let bus = NatsBus::connect(&url, lienthong_bus::Config::default())
        .await
        .expect("bus");
    let (on_feed, end) = lienthong_e2e::bus_feed_len(&bus).await;
    assert_eq!(
        on_feed, events as u64,
        "events on the bus feed against events stored"
    );

    // The projections role has folded the whole feed; its views equal a rebuild of its mirror.
    let mut reports = ReportServiceClient::connect(format!("http://{}", views.addr))
        .await
        .expect("connects to the projections role");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let header = reports
            .board(bearer("dev-auditor", pb::BoardRequest::default()))
            .await
            .expect("board")
            .into_inner()
            .header
            .expect("header");
        if header.checkpoint >= end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projections role stays at {header:?}, the feed ends at {end}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(views.stop(30_000).success(), "{}", views.log_tail());
    let records = views_equal_a_rebuild(views_dir.path());
    assert!(gateway.stop(30_000).success(), "{}", gateway.log_tail());

    // The engine's own store verifies (stopped first: it holds the store).
    let engine = Arc::try_unwrap(engine)
        .ok()
        .expect("one owner")
        .into_inner()
        .expect("engine");
    drop(engine);
    verified(engine_dir.path());
    eprintln!(
        "faults: distributed: {} commands acknowledged, {} dossiers closed, {events} events checked, {} retries ({} replays), {records} view records equal to a rebuild",
        ledger.acks.lock().expect("ledger").len(),
        ledger.closed.lock().expect("ledger").len(),
        ledger.retried.load(Ordering::Relaxed),
        ledger.replayed.load(Ordering::Relaxed),
    );
}

/// A tmpfs of a given size mounted on a fresh temporary directory, unmounted on drop: a small
/// file system the test can fill. Mounting needs root (CI runs as root); without it the test
/// fails and says so rather than skipping.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} (the full-disk test needs root, as CI has): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `dir` with the file `ballast` up to the last byte, then gives
/// `leave` bytes back; returns the ballast's path.
fn fill(dir: &Path, leave: u64) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).expect("create the ballast");
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    f.set_len(written.saturating_sub(leave))
        .expect("give space back");
    f.sync_all().expect("sync the ballast");
    path
}

/// Submits the birth dossier `key` as the desk.
async fn submit(addr: &str, key: &str) -> Result<pb::CommandResponse, tonic::Status> {
    let mut c = DossierServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    c.submit(bearer("dev-desk", birth(key)))
        .await
        .map(tonic::Response::into_inner)
}

/// The data directory's file system fills up (a 96 MiB tmpfs and a ballast file).
///
/// With the reserve (`--disk-free-min 32MiB`): appends are refused with RESOURCE_EXHAUSTED
/// that says the disk is nearly full, nothing is written, reads go on, and once the ballast is
/// gone the same idempotency key goes through with no restart.
///
/// With no reserve (`--disk-free-min 0`), sled meets the full disk itself: the append fails
/// UNAVAILABLE, the store is poisoned (what reached the disk is unknown; sled then fails reads
/// too), so the process stops with a failure status for its supervisor; a restart with space
/// recovers, and in both phases every acknowledged submission is there and the store verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_clearly_and_loses_nothing() {
    let fs = Tmpfs::mount("96m");
    let data = fs.path().join("data");
    let mut acked: Vec<String> = Vec::new();

    // Phase 1: the reserve.
    let mut server = Serving::start_with(&data, &["--disk-free-min", "32MiB"]);
    for i in 0..5 {
        let a = submit(&server.addr, &format!("disk-{i}"))
            .await
            .expect("submit with space");
        acked.push(a.dossier_id);
    }
    let ballast = fill(fs.path(), 16 << 20);
    let feed_before = feed(&server.addr).await.len();
    let refused = submit(&server.addr, "disk-full-1")
        .await
        .expect_err("refused below the reserve");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("disk nearly full"),
        "{}",
        refused.message()
    );
    assert_eq!(
        feed(&server.addr).await.len(),
        feed_before,
        "nothing was written"
    );
    std::fs::remove_file(&ballast).expect("free the space");
    let a = submit(&server.addr, "disk-full-1")
        .await
        .expect("the same key goes through once space is back");
    assert!(!a.replayed, "it was never written before");
    acked.push(a.dossier_id);
    assert!(server.stop(30_000).success(), "{}", server.log_tail());
    verified(&data);

    // Phase 2: no reserve; sled itself meets the full disk.
    let mut server = Serving::start_with(&data, &["--disk-free-min", "0"]);
    let ballast = fill(fs.path(), 0);
    let mut refusal = None;
    for i in 0..200 {
        match submit(&server.addr, &format!("disk-nothing-left-{i}")).await {
            Ok(a) => acked.push(a.dossier_id),
            Err(s) => {
                refusal = Some(s);
                break;
            }
        }
    }
    let refused = refusal.expect("a full disk refuses an append");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // The store is poisoned (what reached the disk is unknown): the process stops by itself,
    // with a failure status for its supervisor, and says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a poisoned server keeps running:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "exit {status:?}");
    let log = server.log_tail();
    assert!(log.contains("failed a write"), "{log}");
    // The supervisor restarts it once space is back; everything acknowledged is there.
    std::fs::remove_file(&ballast).expect("free the space");
    let mut server = Serving::start_with(&data, &[]);
    let a = submit(&server.addr, "disk-after-restart")
        .await
        .expect("a restart with space recovers");
    acked.push(a.dossier_id);
    let mut c = DossierServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connects");
    for id in &acked {
        c.get(bearer(
            "dev-desk",
            pb::GetDossierRequest {
                dossier: id.clone(),
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("acknowledged dossier {id} lost: {e}"));
    }
    assert!(server.stop(30_000).success(), "{}", server.log_tail());
    verified(&data);
}

/// The whole feed, read as the auditor.
async fn feed(addr: &str) -> Vec<pb::RecordedEvent> {
    let mut audit = AuditServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut stream = audit
        .export_feed(bearer("dev-auditor", pb::ExportFeedRequest::default()))
        .await
        .expect("export the feed")
        .into_inner();
    let mut events = Vec::new();
    while let Some(r) = stream.message().await.expect("feed stream") {
        events.push(r);
    }
    events
}

/// A TCP proxy on a free loopback port in front of `target`, whose link the test cuts and
/// restores: a partition between a process and the broker. Cut, it closes every connection and
/// closes each new one at once (as a peer behind a firewall rule that rejects would).
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (o, l) = (open.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                // Under the lock, and looked at again: a link accepted just as `cut` drained
                // the list would otherwise outlive the cut and keep the partition from being one.
                let mut links = l.lock().expect("links");
                if o.load(Ordering::SeqCst) {
                    links.push(link.abort_handle());
                } else {
                    link.abort();
                }
            }
        });
        Proxy {
            port,
            open,
            links,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        // (After `open` is false: see the accept loop.)
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The gauge `name` on the board's `/metrics`, read as the auditor.
fn gauge(http: &str, name: &str) -> u64 {
    let (status, _, body) = lienthong_e2e::http_get(http, "/metrics", Some("Bearer dev-auditor"));
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// `lienthong_outbox_lag_events`: events stored but not yet on the bus.
fn outbox_lag(http: &str) -> u64 {
    gauge(http, "lienthong_outbox_lag_events")
}

/// Polls `f` every 100 ms until it holds, for at most `secs`.
async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool, seen: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "not within {secs} s: {what}\n{}",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A partition between an engine and its broker (`serve --role all --nats` behind a [`Proxy`]):
/// submissions go on over gRPC and are stored, but their tasks cannot reach the bus; the
/// outbox's lag shows on `/metrics` and in the log while it lasts; once the link is back, the
/// outbox drains by itself, every dossier is worked by each agency exactly once over NATS, the
/// bus's feed holds each stored event exactly once, and the store verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_the_broker_delays_tasks_and_loses_nothing() {
    const DOSSIERS: usize = 16;
    let nats = NatsServer::start();
    let proxy = Proxy::start(nats.port()).await;
    let data = tempfile::tempdir().expect("temp dir");
    let count = PARTITIONS.to_string();
    let proxied = proxy.url();
    let mut server = Serving::start_with(
        data.path(),
        &[
            "--role",
            "all",
            "--nats",
            &proxied,
            "--partition-count",
            &count,
            "--lease-ttl",
            "30s",
        ],
    );
    let http = server.http_addr.clone().expect("the board's address");
    let mut ids = Vec::new();
    for i in 0..DOSSIERS / 2 {
        ids.push(
            submit(&server.addr, &format!("part-{i}"))
                .await
                .expect("submit")
                .dossier_id,
        );
    }
    // What the server showed, for a check that fails: its metrics and its log.
    let seen = || {
        let (_, _, metrics) =
            lienthong_e2e::http_get(&http, "/metrics", Some("Bearer dev-auditor"));
        format!(
            "-- /metrics:\n{metrics}\n-- server log:\n{}",
            server.log_tail()
        )
    };
    // A lag of 0 alone is also what an outbox shows before it has reached the bus at all: the
    // link must be seen working (something published) before it is cut.
    eventually(
        30,
        "the outbox publishes with the link up",
        || gauge(&http, "lienthong_outbox_published_position") > 0 && outbox_lag(&http) == 0,
        seen,
    )
    .await;

    proxy.cut();
    for i in DOSSIERS / 2..DOSSIERS {
        let a = submit(&server.addr, &format!("part-{i}"))
            .await
            .expect("submissions are stored while the broker is out of reach");
        ids.push(a.dossier_id);
    }
    eventually(
        10,
        "the lag shows on /metrics",
        || outbox_lag(&http) > 0,
        seen,
    )
    .await;
    eventually(
        20,
        "the lag shows in the log",
        || {
            server
                .log_tail()
                .contains("the bus's feed is behind the store")
        },
        seen,
    )
    .await;
    proxy.restore();
    eventually(
        60,
        "the outbox drains after the partition",
        || outbox_lag(&http) == 0,
        seen,
    )
    .await;
    eventually(
        10,
        "the log says it caught up",
        || server.log_tail().contains("the outbox caught up"),
        seen,
    )
    .await;

    // The agencies, on the broker directly, get every task once and close every dossier.
    let url = nats.url();
    let agents: Vec<_> = ["tu-phap", "cong-an", "bhxh", "ubnd-xa"]
        .iter()
        .map(|a| {
            let child = std::process::Command::new(lienthong_e2e::lienthong_bin())
                .args(["agent", "--nats", &url, "--agency", a])
                .args(["--partition-count", &count])
                .args(["--exit-when-idle", "5s", "--json"])
                .current_dir(lienthong_e2e::repo_root())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn lienthong agent");
            (child, *a)
        })
        .collect();
    for (child, agency) in agents {
        lienthong_e2e::worked_every_dossier(child, agency, DOSSIERS as u64);
    }
    let stored = lienthong_e2e::all_returned(&server.addr, "dev-auditor", &ids).await;
    let bus = NatsBus::connect(&url, lienthong_bus::Config::default())
        .await
        .expect("bus");
    let (on_feed, _) = lienthong_e2e::bus_feed_len(&bus).await;
    assert_eq!(on_feed, stored, "the feed holds every stored event once");
    assert!(server.stop(30_000).success(), "{}", server.log_tail());
    verified(data.path());
}
