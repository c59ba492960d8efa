//! What every service shares: the backend (the embedded engine, or engines over the bus:
//! [`Backend`]), the credentials, the limits, the feed signal, and the steps every RPC takes
//! (authenticate, resolve the dossier, check the role, execute or forward, answer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lienthong_engine::dossier::{Command, DossierState};
use lienthong_engine::runtime::{Engine, Request as EngineRequest};
use lienthong_engine::store::Recorded;
use lienthong_engine::{DossierId, dossier};
use lienthong_proto::v1 as pb;
use lienthong_workflow::Workflow;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::Status;
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use crate::auth::{ACT_AS_HEADER, Authenticator, Principal, Role};
use crate::backend::{Backend, Remote};
use crate::commands::{ToBus, ToCommand};
use crate::config::Limits;
use crate::convert;
use crate::ratelimit::RateLimiter;
use crate::status::{self, denied, invalid, not_found};

/// Pinned workflow definitions kept parsed for the routing view (beyond them: re-parsed).
pub const PINNED_DEFINITIONS_MAX: usize = 1024;

/// Longest wait, in milliseconds, for a remote gateway's feed mirror to hold what its engine
/// already answered (a History right after a command).
pub const MIRROR_WAIT_MS_MAX: u64 = 5_000;

/// How often, in milliseconds, a wait for the mirror looks again when nothing woke it.
pub const MIRROR_POLL_MS: u64 = 20;

/// Shared by the services; one per server.
pub struct Shared {
    /// Where commands go and reads come from.
    pub backend: Backend,
    /// Who may call.
    pub auth: Authenticator,
    /// Named limits.
    pub limits: Limits,
    /// The last feed position this gateway wrote: wakes idle task streams at once (events written
    /// by others, e.g. timers, are found by polling every `feed_poll_ms`).
    pub feed: watch::Sender<u64>,
    /// Permits for concurrent streaming calls.
    pub streams: Arc<Semaphore>,
    /// Turns true when the server shuts down: long-lived streams end (UNAVAILABLE, resume later)
    /// so that the graceful shutdown does not wait for them forever.
    pub closing: watch::Sender<bool>,
    /// gRPC calls received, by method (the board's `/metrics`).
    pub requests: crate::requests::RequestCounts,
    /// Parsed pinned definitions by content hash.
    definitions: Mutex<HashMap<String, Arc<Workflow>>>,
    /// Request-rate buckets by principal.
    rate: RateLimiter,
}

/// Which roles may make a mutating call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Agencies (for their own steps), the desk, admins.
    AsAgency,
    /// Only the desk and admins (submit, return the result, withdraw).
    AsDesk,
}

impl Shared {
    /// Shared state for one server over the embedded engine.
    pub fn new(engine: Engine, auth: Authenticator, limits: Limits) -> Arc<Self> {
        Self::with(Backend::Local(engine), auth, limits)
    }

    /// Shared state for one gateway over engines reached through the bus.
    pub fn remote(remote: Remote, auth: Authenticator, limits: Limits) -> Arc<Self> {
        Self::with(Backend::Remote(remote), auth, limits)
    }

    /// Shared state for one server over `backend`.
    pub fn with(backend: Backend, auth: Authenticator, limits: Limits) -> Arc<Self> {
        let last = backend.last_position().unwrap_or(0);
        Arc::new(Shared {
            backend,
            auth,
            limits,
            feed: watch::channel(last).0,
            streams: Arc::new(Semaphore::new(limits.streams_max)),
            closing: watch::channel(false).0,
            requests: crate::requests::RequestCounts::default(),
            definitions: Mutex::new(HashMap::new()),
            rate: RateLimiter::new(limits.requests_per_s_max, limits.request_burst_max),
        })
    }

    /// Who sent the request (bearer token, else mutual-TLS certificate), within its request rate.
    pub fn authenticate<T>(&self, req: &tonic::Request<T>) -> Result<Principal, Status> {
        let certs = req.peer_certs();
        let result = self
            .auth
            .authenticate(req.metadata(), certs.as_ref().map(|c| c.as_slice()));
        match result {
            Err(e) => {
                tracing::debug!(reason = e.message(), "unauthenticated call");
                Err(e)
            }
            Ok(p) => match self.rate.check(&p.id) {
                Ok(()) => Ok(p),
                Err(refused) => {
                    tracing::debug!(principal = %p.id, "rate limited");
                    Err(status::rate_limited(
                        &p.id,
                        self.limits.requests_per_s_max,
                        refused.retry_after,
                    ))
                }
            },
        }
    }

