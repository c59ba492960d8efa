//! `lienthong serve --data DIR [--grpc ADDR] [--workflows DIR] [--auth FILE] [--tls-cert PEM
//! --tls-key PEM [--client-ca PEM]] [--insecure]`: the embedded engine, its deadline timers and
//! the gRPC gateway in one process, until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lienthong_engine::runtime::{Engine, SystemClock};
use lienthong_gateway::auth::Authenticator;
use lienthong_gateway::{Config, Limits, Tls};

use super::DataArg;

/// Default gRPC address: loopback, so the local default needs no TLS.
pub const GRPC_ADDR_DEFAULT: &str = "127.0.0.1:50051";

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
            ..Limits::default()
        },
    };
    config.validate(args.grpc)?;
    let store = crate::common::open_store(&args.data.data)?;
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
        let server = tokio::spawn(lienthong_gateway::serve(
            listener,
            engine,
            config,
            stopped(stop_rx),
        ));
        shutdown_signal().await;
        eprintln!("lienthong: shutting down");
        let _ = stop_tx.send(true);
        server.await.context("gateway task")??;
        let _ = timers.await;
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
