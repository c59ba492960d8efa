//! `lienthong.v1.AuditService`: replay as of an instant, verify, export the feed (see
//! `proto/lienthong/v1/audit.proto`). Auditors and admins only; read-only.

use std::sync::Arc;

use lienthong_engine::dossier::convert::instant;
use lienthong_engine::store::chain::Verifier;
use lienthong_engine::view;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::audit_service_server::AuditService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agency_svc::FEED_BATCH_RECORDS;
use crate::auth::Principal;
use crate::convert;
use crate::dossier_svc::STREAM_BUFFER_MESSAGES;
use crate::shared::Shared;
use crate::status::{self, denied};

/// The audit service over the shared gateway state.
#[derive(Clone)]
pub struct Audit {
    /// Engine, credentials, limits.
    pub shared: Arc<Shared>,
}

impl Audit {
    fn auditor<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let p = self.shared.authenticate(request)?;
        if p.role.reads_everything() {
            Ok(p)
        } else {
            Err(denied(
                "role",
                format!(
                    "`{}` has the {} role: the audit service is for auditors and admins",
                    p.id,
                    p.role.as_str()
                ),
            ))
        }
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn replay(
        &self,
        request: Request<pb::ReplayRequest>,
    ) -> Result<Response<pb::ReplayResponse>, Status> {
        self.auditor(&request)?;
        let req = request.get_ref();
        let id = self.shared.resolve(&req.dossier)?;
        let all = self.shared.history(id)?;
        if all.is_empty() {
            return Err(status::not_found(&req.dossier));
        }
        let as_of = match &req.as_of {
            Some(t) => Some(
                instant(Some(t))
                    .ok_or_else(|| status::invalid("as_of", "is not a valid instant"))?,
            ),
            None => None,
        };
        // A prefix of the stream, never a filter (see `lienthong replay`).
        let events: Vec<_> = match as_of {
            Some(t) => all
                .iter()
                .take_while(|r| view::recorded_at(&r.event) <= t)
                .cloned()
                .collect(),
            None => all.clone(),
        };
        let state = Shared::fold(&events);
        Ok(Response::new(pb::ReplayResponse {
            events: events.iter().map(convert::recorded).collect(),
            dossier: Some(self.shared.dossier_msg(&state)),
            total_events: all.len() as u64,
        }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        self.auditor(&request)?;
        let req = request.get_ref();
        if req.dossier.is_empty() {
            let Some(engine) = self.shared.backend.engine() else {
                let shared = self.shared.clone();
                return tokio::task::spawn_blocking(move || verify_mirror(&shared))
                    .await
                    .map_err(|e| Status::internal(format!("verify task failed: {e}")))?
                    .map(Response::new);
            };
            let store = engine.store().clone();
            let report = tokio::task::spawn_blocking(move || store.verify())
                .await
                .map_err(|e| Status::internal(format!("verify task failed: {e}")))?
                .map_err(status::from_store)?;
            let mut problems: Vec<String> =
                report.chains.breaks.iter().map(|b| b.to_string()).collect();
            problems.extend(report.chains.unattributed.iter().cloned());
            problems.extend(report.problems.iter().map(|p| p.to_string()));
            return Ok(Response::new(pb::VerifyResponse {
                clean: report.is_clean(),
                dossiers: report.chains.dossiers,
                events: report.chains.events,
                last_position: report.last_position,
                problems,
            }));
        }
        let id = self.shared.resolve(&req.dossier)?;
        let backend = &self.shared.backend;
        let last_position = backend.last_position().map_err(status::from_store)?;
        match backend.read_stream(&id) {
            Ok(stream) if stream.is_empty() => Err(status::not_found(&req.dossier)),
            Ok(stream) => {
                let mut v = Verifier::new();
                v.stream(id, stream.iter().map(|r| &r.sealed));
                let report = v.finish();
                Ok(Response::new(pb::VerifyResponse {
                    clean: report.is_clean(),
                    dossiers: report.dossiers,
                    events: report.events,
                    last_position,
                    problems: report.breaks.iter().map(|b| b.to_string()).collect(),
                }))
            }
            // A broken chain is the answer of a verification, not a failure of the call.
            Err(lienthong_engine::store::Error::Corrupt(c)) => {
                Ok(Response::new(pb::VerifyResponse {
                    clean: false,
                    dossiers: 1,
                    events: 0,
                    last_position,
                    problems: vec![c.to_string()],
                }))
            }
            Err(e) => Err(status::from_store(e)),
        }
    }

    type ExportFeedStream = ReceiverStream<Result<pb::RecordedEvent, Status>>;

    async fn export_feed(
        &self,
        request: Request<pb::ExportFeedRequest>,
    ) -> Result<Response<Self::ExportFeedStream>, Status> {
        let p = self.auditor(&request)?;
        let req = request.get_ref();
        let permit = self.shared.stream_permit()?;
        let shared = self.shared.clone();
        let end = shared.backend.last_position().map_err(status::from_store)?;
        let mut cursor = req.after_position;
        let mut left = if req.limit == 0 { u64::MAX } else { req.limit };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
        tracing::info!(rpc = "ExportFeed", principal = %p.id, after = cursor, end, "export started");
        tokio::spawn(async move {
            let _permit = permit;
            while cursor < end && left > 0 {
                let batch = match shared.backend.read_feed(cursor, FEED_BATCH_RECORDS) {
                    Ok(b) if b.is_empty() => return,
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(status::from_store(e))).await;
                        return;
                    }
                };
                for r in &batch {
                    if r.position() > end || left == 0 {
                        return;
                    }
                    cursor = r.position();
                    left -= 1;
                    if tx.send(Ok(convert::recorded(r))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Verifies every stream of the remote backend's feed mirror: each dossier it holds is read
/// whole and its chain checked again (the mirror checked each event as it arrived; this checks
/// what is on its disk now). The engines' own stores are verified on their machines
/// (`lienthong verify`).
fn verify_mirror(shared: &Shared) -> Result<pb::VerifyResponse, Status> {
    let backend = &shared.backend;
    let last_position = backend.last_position().map_err(status::from_store)?;
    let mut dossiers = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    let mut cursor = 0;
    loop {
        let batch = match backend.read_feed(cursor, FEED_BATCH_RECORDS) {
            Ok(b) => b,
            Err(lienthong_engine::store::Error::Corrupt(c)) => {
                problems.push(c.to_string());
                break;
            }
            Err(e) => return Err(status::from_store(e)),
        };
        let Some(last) = batch.last() else { break };
        cursor = last.position();
        dossiers.extend(batch.iter().filter_map(|r| r.dossier()));
    }
    let mut v = Verifier::new();
    let mut unreadable = 0;
    for id in &dossiers {
        match backend.read_stream(id) {
            Ok(stream) => {
                v.stream(*id, stream.iter().map(|r| &r.sealed));
            }
            Err(lienthong_engine::store::Error::Corrupt(c)) => {
                unreadable += 1;
                problems.push(c.to_string());
            }
            Err(e) => return Err(status::from_store(e)),
        }
    }
    let report = v.finish();
    problems.extend(report.breaks.iter().map(|b| b.to_string()));
    Ok(pb::VerifyResponse {
        clean: problems.is_empty(),
        dossiers: report.dossiers + unreadable,
        events: report.events,
        last_position,
        problems,
    })
}
