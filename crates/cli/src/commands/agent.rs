//! `lienthong agent --grpc URL --agency CODE [--token T] [--approve-rate 0.95] [--delay 200ms]
//! [--concurrency 32] [--after POS] [--exit-when-idle 5s]`: a simulated agency system working its
//! queue through the gateway, exactly as a real one would (for demos, load and tests).
//!
//! It streams the agency's tasks (`AgencyService.StreamTasks`) and, for each:
//! - a step opened for the agency: after `--delay`, completes it with outcome `approve`
//!   (probability `--approve-rate`) or rejects it with a reason; when the desk completes the last
//!   step and the dossier is ready to return, it hands the result back (`ReturnResult`);
//! - a supplement asked of the agency by another agency: provides it;
//! - deadline warnings and misses: logged (a real system would alert an officer).
//!
//! Every act's idempotency key is derived from the task id, and every choice from the task id and
//! `--seed`, so a task delivered again (after a reconnect) is answered with the same request and
//! the gateway returns the first answer: a redelivered task never has two effects. The stream is
//! resumed after a dropped connection from the last position below which every task was handled.
//! A call refused for rate (RESOURCE_EXHAUSTED with RetryInfo) or because the server is
//! unavailable is retried after a pause; a task whose step is no longer open (the dossier moved
//! on) is counted as stale.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use lienthong_bus::nats::NatsBus;
use lienthong_bus::{Bus, PartitionCount};
use lienthong_node::client::BusCommands;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_client::AgencyServiceClient;
use lienthong_proto::v1::bus_command::Command as BusCmd;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use parking_lot::Mutex;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// Deadline of one act (a unary call), in seconds.
pub const ACT_TIMEOUT_S: u64 = 30;
/// Tries per act before it is counted as failed (rate limits and unavailability are retried).
pub const ACT_TRIES_MAX: u32 = 20;
/// Pause before reconnecting a dropped task stream, doubled up to [`RECONNECT_PAUSE_MS_MAX`].
pub const RECONNECT_PAUSE_MS_MIN: u64 = 100;
/// Longest pause between reconnections.
pub const RECONNECT_PAUSE_MS_MAX: u64 = 5_000;
/// How long one pull from the bus waits for a task, in milliseconds.
pub const BUS_PULL_WAIT_MS: u64 = 500;

/// Arguments of `agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Work over the gRPC gateway: `http://127.0.0.1:50051`, or `https://…` for TLS.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "nats",
        conflicts_with = "nats"
    )]
    grpc: Option<String>,
    /// Work over NATS instead: pull the agency's tasks from its durable consumer and send acts
    /// to the engine by request/reply (docs/nats.md), e.g. `nats://127.0.0.1:4222`.
    #[arg(
        long,
        value_name = "URL",
        env = "LIENTHONG_NATS",
        hide_env_values = true
    )]
    nats: Option<String>,
    /// Partitions the dossier space is split into: must be the engine nodes' (`serve
    /// --partition-count`).
    #[arg(long, env = "LIENTHONG_PARTITION_COUNT", default_value_t = lienthong_bus::contract::PARTITION_COUNT_DEFAULT)]
    partition_count: u32,
    /// Copies JetStream keeps of the bus's streams: the deployment's (`serve --replicas`).
    #[arg(long, env = "LIENTHONG_REPLICAS", default_value_t = lienthong_bus::config::REPLICAS_DEFAULT)]
    replicas: usize,
    /// The agency whose queue to work: the credential's own agency (an auditor's or admin's
    /// credential may stream another agency's tasks, but acts are recorded as the credential's).
    #[arg(long)]
    agency: String,
    /// Bearer token of the agency's principal (see `examples/auth.toml`).
    #[arg(long, env = "LIENTHONG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate that signed the server's certificate (PEM), for `https://`.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The agency's client certificate (PEM), for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Share of opened steps that are approved (the rest are rejected), 0.0 to 1.0.
    #[arg(long, default_value_t = 1.0)]
    approve_rate: f64,
    /// How long an officer takes over a step before answering, e.g. `0ms`, `200ms`, `2s`.
    #[arg(long, default_value = "0ms", value_parser = crate::common::parse_duration)]
    delay: Duration,
    /// Tasks worked at the same time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Start after this global feed position (0: the whole backlog).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Stop once no task has arrived for this long and none is in hand (default: run until Ctrl-C).
    #[arg(long, value_parser = crate::common::parse_duration)]
    exit_when_idle: Option<Duration>,
    /// Seed of the choices (approve or reject), so that a run can be repeated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Officer name written on every act.
    #[arg(long)]
    officer: Option<String>,
    /// Print the final summary as one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// What the agent did, printed at the end.
