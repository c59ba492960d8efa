//! `lienthong.v1.AgencyService`: the task stream and the agencies' acts (complete, reject, ask for
//! a supplement, refuse, stop, apologise), see `proto/lienthong/v1/agency.proto`.
//!
//! The task stream tails the engine's global feed from the client's cursor. The feed is gapless
//! and an event is visible only once durable, in position order, so a client that resumes after
//! the position of the last message it handled gets every later task: none is lost between
//! streams. Idle streams wake at once on the gateway's own writes and poll every `feed_poll_ms`
//! for events written by others (the timer loop). A caught-up marker tells the client how far
//! the stream examined the feed: once at the backlog's end, then at most every
//! [`CAUGHT_UP_EVERY_MS`] while events that are no task for it move the feed.

use std::sync::Arc;
use std::time::Duration;

use lienthong_engine::store::Recorded;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_server::AgencyService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Role;
use crate::dossier_svc::STREAM_BUFFER_MESSAGES;
use crate::shared::{Shared, grpc_timeout};
use crate::status::{self, denied};

/// Feed records read per look at the feed.
pub const FEED_BATCH_RECORDS: usize = 512;

/// Shortest interval between two caught-up markers on one stream, in milliseconds, once the
/// backlog's end was announced. Under load the feed moves on every append, mostly with events
/// that are no task for the caller; a marker for each of those moves was one message (a write
/// here, a wake-up and a decode in the agency's process) per append per stream, for a cursor the
/// next marker carries anyway.
pub const CAUGHT_UP_EVERY_MS: u64 = 100;

/// The agency service over the shared gateway state.
#[derive(Clone)]
pub struct Agencies {
    /// Engine, credentials, limits.
    pub shared: Arc<Shared>,
}

/// The task an event makes for `agency`, if any: the engine's one rule
/// ([`lienthong_engine::view::task`]), which the outbox to the bus uses too.
pub fn task_for(r: &Recorded, agency: &str) -> Option<pb::Task> {
    lienthong_engine::view::task(r).filter(|t| t.agency == agency)
}

/// Tails the feed for `agency` from `cursor` into `tx` until the client goes away, its deadline
/// passes, or (with `backlog_only`) the backlog is delivered.
async fn tail(
    shared: Arc<Shared>,
    agency: String,
    mut cursor: u64,
    backlog_only: bool,
    deadline: Option<tokio::time::Instant>,
    tx: mpsc::Sender<Result<pb::TaskStreamMessage, Status>>,
) {
    let mut feed = shared.feed.subscribe();
    let mut closing = shared.closing.subscribe();
    let poll = Duration::from_millis(shared.limits.feed_poll_ms);
    // The last position the client was told of (a task or a caught-up marker), and whether the
    // backlog's end was announced: it always is once, then at most every `CAUGHT_UP_EVERY_MS`
    // while events that are no task for the caller move the cursor.
    let mut announced: Option<u64> = None;
    let mut backlog_done = false;
    let marker_every = Duration::from_millis(CAUGHT_UP_EVERY_MS);
    // When the last caught-up marker went out.
    let mut marked = tokio::time::Instant::now();
    loop {
        feed.borrow_and_update();
        let batch = match shared.backend.read_feed_shared(cursor, FEED_BATCH_RECORDS) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(status::from_store(e))).await;
                return;
            }
        };
        let full = batch.len() >= FEED_BATCH_RECORDS;
        for r in &batch {
            cursor = cursor.max(r.position());
            if let Some(task) = task_for(r, &agency) {
                let msg = pb::TaskStreamMessage {
                    position: r.position(),
                    item: Some(pb::task_stream_message::Item::Task(task)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                announced = Some(r.position());
            }
        }
        if full {
            continue;
        }
        let behind = announced != Some(cursor);
        if !backlog_done || (behind && marked.elapsed() >= marker_every) {
            if tx.send(Ok(caught_up(cursor))).await.is_err() {
                return;
            }
            announced = Some(cursor);
            backlog_done = true;
            marked = tokio::time::Instant::now();
        }
        if backlog_only {
            return;
        }
        if *closing.borrow_and_update() {
            // A marker held back goes out first: the client resumes from the furthest point.
            if announced != Some(cursor) {
                let _ = tx.send(Ok(caught_up(cursor))).await;
            }
            let _ = tx
                .send(Err(Status::unavailable(
                    "the server is shutting down; resume from the last position",
                )))
                .await;
            return;
        }
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // A marker held back goes out at the end of its interval if the feed is quiet by then.
        let look = if announced == Some(cursor) {
            poll
        } else {
            poll.min((marked + marker_every).saturating_duration_since(tokio::time::Instant::now()))
        };
        tokio::select! {
            _ = feed.changed() => {}
            _ = tokio::time::sleep(look) => {}
            _ = tx.closed() => return,
            _ = closing.changed() => {}
            _ = until_deadline => {
                if announced != Some(cursor) {
                    let _ = tx.send(Ok(caught_up(cursor))).await;
                }
                let _ = tx.send(Err(Status::deadline_exceeded("the client's deadline passed; resume from the last position"))).await;
                return;
            }
        }
    }
}

/// The caught-up marker for `position`.
fn caught_up(position: u64) -> pb::TaskStreamMessage {
    pb::TaskStreamMessage {
        position,
        item: Some(pb::task_stream_message::Item::CaughtUp(pb::CaughtUp {
            position,
        })),
    }
}

#[tonic::async_trait]
impl AgencyService for Agencies {
    type StreamTasksStream = ReceiverStream<Result<pb::TaskStreamMessage, Status>>;

    async fn stream_tasks(
        &self,
        request: Request<pb::StreamTasksRequest>,
    ) -> Result<Response<Self::StreamTasksStream>, Status> {
        let p = self.shared.authenticate(&request)?;
        let req = request.get_ref();
        let agency = if req.agency.is_empty() || req.agency == p.agency {
            p.agency.clone()
        } else if matches!(p.role, Role::Auditor | Role::Admin) {
            req.agency.clone()
        } else {
            return Err(denied(
                "not-your-tasks",
                format!(
                    "`{}` may stream only the tasks of its own agency `{}`",
                    p.id, p.agency
                ),
            ));
        };
        let permit = self.shared.stream_permit()?;
        let deadline = grpc_timeout(request.metadata()).map(|d| tokio::time::Instant::now() + d);
        let span = tracing::info_span!("rpc", rpc = "StreamTasks", principal = %p.id, agency = %agency, after = req.after_position);
        tracing::info!(parent: &span, "task stream opened");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
        let shared = self.shared.clone();
        let (after, backlog_only) = (req.after_position, req.backlog_only);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permit;
                tail(shared, agency, after, backlog_only, deadline, tx).await;
                tracing::info!("task stream closed");
            },
            span,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn complete_step(
        &self,
        request: Request<pb::CompleteStepRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn reject_step(
        &self,
        request: Request<pb::RejectStepRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn request_supplement(
        &self,
        request: Request<pb::RequestSupplementRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn refuse(
        &self,
        request: Request<pb::RefuseRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn issue_apology(
        &self,
        request: Request<pb::IssueApologyRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }
}
