//! Who is calling, and what each role may do.
//!
//! Credentials come from a TOML file (`lienthong serve --auth FILE`), one `[[principal]]` each:
//!
//! ```toml
//! [[principal]]
//! id = "tu-phap-system"     # unique; shows in logs (never the token)
//! agency = "tu-phap"        # the agency code it acts as (workflows/agencies.toml)
//! role = "agency"           # agency | desk | auditor | admin
//! token_sha256 = "9f86d0..." # lower-case hex SHA-256 of the bearer token (optional)
//! client_cert = true        # a verified client certificate naming `agency` (CN or DNS SAN) is this principal (optional)
//! ```
//!
//! Only hashes of tokens are stored. A presented `authorization: Bearer <token>` is hashed and
//! compared with every principal's hash in constant time (no early exit). Tokens never reach a
//! log: only the principal's `id` does. With mutual TLS, rustls has already verified the chain
//! against the configured client CA; here the leaf certificate's common name and DNS
//! subject-alternative names are read and matched against the agencies of the `client_cert`
//! principals. A bearer token, when present, takes precedence over the certificate.
//!
//! Roles (what the services enforce, see [`Role`]): an **agency** reads and acts only on dossiers
//! routed to it and only on its own steps (the engine refuses another agency's step); the **desk**
//! (a receiving agency, `ubnd-xa`) is an agency that also submits, returns results and withdraws
//! on the citizen's behalf; an **auditor** reads everything and changes nothing; an **admin** may
//! do everything, acting as its own agency or as the agency named in the `lienthong-act-as`
//! request header (recorded in the events as that agency, with the officer `admin:<id>`; an agency
//! the workflows do not define is INVALID_ARGUMENT). Any other role naming an agency other than its
//! own in that header is PERMISSION_DENIED: the record must never disagree with the caller.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The request header an admin uses to act as another agency.
pub const ACT_AS_HEADER: &str = "lienthong-act-as";

/// Principals accepted in one auth file.
pub const PRINCIPALS_MAX: usize = 10_000;

/// Longest bearer token accepted, in bytes (a longer header is refused before hashing).
pub const TOKEN_BYTES_MAX: usize = 4096;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Acts and reads only on dossiers routed to its agency, only on its own steps.
    Agency,
    /// The one-stop desk: an agency that also submits, returns results and withdraws.
    Desk,
    /// Reads everything, changes nothing.
    Auditor,
    /// Everything, as its own agency or the one named in [`ACT_AS_HEADER`].
    Admin,
}

impl Role {
    /// Stable text for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Agency => "agency",
            Role::Desk => "desk",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Auditors and admins read every dossier.
    pub fn reads_everything(&self) -> bool {
        matches!(self, Role::Auditor | Role::Admin)
    }
}

/// How the caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A bearer token.
    Token,
    /// A client certificate (mutual TLS).
    Certificate,
    /// A command from the bus (distributed mode), which is a trusted zone: its actor was
    /// authenticated by the gateway that sent it, or it is a vetted agency adapter.
    Bus,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The principal's id from the auth file (for logs).
    pub id: String,
    /// The agency code it acts as.
    pub agency: String,
    /// What it may do.
    pub role: Role,
    /// How it authenticated.
    pub via: Via,
}

/// Why an auth file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("auth file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A principal is wrong.
    #[error("auth file {path}, principal `{id}`: {message}")]
    Principal {
        /// The file.
        path: String,
        /// The principal.
        id: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, rename = "principal")]
    principals: Vec<RawPrincipal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    id: String,
    agency: String,
    role: Role,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    client_cert: bool,
}

/// One configured principal.
#[derive(Clone, Debug)]
struct Entry {
    /// Id, agency and role.
    principal: Principal,
    /// SHA-256 of its token, if it has one.
    token_hash: Option<[u8; 32]>,
    /// Whether a client certificate naming its agency authenticates it.
    client_cert: bool,
}

/// The configured principals; answers "who is this request?".
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    /// Every principal, in file order.
    entries: Vec<Entry>,
}

