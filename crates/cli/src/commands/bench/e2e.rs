//! `bench e2e --transport embedded|grpc|nats --dossiers N --concurrency C`: the birth-group
//! procedure (2.000986: justice, then police ∥ social insurance, then the commune's desk returns
//! the result) end to end, every state change durable before it is acknowledged.
//!
//! The harness plays the one-stop desk: it submits dossiers, keeping `C` of them open at once,
//! and works the desk's own queue (the `return-result` step, then `ReturnResult`, which closes
//! the dossier). A dossier's latency runs from the moment its submission is sent to the moment
//! the desk's `ReturnResult` is answered. The three other agencies are:
//! - `embedded`: workers inside the harness calling the engine directly (no network at all);
//! - `grpc`: three `lienthong agent --grpc` processes against a `lienthong serve` process (the
//!   embedded engine behind the gRPC gateway), with credentials the harness writes for the run;
//! - `nats`: three `lienthong agent --nats` processes pulling from their JetStream queues, a
//!   `lienthong serve --role engine` node, and a nats-server the harness starts on a free port
//!   (or `--nats URL`: a server kept for the bench, since the run leaves its streams there).
//!
//! After the run every process is stopped, each agency's count of completed steps is checked
//! (N each, none failed), and the engine's store is opened and verified (every hash chain). The
//! baseline measured in the same run and directory is the disk's `fdatasync`s per second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use lienthong_bus::{Bus, PartitionCount};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::Command;
use lienthong_engine::runtime::{Engine, Outcome, Request, SystemClock};
use lienthong_engine::store::{EventStore, SledStore};
use lienthong_node::client::BusCommands;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use lienthong_workflow::Workflow;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use super::cpu::{self, CpuMeter, CpuUse};
use super::procs::{Proc, own_peak_rss_bytes};
use crate::commands::agent;
use crate::sim::{self, FollowUp, Mix};

/// The procedure run: the birth group.
pub const PROCEDURE: &str = "2.000986";
/// The agency that receives the dossiers and returns the results (the harness).
pub const DESK: &str = "ubnd-xa";
/// The agencies that work the steps between (agents).
pub const AGENCIES: [&str; 3] = ["tu-phap", "cong-an", "bhxh"];
/// With no dossier closing for this long the run is stuck: it stops and says so.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process has to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Reply timeout of a command over the bus.
const BUS_TIMEOUT: Duration = Duration::from_secs(30);

/// How the agencies reach the engine.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Everything in this process: the engine, and agencies calling it directly.
    Embedded,
    /// Agencies as `lienthong agent --grpc` processes, the engine as `lienthong serve`.
    Grpc,
    /// Agencies as `lienthong agent --nats` processes, the engine as a NATS engine node.
    Nats,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Embedded => "embedded",
            Transport::Grpc => "grpc",
            Transport::Nats => "nats",
        }
    }
}

/// Arguments of `bench e2e`.
#[derive(clap::Args, Clone, Debug)]
pub struct E2eArgs {
    /// How the agencies reach the engine.
    #[arg(long, value_enum, default_value_t = Transport::Embedded)]
    transport: Transport,
    /// Dossiers run end to end.
    #[arg(long, default_value_t = 2_000)]
    dossiers: u64,
    /// Dossiers open at once (a new one is submitted as soon as one closes).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// With `--transport nats`: use this running nats-server instead of starting one. Purge it
    /// between runs: a run leaves its streams there, and an engine node that must scan back
    /// through more than 100,000 earlier events to find where it stopped refuses to start.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Tasks each agency works at once.
    #[arg(long, default_value_t = 64)]
    agent_concurrency: usize,
    /// Where the run's data goes (a fresh directory inside, removed after); default: the
    /// current directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The workflow directory.
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Embedded only: run on this existing data directory instead of a fresh one (what `bench
    /// scale` measures at each store size).
    #[arg(long, hide = true)]
    data: Option<PathBuf>,
    /// Do not verify the whole store after the run (`bench scale`: its stores are large, and
    /// are made by the bench itself).
    #[arg(long, hide = true)]
    no_verify: bool,
}

