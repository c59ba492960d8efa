//! A test PKI made with rcgen: a CA, the server's certificate for `localhost`, and client
//! certificates naming an agency (CN and DNS SAN), for the TLS and mutual-TLS tests; also the
//! certificates a server must refuse (expired, not yet valid, self-signed).

use lienthong_gateway::Tls;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::TestServer;

/// A day, `(year, month, day)`.
pub type Day = (i32, u8, u8);

/// A certificate's validity: its first and its last day.
pub type Validity = (Day, Day);

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
        self.client_valid(agency, None).identity()
    }

    /// A client certificate with the agency code as CN and DNS SAN, valid between the two
    /// dates (`(year, month, day)`) when they are given (else rcgen's default, from 1975 to 4096).
    pub fn client_valid(&self, agency: &str, validity: Option<Validity>) -> ClientPem {
        let key = KeyPair::generate().expect("key");
        let params = client_params(agency, validity);
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        ClientPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A TLS channel to `server`, with a client certificate when `identity` is given.
    pub async fn channel(&self, server: &TestServer, identity: Option<Identity>) -> Channel {
        self.try_channel(server, identity)
            .await
            .expect("TLS connects")
    }

    /// [`Pki::channel`], or the transport's error (a handshake the server refused may fail here,
    /// or, with TLS 1.3, only on the first call).
    pub async fn try_channel(
        &self,
        server: &TestServer,
        identity: Option<Identity>,
    ) -> Result<Channel, tonic::transport::Error> {
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
    }
}

/// A client certificate and its key, PEM.
pub struct ClientPem {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl ClientPem {
    /// As a tonic client identity.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }
}

/// A certificate naming `agency` that signs itself (no CA vouches for it).
pub fn self_signed(agency: &str) -> ClientPem {
    let key = KeyPair::generate().expect("key");
    let cert = client_params(agency, None)
        .self_signed(&key)
        .expect("self-signed cert");
    ClientPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// The parameters of a client certificate for `agency` (CN and DNS SAN).
fn client_params(agency: &str, validity: Option<Validity>) -> CertificateParams {
    let mut params = CertificateParams::new(vec![agency.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, agency);
    if let Some(((y0, m0, d0), (y1, m1, d1))) = validity {
        params.not_before = date_time_ymd(y0, m0, d0);
        params.not_after = date_time_ymd(y1, m1, d1);
    }
    params
}
