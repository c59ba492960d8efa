//! Who may read the board: the gateway's own credentials, over HTTP.
//!
//! - Every request carries a credential of the auth file, on loopback too (a TLS proxy on the
//!   same host, or any local process, would otherwise read every agency's dossiers). The one
//!   exception is a server with no principals at all (no `--auth`, a developer's machine): its
//!   loopback listener lets a request without credentials in, seeing everything like an
//!   auditor, provided its `Host` is a loopback name (no DNS rebinding from a web page).
//! - A credential is checked by [`Shared::authenticate`] exactly as a gRPC call is (SHA-256 in
//!   constant time, the per-principal request rate): `Authorization: Bearer <token>` (what
//!   Prometheus sends with `authorization.credentials`), or HTTP Basic with the token as the
//!   password and any user name (what a browser on a wall screen asks for itself). A refusal is
//!   401 with `WWW-Authenticate: Basic`, so the browser prompts.
//! - What a principal sees is the report service's [`scope`]: auditors and admins every agency,
//!   agencies and the desk their own (their agency's board, charts and the dossiers routed to
//!   them); `/metrics` spans every agency, so only auditors and admins read it.
//!
//! Credentials given on a loopback listener are checked too (a wrong token is refused, a right
//! one scopes the page), so a desk officer's browser on the server itself sees what it would see
//! from elsewhere. The listener has no TLS of its own: on a non-loopback address `serve` needs
//! `--insecure` (tokens would travel in clear) or a TLS-terminating proxy in front; client
//! certificates are therefore not read here.
//!
//! [`scope`]: lienthong_gateway::report_svc::scope

use base64::Engine as _;
use http::HeaderMap;
use lienthong_gateway::auth::{Principal, Role};
use lienthong_gateway::report_svc::scope;
use lienthong_gateway::shared::Shared;
use lienthong_projections::Breach;
use lienthong_workflow::Catalog;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Who is reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// A request without credentials on a loopback listener: this machine, everything.
    Local,
    /// An authenticated principal of the auth file.
    Principal(Principal),
}

/// `Authorization: Basic base64(user:token)` as the bearer header the gateway checks; any
/// other value is passed on as it is (and refused there if it is not `Bearer <token>`).
fn bearer(value: &http::HeaderValue) -> Result<http::HeaderValue, Status> {
    let Ok(text) = value.to_str() else {
        return Err(Status::unauthenticated(
            "the `authorization` header is not ASCII text",
        ));
    };
    let Some(encoded) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Ok(value.clone());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Status::unauthenticated("the Basic credentials are not base64 of `user:token`")
        })?;
    let token = decoded.split_once(':').map_or("", |(_, t)| t);
    http::HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Status::unauthenticated("the token is not printable text"))
}

/// Who sent a request with `headers`; `open`: requests without credentials are let in (a
/// loopback listener of a server with no principals), as long as they name a loopback host:
/// a web page the browser loaded from elsewhere cannot reach an open board by pointing its own
/// name at 127.0.0.1 (DNS rebinding).
pub fn authenticate(shared: &Shared, headers: &HeaderMap, open: bool) -> Result<Access, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return if open && loopback_host(headers) {
            Ok(Access::Local)
        } else if open {
            Err(Status::permission_denied(
                "this board answers without credentials only to a loopback host name (localhost, 127.0.0.1, [::1])",
            ))
        } else {
            Err(Status::unauthenticated(
                "sign in with your agency's token (Basic: any user name, the token as password; or `Authorization: Bearer <token>`)",
            ))
        };
    };
    let mut only = HeaderMap::new();
    only.insert(http::header::AUTHORIZATION, bearer(value)?);
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(only),
        tonic::Extensions::default(),
        (),
    );
    shared.authenticate(&request).map(Access::Principal)
}

/// Whether the request's `Host` names this machine's loopback (`localhost`, `127.x.y.z`,
/// `[::1]`, with any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Access {
    /// The agency filter of a page for `requested` (empty: none chosen); see the module docs.
    pub fn agency(&self, requested: &str, catalog: &Catalog) -> Result<Option<String>, Status> {
        match self {
            Access::Local => {
                let everyone = Principal {
                    id: "local".into(),
                    agency: String::new(),
                    role: Role::Auditor,
                    via: lienthong_gateway::auth::Via::Token,
                };
                scope(&everyone, requested, catalog)
            }
            Access::Principal(p) => scope(p, requested, catalog),
        }
    }

    /// Whether every agency's figures may be read (`/metrics`).
    pub fn reads_everything(&self) -> bool {
        match self {
            Access::Local => true,
            Access::Principal(p) => p.role.reads_everything(),
        }
    }

    /// Whether the dossier `d` may be shown: everything for those who read everything; for an
    /// agency or the desk, a dossier it received or that was handed to it.
    pub fn may_see(&self, d: &Breach) -> bool {
        match self {
            Access::Local => true,
            Access::Principal(p) if p.role.reads_everything() => true,
            Access::Principal(p) => {
                d.receiving_agency == p.agency || d.slip.iter().any(|l| l.receiver == p.agency)
            }
        }
    }

    /// For logs.
    pub fn who(&self) -> &str {
        match self {
            Access::Local => "local",
            Access::Principal(p) => &p.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_become_the_bearer_token() {
        let basic = http::HeaderValue::from_static("Basic dXNlcjpkZXYtYXVkaXQ="); // user:dev-audit
        assert_eq!(
            bearer(&basic).expect("valid").to_str().expect("ascii"),
            "Bearer dev-audit"
        );
        let b = http::HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(&b).expect("as is"), b);
        let bad = http::HeaderValue::from_static("Basic !!!");
        assert_eq!(
            bearer(&bad).expect_err("not base64").code(),
            tonic::Code::Unauthenticated
        );
    }
}
