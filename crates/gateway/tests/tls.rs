//! Over TLS with certificates generated here (rcgen): a test CA signs the server's certificate
//! and one client certificate per agency. Proves that bearer tokens work over server TLS, that a
//! client certificate naming an agency authenticates as that agency's principal (mutual TLS), and
//! that a certificate is accepted only for principals that allow it.
//!
//! And the certificates that must be refused, each with the answer an integrator can act on:
//! one the TLS layer cannot trust (expired, not yet valid, self-signed, signed by another CA that
//! bears our CA's name) ends the handshake with the TLS alert that says why (`CertificateExpired`,
//! `UnknownCA`, `DecryptError`), before any request is read; a rustls client reads the alert, and
//! a tonic client's call fails at the transport (with TLS 1.3 it may see only the reset); one the CA signed
//! but that names an agency without a `client_cert` principal, or no agency at all, is
//! UNAUTHENTICATED; an agency's certificate with `lienthong-act-as` naming another agency is
//! PERMISSION_DENIED; a wrong bearer token on a connection with a good certificate is
//! UNAUTHENTICATED (the token is judged first, and a bad one never falls back to the
//! certificate). After each refusal nothing was written and the server answers normally.

mod common;

use common::pki::{self, ClientPem, Pki};
use common::{Clients, TestServer, birth, feed_end, next_tasks, req};
use lienthong_gateway::auth::ACT_AS_HEADER;
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

/// Every message of an error and its sources, for matching what the transport said.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{e}");
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(&format!(": {s}"));
        next = s.source();
    }
    out
}

/// Connects with `client`'s certificate and makes one call: it must fail at the transport
/// (the handshake was refused; with TLS 1.3 the client learns it only when it uses the
/// connection, and may see a reset rather than the alert). Returns what the client was told.
async fn call_fails_at_the_transport(
    pki: &Pki,
    server: &TestServer,
    client: &ClientPem,
    dossier: &str,
) -> String {
    match pki.try_channel(server, Some(client.identity())).await {
        Err(e) => chain(&e),
        Ok(ch) => {
            let r = DossierServiceClient::new(ch)
                .get(tonic::Request::new(pb::GetDossierRequest {
                    dossier: dossier.into(),
                }))
                .await;
            match r {
                Ok(_) => panic!("a call over a refused certificate got an answer"),
                Err(s) => {
                    let transport = std::error::Error::source(&s)
                        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
                    assert!(
                        transport,
                        "a transport failure, not an answer of the service: {s:?}"
                    );
                    chain(&s)
                }
            }
        }
    }
}