/// What one run measured.
struct Figures {
    /// Embedded: from opening the store to an engine ready for commands.
    open: Option<Duration>,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    events: u64,
    peak_rss: Vec<(String, u64)>,
    /// CPU time of each process over the measured part (submissions to the last closing).
    cpu: Vec<CpuUse>,
    raw_fdatasync_per_s: f64,
    agents: Vec<serde_json::Value>,
}

/// Runs the scenario and prints its figures.
pub fn run(a: &E2eArgs) -> Result<()> {
    if a.dossiers == 0 || a.concurrency == 0 || a.agent_concurrency == 0 {
        bail!("--dossiers, --concurrency and --agent-concurrency must be at least 1");
    }
    if a.nats.is_some() && a.transport != Transport::Nats {
        bail!("--nats URL goes with --transport nats");
    }
    if (a.data.is_some() || a.no_verify) && a.transport != Transport::Embedded {
        bail!("--data and --no-verify go with --transport embedded");
    }
    let work = super::scratch(&a.dir, "e2e")?;
    let workflows = std::path::absolute(crate::common::workflows_dir(&a.workflows))?;
    let catalog = crate::common::load_catalog(&workflows)?;
    let wf = catalog
        .procedure(PROCEDURE)
        .cloned()
        .ok_or_else(|| anyhow!("procedure {PROCEDURE} is not in {}", workflows.display()))?;
    let raw_fdatasync_per_s = super::raw_rate(&work.path().join("raw"), 1, Duration::from_secs(1))?;
    // Embedded, the engine runs in this process, on every core. Otherwise this process only
    // drives the load and plays the one-stop desk, waiting on the network like an agent
    // process: one thread (see `lienthong agent`), which leaves the cores to what is measured.
    let rt = match a.transport {
        Transport::Embedded => tokio::runtime::Builder::new_multi_thread(),
        Transport::Grpc | Transport::Nats => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .context("cannot start the async runtime")?;
    let mut f = match a.transport {
        Transport::Embedded => rt.block_on(embedded(a, work.path(), catalog, wf))?,
        Transport::Grpc => rt.block_on(grpc(a, work.path(), &workflows))?,
        Transport::Nats => rt.block_on(nats(a, work.path(), &workflows))?,
    };
    drop(rt);
    f.raw_fdatasync_per_s = raw_fdatasync_per_s;
    f.peak_rss
        .insert(0, ("bench".into(), own_peak_rss_bytes().unwrap_or(0)));
    report(a, &mut f);
    Ok(())
}

fn report(a: &E2eArgs, f: &mut Figures) {
    f.latencies_us.sort_unstable();
    let pct = |p: usize| -> f64 {
        let v = &f.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        v[((v.len() - 1) * p) / 100] as f64 / 1000.0
    };
    let secs = f.elapsed.as_secs_f64().max(1e-9);
    let per_s = a.dossiers as f64 / secs;
    let events_per_s = f.events as f64 / secs;
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    if a.json {
        let rss: serde_json::Map<String, serde_json::Value> = f
            .peak_rss
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let out = json!({
            "scenario": "e2e",
            "release": !cfg!(debug_assertions),
            "transport": a.transport.name(),
            "procedure": PROCEDURE,
            "dossiers": a.dossiers,
            "concurrency": a.concurrency,
            "seconds": (secs * 10_000.0).round() / 10_000.0,
            "dossiers_per_s": per_s.round(),
            "events": f.events,
            "events_per_s": events_per_s.round(),
            "p50_ms": round1(pct(50)),
            "p90_ms": round1(pct(90)),
            "p99_ms": round1(pct(99)),
            "peak_rss_bytes": rss,
            "cpu_us_per_dossier": cpu::to_json(&f.cpu, a.dossiers),
            "raw_fdatasync_per_s": f.raw_fdatasync_per_s.round(),
            "dossiers_per_raw_fdatasync": super::ratio(per_s, f.raw_fdatasync_per_s),
            "open_ms": f.open.map(|o| round1(o.as_secs_f64() * 1000.0)),
            "verified": !a.no_verify,
            "agents": f.agents,
        });
        println!("{out}");
    } else {
        println!(
            "e2e over {}: {} birth-group dossiers (2.000986), {} open at once, every change durable before it is acknowledged",
            a.transport.name(),
            a.dossiers,
            a.concurrency
        );
        println!(
            "  {:.0} dossiers/s, {} events ({:.0} events/s) in {:.2} s",
            per_s, f.events, events_per_s, secs
        );
        println!(
            "  submit -> closed: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
            pct(50),
            pct(90),
            pct(99)
        );
        println!(
            "  raw fdatasync/s on the same disk: {:.0} ({:.2} dossiers per raw fdatasync)",
            f.raw_fdatasync_per_s,
            super::ratio(per_s, f.raw_fdatasync_per_s)
        );
        let rss: Vec<String> = f
            .peak_rss
            .iter()
            .map(|(k, v)| format!("{k} {:.0} MiB", *v as f64 / (1024.0 * 1024.0)))
            .collect();
        println!("  peak RSS: {}", rss.join(", "));
        for line in cpu::to_text(&f.cpu, a.dossiers) {
            println!("  CPU per dossier: {line}");
        }
        if let Some(o) = f.open {
            println!(
                "  store and engine opened in {:.1} ms",
                o.as_secs_f64() * 1000.0
            );
        }
        if !a.no_verify {
            println!("  store verified: every hash chain intact");
        }
    }
}

/// When each dossier was submitted and closed, in whichever order the two are learnt (a fast
/// desk may close a dossier before its submitter has recorded the answer).
#[derive(Default)]
struct Clock {
    marks: Mutex<HashMap<String, Mark>>,
    latencies_us: Mutex<Vec<u64>>,
}

enum Mark {
    Submitted(Instant),
    Closed(Instant),
}

impl Clock {
    fn submitted(&self, id: String, at: Instant) {
        let mut marks = self.marks.lock();
        match marks.remove(&id) {
            Some(Mark::Closed(end)) => self.latencies_us.lock().push(micros(end - at)),
            _ => {
                marks.insert(id, Mark::Submitted(at));
            }
        }
    }

    fn closed(&self, id: String, at: Instant) {
        let mut marks = self.marks.lock();
        match marks.remove(&id) {
            Some(Mark::Submitted(start)) => self.latencies_us.lock().push(micros(at - start)),
            _ => {
                marks.insert(id, Mark::Closed(at));
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Submits one dossier over the transport; answers its id.
enum Submitter {
    Embedded(Arc<Embedded>),
    Grpc(DossierServiceClient<tonic::transport::Channel>, String),
    Bus(BusCommands),
}

impl Submitter {
    /// Submits dossier `i` of the run `nonce` (keys are unique across runs on one store).
    async fn submit(&self, nonce: &str, i: u64) -> Result<String> {
        let req = birth(&format!("bench-{nonce}-{i}"));
        match self {
            Submitter::Embedded(e) => e.clone().submit(req).await,
            Submitter::Grpc(client, token) => {
                let mut r = tonic::Request::new(req);
                r.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| anyhow!("bad token"))?,
                );
                let answer = client.clone().submit(r).await?.into_inner();
                Ok(answer.dossier_id)
            }
            Submitter::Bus(commands) => {
                let command = pb::BusCommand {
                    actor: Some(desk_actor()),
                    command: Some(pb::bus_command::Command::Submit(req)),
                    routed_only: false,
                };
                Ok(commands.execute(&command).await?.dossier_id)
            }
        }
    }
}

fn desk_actor() -> pb::Actor {
    pb::Actor {
        agency: DESK.into(),
        officer: "can-bo-mot-cua".into(),
        channel: pb::Channel::InPerson as i32,
    }
}

/// A birth-group submission: a one-month-old child, so the health-card step applies.
pub fn birth(key: &str) -> pb::SubmitRequest {
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert(
        "child.age_months".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Integer(1)),
        },
    );
    attributes.insert(
        "child.birth_date".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Date("2026-10-01".into())),
        },
    );
    pb::SubmitRequest {
        idempotency_key: key.into(),
        procedure_code: PROCEDURE.into(),
        channel: pb::Channel::InPerson as i32,
        applicant: Some(pb::Applicant {
            full_name: "Nguyễn Thị Bench".into(),
            ..Default::default()
        }),
        attributes,
        documents: Vec::new(),
        officer: "can-bo-mot-cua".into(),
    }
}

