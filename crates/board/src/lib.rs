//! The HTTP listener of `lienthong serve` (`--http ADDR`, default `127.0.0.1:8080`): the live
//! SLA board a supervisor leaves open on a screen, and Prometheus metrics, read-only, next to
//! the gRPC API and behind the same credentials.
//!
//! - [`server`]: the routes (`/board`, `/board/dossier/{code}`, their live `/events` twins,
//!   `/metrics`), the live stream (server-sent events), graceful shutdown.
//! - [`access`]: who may read (loopback open; elsewhere the gateway's bearer tokens, also as
//!   HTTP Basic for browsers; the report service's per-agency scope).
//! - [`html`]: the pages, rendered on the server from the projections' models (board, breach
//!   slip, indicators); [`chart`]: the on-time-rate bar charts as inline SVG; [`i18n`]:
//!   Vietnamese first, English on `?lang=en`.
//! - [`metrics`]: the Prometheus text exposition.
//!
//! Why server-rendered: the board must build and run on a machine with no network beyond the
//! package registries and no front-end toolchain; HTML and SVG made here are testable as text,
//! and the page's only script (`assets/board.js`) swaps in the HTML the server pushes.

pub mod access;
pub mod chart;
pub mod html;
pub mod i18n;
pub mod metrics;
pub mod server;

pub use server::{Error, Sources, app, serve};