impl Authenticator {
    /// Reads and validates an auth file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates the text of an auth file; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, Error> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        if raw.principals.len() > PRINCIPALS_MAX {
            return Err(Error::Parse {
                path: origin.to_string(),
                message: format!(
                    "{} principals, at most {PRINCIPALS_MAX}",
                    raw.principals.len()
                ),
            });
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.principals.len());
        for p in raw.principals {
            let bad = |message: String| Error::Principal {
                path: origin.to_string(),
                id: p.id.clone(),
                message,
            };
            if p.id.is_empty() || entries.iter().any(|e| e.principal.id == p.id) {
                return Err(bad("`id` must be non-empty and unique".into()));
            }
            if p.agency.is_empty()
                || !p
                    .agency
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad(format!(
                    "`agency` must be an agency code ([a-z0-9-]+), got `{}`",
                    p.agency
                )));
            }
            let token_hash = match &p.token_sha256 {
                None => None,
                Some(h) => {
                    let bytes = hex::decode(h).ok().filter(|b| b.len() == 32).ok_or_else(|| {
                        bad("`token_sha256` must be 64 hex digits: the SHA-256 of the token (e.g. `printf %s TOKEN | sha256sum`)".into())
                    })?;
                    let mut a = [0u8; 32];
                    a.copy_from_slice(&bytes);
                    if entries.iter().any(|e| e.token_hash == Some(a)) {
                        return Err(bad("two principals share one token".into()));
                    }
                    Some(a)
                }
            };
            if p.client_cert
                && entries
                    .iter()
                    .any(|e| e.client_cert && e.principal.agency == p.agency)
            {
                return Err(bad(format!(
                    "two principals with `client_cert = true` for agency `{}`: a certificate must name one principal",
                    p.agency
                )));
            }
            if token_hash.is_none() && !p.client_cert {
                return Err(bad(
                    "no credential: set `token_sha256`, `client_cert = true`, or both".into(),
                ));
            }
            entries.push(Entry {
                principal: Principal {
                    id: p.id,
                    agency: p.agency,
                    role: p.role,
                    via: Via::Token,
                },
                token_hash,
                client_cert: p.client_cert,
            });
        }
        Ok(Authenticator { entries })
    }

    /// Number of principals.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no principal is configured (every call is then UNAUTHENTICATED).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Agency codes the principals act as (to check them against the loaded agencies).
    pub fn agencies(&self) -> impl Iterator<Item = (&str, &str, Role)> {
        self.entries.iter().map(|e| {
            (
                e.principal.id.as_str(),
                e.principal.agency.as_str(),
                e.principal.role,
            )
        })
    }

    /// Who sent a request: by its bearer token, else by its verified client certificate (`certs`:
    /// the peer's chain, leaf first, DER).
    pub fn authenticate<C: AsRef<[u8]>>(
        &self,
        metadata: &MetadataMap,
        certs: Option<&[C]>,
    ) -> Result<Principal, Status> {
        if let Some(value) = metadata.get("authorization") {
            let text = value.to_str().map_err(|_| {
                Status::unauthenticated("the `authorization` header is not ASCII text")
            })?;
            let token = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("the `authorization` header must be `Bearer <token>`")
                })?
                .trim();
            if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
                return Err(Status::unauthenticated(
                    "the bearer token is empty or too long",
                ));
            }
            return self.by_token(token).ok_or_else(|| {
                Status::unauthenticated(
                    "unknown bearer token: ask the operator for your agency's token",
                )
            });
        }
        if let Some(leaf) = certs.and_then(|c| c.first()) {
            let names = certificate_names(leaf.as_ref()).map_err(|e| {
                Status::unauthenticated(format!("cannot read the client certificate: {e}"))
            })?;
            return self.by_certificate(&names).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the client certificate names {names:?}, and no principal with `client_cert = true` acts for any of them"
                ))
            });
        }
        Err(Status::unauthenticated(
            "no credentials: send `authorization: Bearer <token>` or connect with your agency's client certificate",
        ))
    }

    fn by_token(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // Compare with every hash, without an early exit, so that timing says nothing.
        for e in &self.entries {
            if let Some(h) = &e.token_hash
                && bool::from(h.ct_eq(&hash))
            {
                found = Some(e.principal.clone());
            }
        }
        found
    }

    fn by_certificate(&self, names: &[String]) -> Option<Principal> {
        self.entries
            .iter()
            .find(|e| e.client_cert && names.iter().any(|n| n == &e.principal.agency))
            .map(|e| Principal {
                via: Via::Certificate,
                ..e.principal.clone()
            })
    }
}

/// The common names and DNS subject-alternative names of a DER certificate.
pub fn certificate_names(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_string());
            }
        }
    }
    Ok(names)
}

/// The lower-case hex SHA-256 of a token, as written in an auth file.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn file() -> String {
        format!(
            r#"
[[principal]]
id = "tp"
agency = "tu-phap"
role = "agency"
token_sha256 = "{}"

[[principal]]
id = "ca"
agency = "cong-an"
role = "agency"
client_cert = true
"#,
            token_hash_hex("secret-tp")
        )
    }

    fn md(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
        );
        m
    }

    #[test]
    fn tokens_are_checked_by_hash() {
        let a = Authenticator::from_toml(&file(), "test").expect("valid");
        let none: Option<&[Vec<u8>]> = None;
        let p = a.authenticate(&md("secret-tp"), none).expect("known");
        assert_eq!((p.agency.as_str(), p.role), ("tu-phap", Role::Agency));
        let e = a.authenticate(&md("wrong"), none).expect_err("unknown");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains("wrong"), "never echo a token");
        let e = a.authenticate(&MetadataMap::new(), none).expect_err("none");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn bad_files_name_the_principal() {
        let e = Authenticator::from_toml(
            "[[principal]]\nid = \"x\"\nagency = \"tu-phap\"\nrole = \"agency\"\ntoken_sha256 = \"abc\"\n",
            "auth.toml",
        )
        .expect_err("bad hash");
        assert!(e.to_string().contains("principal `x`"), "{e}");
        let e = Authenticator::from_toml(
            "[[principal]]\nid = \"x\"\nagency = \"tu-phap\"\nrole = \"boss\"\n",
            "auth.toml",
        )
        .expect_err("bad role");
        assert!(e.to_string().contains("auth.toml"), "{e}");
    }
}