/// Keeps `concurrency` dossiers open until `dossiers` have closed; answers the elapsed time.
async fn drive(
    a: &E2eArgs,
    submitter: Arc<Submitter>,
    clock: Arc<Clock>,
    mut closed: mpsc::UnboundedReceiver<String>,
    faults: Arc<Mutex<Vec<String>>>,
) -> Result<Duration> {
    let in_flight = Arc::new(Semaphore::new(a.concurrency));
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<String>();
    let began = Instant::now();
    let n = a.dossiers;
    let nonce: Arc<str> = run_nonce().into();
    let submitting = {
        let in_flight = in_flight.clone();
        let clock = clock.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                permit.forget();
                let (submitter, clock, failed, nonce) = (
                    submitter.clone(),
                    clock.clone(),
                    failed_tx.clone(),
                    nonce.clone(),
                );
                tokio::spawn(async move {
                    let at = Instant::now();
                    match submitter.submit(&nonce, i).await {
                        Ok(id) => clock.submitted(id, at),
                        Err(e) => {
                            let _ = failed.send(format!("submission {i}: {e:#}"));
                        }
                    }
                });
            }
        })
    };
    let mut done = 0;
    // A desk task delivered again is answered again (a replay): one dossier, one close.
    let mut closed_ids = std::collections::HashSet::new();
    while done < n {
        tokio::select! {
            c = tokio::time::timeout(STALL_TIMEOUT, closed.recv()) => match c {
                Ok(Some(id)) => {
                    if !closed_ids.insert(id.clone()) {
                        continue;
                    }
                    clock.closed(id, Instant::now());
                    done += 1;
                    in_flight.add_permits(1);
                }
                Ok(None) => bail!("the desk stopped after {done} of {n} dossiers closed"),
                Err(_) => bail!(
                    "no dossier closed for {} s ({done} of {n} closed); faults: {:?}",
                    STALL_TIMEOUT.as_secs(),
                    faults.lock()
                ),
            },
            Some(f) = failed_rx.recv() => bail!("{f}"),
        }
    }
    let elapsed = began.elapsed();
    submitting.await?;
    let timed = clock.latencies_us.lock().len() as u64;
    if timed != n {
        bail!("{timed} of {n} closed dossiers were matched to their submission");
    }
    let faults = faults.lock();
    if !faults.is_empty() {
        bail!("the run had faults: {:?}", *faults);
    }
    Ok(elapsed)
}

