//! `lienthong serve --data DIR [--grpc ADDR] [--http ADDR|off] [--workflows DIR] [--auth FILE] [--tls-cert PEM
//! --tls-key PEM [--client-ca PEM]] [--insecure] [--nats URL --role engine|gateway|projections|all
//! --partitions 0-15 --partition-count 16 --replicas 1 --lease-ttl 15s] [--config lienthong.toml]`.
//!
//! Without `--nats` (the embedded default): the engine, its deadline timers, the read models
//! (`DIR/projections`, kept warm by a catch-up every [`CATCH_UP_PERIOD_MS`]) and the gRPC gateway
//! in one process. With `--nats`, the process also joins the bus (docs/nats.md) in its role:
//! `engine` runs the engine over DIR for the partitions it owns, its timers, the outbox that
//! publishes the feed and the agencies' tasks, the command server and the watch that records
//! dead-lettered tasks in their dossiers (no gRPC); `all` does that
//! and serves the gRPC gateway too; `projections` mirrors the bus's feed into DIR/bus-feed and
//! folds the read models in DIR/projections and serves them over gRPC (the report service;
//! `lienthong report --data DIR` reads them once the process has stopped); `gateway` serves the
//! dossier, agency and audit services over engines reached through the bus, reading histories
//! from its own verified mirror of the feed in DIR/bus-feed. Until Ctrl-C or SIGTERM, then
//! everything stops in order.
//!
//! The board's HTTP listener (`--http`, default [`HTTP_ADDR_DEFAULT`]: the live SLA board at
//! `/board` and Prometheus metrics at `/metrics`, crate `lienthong-board`) runs where the read
//! models are: the embedded default, `all` and `projections`. `engine` and `gateway` hold no read
//! models, so `--http` given to them is an error; left at its default it is simply not served.
//!
//! Settings come from, in order of precedence: flags, environment variables (`LIENTHONG_NATS`,
//! `LIENTHONG_ROLE`, `LIENTHONG_PARTITIONS`, ...), the `[serve]` table of the `--config` file
//! (`deploy/lienthong.toml` is an example; keys are the flags' long names with `_`), then the
//! built-in defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::{Bus, Partition, PartitionCount};
use lienthong_engine::runtime::{Engine, SystemClock};
use lienthong_engine::runtime::{Options, OwnedPartitions};
use lienthong_engine::store::SledStore;
use lienthong_gateway::auth::Authenticator;
use lienthong_gateway::backend::Remote;
use lienthong_gateway::server::Services;
use lienthong_gateway::shared::Shared;
use lienthong_gateway::{Config, Limits, ReadModels, Tls};
use lienthong_node::client::{BusCommands, REPLY_TIMEOUT_DEFAULT};
use lienthong_node::{Outbox, commands, dead_letters, lease, outbox};
use lienthong_projections::{FeedSource, Projections};
use serde::Deserialize;

use super::DataArg;
use super::projections::PROJECTIONS_DIR;

/// Default gRPC address: loopback, so the local default needs no TLS.
pub const GRPC_ADDR_DEFAULT: &str = "127.0.0.1:50051";

/// Default address of the board's HTTP listener (`/board`, `/metrics`): loopback, so the local
/// default needs no credentials (see `lienthong_board::access`).
pub const HTTP_ADDR_DEFAULT: &str = "127.0.0.1:8080";

/// `--http`: an address, or `off` for no HTTP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Http {
    /// No board, no metrics.
    Off,
    /// Serve them here.
    At(SocketAddr),
}

impl std::str::FromStr for Http {
    type Err = String;
    fn from_str(s: &str) -> Result<Http, String> {
        if s == "off" {
            return Ok(Http::Off);
        }
        s.parse().map(Http::At).map_err(|_| {
            format!("`{s}` is not an address like {HTTP_ADDR_DEFAULT} (IP:port; port 0 picks a free one), nor `off`")
        })
    }
}

/// How often the read models fold what is new in the store while serving, in milliseconds (a
/// report folds the rest itself before answering, so this only keeps that work small). Short,
/// so that each fold is short: a busy engine appends about ten thousand events a second, and
/// folding a whole second of them at once held the cores long enough to show in the slowest
/// commands' latency (`bench e2e`'s p99 over gRPC, 75 -> 57 ms, with the next constant).
pub const CATCH_UP_PERIOD_MS: u64 = 250;