#[derive(Debug, Default)]
struct Counters {
    /// Task messages received (including ones delivered again).
    tasks: AtomicU64,
    /// Steps completed (first answers only; replays are counted in `replayed`).
    completed: AtomicU64,
    /// Steps rejected (first answers only).
    rejected: AtomicU64,
    /// Supplements provided to other agencies (first answers only).
    supplemented: AtomicU64,
    /// Results handed back (desk only; first answers only).
    returned: AtomicU64,
    /// Answers that were the first answer returned again (a redelivered task).
    replayed: AtomicU64,
    /// Tasks whose step or dossier had moved on (FAILED_PRECONDITION).
    stale: AtomicU64,
    /// Deadline warnings and misses received.
    deadline_notices: AtomicU64,
    /// Acts that failed for good.
    failed: AtomicU64,
    /// Retries after RESOURCE_EXHAUSTED / UNAVAILABLE / ABORTED.
    retries: AtomicU64,
    /// Task streams opened (1 + reconnections).
    streams: AtomicU64,
}

/// How the agent reaches the engine.
enum Transport {
    /// Through the gRPC gateway, with the agency's credentials.
    Grpc(Box<GrpcClients>),
    /// Over the bus: acts by request/reply to the dossier's partition.
    Bus(BusCommands),
}

/// The gRPC clients and credentials of an agent.
struct GrpcClients {
    /// Agency service client.
    agencies: AgencyServiceClient<Channel>,
    /// Dossier service client (supplements, results).
    dossiers: DossierServiceClient<Channel>,
    /// `authorization` header value, if a token is used.
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// One act of the agent.
#[derive(Clone, Debug)]
enum Act {
    /// Complete a step.
    Complete(pb::CompleteStepRequest),
    /// Reject a step.
    Reject(pb::RejectStepRequest),
    /// Provide a supplement asked of the agency.
    Supplement(pb::ProvideSupplementRequest),
    /// Hand the result back (desk).
    Return(pb::ReturnResultRequest),
}

impl Act {
    /// The RPC's name, for logs.
    fn rpc(&self) -> &'static str {
        match self {
            Act::Complete(_) => "CompleteStep",
            Act::Reject(_) => "RejectStep",
            Act::Supplement(_) => "ProvideSupplement",
            Act::Return(_) => "ReturnResult",
        }
    }

    /// The act as a bus command.
    fn bus_command(self) -> BusCmd {
        match self {
            Act::Complete(r) => BusCmd::CompleteStep(r),
            Act::Reject(r) => BusCmd::RejectStep(r),
            Act::Supplement(r) => BusCmd::ProvideSupplement(r),
            Act::Return(r) => BusCmd::ReturnResult(r),
        }
    }
}

/// How one act ended.
enum Done {
    /// The engine answered (first answer or a replay).
    Answered(Box<pb::CommandResponse>),
    /// The step or dossier had moved on: nothing to do.
    Stale,
    /// It failed (counted and logged); the task should come back.
    Failed,
}

/// The connection and the choices, shared by the task handlers.
struct Agent {
    /// How acts reach the engine.
    transport: Transport,
    /// The agency worked.
    agency: String,
    /// Officer written on the acts.
    officer: String,
    /// Approval probability.
    approve_rate: f64,
    /// Thinking time per step.
    delay: Duration,
    /// Seed of the choices.
    seed: u64,
    /// What happened.
    counters: Counters,
    /// Told the id of each dossier whose result this agent handed back (the bench's desk).
    closed: Option<mpsc::UnboundedSender<String>>,
}

/// How an agent takes its work (from the flags, or set by `bench`).
pub(crate) struct Work {
    /// Tasks worked at the same time.
    pub concurrency: usize,
    /// Start after this global feed position.
    pub after: u64,
    /// Stop once idle for this long.
    pub exit_when_idle: Option<Duration>,
}

impl Work {
    fn of(args: &Args) -> Work {
        Work {
            concurrency: args.concurrency,
            after: args.after,
            exit_when_idle: args.exit_when_idle,
        }
    }
}

