//! The gateway's configuration: credentials, transport security and named limits, checked once
//! by [`Config::validate`] before anything is served.

use std::net::SocketAddr;
use std::path::Path;

use crate::auth::Authenticator;

/// Largest request message accepted, in bytes (documents travel by reference, so requests are small).
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// Most attributes one submission may carry (the engine's own hard limit is higher or equal).
pub const ATTRIBUTES_MAX_DEFAULT: usize = 200;
/// Most document references one request may carry.
pub const DOCUMENTS_MAX_DEFAULT: usize = 100;
/// Concurrent streaming calls (task streams, histories, exports) over the whole server.
pub const STREAMS_MAX_DEFAULT: usize = 1024;
/// How often an idle task stream looks at the feed for events written by others (timers), in ms.
pub const FEED_POLL_MS_DEFAULT: u64 = 250;
/// Calls per second one principal may make on average (a province's busiest desk makes a few).
pub const REQUESTS_PER_S_MAX_DEFAULT: u32 = 1_000;
/// Calls one principal may make at once after being idle.
pub const REQUEST_BURST_MAX_DEFAULT: u32 = 2_000;

/// Limits a client can run into; each has a name that RESOURCE_EXHAUSTED messages use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request message, in bytes (tonic refuses larger ones with RESOURCE_EXHAUSTED).
    pub message_bytes_max: usize,
    /// Most attributes in one submission.
    pub attributes_max: usize,
    /// Most document references in one request.
    pub documents_max: usize,
    /// Concurrent streaming calls over the whole server.
    pub streams_max: usize,
    /// Poll period of idle task streams, in milliseconds.
    pub feed_poll_ms: u64,
    /// Calls per second one principal may make on average (token bucket refill rate).
    pub requests_per_s_max: u32,
    /// Calls one principal may make in a burst (token bucket size).
    pub request_burst_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            attributes_max: ATTRIBUTES_MAX_DEFAULT,
            documents_max: DOCUMENTS_MAX_DEFAULT,
            streams_max: STREAMS_MAX_DEFAULT,
            feed_poll_ms: FEED_POLL_MS_DEFAULT,
            requests_per_s_max: REQUESTS_PER_S_MAX_DEFAULT,
            request_burst_max: REQUEST_BURST_MAX_DEFAULT,
        }
    }
}

/// Server TLS, and optionally the CA that client certificates must chain to (mutual TLS).
#[derive(Clone, Debug)]
pub struct Tls {
    /// The server's certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The server's private key, PEM.
    pub key_pem: Vec<u8>,
    /// CA certificates for client certificates, PEM. With it, a client may authenticate by
    /// certificate; a client without one may still use a bearer token.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl Tls {
    /// Reads the PEM files.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::File {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        };
        Ok(Tls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: client_ca.map(read).transpose()?,
        })
    }
}

/// Everything the gateway needs besides the engine.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Who may call, and as whom.
    pub auth: Authenticator,
    /// TLS; `None` serves plaintext (loopback only, unless `insecure`).
    pub tls: Option<Tls>,
    /// Allow plaintext on a non-loopback address (tokens then travel in clear: tests and labs only).
    pub insecure: bool,
    /// Named limits.
    pub limits: Limits,
}

/// Why a configuration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Plaintext on an address other machines can reach.
    #[error(
        "refusing plaintext gRPC on {0}, which is not a loopback address: give --tls-cert and --tls-key, or pass --insecure if you really mean it"
    )]
    PlaintextNotLoopback(SocketAddr),
    /// A limit is zero.
    #[error("limit `{0}` must be at least 1")]
    ZeroLimit(&'static str),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

impl Config {
    /// Checks the configuration for serving on `addr`.
    pub fn validate(&self, addr: SocketAddr) -> Result<(), Error> {
        if self.tls.is_none() && !self.insecure && !addr.ip().is_loopback() {
            return Err(Error::PlaintextNotLoopback(addr));
        }
        let l = &self.limits;
        for (name, v) in [
            ("message_bytes_max", l.message_bytes_max as u64),
            ("attributes_max", l.attributes_max as u64),
            ("documents_max", l.documents_max as u64),
            ("streams_max", l.streams_max as u64),
            ("feed_poll_ms", l.feed_poll_ms),
            ("requests_per_s_max", u64::from(l.requests_per_s_max)),
            ("request_burst_max", u64::from(l.request_burst_max)),
        ] {
            if v == 0 {
                return Err(Error::ZeroLimit(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_on_loopback_unless_insecure() {
        let mut c = Config::default();
        assert!(c.validate("127.0.0.1:50051".parse().expect("addr")).is_ok());
        assert!(c.validate("[::1]:50051".parse().expect("addr")).is_ok());
        let e = c
            .validate("0.0.0.0:50051".parse().expect("addr"))
            .expect_err("not loopback");
        assert!(e.to_string().contains("--insecure"), "{e}");
        c.insecure = true;
        assert!(c.validate("0.0.0.0:50051".parse().expect("addr")).is_ok());
    }
}