/// Which part of a distributed deployment this process is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    /// The engine for the partitions it owns: store, timers, outbox, command server.
    Engine,
    /// The gRPC gateway over engines reached through the bus (histories from a feed mirror).
    Gateway,
    /// The read models fed from the bus's feed (a verified local mirror in DIR/bus-feed), served
    /// by the report service.
    Projections,
    /// Everything in one process: the engine (all its partitions), the gRPC gateway and the read
    /// models; with `--nats` it also publishes to and serves the bus.
    All,
}

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArg,
    /// Settings file: its `[serve]` table fills what flags and environment leave unset.
    #[arg(long, env = "LIENTHONG_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server of the distributed mode, e.g. `nats://127.0.0.1:4222` (nats-server >= 2.10
    /// with JetStream); a user and password (or token) in it authenticate, and `--help` does not
    /// show the environment's value. Without it, the embedded mode: no bus.
    #[arg(
        long,
        env = "LIENTHONG_NATS",
        value_name = "URL",
        hide_env_values = true
    )]
    nats: Option<String>,
    /// This process's part of the deployment (with --nats; the embedded mode is `all`).
    #[arg(long, env = "LIENTHONG_ROLE", value_enum, default_value = "all")]
    role: Role,
    /// The partitions this engine node owns, e.g. `0-15` or `0,2,4-7`; default all.
    #[arg(long, env = "LIENTHONG_PARTITIONS")]
    partitions: Option<String>,
    /// Partitions the dossier space is split into; the same for every process of a deployment.
    #[arg(long, env = "LIENTHONG_PARTITION_COUNT", default_value_t = lienthong_bus::contract::PARTITION_COUNT_DEFAULT)]
    partition_count: u32,
    /// Copies JetStream keeps of the feed, task and dead-letter streams (3 on a 3-node cluster);
    /// the same for every process of a deployment (each one creates or updates the streams).
    #[arg(long, env = "LIENTHONG_REPLICAS", default_value_t = lienthong_bus::config::REPLICAS_DEFAULT)]
    replicas: usize,
    /// How long an engine node's lease on its partitions lasts unless renewed (e.g. `15s`): a
    /// node that dies loses its partitions this long after its last renewal. The same for
    /// every process of a deployment.
    #[arg(long, env = "LIENTHONG_LEASE_TTL", default_value = "15s", value_parser = crate::common::parse_duration)]
    lease_ttl: Duration,
    /// Free space the event store keeps in reserve on its file system (e.g. `64MiB`, `1GiB`;
    /// `0` for none): below it, appends are refused with RESOURCE_EXHAUSTED (reason `disk-full`)
    /// and nothing is written; they resume by themselves once space is freed.
    #[arg(long, env = "LIENTHONG_DISK_FREE_MIN", default_value = "64MiB", value_parser = crate::common::parse_bytes)]
    disk_free_min: u64,
    /// Address to serve gRPC on (port 0: any free port, printed on start).
    #[arg(long, default_value = GRPC_ADDR_DEFAULT)]
    grpc: SocketAddr,
    /// Address of the HTTP listener for the live SLA board (`/board`) and Prometheus metrics
    /// (`/metrics`); default 127.0.0.1:8080, `off` for none, port 0 for any free port (printed
    /// on start). Only the roles with read models serve it (embedded, all, projections). Off
    /// loopback it needs --insecure and every request the credentials of --auth.
    #[arg(long, env = "LIENTHONG_HTTP", value_name = "ADDR")]
    http: Option<Http>,
    /// Workflow directory (agencies, calendars, procedures); default ./workflows.
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// Credentials: TOML file of `[[principal]]` entries (see `examples/auth.toml`). Without it
    /// every call except health and reflection is refused.
    #[arg(long, env = "LIENTHONG_AUTH")]
    auth: Option<PathBuf>,
    /// Server certificate chain (PEM); with --tls-key, serve TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA of the agencies' client certificates (PEM): enables mutual TLS.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Allow plaintext on a non-loopback address (bearer tokens then travel in clear).
    #[arg(long)]
    insecure: bool,
    /// Largest request message, in bytes.
    #[arg(long, default_value_t = lienthong_gateway::config::MESSAGE_BYTES_MAX_DEFAULT)]
    message_bytes_max: usize,
    /// Concurrent streaming calls (task streams, histories, exports).
    #[arg(long, default_value_t = lienthong_gateway::config::STREAMS_MAX_DEFAULT)]
    streams_max: usize,
    /// Most attributes in one submission.
    #[arg(long, default_value_t = lienthong_gateway::config::ATTRIBUTES_MAX_DEFAULT)]
    attributes_max: usize,
    /// Most document references in one request.
    #[arg(long, default_value_t = lienthong_gateway::config::DOCUMENTS_MAX_DEFAULT)]
    documents_max: usize,
    /// Calls per second one principal may make on average (beyond: RESOURCE_EXHAUSTED with
    /// RetryInfo).
    #[arg(long, default_value_t = lienthong_gateway::config::REQUESTS_PER_S_MAX_DEFAULT)]
    requests_per_s_max: u32,
    /// Calls one principal may make in a burst.
    #[arg(long, default_value_t = lienthong_gateway::config::REQUEST_BURST_MAX_DEFAULT)]
    request_burst_max: u32,
}