/// A run's own mark in its idempotency keys, so that runs on one store never collide.
fn run_nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The embedded run: engine, desk and agencies in this process.
struct Embedded {
    /// See [`run_nonce`].
    nonce: String,
    engine: Engine,
    wf: Arc<Workflow>,
    closed: mpsc::UnboundedSender<String>,
    events: AtomicU64,
    acts: AtomicU64,
    faults: Arc<Mutex<Vec<String>>>,
}

impl Embedded {
    /// A driver of `engine` for the procedure `wf`, and where it tells each dossier it closed.
    fn new(engine: Engine, wf: Arc<Workflow>) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (closed, closed_rx) = mpsc::unbounded_channel();
        let embedded = Arc::new(Embedded {
            nonce: run_nonce(),
            engine,
            wf,
            closed,
            events: AtomicU64::new(0),
            acts: AtomicU64::new(0),
            faults: Arc::new(Mutex::new(Vec::new())),
        });
        (embedded, closed_rx)
    }

    async fn submit(self: Arc<Self>, req: pb::SubmitRequest) -> Result<String> {
        let command = lienthong_gateway::convert::submit(&req, &Default::default())
            .map_err(|s| anyhow!("the submission does not convert: {}", s.message()))?;
        let out = self
            .engine
            .execute(Request {
                dossier: None,
                actor: desk_actor(),
                idempotency_key: req.idempotency_key.clone(),
                command,
            })
            .await?;
        let id = out.dossier.to_string();
        self.react(out);
        Ok(id)
    }

    /// Works what a command opened: each step by its agency, the return by the desk.
    fn react(self: &Arc<Self>, out: Outcome) {
        self.events
            .fetch_add(out.events.len() as u64, Ordering::Relaxed);
        let dossier = out.dossier;
        for next in sim::follow_ups(&out) {
            let me = self.clone();
            match next {
                FollowUp::Work { step, agency, .. } => {
                    let mut rng = StdRng::seed_from_u64(0);
                    let cmd = sim::work_step(&mut rng, &Mix::NONE, &me.wf, &step, false);
                    tokio::spawn(async move { me.act(dossier, agency, cmd).await });
                }
                FollowUp::Return { desk } => {
                    let mut rng = StdRng::seed_from_u64(0);
                    let cmd = sim::return_result(&mut rng);
                    tokio::spawn(async move { me.act(dossier, desk, cmd).await });
                }
                FollowUp::Closed { .. } => {
                    let _ = self.closed.send(dossier.to_string());
                }
                FollowUp::Answer { to } => self.faults.lock().push(format!(
                    "{dossier}: an unexpected supplement request to {to}"
                )),
            }
        }
    }

    async fn act(self: Arc<Self>, dossier: DossierId, agency: String, command: Command) {
        let n = self.acts.fetch_add(1, Ordering::Relaxed);
        let req = Request {
            dossier: Some(dossier),
            actor: pb::Actor {
                officer: format!("{agency}-01"),
                agency,
                channel: pb::Channel::System as i32,
            },
            idempotency_key: format!("bench-{}-act-{n}", self.nonce),
            command,
        };
        match self.engine.execute(req).await {
            Ok(out) => self.react(out),
            Err(e) => self.faults.lock().push(format!("{dossier}: {e}")),
        }
    }
}