/// Runs `agency`'s agent inside this process over the gRPC gateway at `url` with the bearer
/// `token`, until Ctrl-C or until the task is dropped; each dossier whose result it hands back
/// is told to `closed`. The `bench e2e` harness plays the one-stop desk this way.
pub(crate) async fn in_process_grpc(
    url: &str,
    token: &str,
    agency: &str,
    work: &Work,
    closed: mpsc::UnboundedSender<String>,
) -> Result<()> {
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow!("`{url}` is not a URL ({e})"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy();
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow!("the token contains characters a header cannot carry"))?;
    let agent = Arc::new(Agent::new(
        Transport::Grpc(Box::new(GrpcClients {
            agencies: AgencyServiceClient::new(channel.clone()),
            dossiers: DossierServiceClient::new(channel),
            bearer: Some(bearer),
        })),
        agency,
        Some(closed),
    ));
    work_grpc(agent, work).await
}

/// [`in_process_grpc`] over the bus: pulls `agency`'s tasks and sends its acts to the engine
/// nodes by request/reply.
pub(crate) async fn in_process_bus(
    bus: Arc<dyn Bus>,
    count: PartitionCount,
    agency: &str,
    work: &Work,
    closed: mpsc::UnboundedSender<String>,
) -> Result<()> {
    let queue = lienthong_bus::Agency::new(agency)?;
    let agent = Arc::new(Agent::new(
        Transport::Bus(BusCommands::new(
            bus.clone(),
            count,
            Duration::from_secs(ACT_TIMEOUT_S),
        )),
        agency,
        Some(closed),
    ));
    work_bus(agent, work, bus, queue).await
}

/// Positions of the tasks in hand and the highest position seen: the resume cursor is the
/// position below which everything was handled.
#[derive(Default)]
struct Cursor {
    /// Positions of tasks being worked.
    in_hand: BTreeSet<u64>,
    /// Highest position received.
    seen: u64,
}

impl Cursor {
    /// Where a new stream resumes: just below the oldest task in hand, else the last seen.
    fn resume_after(&self) -> u64 {
        match self.in_hand.first() {
            Some(p) => p.saturating_sub(1),
            None => self.seen,
        }
    }
}

/// Runs the agent until Ctrl-C, or until idle with `--exit-when-idle`.
pub fn run(args: Args) -> Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.approve_rate) {
        bail!(
            "--approve-rate {} must be between 0.0 and 1.0",
            args.approve_rate
        );
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    // One thread: an agency's adapter waits on the network nearly all the time, and a second
    // worker only added hand-offs between threads (a wake-up each) to every task and answer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let officer = args
            .officer
            .clone()
            .unwrap_or_else(|| format!("agent:{}", args.agency));
        let agent = |transport| {
            Arc::new(Agent {
                transport,
                officer: officer.clone(),
                agency: args.agency.clone(),
                approve_rate: args.approve_rate,
                delay: args.delay,
                seed: args.seed,
                counters: Counters::default(),
                closed: None,
            })
        };
        let work = Work::of(&args);
        let agent = if let Some(url) = &args.nats {
            let count = PartitionCount::new(args.partition_count).ok_or_else(|| {
                anyhow!("--partition-count {} is out of range", args.partition_count)
            })?;
            let agency = lienthong_bus::Agency::new(&args.agency)?;
            let bus: Arc<dyn Bus> = Arc::new(
                NatsBus::connect(
                    url,
                    lienthong_bus::Config {
                        replicas: args.replicas,
                        ..lienthong_bus::Config::default()
                    },
                )
                    .await
                    .with_context(|| {
                        format!("cannot use NATS at {}", lienthong_bus::nats::redacted(url))
                    })?,
            );
            let agent = agent(Transport::Bus(BusCommands::new(
                bus.clone(),
                count,
                Duration::from_secs(ACT_TIMEOUT_S),
            )));
            work_bus(agent.clone(), &work, bus, agency).await?;
            agent
        } else {
            let channel = connect(&args).await?;
            let bearer = args
                .token
                .as_deref()
                .map(|t| {
                    format!("Bearer {t}")
                        .parse()
                        .map_err(|_| anyhow!("--token contains characters a header cannot carry"))
                })
                .transpose()?;
            if bearer.is_none() && args.cert.is_none() {
                bail!(
                    "give --token (or LIENTHONG_TOKEN) or --cert/--key: the gateway refuses anonymous calls"
                );
            }
            let agent = agent(Transport::Grpc(Box::new(GrpcClients {
                agencies: AgencyServiceClient::new(channel.clone()),
                dossiers: DossierServiceClient::new(channel),
                bearer,
            })));
            work_grpc(agent.clone(), &work).await?;
            agent
        };
        print_summary(&agent, args.json);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The channel to the gateway, with TLS when the URL is `https://` or a CA is given.
async fn connect(args: &Args) -> Result<Channel> {
    let url = args.grpc.clone().unwrap_or_default();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| anyhow!("--grpc `{url}` is not a URL ({e})"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if url.starts_with("https://") || args.ca_cert.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        } else {
            tls = tls.with_enabled_roots();
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            let c =
                std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let k = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(c, k));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("the TLS settings are unusable")?;
    }
    // Connect lazily: the stream loop retries while the gateway is not up yet.
    Ok(endpoint.connect_lazy())
}