/// The `[serve]` table of a settings file: every key optional, the flags' long names with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// The table.
    serve: Option<ServeSettings>,
}

/// What a settings file may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSettings {
    /// `--data`.
    data: Option<PathBuf>,
    /// `--grpc`.
    grpc: Option<SocketAddr>,
    /// `--http`: an address or `"off"`.
    http: Option<String>,
    /// `--workflows`.
    workflows: Option<PathBuf>,
    /// `--auth`.
    auth: Option<PathBuf>,
    /// `--tls-cert`.
    tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    tls_key: Option<PathBuf>,
    /// `--client-ca`.
    client_ca: Option<PathBuf>,
    /// `--nats`.
    nats: Option<String>,
    /// `--role`.
    role: Option<Role>,
    /// `--partitions`.
    partitions: Option<String>,
    /// `--partition-count`.
    partition_count: Option<u32>,
    /// `--replicas`.
    replicas: Option<usize>,
    /// `--lease-ttl`, e.g. `"15s"`.
    lease_ttl: Option<String>,
    /// `--disk-free-min`, e.g. `"64MiB"`.
    disk_free_min: Option<String>,
    /// `--requests-per-s-max`.
    requests_per_s_max: Option<u32>,
    /// `--request-burst-max`.
    request_burst_max: Option<u32>,
}

/// Fills what neither a flag nor the environment set from the `--config` file.
fn apply_file(args: &mut Args, m: Option<&ArgMatches>) -> Result<()> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    let file: FileSettings = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: {e}hint: keys go in a [serve] table and are the long flags with `_` (see deploy/lienthong.toml)",
            path.display()
        )
    })?;
    let Some(f) = file.serve else {
        return Ok(());
    };
    // A value counts as given when it came from the command line or the environment.
    let unset = |id: &str| {
        m.and_then(|m| m.value_source(id))
            .is_none_or(|s| s == ValueSource::DefaultValue)
    };
    macro_rules! fill {
        ($field:ident) => {
            if unset(stringify!($field)) {
                if let Some(v) = f.$field {
                    args.$field = v;
                }
            }
        };
        (opt $field:ident) => {
            if unset(stringify!($field)) && f.$field.is_some() {
                args.$field = f.$field;
            }
        };
    }
    if unset("data")
        && let Some(v) = f.data
    {
        args.data.data = v;
    }
    fill!(grpc);
    if unset("http")
        && let Some(v) = &f.http
    {
        args.http = Some(
            v.parse()
                .map_err(|e: String| anyhow!("{}: http: {e}", path.display()))?,
        );
    }
    fill!(opt workflows);
    fill!(opt auth);
    fill!(opt tls_cert);
    fill!(opt tls_key);
    fill!(opt client_ca);
    fill!(opt nats);
    fill!(role);
    fill!(opt partitions);
    fill!(partition_count);
    fill!(replicas);
    if unset("lease_ttl")
        && let Some(v) = &f.lease_ttl
    {
        args.lease_ttl = crate::common::parse_duration(v)
            .map_err(|e| anyhow!("{}: lease_ttl: {e}", path.display()))?;
    }
    if unset("disk_free_min")
        && let Some(v) = &f.disk_free_min
    {
        args.disk_free_min = crate::common::parse_bytes(v)
            .map_err(|e| anyhow!("{}: disk_free_min: {e}", path.display()))?;
    }
    fill!(requests_per_s_max);
    fill!(request_burst_max);
    Ok(())
}