/// Runs one birth-group dossier end to end on `engine`, as the embedded run does; answers its id.
pub async fn close_one(engine: Engine, wf: Arc<Workflow>) -> Result<DossierId> {
    let (embedded, mut closed) = Embedded::new(engine, wf);
    let id = embedded.clone().submit(birth("bench-one")).await?;
    match tokio::time::timeout(STALL_TIMEOUT, closed.recv()).await {
        Ok(Some(closed)) if closed == id => {}
        _ => bail!(
            "dossier {id} did not close; faults: {:?}",
            embedded.faults.lock()
        ),
    }
    id.parse()
        .map_err(|e| anyhow!("the engine answered a dossier id `{id}` that does not parse: {e}"))
}

async fn embedded(
    a: &E2eArgs,
    work: &Path,
    catalog: Arc<lienthong_workflow::Catalog>,
    wf: Arc<Workflow>,
) -> Result<Figures> {
    let opening = Instant::now();
    let data = a.data.clone().unwrap_or_else(|| work.join("data"));
    let store = crate::common::open_store(&data)?;
    let before = store.last_position()?;
    let engine = Engine::new(store.clone(), catalog, Arc::new(SystemClock));
    let open = opening.elapsed();
    let (embedded, closed_rx) = Embedded::new(engine, wf);
    let faults = embedded.faults.clone();
    let clock = Arc::new(Clock::default());
    let submitter = Arc::new(Submitter::Embedded(embedded.clone()));
    let meter = CpuMeter::start(&[("bench".to_string(), None)]);
    let elapsed = drive(a, submitter, clock.clone(), closed_rx, faults).await?;
    let cpu = meter.stop();
    let events = embedded.events.load(Ordering::Relaxed);
    drop(embedded);
    let appended = store.last_position()? - before;
    if appended != events {
        bail!("the store holds {appended} new events, the engine answered {events}");
    }
    let report = if a.no_verify {
        None
    } else {
        Some(store.verify()?)
    };
    if let Some(report) = report
        && (!report.is_clean() || report.chains.events != before + events)
    {
        bail!(
            "the store does not verify after the run: {} events checked of {events}, {} break(s), {} problem(s)",
            report.chains.events,
            report.chains.breaks.len(),
            report.problems.len()
        );
    }
    store.close()?;
    let latencies_us = std::mem::take(&mut *clock.latencies_us.lock());
    Ok(Figures {
        open: Some(open),
        elapsed,
        latencies_us,
        events,
        peak_rss: Vec::new(),
        cpu,
        raw_fdatasync_per_s: 0.0,
        agents: Vec::new(),
    })
}