/// Streams tasks and works them until idle (or Ctrl-C), reconnecting as needed.
async fn work_grpc(agent: Arc<Agent>, args: &Work) -> Result<()> {
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let cursor = Arc::new(Mutex::new(Cursor {
        seen: args.after,
        ..Cursor::default()
    }));
    let mut pause = Duration::from_millis(RECONNECT_PAUSE_MS_MIN);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let after = cursor.lock().resume_after();
        // No deadline on the stream itself: it is meant to stay open (acts carry their own).
        let request = agent.credentials(Request::new(pb::StreamTasksRequest {
            after_position: after,
            agency: agent.agency.clone(),
            backlog_only: false,
        }));
        let Transport::Grpc(grpc) = &agent.transport else {
            bail!("the task stream needs the gRPC transport");
        };
        let mut client = grpc.agencies.clone();
        let opened = tokio::select! {
            r = client.stream_tasks(request) => r,
            _ = &mut ctrl_c => return Ok(()),
        };
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) if retryable(&s) => {
                tracing::warn!(code = ?s.code(), message = s.message(), "task stream refused; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(RECONNECT_PAUSE_MS_MAX));
                continue;
            }
            Err(s) => bail!("cannot stream the tasks of `{}`: {s}", agent.agency),
        };
        agent.counters.streams.fetch_add(1, Ordering::Relaxed);
        tracing::info!(after, agency = %agent.agency, "task stream open");
        // When the last task arrived (or the stream opened): idleness counts from there, and
        // only a task resets it (caught-up markers come whenever other agencies' events move the
        // feed).
        let mut last_task = tokio::time::Instant::now();
        loop {
            let next = async {
                match args.exit_when_idle {
                    Some(idle) => tokio::time::timeout_at(last_task + idle, stream.message())
                        .await
                        .ok(),
                    None => Some(stream.message().await),
                }
            };
            let msg = tokio::select! {
                m = next => m,
                _ = &mut ctrl_c => return Ok(()),
            };
            match msg {
                None => {
                    // Idle for `--exit-when-idle`: stop once nothing is in hand; otherwise wait for
                    // what is in hand (it may route more work here) and keep reading.
                    if cursor.lock().in_hand.is_empty() {
                        return Ok(());
                    }
                    let _all = permits
                        .acquire_many(args.concurrency as u32)
                        .await
                        .context("task permits closed")?;
                    last_task = tokio::time::Instant::now();
                }
                Some(Ok(Some(m))) => {
                    pause = Duration::from_millis(RECONNECT_PAUSE_MS_MIN);
                    match m.item {
                        Some(pb::task_stream_message::Item::Task(task)) => {
                            last_task = tokio::time::Instant::now();
                            agent.counters.tasks.fetch_add(1, Ordering::Relaxed);
                            {
                                let mut c = cursor.lock();
                                c.seen = c.seen.max(m.position);
                                if c.in_hand.contains(&m.position) {
                                    // Delivered again on a new stream while still being worked.
                                    continue;
                                }
                            }
                            let permit = permits
                                .clone()
                                .acquire_owned()
                                .await
                                .context("task permits closed")?;
                            cursor.lock().in_hand.insert(m.position);
                            let (agent, cursor) = (agent.clone(), cursor.clone());
                            tokio::spawn(async move {
                                let _ = agent.handle(task).await;
                                cursor.lock().in_hand.remove(&m.position);
                                drop(permit);
                            });
                        }
                        Some(pb::task_stream_message::Item::CaughtUp(c)) => {
                            let mut cur = cursor.lock();
                            cur.seen = cur.seen.max(c.position);
                        }
                        None => {}
                    }
                }
                Some(Ok(None)) | Some(Err(_)) => {
                    if let Some(Err(s)) = &msg {
                        tracing::warn!(code = ?s.code(), message = s.message(), "task stream ended; resuming");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(RECONNECT_PAUSE_MS_MAX));
                    break;
                }
            }
        }
    }
}