/// `0-15`, `0,2,4-7`: the owned partitions, each below `count`.
fn parse_partitions(text: &str, count: u32) -> Result<std::collections::BTreeSet<u32>> {
    let mut owned = std::collections::BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |x: &str| {
            x.parse::<u32>().map_err(|_| {
                anyhow!("--partitions `{text}`: `{x}` is not a partition number (write e.g. 0-15 or 0,2,4-7)")
            })
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi || hi >= count {
            bail!(
                "--partitions `{text}`: `{part}` is not within 0-{} (--partition-count {count})",
                count - 1
            );
        }
        owned.extend(lo..=hi);
    }
    if owned.is_empty() {
        bail!("--partitions `{text}` names no partition");
    }
    Ok(owned)
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(mut args: Args, matches: Option<&ArgMatches>) -> Result<ExitCode> {
    apply_file(&mut args, matches)?;
    if args.nats.is_none() && args.role != Role::All {
        bail!(
            "--role {:?} is part of a distributed deployment: give --nats URL too (without it, `serve` runs everything in one process)",
            args.role
        );
    }
    let http = board_addr(&args)?;
    match args.role {
        Role::Gateway => return run_remote(&args, Services::Gateway, None),
        Role::Projections => return run_remote(&args, Services::Reports, http),
        Role::Engine | Role::All => {}
    }
    let count = partition_count(&args)?;
    let owned = match &args.partitions {
        Some(text) => parse_partitions(text, args.partition_count)?,
        None => (0..args.partition_count).collect(),
    };
    let catalog = crate::common::load_catalog(&crate::common::workflows_dir(&args.workflows))?;
    let config = grpc_config(&args, &catalog)?;
    let store = crate::common::open_store_with(&args.data.data, args.disk_free_min)?;
    let feed: Arc<dyn FeedSource> = store.clone();
    let projections_dir = args.data.data.join(PROJECTIONS_DIR);
    let projections =
        Projections::open(&projections_dir, feed, catalog.clone()).with_context(|| {
            format!(
                "cannot open the projections in {}",
                projections_dir.display()
            )
        })?;
    let models = ReadModels::new(Arc::new(projections));
    let store_stats = store.clone();
    let store_health = store.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let options = Options {
            partitions: args.nats.as_ref().map(|_| {
                Arc::new(OwnedPartitions {
                    count: args.partition_count,
                    owned: owned.clone(),
                })
            }),
            ..Options::default()
        };
        let engine = Engine::with_options(store, catalog, Arc::new(SystemClock), options);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        // The bus: the outbox and the command server of this engine node. If either stops on its
        // own (a fault), the whole process stops with an error, so that a supervisor restarts it
        // rather than a node that takes commands whose work never reaches the agencies.
        let mut bus_tasks = Vec::new();
        let mut keeper = None;
        // Where the outbox stands (none without a bus): /metrics and the lag log read it.
        let mut outbox_progress = None;
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<String>(2);
        // A store that met a failed write (a full disk with no reserve left, an I/O error)
        // refuses every append until it is reopened: stop, so that the supervisor's restart
        // recovers it from what is on disk once the cause is gone.
        bus_tasks.push(tokio::spawn(watch_poison(
            store_health,
            fatal_tx.clone(),
            stopped(stop_rx.clone()),
        )));
        if let Some(url) = &args.nats {
            let bus: Arc<dyn Bus> = Arc::new(
                NatsBus::connect(url, bus_config(&args))
                    .await
                    .with_context(|| {
                        format!(
                            "cannot join the bus at {}",
                            lienthong_bus::nats::redacted(url)
                        )
                    })?,
            );
            // Exclusive ownership: the lease of every owned partition before serving any, kept
            // while serving; a lost lease stops the node like any other bus fault.
            let holder = lease::holder_id(&args.data.data)?;
            let ttl = args.lease_ttl;
            let leases = lease::acquire_all(bus.as_ref(), &owned, &holder, ttl)
                .await
                .context("cannot take this engine node's partitions")?;
            // Released only once the command server has stopped (see `release` below).
            let keeper_bus = bus.clone();
            let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
            let fatal = fatal_tx.clone();
            keeper = Some((
                release_tx,
                tokio::spawn(async move {
                    let release = async {
                        let _ = release_rx.await;
                    };
                    if let Err(e) = lease::keep(keeper_bus.as_ref(), leases, ttl, release).await {
                        let _ = fatal.send(e.to_string()).await;
                    }
                }),
            ));
            // Tasks for an agency whose queue is full wait in a spill beside the store, so that
            // neither the feed nor the other agencies wait for it.
            let spill_dir = args.data.data.join(outbox::SPILL_DIR);
            let outbox = Outbox::new(
                engine.store().clone(),
                bus.clone(),
                outbox::Config::default(),
            )?
            .with_spill(outbox::Spill::open(&spill_dir)?)
            .waking_on(engine.appended());
            outbox_progress = Some(outbox.progress());
            bus_tasks.push(tokio::spawn(log_outbox_lag(
                outbox.progress(),
                stopped(stop_rx.clone()),
            )));
            let stop = stopped(stop_rx.clone());
            let fatal = fatal_tx.clone();
            bus_tasks.push(tokio::spawn(async move {
                if let Err(e) = outbox.run(stop).await {
                    let _ = fatal.send(format!("the outbox stopped: {e}")).await;
                }
            }));
            // Tasks the bus set aside as dead letters, recorded in their dossiers (the board).
            bus_tasks.push(tokio::spawn(dead_letters::run(
                engine.clone(),
                bus.clone(),
                dead_letters::Config::default(),
                stopped(stop_rx.clone()),
            )));
            let shared = Shared::new(engine.clone(), Authenticator::default(), config.limits);
            let partitions: Vec<Partition> = owned.iter().map(|p| Partition(*p)).collect();
            let stop = stopped(stop_rx.clone());
            let fatal = fatal_tx.clone();
            bus_tasks.push(tokio::spawn(async move {
                if let Err(e) = commands::serve(shared, bus, count, &partitions, stop).await {
                    let _ = fatal.send(format!("the command server stopped: {e}")).await;
                }
            }));
            eprintln!(
                "lienthong: engine node on NATS {}: partitions {} of {}, data in {}",
                lienthong_bus::nats::redacted(url),
                describe(&owned),
                count.get(),
                args.data.data.display()
            );
        }
        drop(fatal_tx);
        // Until Ctrl-C/SIGTERM, or a bus component's fault (`None`: there is no bus).
        let wait = async {
            tokio::select! {
                _ = shutdown_signal() => None,
                Some(fault) = fatal_rx.recv() => Some(fault),
            }
        };
        if args.role == Role::Engine {
            let timers = engine.spawn_timer_loop(stopped(stop_rx.clone()));
            let fault = wait.await;
            eprintln!("lienthong: shutting down");
            let _ = stop_tx.send(true);
            for t in bus_tasks {
                let _ = t.await;
            }
            let _ = timers.await;
            release(keeper).await;
            return match fault {
                Some(f) => Err(anyhow!("{f}; restart the engine node")),
                None => anyhow::Ok(()),
            };
        }
        let board_listener = bind_board(http).await?;
        let listener = tokio::net::TcpListener::bind(args.grpc)
            .await
            .with_context(|| format!("cannot listen on {}", args.grpc))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "lienthong: serving gRPC on {addr} ({}), data in {}; Ctrl-C to stop",
            if config.tls.is_some() {
                "TLS"
            } else {
                "plaintext"
            },
            args.data.data.display()
        );
        let shared = Shared::new(engine.clone(), config.auth.clone(), config.limits);
        let board = board_listener.map(|l| {
            tokio::spawn(lienthong_board::serve(
                l,
                lienthong_board::Sources {
                    shared: shared.clone(),
                    models: models.clone(),
                    store_stats: Some(Box::new(move || store_stats.stats())),
                    outbox: outbox_progress.map(|p| {
                        Box::new(move || {
                            let p = p.borrow();
                            lienthong_board::metrics::OutboxGauges {
                                published_position: p.published_position,
                                store_position: p.store_position,
                                spilled_tasks: p.spilled_tasks,
                            }
                        })
                            as Box<dyn Fn() -> lienthong_board::metrics::OutboxGauges + Send + Sync>
                    }),
                },
                args.insecure,
                stopped(stop_rx.clone()),
            ))
        });
        let timers = engine.spawn_timer_loop(stopped(stop_rx.clone()));
        let catch_up = models.spawn_catch_up_loop(
            Duration::from_millis(CATCH_UP_PERIOD_MS),
            stopped(stop_rx.clone()),
        );
        let server = tokio::spawn(lienthong_gateway::server::serve_shared(
            listener,
            shared,
            Some(models),
            Services::All,
            config,
            stopped(stop_rx),
        ));
        let fault = wait.await;
        eprintln!("lienthong: shutting down");
        let _ = stop_tx.send(true);
        server.await.context("gateway task")??;
        stop_board(board).await;
        for t in bus_tasks {
            let _ = t.await;
        }
        let _ = timers.await;
        release(keeper).await;
        let _ = catch_up.await;
        match fault {
            Some(f) => Err(anyhow!("{f}; restart the node")),
            None => anyhow::Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Where the board's HTTP listener goes, if anywhere: `--http` (default [`HTTP_ADDR_DEFAULT`])
/// for the roles with read models; an explicit `--http` for a role without them is an error,
/// and so is a non-loopback address without `--insecure` (the listener has no TLS).
fn board_addr(args: &Args) -> Result<Option<SocketAddr>> {
    let has_models = matches!(args.role, Role::All | Role::Projections);
    let http = match args.http {
        Some(h) if !has_models => {
            if h != Http::Off {
                bail!(
                    "--http: the board needs the read models, which --role {:?} does not hold; serve it from the projections role (or `all`), or give --http off",
                    args.role
                );
            }
            return Ok(None);
        }
        None if !has_models => return Ok(None),
        Some(h) => h,
        None => HTTP_ADDR_DEFAULT
            .parse()
            .map_err(|e: String| anyhow!("{e}"))?,
    };
    match http {
        Http::Off => Ok(None),
        Http::At(addr) if !addr.ip().is_loopback() && !args.insecure => bail!(
            "--http {addr}: the board's listener has no TLS, so off loopback tokens would travel in clear; serve it on 127.0.0.1 behind a TLS proxy, or give --insecure"
        ),
        Http::At(addr) => Ok(Some(addr)),
    }
}

/// Binds the board's listener (if any) and says where it is.
/// How long shutdown waits for the board's listener: a live stream to a browser that stopped
/// reading (a sleeping laptop) would otherwise hold SIGTERM up indefinitely.
const BOARD_STOP_WAIT: Duration = Duration::from_secs(5);

/// Waits for the board's task to end, at most [`BOARD_STOP_WAIT`] (then it is aborted). An error
/// is logged, not returned: the rest of shutdown (bus tasks, timers, leases) must still run.
async fn stop_board<E: std::fmt::Display>(board: Option<tokio::task::JoinHandle<Result<(), E>>>) {
    let Some(mut board) = board else { return };
    match tokio::time::timeout(BOARD_STOP_WAIT, &mut board).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "the board's listener failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the board's task failed"),
        Err(_) => {
            tracing::warn!(
                wait_s = BOARD_STOP_WAIT.as_secs(),
                "the board's live streams did not end in time; closing them"
            );
            board.abort();
        }
    }
}

