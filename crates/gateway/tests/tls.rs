//! Over TLS with certificates generated here (rcgen): a test CA signs the server's certificate
//! and one client certificate per agency. Proves that bearer tokens work over server TLS, that a
//! client certificate naming an agency authenticates as that agency's principal (mutual TLS), and
//! that a certificate is accepted only for principals that allow it.

mod common;

use common::{TestServer, birth, next_tasks, req};
use lienthong_gateway::Tls;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_client::AgencyServiceClient;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A test PKI: the CA's PEM, the server's TLS material, and client identities by agency.
struct Pki {
    ca_pem: String,
    server: Tls,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lienthong test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("key");
        let server_cert = CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&server_key, &issuer)
            .expect("server cert");
        Pki {
            ca_pem: ca_cert.pem(),
            server: Tls {
                cert_pem: server_cert.pem().into_bytes(),
                key_pem: server_key.serialize_pem().into_bytes(),
                client_ca_pem: Some(ca_cert.pem().into_bytes()),
            },
            issuer,
        }
    }

    /// A client certificate with the agency code as CN and DNS SAN.
    fn client(&self, agency: &str) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![agency.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, agency);
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        Identity::from_pem(cert.pem(), key.serialize_pem())
    }

    async fn channel(&self, server: &TestServer, identity: Option<Identity>) -> Channel {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("TLS connects")
    }
}

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
