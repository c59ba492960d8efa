//! `lienthong.v1.DossierService`: submit, get, history, provide a supplement, return the result,
//! withdraw (see `proto/lienthong/v1/dossier.proto`).

use std::sync::Arc;

use lienthong_proto::v1 as pb;
use lienthong_proto::v1::dossier_service_server::DossierService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::shared::Shared;

/// Messages buffered per streaming call before the sender waits for the client.
pub const STREAM_BUFFER_MESSAGES: usize = 64;

/// The dossier service over the shared gateway state.
#[derive(Clone)]
pub struct Dossiers {
    /// Engine, credentials, limits.
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl DossierService for Dossiers {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn get(
        &self,
        request: Request<pb::GetDossierRequest>,
    ) -> Result<Response<pb::Dossier>, Status> {
        let p = self.shared.authenticate(&request)?;
        let dossier = self.shared.get(&p, &request.get_ref().dossier).await?;
        Ok(Response::new(dossier))
    }

    type HistoryStream = ReceiverStream<Result<pb::RecordedEvent, Status>>;

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<Self::HistoryStream>, Status> {
        let p = self.shared.authenticate(&request)?;
        let req = request.get_ref();
        let id = self.shared.resolve(&req.dossier)?;
        // The read check against the dossier's current state (its engine's, when remote), and
        // the history through at least that state: a caller reads its own writes.
        let current = self.shared.get(&p, &id.to_string()).await?;
        let permit = self.shared.stream_permit()?;
        let events = self.shared.history_through(id, current.seq).await?;
        let after = req.after_seq;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_MESSAGES);
        tokio::spawn(async move {
            let _permit = permit;
            for r in events.iter().filter(|r| r.seq() > after) {
                if tx.send(Ok(convert::recorded(r))).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn provide_supplement(
        &self,
        request: Request<pb::ProvideSupplementRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn return_result(
        &self,
        request: Request<pb::ReturnResultRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::CommandResponse>, Status> {
        self.shared.run(&request).await.map(Response::new)
    }
}
