//! A test PKI made with rcgen: a CA, the server's certificate for `localhost`, and client
//! certificates naming an agency (CN and DNS SAN), for the TLS and mutual-TLS tests.

use lienthong_gateway::Tls;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::TestServer;

/// A test PKI: the CA's PEM, the server's TLS material, and client identities by agency.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate and key, and the CA for client certificates.
    pub server: Tls,
    /// Signs client certificates.
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA, a server certificate for `localhost`, mutual TLS enabled.
    pub fn new() -> Pki {
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
    pub fn client(&self, agency: &str) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![agency.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, agency);
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        Identity::from_pem(cert.pem(), key.serialize_pem())
    }

    /// A TLS channel to `server`, with a client certificate when `identity` is given.
    pub async fn channel(&self, server: &TestServer, identity: Option<Identity>) -> Channel {
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
