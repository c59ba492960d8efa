//! The gRPC gateway: what agency systems (tax, police, social insurance, the one-stop desk
//! software) talk to.
//!
//! - [`server::serve_shared`] serves the services, `grpc.health.v1` health and server reflection
//!   on an already-bound listener over a [`backend::Backend`] (the embedded
//!   [`Engine`](lienthong_engine::runtime::Engine), or engines over the bus with a verified feed
//!   mirror for reads) and its read models ([`ReadModels`]), until a shutdown future completes;
//!   [`server::serve`] is that for the embedded engine and every service.
//! - [`auth`]: who is calling (bearer tokens stored as SHA-256 hashes, or mutual TLS with the
//!   agency code in the client certificate) and the roles (agency, desk, auditor, admin).
//! - [`status`]: the one place where errors become `tonic::Status` codes ([`decoding`] brings
//!   tonic's own refusals in line: RESOURCE_EXHAUSTED for an over-size request, INVALID_ARGUMENT
//!   for one that does not decode).
//! - [`commands`]: each mutating request as one engine command (shared with the bus's engine
//!   node); [`convert`]: wire messages to engine values and back, with the input checks.
//! - The services: [`dossier_svc`] (submit, get, history ...), [`agency_svc`] (the task stream
//!   and the agencies' acts), [`audit_svc`] (replay, verify, export), over the [`shared`] state;
//!   [`report_svc`] (deadline board, SLA breaches, indicators) over the projections as well.
//! - [`config`]: TLS, credentials and named limits, validated once; [`ratelimit`]: the
//!   per-principal request rate; [`requests`]: calls counted by method, for the metrics.

pub mod agency_svc;
pub mod audit_svc;
pub mod auth;
pub mod backend;
pub mod commands;
pub mod config;
pub mod convert;
pub mod decoding;
pub mod dossier_svc;
pub mod ratelimit;
pub mod report_svc;
pub mod requests;
pub mod server;
pub mod shared;
pub mod status;

pub use config::{Config, Limits, Tls};
pub use report_svc::ReadModels;
pub use server::serve;