/// Credentials for one run: a random token per principal, only their hashes in the file.
struct Credentials {
    file: PathBuf,
    tokens: HashMap<&'static str, String>,
}

fn credentials(work: &Path) -> Result<Credentials> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut text = String::from("# Written by `lienthong bench e2e` for one run.\n");
    let mut tokens = HashMap::new();
    for (agency, role) in [(DESK, "desk")]
        .into_iter()
        .chain(AGENCIES.iter().map(|a| (*a, "agency")))
    {
        let token: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        text.push_str(&format!(
            "\n[[principal]]\nid = \"{agency}\"\nagency = \"{agency}\"\nrole = \"{role}\"\ntoken_sha256 = \"{hash}\"\n"
        ));
        tokens.insert(agency, token);
    }
    let file = work.join("auth.toml");
    std::fs::write(&file, text)?;
    Ok(Credentials { file, tokens })
}

/// This binary, to start the servers and agents from.
fn me() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find this program's path")
}

/// Starts the three agency agents with `transport_args` (`--grpc URL` or `--nats URL`).
fn start_agents(
    a: &E2eArgs,
    transport_args: &[String],
    tokens: Option<&HashMap<&'static str, String>>,
) -> Result<Vec<Proc>> {
    let mut agents = Vec::new();
    for agency in AGENCIES {
        let mut cmd = Process::new(me()?);
        cmd.arg("agent")
            .args(transport_args)
            .args(["--agency", agency, "--json"])
            .args(["--concurrency", &a.agent_concurrency.to_string()])
            .env_remove("LIENTHONG_TOKEN");
        if let Some(t) = tokens {
            cmd.env("LIENTHONG_TOKEN", &t[agency]);
        }
        let (p, _) = Proc::spawn(&format!("agent {agency}"), cmd, None)?;
        agents.push(p);
    }
    Ok(agents)
}

/// Stops the agents (Ctrl-C) and checks that each completed one step per dossier.
fn stop_agents(a: &E2eArgs, agents: Vec<Proc>) -> Result<Vec<serde_json::Value>> {
    for p in &agents {
        p.signal(libc::SIGINT)?;
    }
    let mut summaries = Vec::new();
    for p in agents {
        let name = p.name.clone();
        let (_, out) = p.wait(STOP_TIMEOUT)?;
        let s: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("{name} printed no JSON summary: `{out}`"))?;
        if s["completed"] != a.dossiers || s["failed"] != 0 {
            bail!(
                "{name} completed {} steps with {} failed, {} expected: {s}",
                s["completed"],
                s["failed"],
                a.dossiers
            );
        }
        summaries.push(s);
    }
    Ok(summaries)
}

