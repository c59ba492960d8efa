//! Where the gateway's commands go and its reads come from: [`Backend`].
//!
//! - [`Backend::Local`]: the embedded engine of this process. Commands execute on it; reads come
//!   from its sled store, the record of truth. This is the embedded default and the engine node
//!   of the distributed mode (which serves the bus's commands through the same [`Shared`]).
//! - [`Backend::Remote`]: the gateway as its own process in the distributed mode
//!   (`lienthong serve --nats URL --role gateway`, or the projections role's report service).
//!   Commands travel to the engine node that owns the dossier's partition over a
//!   [`CommandSink`] (the bus's `lienthong.cmd.<partition>`, `lienthong.v1.BusCommand`), with the
//!   caller's role checks made twice: here (role, act-as, input) and on the engine for what only
//!   the engine can know at the instant it executes (is the dossier routed to the actor's agency:
//!   [`pb::BusCommand::routed_only`]). Reads that need the history (History, Replay, Verify,
//!   ExportFeed, the task streams, codes) come from a [`Mirror`]: a verified local copy of the
//!   bus's feed, which lags the engines by the bus's latency. A dossier's current state (Get, and
//!   the read check before a History) is asked of its engine, so that it is never stale.
//!
//! Positions in the remote mode are the mirror's (the bus's feed positions), so a task stream's
//! or an export's cursor is valid against the same deployment's gateways, not against an engine's
//! own store positions.
//!
//! [`Shared`]: crate::shared::Shared

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lienthong_engine::DossierId;
use lienthong_engine::runtime::Engine;
use lienthong_engine::store::{self, Recorded};
use lienthong_projections::FeedSource;
use lienthong_proto::v1 as pb;
use lienthong_workflow::Catalog;
use tonic::Status;

/// A boxed future, for the object-safe traits of this module.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A verified local copy of the event feed that also resolves dossier codes.
pub trait Mirror: FeedSource {
    /// The dossier whose code is `code`, once its first event is in the mirror.
    fn dossier_by_code(&self, code: &str) -> Result<Option<DossierId>, store::Error>;
}

/// Sends commands to the engines and brings back their replies.
pub trait CommandSink: Send + Sync + 'static {
    /// Sends `command` to the engine that owns its dossier (a submission: its idempotency key),
    /// retrying what is safe to retry (the idempotency key makes a repeat harmless), and answers
    /// with the engine's reply. Transport failures are UNAVAILABLE (retry with the same key).
    fn send(&self, command: pb::BusCommand) -> BoxFuture<'_, Result<pb::BusReply, Status>>;
}

/// The remote backend's parts.
pub struct Remote {
    /// The workflows this gateway validates against (the same `workflows/` as the engines).
    pub catalog: Arc<Catalog>,
    /// The verified feed mirror the history reads come from.
    pub mirror: Arc<dyn Mirror>,
    /// Where commands go.
    pub commands: Arc<dyn CommandSink>,
}

/// Where the gateway's commands go and its reads come from (see the module docs).
pub enum Backend {
    /// The embedded engine.
    Local(Engine),
    /// Engines over the bus, reads from a feed mirror.
    Remote(Remote),
}

impl Backend {
    /// The embedded engine, if this is the local backend.
    pub fn engine(&self) -> Option<&Engine> {
        match self {
            Backend::Local(e) => Some(e),
            Backend::Remote(_) => None,
        }
    }

    /// The workflows.
    pub fn catalog(&self) -> &Arc<Catalog> {
        match self {
            Backend::Local(e) => e.catalog(),
            Backend::Remote(r) => &r.catalog,
        }
    }

    /// Now, by the engine's clock (the remote backend: the system clock).
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Backend::Local(e) => e.now(),
            Backend::Remote(_) => Utc::now(),
        }
    }

    /// Up to `limit` events after `after`, in feed order.
    pub fn read_feed(&self, after: u64, limit: usize) -> Result<Vec<Recorded>, store::Error> {
        match self {
            Backend::Local(e) => e.store().read_feed(after, limit),
            Backend::Remote(r) => r.mirror.read_feed(after, limit),
        }
    }

    /// [`Backend::read_feed`], shared rather than copied where the store holds the events.
    pub fn read_feed_shared(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Recorded>>, store::Error> {
        match self {
            Backend::Local(e) => e.store().read_feed_shared(after, limit),
            Backend::Remote(r) => Ok(r
                .mirror
                .read_feed(after, limit)?
                .into_iter()
                .map(Arc::new)
                .collect()),
        }
    }

    /// One dossier's verified stream (empty: unknown here).
    pub fn read_stream(&self, id: &DossierId) -> Result<Vec<Recorded>, store::Error> {
        match self {
            Backend::Local(e) => e.store().read_stream(id),
            Backend::Remote(r) => r.mirror.read_stream(id),
        }
    }

    /// The last feed position (0 when empty).
    pub fn last_position(&self) -> Result<u64, store::Error> {
        match self {
            Backend::Local(e) => e.store().last_position(),
            Backend::Remote(r) => r.mirror.last_position(),
        }
    }

    /// A content-addressed definition text (the remote backend keeps none: `None`).
    pub fn definition(&self, hash: &str) -> Result<Option<String>, store::Error> {
        match self {
            Backend::Local(e) => e.store().definition(hash),
            Backend::Remote(r) => r.mirror.definition(hash),
        }
    }

    /// The dossier with this code.
    pub fn dossier_by_code(&self, code: &str) -> Result<Option<DossierId>, store::Error> {
        match self {
            Backend::Local(e) => e.store().dossier_by_code(code),
            Backend::Remote(r) => r.mirror.dossier_by_code(code),
        }
    }
}