async fn bind_board(addr: Option<SocketAddr>) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for the board (--http): choose another address, or --http off"
        )
    })?;
    let at = listener.local_addr()?;
    eprintln!("lienthong: serving the board on http://{at}/board (metrics at /metrics)");
    Ok(Some(listener))
}

/// The deployment's partition count from `--partition-count`.
fn partition_count(args: &Args) -> Result<PartitionCount> {
    PartitionCount::new(args.partition_count).ok_or_else(|| {
        anyhow!(
            "--partition-count {} is out of range (1-{})",
            args.partition_count,
            lienthong_bus::contract::PARTITIONS_MAX
        )
    })
}

/// The gRPC server's settings: credentials (each agency principal's agency defined in
/// `catalog`), TLS and the named limits, checked against `--grpc`.
fn grpc_config(args: &Args, catalog: &lienthong_workflow::Catalog) -> Result<Config> {
    let auth = match &args.auth {
        Some(path) => Authenticator::load(path)?,
        None => Authenticator::default(),
    };
    for (id, agency, role) in auth.agencies() {
        let needs_agency = matches!(
            role,
            lienthong_gateway::auth::Role::Agency | lienthong_gateway::auth::Role::Desk
        );
        if needs_agency && !catalog.agencies.contains_key(agency) {
            bail!(
                "principal `{id}` acts for agency `{agency}`, which workflows/agencies.toml does not define"
            );
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key, args.client_ca.as_deref())?),
        _ => None,
    };
    let config = Config {
        auth,
        tls,
        insecure: args.insecure,
        limits: Limits {
            message_bytes_max: args.message_bytes_max,
            streams_max: args.streams_max,
            attributes_max: args.attributes_max,
            documents_max: args.documents_max,
            requests_per_s_max: args.requests_per_s_max,
            request_burst_max: args.request_burst_max,
            ..Limits::default()
        },
    };
    config.validate(args.grpc)?;
    Ok(config)
}