/// A failed run's error with what the server and the agents last wrote.
fn with_tails(e: anyhow::Error, server: &Proc, agents: &[Proc]) -> anyhow::Error {
    let mut text = format!("{e:#}");
    for p in std::iter::once(server).chain(agents) {
        text.push_str(&format!("\n--- {} (last lines):\n{}", p.name, p.tail()));
    }
    anyhow!(text)
}

/// Opens the engine's store after its process stopped and verifies it; answers the events.
fn verify_store(data: &Path) -> Result<u64> {
    let store = SledStore::open(data)
        .with_context(|| format!("cannot open the engine's store in {}", data.display()))?;
    let report = store.verify()?;
    if !report.is_clean() {
        bail!(
            "the store does not verify after the run: {} break(s), {} problem(s)",
            report.chains.breaks.len(),
            report.problems.len()
        );
    }
    store.close()?;
    Ok(report.chains.events)
}

async fn grpc(a: &E2eArgs, work: &Path, workflows: &Path) -> Result<Figures> {
    let creds = credentials(work)?;
    let data = work.join("data");
    let mut cmd = Process::new(me()?);
    cmd.args(["serve", "--grpc", "127.0.0.1:0", "--http", "off"])
        .arg("--auth")
        .arg(&creds.file)
        .arg("--data")
        .arg(&data)
        .arg("--workflows")
        .arg(workflows)
        // The gateway's per-principal rate limit is a policy against abuse; the bench measures
        // the engine, so it is set out of the way.
        .args(["--requests-per-s-max", "1000000"])
        .args(["--request-burst-max", "1000000"])
        .env_remove("LIENTHONG_CONFIG");
    let (serve, rest) = Proc::spawn("serve", cmd, Some("lienthong: serving gRPC on "))?;
    let addr = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("serve printed no address"))?
        .to_string();
    let url = format!("http://{addr}");
    let agents = start_agents(a, &["--grpc".into(), url.clone()], Some(&creds.tokens))?;

    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    let desk_token = creds.tokens[DESK].clone();
    let desk_work = agent::Work {
        concurrency: a.concurrency.max(a.agent_concurrency),
        after: 0,
        exit_when_idle: None,
    };
    let desk = {
        let url = url.clone();
        let token = desk_token.clone();
        tokio::spawn(async move {
            agent::in_process_grpc(&url, &token, DESK, &desk_work, closed_tx).await
        })
    };
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("cannot connect to the gateway")?;
    let submitter = Arc::new(Submitter::Grpc(
        DossierServiceClient::new(channel),
        desk_token,
    ));
    let clock = Arc::new(Clock::default());
    let faults = Arc::new(Mutex::new(Vec::new()));
    let meter = meter(&serve, &agents);
    let elapsed = drive(a, submitter, clock.clone(), closed_rx, faults).await;
    desk.abort();
    let _ = desk.await;
    finish_blocking(a, elapsed, meter, clock, serve, agents, data).await
}

/// Starts measuring the CPU time of this process (the bench, with the one-stop desk's agent and
/// the submissions) and of the engine's and agents' processes.
fn meter(server: &Proc, agents: &[Proc]) -> CpuMeter {
    let mut processes = vec![
        ("bench".to_string(), None),
        (server.name.clone(), Some(server.pid())),
    ];
    processes.extend(agents.iter().map(|p| (p.name.clone(), Some(p.pid()))));
    CpuMeter::start(&processes)
}

/// [`finish`] on a blocking thread. It waits for the processes to stop, and the engine's
/// process waits in turn for its clients' connections to close: this process's runtime (one
/// thread) must go on driving them meanwhile.
async fn finish_blocking(
    a: &E2eArgs,
    elapsed: Result<Duration>,
    meter: CpuMeter,
    clock: Arc<Clock>,
    server: Proc,
    agents: Vec<Proc>,
    data: PathBuf,
) -> Result<Figures> {
    let a = a.clone();
    tokio::task::spawn_blocking(move || finish(&a, elapsed, meter, &clock, server, agents, &data))
        .await
        .context("the end of the run failed")?
}