    /// Streaming calls open now (permits held): what a client that opens and abandons streams
    /// would leak if a stream outlived its client; `/metrics` shows it.
    pub fn streams_open(&self) -> usize {
        self.limits
            .streams_max
            .saturating_sub(self.streams.available_permits())
    }

    /// A permit for one more streaming call, or RESOURCE_EXHAUSTED.
    pub fn stream_permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            status::exhausted(
                "streams_max",
                "concurrent streaming calls",
                self.limits.streams_max as u64,
                self.limits.streams_max as u64 + 1,
            )
        })
    }

    /// The dossier named by id or code.
    pub fn resolve(&self, dossier: &str) -> Result<DossierId, Status> {
        let text = dossier.trim();
        if text.is_empty() {
            return Err(invalid("dossier", "is required: the dossier's id or code"));
        }
        if let Ok(id) = text.parse::<DossierId>() {
            return Ok(id);
        }
        self.backend
            .dossier_by_code(text)
            .map_err(status::from_store)?
            .ok_or_else(|| not_found(text))
    }

    /// The dossier's current state, from the embedded engine. A gateway over the bus has no
    /// engine: it asks the dossier's engine instead ([`Shared::get`], `routed_only`), never a
    /// state folded from its mirror, which may lag.
    pub async fn state(&self, id: DossierId) -> Result<DossierState, Status> {
        let Some(engine) = self.backend.engine() else {
            return Err(Status::internal(
                "a dossier's state was asked of a gateway without an engine",
            ));
        };
        engine.state(id).await.map_err(status::from_engine)
    }

    /// The dossier `dossier` names, as `p` may read it: its current state, after the read check
    /// (an agency reads only the dossiers routed to it). The remote backend asks the dossier's
    /// engine, which makes the check against its current state.
    pub async fn get(&self, p: &Principal, dossier: &str) -> Result<pb::Dossier, Status> {
        let id = self.resolve(dossier)?;
        match &self.backend {
            Backend::Local(_) => {
                let state = self.state(id).await?;
                self.check_read(p, &state)?;
                Ok(self.dossier_msg(&state))
            }
            Backend::Remote(remote) => {
                let request = pb::GetDossierRequest {
                    dossier: id.to_string(),
                };
                let command = pb::BusCommand {
                    actor: Some(pb::Actor {
                        agency: p.agency.clone(),
                        officer: p.id.clone(),
                        channel: pb::Channel::System as i32,
                    }),
                    command: Some(request.to_bus(None)),
                    routed_only: !p.role.reads_everything(),
                };
                status::dossier_reply(remote.commands.send(command).await?)
            }
        }
    }

    /// Refuses a read by an agency of a dossier not routed to it.
    pub fn check_read(&self, p: &Principal, state: &DossierState) -> Result<(), Status> {
        if p.role.reads_everything() || convert::involves(state, &p.agency) {
            Ok(())
        } else {
            Err(denied(
                "not-routed",
                format!(
                    "dossier {} is not routed to `{}`: an agency reads only the dossiers routed to it",
                    state.code, p.agency
                ),
            ))
        }
    }

    /// The actor a mutating call acts as, after the role check. Only an admin may name another
    /// agency in [`ACT_AS_HEADER`], and only one the catalog knows; anyone else naming an agency
    /// other than its own is refused rather than silently acting as itself.
    pub fn actor(
        &self,
        p: &Principal,
        metadata: &MetadataMap,
        officer: &str,
        act: Act,
    ) -> Result<pb::Actor, Status> {
        // The header is read only after the roles that may never act are refused, so that the
        // role is always checked before the request's content.
        let act_as = || match metadata.get(ACT_AS_HEADER).map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(a)) if !a.is_empty() => Ok(Some(a)),
            Some(_) => Err(invalid(ACT_AS_HEADER, "must be an agency code")),
        };
        let agency = match (p.role, act) {
            (Role::Auditor, _) => {
                return Err(denied(
                    "role",
                    format!(
                        "`{}` is an auditor: auditors read, they never change a dossier",
                        p.id
                    ),
                ));
            }
            (Role::Agency, Act::AsDesk) => {
                return Err(denied(
                    "role",
                    format!(
                        "`{}` has the agency role: only the one-stop desk submits, returns results and withdraws",
                        p.id
                    ),
                ));
            }
            (Role::Admin, _) => match act_as()? {
                Some(a) if !self.backend.catalog().agencies.contains_key(a) => {
                    return Err(invalid(
                        ACT_AS_HEADER,
                        format!("`{a}` is not an agency of workflows/agencies.toml"),
                    ));
                }
                Some(a) => a.to_string(),
                None => p.agency.clone(),
            },
            _ => match act_as()? {
                Some(a) if a != p.agency => {
                    return Err(denied(
                        "role",
                        format!(
                            "`{}` has the {} role: only an admin may act as another agency (`{ACT_AS_HEADER}: {a}`); remove the header to act as `{}`",
                            p.id,
                            p.role.as_str(),
                            p.agency
                        ),
                    ));
                }
                _ => p.agency.clone(),
            },
        };
        let officer = if p.role == Role::Admin {
            format!("admin:{}", p.id)
        } else {
            officer.to_string()
        };
        Ok(pb::Actor {
            agency,
            officer,
            channel: pb::Channel::System as i32,
        })
    }

    /// Runs one mutating RPC: authenticates the caller, checks its role, converts the request
    /// ([`ToCommand`]) and executes it.
    pub async fn run<R: ToCommand + ToBus>(
        &self,
        request: &tonic::Request<R>,
    ) -> Result<pb::CommandResponse, Status> {
        let p = self.authenticate(request)?;
        let req = request.get_ref();
        let mut actor = self.actor(&p, request.metadata(), req.officer(), R::ACT)?;
        if let Some(channel) = req.channel() {
            actor.channel = channel;
        }
        let command = req.command(&self.limits)?;
        if let Backend::Remote(remote) = &self.backend {
            return self.forward(remote, &p, actor, req, &command).await;
        }
        self.execute(
            &p,
            R::RPC,
            req.dossier(),
            actor,
            req.idempotency_key(),
            command,
        )
        .await
    }

    /// Forwards one mutating call to the engine that owns the dossier (the remote backend), after
    /// the checks that need no dossier state; the engine checks that the dossier is routed to the
    /// actor's agency (`routed_only`) when the caller is not an admin.
    async fn forward<R: ToCommand + ToBus>(
        &self,
        remote: &Remote,
        p: &Principal,
        actor: pb::Actor,
        req: &R,
        command: &Command,
    ) -> Result<pb::CommandResponse, Status> {
        let span = tracing::info_span!(
            "rpc",
            rpc = R::RPC,
            principal = %p.id,
            agency = %actor.agency,
            command = command.kind(),
            dossier = req.dossier().unwrap_or(""),
        );
        async move {
            self.check_command(req.idempotency_key(), command)?;
            let id = match req.dossier() {
                Some(d) => Some(self.resolve(d)?.to_string()),
                None => None,
            };
            let bus = pb::BusCommand {
                actor: Some(actor),
                command: Some(req.to_bus(id.as_deref())),
                routed_only: p.role != Role::Admin,
            };
            let answer = status::command_response(remote.commands.send(bus).await?);
            match &answer {
                Ok(r) => tracing::info!(
                    code = %r.dossier_code,
                    events = r.events.len(),
                    replayed = r.replayed,
                    "done"
                ),
                Err(s) => tracing::info!(code = ?s.code(), message = s.message(), "refused"),
            }
            answer
        }
        .instrument(span)
        .await
    }

    /// The checks of a command that need no dossier: an idempotency key, and a supplement
    /// addressed to the citizen or to an agency the workflows define (its task must have a
    /// queue to land in).
    fn check_command(&self, idempotency_key: &str, command: &Command) -> Result<(), Status> {
        if idempotency_key.is_empty() {
            return Err(invalid(
                "idempotency_key",
                "is required: a retry with the same key returns the first answer",
            ));
        }
        if let Command::RequestSupplement(r) = command
            && let dossier::Addressee::Agency(a) = &r.addressed_to
            && !self.backend.catalog().agencies.contains_key(&a.0)
        {
            return Err(invalid(
                "addressed_to",
                format!(
                    "`{}` is neither `citizen` nor an agency of workflows/agencies.toml",
                    a.0
                ),
            ));
        }
        Ok(())
    }

    /// Runs one mutating call end to end: checks that an agency acts only on dossiers routed to it,
    /// executes the command, wakes the task streams, and answers with the events and the state.
    pub async fn execute(
        &self,
        p: &Principal,
        rpc: &'static str,
        dossier: Option<&str>,
        actor: pb::Actor,
        idempotency_key: &str,
        command: Command,
    ) -> Result<pb::CommandResponse, Status> {
        let span = tracing::info_span!(
            "rpc",
            rpc,
            principal = %p.id,
            agency = %actor.agency,
            command = command.kind(),
            dossier = dossier.unwrap_or(""),
        );
        async move {
            let Some(engine) = self.backend.engine() else {
                return Err(Status::internal("a command reached `execute` on a gateway without an engine"));
            };
            self.check_command(idempotency_key, &command)?;
            let id = match dossier {
                Some(d) => {
                    let id = self.resolve(d)?;
                    if p.role != Role::Admin {
                        let state = self.state(id).await?;
                        if !convert::involves(&state, &actor.agency) {
                            return Err(denied(
                                "not-routed",
                                format!(
                                    "dossier {} is not routed to `{}`: an agency acts only on the dossiers routed to it",
                                    state.code, actor.agency
                                ),
                            ));
                        }
                    }
                    Some(id)
                }
                None => None,
            };
            let result = engine
                .execute(EngineRequest {
                    dossier: id,
                    actor,
                    idempotency_key: idempotency_key.to_string(),
                    command,
                })
                .await;
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    let s = status::from_engine(e);
                    tracing::info!(code = ?s.code(), message = s.message(), "refused");
                    return Err(s);
                }
            };
            if let Some(last) = outcome.events.iter().map(|r| r.position()).max() {
                lienthong_engine::runtime::advance(&self.feed, last);
            }
            tracing::info!(
                code = %outcome.code,
                events = outcome.events.len(),
                replayed = outcome.replayed,
                "done"
            );
            let workflow = self.workflow_for(&outcome.state);
            Ok(pb::CommandResponse {
                dossier_id: outcome.dossier.to_string(),
                dossier_code: outcome.code.to_string(),
                events: outcome.events.iter().map(|r| convert::recorded(r)).collect(),
                replayed: outcome.replayed,
                dossier: Some(convert::dossier(&outcome.state, workflow.as_deref())),
            })
        }
        .instrument(span)
        .await
    }

    /// The definition a dossier is pinned to, parsed (from the catalog when it is the current
    /// one, else from the store's content-addressed copy); `None` if it cannot be loaded.
    pub fn workflow_for(&self, state: &DossierState) -> Option<Arc<Workflow>> {
        let hash = &state.definition_hash;
        if hash.is_empty() {
            return None;
        }
        if let Some(wf) = self.definitions.lock().get(hash) {
            return Some(wf.clone());
        }
        let catalog = self.backend.catalog();
        let wf = match catalog.procedures.values().find(|w| &w.hash == hash) {
            Some(wf) => wf.clone(),
            None => {
                let text = self.backend.definition(hash).ok()??;
                let families: Vec<&str> = catalog.calendars.keys().map(String::as_str).collect();
                let wf = Workflow::parse(
                    &text,
                    &format!("store:{hash}"),
                    &catalog.agencies,
                    &families,
                )
                .ok()?;
                Arc::new(wf)
            }
        };
        let mut defs = self.definitions.lock();
        if defs.len() >= PINNED_DEFINITIONS_MAX {
            defs.clear();
        }
        defs.insert(hash.clone(), wf.clone());
        Some(wf)
    }

    /// The wire form of a dossier's state.
    pub fn dossier_msg(&self, state: &DossierState) -> pb::Dossier {
        let wf = self.workflow_for(state);
        convert::dossier(state, wf.as_deref())
    }

    /// The full verified history of a dossier.
    pub fn history(&self, id: DossierId) -> Result<Vec<Recorded>, Status> {
        self.backend.read_stream(&id).map_err(status::from_store)
    }

    /// The full verified history of a dossier through at least `seq`. The local store has
    /// everything its engine acknowledged; a remote gateway's feed mirror lags the engine by the
    /// bus's latency, so this waits for it, up to [`MIRROR_WAIT_MS_MAX`], then answers
    /// UNAVAILABLE (retry).
    pub async fn history_through(&self, id: DossierId, seq: u64) -> Result<Vec<Recorded>, Status> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(MIRROR_WAIT_MS_MAX);
        let mut feed = self.feed.subscribe();
        loop {
            let history = self.history(id)?;
            let held = history.last().map_or(0, Recorded::seq);
            if held >= seq || self.backend.engine().is_some() {
                return Ok(history);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "this gateway's copy of the feed holds dossier {id} up to seq {held}, its engine is at {seq}: the bus lags; retry"
                )));
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(MIRROR_POLL_MS), feed.changed()).await;
        }
    }

    /// The state folded from a prefix of a history.
    pub fn fold(events: &[Recorded]) -> DossierState {
        let evs: Vec<_> = events.iter().map(|r| r.event.clone()).collect();
        dossier::fold(&evs)
    }
}

/// The client's deadline from the `grpc-timeout` header (tonic enforces it for unary calls; the
/// streaming services stop by themselves when it passes).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn grpc_timeout_units() {
        let mut m = MetadataMap::new();
        assert_eq!(grpc_timeout(&m), None);
        m.insert("grpc-timeout", MetadataValue::from_static("150m"));
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(150)));
        m.insert("grpc-timeout", MetadataValue::from_static("2S"));
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(2)));
        m.insert("grpc-timeout", MetadataValue::from_static("x"));
        assert_eq!(grpc_timeout(&m), None);
    }
}