/// The roles that work from a verified copy of the bus's feed (`DIR/bus-feed`) rather than an
/// engine's store, until Ctrl-C or SIGTERM:
///
/// - `gateway` ([`Services::Gateway`]): the dossier, agency and audit services. Commands go to
///   the engine node that owns the dossier's partition over the bus, with the caller's role
///   checked here and again by the engine against the dossier's current state; histories, task
///   streams and exports are read from the mirror. Progress is logged as `lienthong: gateway
///   mirrored to feed position N (lag M)`.
/// - `projections` ([`Services::Reports`]): the read models folded from the mirror into
///   `DIR/projections`, served by the report service. Progress is logged as `lienthong:
///   projections folded to feed position N (lag M)`; `lienthong report --data DIR` reads the
///   views once the process has stopped.
///
/// Both log lines are written when the position changes, at most once per
/// [`PROGRESS_LOG_PERIOD_MS`], and the last position is always logged.
fn run_remote(args: &Args, services: Services, http: Option<SocketAddr>) -> Result<ExitCode> {
    let role = if services.reports() {
        "projections"
    } else {
        "gateway"
    };
    let url = args
        .nats
        .clone()
        .with_context(|| format!("--role {role} needs --nats"))?;
    let count = partition_count(args)?;
    let catalog = crate::common::load_catalog(&crate::common::workflows_dir(&args.workflows))?;
    let config = grpc_config(args, &catalog)?;
    let mirror_dir = args
        .data
        .data
        .join(lienthong_node::projections::BUS_FEED_DIR);
    let feed = Arc::new(
        lienthong_node::projections::BusFeed::open(&mirror_dir)
            .with_context(|| format!("cannot open the feed mirror in {}", mirror_dir.display()))?,
    );
    let models = if services.reports() {
        let views_dir = args.data.data.join(PROJECTIONS_DIR);
        let source: Arc<dyn FeedSource> = feed.clone();
        let views = Projections::open(&views_dir, source, catalog.clone())
            .with_context(|| format!("cannot open the projections in {}", views_dir.display()))?;
        Some(ReadModels::new(Arc::new(views)))
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let bus: Arc<dyn Bus> = Arc::new(
            NatsBus::connect(&url, bus_config(args))
                .await
                .with_context(|| {
                    format!(
                        "cannot join the bus at {}",
                        lienthong_bus::nats::redacted(&url)
                    )
                })?,
        );
        let follower_config = lienthong_node::projections::Config::default();
        let follower = match &models {
            Some(m) => lienthong_node::projections::Follower::new(
                bus.clone(),
                feed.clone(),
                m.clone(),
                follower_config,
            )?,
            None => lienthong_node::projections::Follower::mirror_only(
                bus.clone(),
                feed.clone(),
                follower_config,
            )?,
        };
        let shared = Shared::remote(
            Remote {
                catalog,
                mirror: feed.clone(),
                commands: Arc::new(BusCommands::new(bus, count, REPLY_TIMEOUT_DEFAULT)),
            },
            config.auth.clone(),
            config.limits,
        );
        let board_listener = bind_board(http).await?;
        let listener = tokio::net::TcpListener::bind(args.grpc)
            .await
            .with_context(|| format!("cannot listen on {}", args.grpc))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "lienthong: {role} on NATS {}, data in {}",
            lienthong_bus::nats::redacted(&url),
            args.data.data.display()
        );
        eprintln!(
            "lienthong: serving gRPC on {addr} ({}), data in {}; Ctrl-C to stop",
            if config.tls.is_some() {
                "TLS"
            } else {
                "plaintext"
            },
            args.data.data.display()
        );
        // Wake the task streams as soon as the mirror holds more.
        let mut stored = follower.progress();
        let signal = shared.clone();
        let waker = tokio::spawn(async move {
            while stored.changed().await.is_ok() {
                let at = stored.borrow_and_update().stored_position;
                lienthong_engine::runtime::advance(&signal.feed, at);
            }
        });
        let mut progress = follower.progress();
        let logger = tokio::spawn(async move {
            let mut last = None;
            while progress.changed().await.is_ok() {
                let p = progress.borrow_and_update().clone();
                let now = if services.reports() {
                    (p.folded_position, p.lag())
                } else {
                    (
                        p.stored_position,
                        p.bus_position.saturating_sub(p.mirrored_position),
                    )
                };
                if last != Some(now) {
                    if services.reports() {
                        eprintln!(
                            "lienthong: projections folded to feed position {} (lag {})",
                            now.0, now.1
                        );
                    } else {
                        eprintln!(
                            "lienthong: gateway mirrored to feed position {} (lag {})",
                            now.0, now.1
                        );
                    }
                    last = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(PROGRESS_LOG_PERIOD_MS)).await;
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The board where the read models are (`--role projections`); its metrics have no
        // store counters (this process has no store).
        let board = match (board_listener, &models) {
            (Some(l), Some(m)) => {
                let mut board_stop = stop_rx.clone();
                Some(tokio::spawn(lienthong_board::serve(
                    l,
                    lienthong_board::Sources {
                        shared: shared.clone(),
                        models: m.clone(),
                        store_stats: None,
                        outbox: None,
                    },
                    args.insecure,
                    async move {
                        let _ = board_stop.wait_for(|s| *s).await;
                    },
                )))
            }
            _ => None,
        };
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(lienthong_gateway::server::serve_shared(
            listener,
            shared,
            models,
            services,
            config,
            async move {
                let _ = server_stop.wait_for(|s| *s).await;
            },
        ));
        // The follower runs until the signal; if it fails, the whole process stops with its
        // error, so that a supervisor restarts it rather than a server that no longer follows.
        let result = follower.run(shutdown_signal()).await;
        eprintln!("lienthong: shutting down");
        let _ = stop_tx.send(true);
        server.await.context("gateway task")??;
        stop_board(board).await;
        logger.abort();
        waker.abort();
        result.with_context(|| format!("the {role} role stopped following the bus"))?;
        eprintln!("lienthong: {role} stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ends the lease keeper of an engine node, which releases its partitions (after the command
/// server and the timers have stopped, so that nothing is appended here once another node may
/// take them).
async fn release(
    keeper: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
) {
    if let Some((release, task)) = keeper {
        let _ = release.send(());
        let _ = task.await;
    }
}

/// The bus's settings: `--replicas` copies of each stream, `--lease-ttl`.
fn bus_config(args: &Args) -> lienthong_bus::Config {
    lienthong_bus::Config {
        replicas: args.replicas,
        lease_ttl: args.lease_ttl,
        ..lienthong_bus::Config::default()
    }
}

/// Least time between two progress lines of the projections role, in milliseconds.
pub const PROGRESS_LOG_PERIOD_MS: u64 = 500;

/// `0-3,7` for a set of partitions.
fn describe(owned: &std::collections::BTreeSet<u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for &p in owned {
        run = match run {
            Some((lo, hi)) if p == hi + 1 => Some((lo, p)),
            Some((lo, hi)) => {
                out.push(if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                });
                Some((p, p))
            }
            None => Some((p, p)),
        };
    }
    if let Some((lo, hi)) = run {
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
    }
    out.join(",")
}

/// Ctrl-C, or SIGTERM on Unix.
/// How long the bus's feed may stay behind the store before the lag is logged.
const OUTBOX_BEHIND_LOG_AFTER_MS: u64 = 2_000;
/// Least time between two "behind" lines while the lag lasts.
const OUTBOX_BEHIND_LOG_EVERY_MS: u64 = 5_000;

/// Logs while the outbox stays behind the store (the broker unreachable, an agency queue
/// full): a warning after [`OUTBOX_BEHIND_LOG_AFTER_MS`], repeated every
/// [`OUTBOX_BEHIND_LOG_EVERY_MS`], and one line when it has caught up. Ends at `stop`.
async fn log_outbox_lag(
    mut progress: tokio::sync::watch::Receiver<outbox::Progress>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut behind_since: Option<std::time::Instant> = None;
    let mut logged: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let p = progress.borrow_and_update().clone();
        let lag = p.lag();
        if lag == 0 {
            if logged.is_some() {
                // At the level of the warning it ends, so that whoever saw one sees the other.
                tracing::warn!(
                    published_position = p.published_position,
                    "the outbox caught up: the bus's feed holds every stored event"
                );
            }
            behind_since = None;
            logged = None;
            continue;
        }
        let since = *behind_since.get_or_insert_with(std::time::Instant::now);
        let due = match logged {
            None => since.elapsed() >= Duration::from_millis(OUTBOX_BEHIND_LOG_AFTER_MS),
            Some(t) => t.elapsed() >= Duration::from_millis(OUTBOX_BEHIND_LOG_EVERY_MS),
        };
        if due {
            tracing::warn!(
                lag_events = lag,
                published_position = p.published_position,
                store_position = p.store_position,
                behind_ms = since.elapsed().as_millis() as u64,
                "the bus's feed is behind the store: agencies get these tasks once the outbox drains (broker unreachable or an agency queue full)"
            );
            logged = Some(std::time::Instant::now());
        }
    }
}

/// How often the store is asked whether a write failed.
const POISON_POLL_MS: u64 = 200;

/// Reports a poisoned store on `fatal` (see [`SledStore::poisoned`]); ends at `stop`.
async fn watch_poison(
    store: Arc<SledStore>,
    fatal: tokio::sync::mpsc::Sender<String>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(POISON_POLL_MS)) => {}
        }
        if let Some(reason) = store.poisoned() {
            tracing::error!(%reason, "the event store failed a write; stopping so that a restart recovers it");
            let _ = fatal
                .send(format!("the event store failed a write ({reason})"))
                .await;
            return;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