/// Pulls the agency's tasks from its durable consumer on the bus and works them, acking each
/// once handled (a failed act is negatively acknowledged, so the task comes back after a pause,
/// and after the bus's delivery limit goes to the dead letters); stops when idle (with
/// `--exit-when-idle`) or on Ctrl-C, after the tasks in hand.
async fn work_bus(
    agent: Arc<Agent>,
    args: &Work,
    bus: Arc<dyn Bus>,
    agency: lienthong_bus::Agency,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last_task = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(RECONNECT_PAUSE_MS_MIN);
    loop {
        if let Some(idle) = args.exit_when_idle
            && last_task.elapsed() >= idle
            && permits.available_permits() == args.concurrency
        {
            return Ok(());
        }
        let room = permits.available_permits().max(1);
        let pulled = tokio::select! {
            p = bus.pull(&agency, room, Duration::from_millis(BUS_PULL_WAIT_MS)) => p,
            _ = &mut ctrl_c => break,
        };
        let deliveries = match pulled {
            Ok(d) => {
                pause = Duration::from_millis(RECONNECT_PAUSE_MS_MIN);
                d
            }
            Err(e) => {
                // Time without a broker is not idleness: the queue may be full of work.
                last_task = tokio::time::Instant::now();
                tracing::warn!(error = %e, "cannot pull tasks; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(RECONNECT_PAUSE_MS_MAX));
                continue;
            }
        };
        for d in deliveries {
            last_task = tokio::time::Instant::now();
            agent.counters.tasks.fetch_add(1, Ordering::Relaxed);
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .context("task permits closed")?;
            let agent = agent.clone();
            tokio::spawn(async move {
                let handled = match pb::Task::decode(d.payload.as_ref()) {
                    Ok(task) => agent.handle(task).await,
                    Err(e) => {
                        // Not acked: it comes back, and after the delivery limit it is a dead
                        // letter that operators see.
                        tracing::error!(task = %d.task, error = %e, "a task that is not a lienthong.v1.Task");
                        false
                    }
                };
                // A failed act comes back after the consumer's backoff for this delivery (30 s,
                // 1 min, 5 min ...), so a long engine outage spends the delivery limit over hours,
                // not minutes, before a task becomes a dead letter.
                let acked = if handled {
                    d.ack().await
                } else {
                    let backoff = lienthong_bus::config::TASK_REDELIVERY_BACKOFF_DEFAULT;
                    let i = (d.delivered.max(1) as usize - 1).min(backoff.len() - 1);
                    d.nak(backoff[i]).await
                };
                if let Err(e) = acked {
                    tracing::warn!(task = %d.task, error = %e, "could not acknowledge a task; it will come back");
                }
                drop(permit);
            });
        }
    }
    // Ctrl-C: wait for the tasks in hand.
    let _all = permits.acquire_many(args.concurrency as u32).await;
    Ok(())
}

/// Worth retrying: the server is busy, shutting down or not up yet. RESOURCE_EXHAUSTED only when
/// it says when (the request rate, with RetryInfo) or is about concurrent streams: a message or an
/// attribute count over its limit will never pass.
fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded => true,
        Code::ResourceExhausted => {
            s.get_details_retry_info().is_some() || s.message().starts_with("streams_max")
        }
        _ => false,
    }
}

impl Agent {
    /// An agent of `agency` that approves every step at once (the bench's).
    fn new(
        transport: Transport,
        agency: &str,
        closed: Option<mpsc::UnboundedSender<String>>,
    ) -> Agent {
        Agent {
            transport,
            agency: agency.to_string(),
            officer: format!("agent:{agency}"),
            approve_rate: 1.0,
            delay: Duration::ZERO,
            seed: 1,
            counters: Counters::default(),
            closed,
        }
    }

    /// `r` with the agent's credentials.
    fn credentials<T>(&self, mut r: Request<T>) -> Request<T> {
        if let Transport::Grpc(grpc) = &self.transport
            && let Some(b) = &grpc.bearer
        {
            r.metadata_mut().insert("authorization", b.clone());
        }
        r
    }

