//! Over TLS with certificates generated here (rcgen): a test CA signs the server's certificate
//! and one client certificate per agency. Proves that bearer tokens work over server TLS, that a
//! client certificate naming an agency authenticates as that agency's principal (mutual TLS), and
//! that a certificate is accepted only for principals that allow it.

mod common;

use common::pki::Pki;
use common::{TestServer, birth, next_tasks, req};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_client::AgencyServiceClient;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_tls_and_client_certificates() {
    let pki = Pki::new();
    let server = TestServer::start_with(Some(pki.server.clone()), &["tu-phap"]).await;

    // The desk uses its bearer token over server TLS (no client certificate).
    let desk = pki.channel(&server, None).await;
    let mut dossiers = DossierServiceClient::new(desk.clone());
    let id = dossiers
        .submit(req("desk", birth("tls-1", 14)))
        .await
        .expect("token over TLS")
        .into_inner()
        .dossier_id;
    let e = dossiers
        .get(tonic::Request::new(pb::GetDossierRequest {
            dossier: id.clone(),
        }))
        .await
        .expect_err("no token, no certificate");
    assert_eq!(e.code(), Code::Unauthenticated);

    // Justice authenticates by its certificate alone: streams its task and completes it.
    let tp = pki.channel(&server, Some(pki.client("tu-phap"))).await;
    let mut agencies = AgencyServiceClient::new(tp);
    let mut s = agencies
        .stream_tasks(tonic::Request::new(pb::StreamTasksRequest::default()))
        .await
        .expect("stream by certificate")
        .into_inner();
    let t = next_tasks(&mut s, 1).await;
    assert_eq!(t[0].1.step_id, "register-birth");
    let done = agencies
        .complete_step(tonic::Request::new(pb::CompleteStepRequest {
            idempotency_key: "tls-c1".into(),
            dossier: id.clone(),
            step_id: "register-birth".into(),
            outcome: "approve".into(),
            ..Default::default()
        }))
        .await
        .expect("complete by certificate")
        .into_inner();
    let actor = done.events[0]
        .event
        .as_ref()
        .and_then(|e| e.envelope.as_ref())
        .and_then(|e| e.actor.clone())
        .expect("actor");
    assert_eq!(actor.agency, "tu-phap");

    // A certificate of an agency whose principal does not accept certificates is not enough.
    let bhxh = pki.channel(&server, Some(pki.client("bhxh"))).await;
    let e = DossierServiceClient::new(bhxh)
        .get(tonic::Request::new(pb::GetDossierRequest { dossier: id }))
        .await
        .expect_err("certificate not accepted for bhxh");
    assert_eq!(e.code(), Code::Unauthenticated);
    server.stop().await;
}
