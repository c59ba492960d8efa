//! The server: every service, health and reflection on one already-bound listener, until the
//! shutdown future completes (mini-redis style, so that tests bind port 0).
//!
//! The services read and write through a [`Backend`](crate::backend::Backend) (the embedded
//! engine, or engines over the bus); the report service reads the projections (`ReadModels`),
//! which the caller opened over the same feed and may keep warm with
//! [`ReadModels::spawn_catch_up_loop`]. [`Services`] says which services one process offers:
//! all of them, the gateway's, or the reports.

use std::future::Future;
use std::sync::Arc;

use lienthong_engine::runtime::Engine;
use lienthong_proto::v1::agency_service_server::AgencyServiceServer;
use lienthong_proto::v1::audit_service_server::AuditServiceServer;
use lienthong_proto::v1::dossier_service_server::DossierServiceServer;
use lienthong_proto::v1::report_service_server::ReportServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::agency_svc::Agencies;
use crate::audit_svc::Audit;
use crate::config::{self, Config};
use crate::dossier_svc::Dossiers;
use crate::report_svc::{ReadModels, Reports};
use crate::shared::Shared;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot be served.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The transport failed (TLS material, accept loop).
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Which services a server offers (health and reflection always).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Services {
    /// Dossier, agency, audit and report services: the embedded default and `--role all`.
    All,
    /// Dossier, agency and audit services: `--role gateway` (reports come from the projections).
    Gateway,
    /// The report service only: `--role projections`.
    Reports,
}

impl Services {
    /// Whether the dossier, agency and audit services are served.
    pub fn gateway(self) -> bool {
        matches!(self, Services::All | Services::Gateway)
    }

    /// Whether the report service is served.
    pub fn reports(self) -> bool {
        matches!(self, Services::All | Services::Reports)
    }
}

/// Serves every service over the embedded `engine` and the read models `models` (projections of
/// the engine's store) on `listener` until `shutdown` completes: [`serve_shared`] with
/// [`Backend::Local`](crate::backend::Backend::Local) and [`Services::All`].
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    models: ReadModels,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let shared = Shared::new(engine, config.auth.clone(), config.limits);
    serve_shared(
        listener,
        shared,
        Some(models),
        Services::All,
        config,
        shutdown,
    )
    .await
}

/// Serves `services` over `shared`'s backend (the embedded engine, or engines over the bus; the
/// caller may drive its `feed` signal) and `models` for the report service, which is served only
/// with them, on `listener` until `shutdown` completes; then stops accepting, ends the long-lived
/// streams (clients resume from their cursor) and waits for the calls in flight.
pub async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    models: Option<ReadModels>,
    services: Services,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let addr = listener.local_addr()?;
    config.validate(addr)?;
    match (&config.tls, addr.ip().is_loopback()) {
        (Some(t), _) => tracing::info!(
            %addr,
            mutual_tls = t.client_ca_pem.is_some(),
            "serving gRPC over TLS"
        ),
        (None, true) => tracing::warn!(
            %addr,
            "serving gRPC in PLAINTEXT on a loopback address: fine on this machine only; give --tls-cert and --tls-key before exposing it"
        ),
        (None, false) => tracing::warn!(
            %addr,
            "serving gRPC in PLAINTEXT on a non-loopback address (--insecure): bearer tokens travel in clear"
        ),
    }
    if shared.auth.is_empty() {
        tracing::warn!(
            "no principals configured (--auth FILE): every call except health and reflection is refused as UNAUTHENTICATED"
        );
    }
    let limits = shared.limits;
    let gateway = services.gateway();
    let models = models.filter(|_| services.reports());

    let (health, health_service) = tonic_health::server::health_reporter();
    if gateway {
        health.set_serving::<DossierServiceServer<Dossiers>>().await;
        health.set_serving::<AgencyServiceServer<Agencies>>().await;
        health.set_serving::<AuditServiceServer<Audit>>().await;
    }
    if models.is_some() {
        health.set_serving::<ReportServiceServer<Reports>>().await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lienthong_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        let mut t =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            t = t
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        builder = builder.tls_config(t)?;
    }
    let bytes_max = limits.message_bytes_max;
    let closing = shared.closing.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new calls; ending task streams");
        health
            .set_not_serving::<DossierServiceServer<Dossiers>>()
            .await;
        health
            .set_not_serving::<AgencyServiceServer<Agencies>>()
            .await;
        health.set_not_serving::<AuditServiceServer<Audit>>().await;
        health
            .set_not_serving::<ReportServiceServer<Reports>>()
            .await;
        let _ = closing.send(true);
    };
    let dossiers = gateway.then(|| {
        DossierServiceServer::new(Dossiers {
            shared: shared.clone(),
        })
        .max_decoding_message_size(bytes_max)
    });
    let agencies = gateway.then(|| {
        AgencyServiceServer::new(Agencies {
            shared: shared.clone(),
        })
        .max_decoding_message_size(bytes_max)
    });
    let audit = gateway.then(|| {
        AuditServiceServer::new(Audit {
            shared: shared.clone(),
        })
        .max_decoding_message_size(bytes_max)
    });
    let reports = models.map(|models| {
        ReportServiceServer::new(Reports {
            shared: shared.clone(),
            models,
        })
        .max_decoding_message_size(bytes_max)
    });
    let requests = shared.requests.clone();
    builder
        .layer(tower::util::MapRequestLayer::new(
            move |req: http::Request<tonic::body::Body>| {
                requests.record(req.uri().path());
                req
            },
        ))
        .layer(crate::decoding::layer(bytes_max))
        .add_service(health_service)
        .add_service(reflection)
        .add_optional_service(dossiers)
        .add_optional_service(agencies)
        .add_optional_service(audit)
        .add_optional_service(reports)
        // TCP_NODELAY: without it, Nagle's algorithm held small HTTP/2 frames (an answer, a task)
        // until the peer's delayed ACK, about 40 ms per exchange.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal)
        .await?;
    tracing::info!("gRPC server stopped");
    Ok(())
}
