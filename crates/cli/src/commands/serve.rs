//! `lienthong serve --data DIR [--grpc ADDR] [--workflows DIR] [--auth FILE] [--tls-cert PEM
//! --tls-key PEM [--client-ca PEM]] [--insecure]`: the embedded engine, its deadline timers, the
//! read models (`DIR/projections`, kept warm by a catch-up every [`CATCH_UP_PERIOD_MS`]) and the
//! gRPC gateway in one process, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lienthong_engine::runtime::{Engine, SystemClock};
use lienthong_gateway::auth::Authenticator;
use lienthong_gateway::{Config, Limits, ReadModels, Tls};
use lienthong_projections::{FeedSource, Projections};

use super::DataArg;
use super::projections::PROJECTIONS_DIR;

/// Default gRPC address: loopback, so the local default needs no TLS.
pub const GRPC_ADDR_DEFAULT: &str = "127.0.0.1:50051";

/// How often the read models fold what is new in the store while serving, in milliseconds (a
/// report folds the rest itself before answering, so this only keeps that work small).
pub const CATCH_UP_PERIOD_MS: u64 = 1_000;

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArg,
    /// Address to serve gRPC on (port 0: any free port, printed on start).
    #[arg(long, default_value = GRPC_ADDR_DEFAULT)]
    grpc: SocketAddr,
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

/// Serves until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> Result<ExitCode> {
    let catalog = crate::common::load_catalog(&crate::common::workflows_dir(&args.workflows))?;
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
    let store = crate::common::open_store(&args.data.data)?;
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let engine = Engine::new(store, catalog, Arc::new(SystemClock));
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
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let timers = engine.spawn_timer_loop(stopped(stop_rx.clone()));
        let catch_up = models.spawn_catch_up_loop(
            Duration::from_millis(CATCH_UP_PERIOD_MS),
            stopped(stop_rx.clone()),
        );
        let server = tokio::spawn(lienthong_gateway::serve(
            listener,
            engine,
            models,
            config,
            stopped(stop_rx),
        ));
        shutdown_signal().await;
        eprintln!("lienthong: shutting down");
        let _ = stop_tx.send(true);
        server.await.context("gateway task")??;
        let _ = timers.await;
        let _ = catch_up.await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM on Unix.
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