    /// A unary request carrying the agent's credentials and a deadline of [`ACT_TIMEOUT_S`].
    fn request<T>(&self, message: T) -> Request<T> {
        let mut r = self.credentials(Request::new(message));
        r.set_timeout(Duration::from_secs(ACT_TIMEOUT_S));
        r
    }

    /// The deterministic random source of one task.
    fn rng(&self, task_id: &str) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ fnv1a(&[task_id.as_bytes()]))
    }

    /// Works one task; false when an act failed and the task should come back.
    async fn handle(&self, task: pb::Task) -> bool {
        let key = |act: &str| format!("agent/{act}/{}", task.task_id);
        match task.kind() {
            pb::TaskKind::StepOpened => {
                tokio::time::sleep(self.delay).await;
                let approve = self.rng(&task.task_id).random_bool(self.approve_rate);
                if !approve {
                    let done = self
                        .call(Act::Reject(pb::RejectStepRequest {
                            idempotency_key: key("reject"),
                            dossier: task.dossier_id.clone(),
                            step_id: task.step_id.clone(),
                            reason: "không đủ điều kiện theo quy định".into(),
                            officer: self.officer.clone(),
                        }))
                        .await;
                    return self.count(done, &self.counters.rejected).is_some();
                }
                let done = self
                    .call(Act::Complete(pb::CompleteStepRequest {
                        idempotency_key: key("complete"),
                        dossier: task.dossier_id.clone(),
                        step_id: task.step_id.clone(),
                        outcome: "approve".into(),
                        results: vec![document(
                            &format!("ket-qua-{}", task.step_id),
                            &task.task_id,
                        )],
                        note: String::new(),
                        officer: self.officer.clone(),
                    }))
                    .await;
                let Some(answer) = self.count(done, &self.counters.completed) else {
                    return false;
                };
                let ready = answer
                    .as_ref()
                    .and_then(|r| r.dossier.as_ref())
                    .is_some_and(|d| {
                        d.status() == pb::DossierStatus::ReadyToReturn
                            && d.receiving_agency == self.agency
                    });
                if ready {
                    let done = self
                        .call(Act::Return(pb::ReturnResultRequest {
                            idempotency_key: key("return"),
                            dossier: task.dossier_id.clone(),
                            results: vec![document("ket-qua", &task.task_id)],
                            channel: pb::Channel::InPerson as i32,
                            officer: self.officer.clone(),
                        }))
                        .await;
                    let answer = self.count(done, &self.counters.returned);
                    if let (Some(Some(_)), Some(closed)) = (&answer, &self.closed) {
                        let _ = closed.send(task.dossier_id.clone());
                    }
                    return answer.is_some();
                }
                true
            }
            pb::TaskKind::SupplementRequested => {
                tokio::time::sleep(self.delay).await;
                let done = self
                    .call(Act::Supplement(pb::ProvideSupplementRequest {
                        idempotency_key: key("supplement"),
                        dossier: task.dossier_id.clone(),
                        documents: vec![document("giay-to-bo-sung", &task.task_id)],
                        note: format!("{} bổ sung", self.agency),
                        officer: self.officer.clone(),
                    }))
                    .await;
                self.count(done, &self.counters.supplemented).is_some()
            }
            pb::TaskKind::DeadlineWarning | pb::TaskKind::DeadlineMissed => {
                self.counters
                    .deadline_notices
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    kind = ?task.kind(),
                    dossier = %task.dossier_code,
                    step = %task.step_id,
                    "deadline notice"
                );
                true
            }
            pb::TaskKind::Unspecified => true,
        }
    }

    /// Counts a first answer in `counter`; `None` when the act failed (the task should come
    /// back), `Some(None)` when it was stale, `Some(Some(answer))` otherwise.
    fn count(&self, done: Done, counter: &AtomicU64) -> Option<Option<pb::CommandResponse>> {
        match done {
            Done::Answered(r) => {
                if !r.replayed {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Some(Some(*r))
            }
            Done::Stale => Some(None),
            Done::Failed => None,
        }
    }

    /// Sends one act over the transport.
    async fn send(&self, act: &Act) -> Result<pb::CommandResponse, Status> {
        match &self.transport {
            Transport::Grpc(grpc) => {
                let (mut a, mut d) = (grpc.agencies.clone(), grpc.dossiers.clone());
                let answer = match act.clone() {
                    Act::Complete(r) => a.complete_step(self.request(r)).await,
                    Act::Reject(r) => a.reject_step(self.request(r)).await,
                    Act::Supplement(r) => d.provide_supplement(self.request(r)).await,
                    Act::Return(r) => d.return_result(self.request(r)).await,
                };
                answer.map(tonic::Response::into_inner)
            }
            Transport::Bus(commands) => {
                let command = pb::BusCommand {
                    actor: Some(pb::Actor {
                        agency: self.agency.clone(),
                        officer: self.officer.clone(),
                        channel: pb::Channel::System as i32,
                    }),
                    command: Some(act.clone().bus_command()),
                    // An agency adapter on the trusted bus: the engine's rules decide.
                    routed_only: false,
                };
                commands.execute(&command).await
            }
        }
    }

    /// Makes one act, retrying rate limits and unavailability.
    async fn call(&self, act: Act) -> Done {
        let rpc = act.rpc();
        let mut pause = Duration::from_millis(RECONNECT_PAUSE_MS_MIN);
        for _ in 0..ACT_TRIES_MAX {
            match self.send(&act).await {
                Ok(r) => {
                    if r.replayed {
                        self.counters.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    return Done::Answered(Box::new(r));
                }
                Err(s) if s.code() == Code::FailedPrecondition => {
                    self.counters.stale.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(rpc, message = s.message(), "task is stale");
                    return Done::Stale;
                }
                Err(s) if retryable(&s) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = s
                        .get_details_retry_info()
                        .and_then(|r| r.retry_delay)
                        .unwrap_or(pause);
                    tokio::time::sleep(wait).await;
                    pause = (pause * 2).min(Duration::from_millis(RECONNECT_PAUSE_MS_MAX));
                }
                Err(s) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(rpc, code = ?s.code(), message = s.message(), "act failed");
                    return Done::Failed;
                }
            }
        }
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(rpc, "act failed after {ACT_TRIES_MAX} tries");
        Done::Failed
    }
}