/// The TLS alert the server answers `client`'s certificate with: a rustls client (no HTTP/2)
/// completes its side of the handshake and reads; the server's verdict arrives as an alert.
async fn alert_for(pki: &Pki, server: &TestServer, client: &ClientPem) -> String {
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(client.cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes()).expect("key PEM");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("TCP connects");
    let name = ServerName::try_from("localhost").expect("name");
    let read = async {
        match connector.connect(name, tcp).await {
            Err(e) => e.to_string(),
            Ok(mut tls) => {
                let mut buf = [0u8; 64];
                match tls.read(&mut buf).await {
                    Err(e) => e.to_string(),
                    Ok(n) => format!("no alert: the server sent {n} bytes"),
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| "no alert: the server kept the connection open".into())
}

/// Nothing was written since `end`, and the server answers the desk's token.
async fn unharmed(c: &mut Clients, end: u64, dossier: &str, what: &str) {
    assert_eq!(
        feed_end(c, end).await.expect("feed"),
        end,
        "{what}: nothing written"
    );
    c.dossiers
        .get(req(
            "desk",
            pb::GetDossierRequest {
                dossier: dossier.into(),
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("{what}: the server still answers: {e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_must_be_refused_are_refused_with_the_right_answer() {
    let pki = Pki::new();
    let server = TestServer::start_with(Some(pki.server.clone()), &["tu-phap", "cong-an"]).await;
    let mut c = Clients::over(pki.channel(&server, None).await);
    let id = c
        .dossiers
        .submit(req("desk", birth("refused-1", 14)))
        .await
        .expect("token over TLS")
        .into_inner()
        .dossier_id;
    let end = feed_end(&mut c, 0).await.expect("feed");

    // Refused by the TLS layer: the alert names the reason.
    let other_ca = Pki::new();
    let cases: [(&str, ClientPem, &str); 4] = [
        (
            "expired",
            pki.client_valid("tu-phap", Some(((2020, 1, 1), (2021, 1, 1)))),
            "CertificateExpired",
        ),
        (
            "not yet valid",
            pki.client_valid("tu-phap", Some(((2098, 1, 1), (2099, 1, 1)))),
            "CertificateExpired",
        ),
        ("self-signed", pki::self_signed("tu-phap"), "UnknownCA"),
        // `Pki::new` names every CA alike: this one passes for ours by name, and its signature
        // does not verify.
        (
            "signed by another CA with our CA's name",
            other_ca.client_valid("tu-phap", None),
            "DecryptError",
        ),
    ];
    for (what, client, alert) in cases {
        let told = alert_for(&pki, &server, &client).await;
        assert!(
            told.contains(&format!("received fatal alert: {alert}")),
            "{what}: expected the TLS alert {alert}, the client was told: {told}"
        );
        call_fails_at_the_transport(&pki, &server, &client, &id).await;
        unharmed(&mut c, end, &id, what).await;
    }
    // The same rustls client with a good certificate is not refused (so the alerts above are
    // about the certificates, not the client).
    let good = pki.client_valid("tu-phap", None);
    let told = alert_for(&pki, &server, &good).await;
    assert!(told.starts_with("no alert"), "a good certificate: {told}");

    // Signed by the CA, but no principal accepts a certificate for the agency it names.
    for (what, agency) in [
        ("an agency without client_cert", "bhxh"),
        ("an agency nobody configured", "khong-ton-tai"),
    ] {
        let ch = pki.channel(&server, Some(pki.client(agency))).await;
        let e = DossierServiceClient::new(ch)
            .get(tonic::Request::new(pb::GetDossierRequest {
                dossier: id.clone(),
            }))
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
        assert!(
            e.message().contains(agency),
            "{what}: names it: {}",
            e.message()
        );
        unharmed(&mut c, end, &id, what).await;
    }

    // Justice's certificate claiming to act as the police: PERMISSION_DENIED, nothing written.
    let tp = pki.channel(&server, Some(pki.client("tu-phap"))).await;
    let mut tp_agencies = AgencyServiceClient::new(tp);
    let mut r = tonic::Request::new(pb::CompleteStepRequest {
        idempotency_key: "act-as-1".into(),
        dossier: id.clone(),
        step_id: "register-birth".into(),
        outcome: "approve".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert(ACT_AS_HEADER, "cong-an".parse().expect("ascii"));
    let e = tp_agencies
        .complete_step(r)
        .await
        .expect_err("act-as by a certificate");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    unharmed(&mut c, end, &id, "act-as").await;

    // A wrong token on a connection whose certificate is good: the token is judged, and refused.
    let mut r = tonic::Request::new(pb::GetDossierRequest {
        dossier: id.clone(),
    });
    r.metadata_mut().insert(
        "authorization",
        "Bearer not-a-token".parse().expect("ascii"),
    );
    let tp = pki.channel(&server, Some(pki.client("tu-phap"))).await;
    let e = DossierServiceClient::new(tp)
        .get(r)
        .await
        .expect_err("a bad token never falls back to the certificate");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // And the good certificate alone still works after all that.
    let mut r = tonic::Request::new(pb::CompleteStepRequest {
        idempotency_key: "after-1".into(),
        dossier: id.clone(),
        step_id: "register-birth".into(),
        outcome: "approve".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert(ACT_AS_HEADER, "tu-phap".parse().expect("ascii"));
    tp_agencies
        .complete_step(r)
        .await
        .expect("its own agency in act-as is harmless");
    server.stop().await;
}