/// Ends a run with processes: reads their peak memory, stops the agents (checking their counts)
/// and then the engine's process, and verifies the engine's store.
fn finish(
    a: &E2eArgs,
    elapsed: Result<Duration>,
    meter: CpuMeter,
    clock: &Clock,
    server: Proc,
    agents: Vec<Proc>,
    data: &Path,
) -> Result<Figures> {
    let cpu = meter.stop();
    let elapsed = elapsed.map_err(|e| with_tails(e, &server, &agents))?;
    let mut peak_rss = vec![(server.name.clone(), server.peak_rss_bytes().unwrap_or(0))];
    for p in &agents {
        peak_rss.push((p.name.clone(), p.peak_rss_bytes().unwrap_or(0)));
    }
    let summaries = stop_agents(a, agents)?;
    server.signal(libc::SIGTERM)?;
    server.wait(STOP_TIMEOUT)?;
    let events = verify_store(data)?;
    let latencies_us = std::mem::take(&mut *clock.latencies_us.lock());
    Ok(Figures {
        open: None,
        elapsed,
        latencies_us,
        events,
        peak_rss,
        cpu,
        raw_fdatasync_per_s: 0.0,
        agents: summaries,
    })
}

async fn nats(a: &E2eArgs, work: &Path, workflows: &Path) -> Result<Figures> {
    // A server of our own unless one is given; it is stopped when this guard drops.
    let mut own_server = None;
    let url = match &a.nats {
        Some(url) => url.clone(),
        None => {
            lienthong_bus::testing::find_nats_server().map_err(|e| anyhow!("{e}"))?;
            let server = lienthong_bus::testing::NatsServer::start();
            let url = server.url();
            own_server = Some(server);
            url
        }
    };
    let data = work.join("data");
    let mut cmd = Process::new(me()?);
    cmd.args(["serve", "--role", "engine", "--nats", &url, "--http", "off"])
        .arg("--data")
        .arg(&data)
        .arg("--workflows")
        .arg(workflows)
        .env_remove("LIENTHONG_CONFIG");
    let (engine, _) = Proc::spawn("engine", cmd, Some("lienthong: engine node on NATS"))?;
    let agents = start_agents(a, &["--nats".into(), url.clone()], None)?;

    let bus: Arc<dyn Bus> = Arc::new(
        lienthong_bus::nats::NatsBus::connect(&url, lienthong_bus::Config::default())
            .await
            .with_context(|| {
                format!("cannot use NATS at {}", lienthong_bus::nats::redacted(&url))
            })?,
    );
    let count = PartitionCount::new(lienthong_bus::contract::PARTITION_COUNT_DEFAULT)
        .ok_or_else(|| anyhow!("the default partition count is out of range"))?;
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    let desk_work = agent::Work {
        concurrency: a.concurrency.max(a.agent_concurrency),
        after: 0,
        exit_when_idle: None,
    };
    let desk = {
        let bus = bus.clone();
        tokio::spawn(
            async move { agent::in_process_bus(bus, count, DESK, &desk_work, closed_tx).await },
        )
    };
    let submitter = Arc::new(Submitter::Bus(BusCommands::new(
        bus.clone(),
        count,
        BUS_TIMEOUT,
    )));
    let clock = Arc::new(Clock::default());
    let faults = Arc::new(Mutex::new(Vec::new()));
    let meter = meter(&engine, &agents);
    let elapsed = drive(a, submitter, clock.clone(), closed_rx, faults).await;
    desk.abort();
    let _ = desk.await;
    drop(bus);
    let figures = finish_blocking(a, elapsed, meter, clock, engine, agents, data).await;
    drop(own_server);
    figures
}