/// A document reference for a simulated result (the content hash stands in for a real file's).
fn document(kind: &str, task_id: &str) -> pb::DocumentRef {
    let n = fnv1a(&[kind.as_bytes(), b"/", task_id.as_bytes()]);
    pb::DocumentRef {
        kind: kind.to_string(),
        uri: format!("dms://agent/{kind}/{n:016x}"),
        sha256: format!("{:016x}{:016x}{:016x}{:016x}", n, n ^ 1, n ^ 2, n ^ 3),
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every build and Rust release, so that a task
/// redelivered after an upgrade is answered with the same request (same key, same content).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Prints what the agent did.
fn print_summary(agent: &Agent, json: bool) {
    let c = &agent.counters;
    let fields = [
        ("tasks", c.tasks.load(Ordering::Relaxed)),
        ("completed", c.completed.load(Ordering::Relaxed)),
        ("rejected", c.rejected.load(Ordering::Relaxed)),
        ("supplemented", c.supplemented.load(Ordering::Relaxed)),
        ("returned", c.returned.load(Ordering::Relaxed)),
        ("replayed", c.replayed.load(Ordering::Relaxed)),
        ("stale", c.stale.load(Ordering::Relaxed)),
        (
            "deadline_notices",
            c.deadline_notices.load(Ordering::Relaxed),
        ),
        ("failed", c.failed.load(Ordering::Relaxed)),
        ("retries", c.retries.load(Ordering::Relaxed)),
        ("streams", c.streams.load(Ordering::Relaxed)),
    ];
    if json {
        let mut o = serde_json::Map::new();
        o.insert("agency".into(), agent.agency.clone().into());
        for (k, v) in fields {
            o.insert(k.into(), v.into());
        }
        println!("{}", serde_json::Value::Object(o));
    } else {
        let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("agent {}: {}", agent.agency, text.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::parse_duration;

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5h").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn the_cursor_resumes_below_the_oldest_task_in_hand() {
        let mut c = Cursor {
            seen: 10,
            ..Cursor::default()
        };
        assert_eq!(c.resume_after(), 10);
        c.in_hand.insert(12);
        c.in_hand.insert(15);
        c.seen = 15;
        assert_eq!(c.resume_after(), 11);
        c.in_hand.remove(&12);
        assert_eq!(c.resume_after(), 14);
        c.in_hand.remove(&15);
        assert_eq!(c.resume_after(), 15);
    }
}
