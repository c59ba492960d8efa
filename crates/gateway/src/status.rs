//! Every error of the gateway becomes a `tonic::Status` here, and only here.
//!
//! | what went wrong | code | details |
//! |---|---|---|
//! | bad input (a field, an attribute, the idempotency key, an unknown procedure or step, an enum value the contract does not define) | INVALID_ARGUMENT | `google.rpc.BadRequest` naming the fields |
//! | a request that does not decode (a string that is not UTF-8, a truncated field): tonic's INTERNAL, rewritten by [`from_decoder`] | INVALID_ARGUMENT | `BadRequest` naming the field |
//! | the command is not allowed in the dossier's state (a `Rejection`) | FAILED_PRECONDITION | `google.rpc.ErrorInfo` with the stable rejection code as `reason` |
//! | an agency acting on another agency's step or dossier, a role that may not call | PERMISSION_DENIED | `ErrorInfo` (`not-your-step`, `not-allowed`, `role`) |
//! | no or unknown credentials | UNAUTHENTICATED | |
//! | the idempotency key was used with another request | ALREADY_EXISTS | `ErrorInfo` `idempotency-key-reused` |
//! | another writer kept winning the race (retry with the same key) | ABORTED | |
//! | no such dossier | NOT_FOUND | |
//! | a configured limit (sizes, counts, concurrent streams); a request over `message_bytes_max` (tonic's OUT_OF_RANGE, rewritten by [`from_decoder`]) | RESOURCE_EXHAUSTED | `ErrorInfo` `limit` with the limit's name |
//! | a principal calling faster than `requests_per_s_max` | RESOURCE_EXHAUSTED | `ErrorInfo` `rate-limited`, `RetryInfo` |
//! | store closed, poisoned, overloaded, I/O | UNAVAILABLE | |
//! | the store found damage (broken chain); the read models' feed is broken | DATA_LOSS | |
//! | read models ahead of the store, a working time beyond the loaded calendars | FAILED_PRECONDITION | |
//! | anything else (a bug, a missing definition) | INTERNAL | |
//!
//! Messages are written for the integrator reading them: they say what to change. They are
//! bounded: a status travels in HTTP/2 headers, and one that echoed a hostile request's 100 KB
//! attribute name (or 200 of them) would be refused by the client's header-size limit (16 KiB in
//! hyper, 8 KiB in grpc-java), turning a clear INVALID_ARGUMENT into a protocol error; bounded,
//! message and details stay under 6 KiB. Every message is cut at
//! [`STATUS_MESSAGE_BYTES_MAX`], every field name and description of a `BadRequest` at
//! [`FIELD_TEXT_BYTES_MAX`], and at most [`FIELD_VIOLATIONS_MAX`] fields are listed.

use std::collections::HashMap;
use std::time::Duration;

use lienthong_engine::dossier::Rejection;
use lienthong_engine::runtime;
use lienthong_engine::store;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every status the gateway details.
pub const ERROR_DOMAIN: &str = "lienthong.v1";

/// Longest status message, in bytes (the rest is cut, saying how much was cut).
pub const STATUS_MESSAGE_BYTES_MAX: usize = 1024;

/// Longest field name or description in a `BadRequest` detail, in bytes.
pub const FIELD_TEXT_BYTES_MAX: usize = 128;

/// Most field violations one `BadRequest` lists (a last one says how many more there were).
pub const FIELD_VIOLATIONS_MAX: usize = 10;

/// `text` cut to at most `max` bytes (at a character boundary), saying how much was cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mark = format!("… ({} more bytes)", text.len());
    let mut end = max.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// Adds field violations to `details`, bounded (see the module's documentation).
fn add_violations(details: &mut ErrorDetails, fields: Vec<(String, String)>) {
    let total = fields.len();
    for (field, description) in fields.into_iter().take(FIELD_VIOLATIONS_MAX) {
        details.add_bad_request_violation(
            bounded(&field, FIELD_TEXT_BYTES_MAX),
            bounded(&description, FIELD_TEXT_BYTES_MAX),
        );
    }
    if total > FIELD_VIOLATIONS_MAX {
        details.add_bad_request_violation(
            "…",
            format!(
                "{} more fields are wrong; fix these and send again",
                total - FIELD_VIOLATIONS_MAX
            ),
        );
    }
}

/// A status with `code`, its message bounded, and `details`.
fn detailed(code: Code, message: impl AsRef<str>, details: ErrorDetails) -> Status {
    Status::with_error_details(
        code,
        bounded(message.as_ref(), STATUS_MESSAGE_BYTES_MAX),
        details,
    )
}

/// A field of the request is wrong: INVALID_ARGUMENT with a `BadRequest` field violation.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let message = format!("`{field}`: {description}");
    let mut details = ErrorDetails::new();
    add_violations(&mut details, vec![(field.to_string(), description)]);
    detailed(Code::InvalidArgument, message, details)
}

/// Several fields are wrong at once.
pub fn invalid_fields(message: &str, fields: Vec<(String, String)>) -> Status {
    let mut details = ErrorDetails::new();
    add_violations(&mut details, fields);
    detailed(Code::InvalidArgument, message, details)
}

/// The caller may not do this: PERMISSION_DENIED with `reason` in `ErrorInfo`.
pub fn denied(reason: &str, message: impl Into<String>) -> Status {
    detailed(
        Code::PermissionDenied,
        message.into(),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// A configured limit was exceeded: RESOURCE_EXHAUSTED naming what was counted and the limit's
/// configuration name (`limit`, e.g. `attributes_max`), with `ErrorInfo` reason `limit` and the
/// name in its metadata.
pub fn exhausted(limit: &str, what: &str, max: u64, actual: u64) -> Status {
    let metadata = HashMap::from([("limit".to_string(), limit.to_string())]);
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "{limit}: {what} is {actual}, at most {max} is allowed (a limit of this server's configuration)"
        ),
        ErrorDetails::with_error_info("limit", ERROR_DOMAIN, metadata),
    )
}

/// How long a client is told to wait before retrying an append refused for a full disk.
pub const DISK_FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A principal made calls faster than its configured rate: RESOURCE_EXHAUSTED with `ErrorInfo`
/// `rate-limited` and `RetryInfo` saying when a retry passes.
pub fn rate_limited(principal: &str, requests_per_s_max: u32, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("rate-limited", ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "requests_per_s_max: `{principal}` made more than {requests_per_s_max} calls per second; retry after {} ms (nothing was done)",
            retry_after.as_millis().max(1)
        ),
        details,
    )
}

/// What tonic's decoder puts before its over-size error.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// What prost's decode errors start with (tonic answers them as INTERNAL).
const PROST_UNDECODABLE: &str = "failed to decode Protobuf message: ";

/// The gateway's answer for a refusal tonic made itself while decoding a request (before any
/// handler ran), or `None` for every other status, which stays as it is:
///
/// - over `max_decoding_message_size`: tonic says OUT_OF_RANGE; the gRPC status guide and
///   other implementations say RESOURCE_EXHAUSTED, with the configured limit's name.
/// - a protobuf that does not decode: tonic says INTERNAL, following the gRPC guide's table for
///   a server that cannot parse a request; but INTERNAL tells a client and an operator's alerts
///   that the server is broken, and here the client sent bytes that are not the contract's
///   message (most often a string field that is not UTF-8). INVALID_ARGUMENT with the field's
///   path (`applicant.full_name`) says what to fix; the server was never at fault.
pub fn from_decoder(tonic_says: &Status, message_bytes_max: usize) -> Option<Status> {
    match tonic_says.code() {
        Code::OutOfRange if tonic_says.message().contains(TONIC_TOO_LARGE) => {
            let metadata = HashMap::from([("limit".to_string(), "message_bytes_max".to_string())]);
            Some(Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "message_bytes_max: the request is larger than {message_bytes_max} bytes, the limit of this server's configuration (documents travel by reference, not inline) [{}]",
                    tonic_says.message()
                ),
                ErrorDetails::with_error_info("limit", ERROR_DOMAIN, metadata),
            ))
        }
        Code::Internal => {
            let rest = tonic_says.message().strip_prefix(PROST_UNDECODABLE)?;
            // prost writes `Inner.field: Outer.field: ...: description`, innermost first.
            let mut path = Vec::new();
            let mut description = rest;
            while let Some((head, tail)) = description.split_once(": ") {
                let Some((_, field)) = head.split_once('.') else {
                    break;
                };
                if field.is_empty()
                    || !field
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    break;
                }
                path.push(field);
                description = tail;
            }
            path.reverse();
            let field = if path.is_empty() {
                "request".to_string()
            } else {
                path.join(".")
            };
            Some(invalid(
                &field,
                format!(
                    "the request is not a valid protobuf message of this method ({description}); strings must be UTF-8"
                ),
            ))
        }
        _ => None,
    }
}

/// No such dossier.
pub fn not_found(dossier: &str) -> Status {
    Status::not_found(format!(
        "no dossier `{}`: name it by its id (UUID) or its code (e.g. UBND.XA-261125-0001)",
        bounded(dossier, FIELD_TEXT_BYTES_MAX)
    ))
}

/// The status for an engine error.
pub fn from_engine(e: runtime::Error) -> Status {
    match e {
        runtime::Error::Rejected(r) => from_rejection(&r),
        runtime::Error::NotFound(d) => not_found(&d),
        runtime::Error::UnknownProcedure(p) => invalid(
            "procedure_code",
            format!("no procedure `{p}` is loaded by this server"),
        ),
        e @ runtime::Error::KeyReused { .. } => Status::with_error_details(
            Code::AlreadyExists,
            e.to_string(),
            ErrorDetails::with_error_info("idempotency-key-reused", ERROR_DOMAIN, HashMap::new()),
        ),
        e @ runtime::Error::BadKey(_) => invalid("idempotency_key", e.to_string()),
        e @ runtime::Error::Conflict(_) => {
            Status::aborted(format!("{e} with the same idempotency key"))
        }
        e @ runtime::Error::Definition { .. } => Status::internal(e.to_string()),
        runtime::Error::Store(e) => from_store(e),
    }
}

/// The status for a store error.
pub fn from_store(e: store::Error) -> Status {
    let msg = e.to_string();
    match e {
        store::Error::Conflict { .. } | store::Error::DuplicateKey { .. } => Status::aborted(msg),
        store::Error::Limit { .. } => Status::resource_exhausted(msg),
        store::Error::DiskFull { .. } => {
            // Retryable once an operator frees space: RetryInfo tells clients to back off.
            let mut details = ErrorDetails::new();
            details.set_error_info("disk-full", ERROR_DOMAIN, HashMap::new());
            details.set_retry_info(Some(DISK_FULL_RETRY_AFTER));
            Status::with_error_details(Code::ResourceExhausted, msg, details)
        }
        store::Error::Overloaded { .. }
        | store::Error::Closed
        | store::Error::Poisoned(_)
        | store::Error::Io(_) => Status::unavailable(msg),
        store::Error::Corrupt(_) => Status::data_loss(msg),
        store::Error::Invalid(_) | store::Error::Schema { .. } | store::Error::Backend(_) => {
            Status::internal(msg)
        }
    }
}

/// The engine's answer to a mutating bus command: its `CommandResponse`, or its error as the
/// status a gRPC call would have got.
pub fn command_response(
    reply: lienthong_proto::v1::BusReply,
) -> Result<lienthong_proto::v1::CommandResponse, Status> {
    use lienthong_proto::v1::bus_reply::Result as R;
    match reply.result {
        Some(R::Response(r)) => Ok(r),
        Some(R::Error(e)) => Err(from_bus_error(&e)),
        _ => Err(Status::internal(
            "the engine answered a command with something that is not a CommandResponse",
        )),
    }
}

/// The engine's answer to a bus read (`GetDossierRequest`): the dossier, or its error as the
/// status a gRPC call would have got.
pub fn dossier_reply(
    reply: lienthong_proto::v1::BusReply,
) -> Result<lienthong_proto::v1::Dossier, Status> {
    use lienthong_proto::v1::bus_reply::Result as R;
    match reply.result {
        Some(R::Dossier(d)) => Ok(d),
        Some(R::Error(e)) => Err(from_bus_error(&e)),
        _ => Err(Status::internal(
            "the engine answered a read with something that is not a dossier",
        )),
    }
}

/// The status a bus reply's error stands for: the same code, message and details a gRPC call to
/// the engine would have got.
pub fn from_bus_error(e: &lienthong_proto::v1::BusError) -> Status {
    Status::with_details(
        Code::from_i32(e.code),
        e.message.clone(),
        e.details.clone().into(),
    )
}

/// The status for an error of the read models (the report service). The store's own faults map
/// as in [`from_store`]; a feed that broke the fold's invariants is DATA_LOSS (the store needs
/// `lienthong verify`); views ahead of the store (it was replaced) or a working time beyond the
/// loaded calendars is FAILED_PRECONDITION; the projections' own database failing is UNAVAILABLE,
/// a damaged record or a calendar that is not loaded INTERNAL (the operator rebuilds the views or
/// loads the workflows); a query the service let through is INVALID_ARGUMENT. The message keeps
/// the projections' advice to the operator.
pub fn from_projections(e: lienthong_projections::Error) -> Status {
    use lienthong_projections::Error as E;
    let msg = e.to_string();
    match e {
        E::Store(e) => from_store(e),
        E::Db(_) => Status::unavailable(msg),
        E::Corrupt { .. } | E::UnknownCalendar(_) => Status::internal(msg),
        E::Feed { .. } => Status::data_loss(msg),
        E::AheadOfStore { .. } | E::Calendar { .. } => Status::failed_precondition(msg),
        E::Query(_) => Status::invalid_argument(msg),
    }
}

/// The status for a business rejection: mostly FAILED_PRECONDITION with the stable code; input
/// problems are INVALID_ARGUMENT, ownership problems PERMISSION_DENIED, sizes RESOURCE_EXHAUSTED.
pub fn from_rejection(r: &Rejection) -> Status {
    let code = r.code();
    let message = format!("[{code}] {r}");
    let info = || ErrorDetails::with_error_info(code, ERROR_DOMAIN, HashMap::new());
    match r {
        Rejection::NotYourStep { .. } | Rejection::NotAllowed { .. } => {
            detailed(Code::PermissionDenied, message, info())
        }
        Rejection::TooLarge { .. } => detailed(Code::ResourceExhausted, message, info()),
        Rejection::Attributes { problems, .. } => {
            let mut details = info();
            add_violations(
                &mut details,
                problems
                    .iter()
                    .map(|p| {
                        (
                            format!("attributes[{}]", p.name()),
                            format!("{} ({})", p, p.code()),
                        )
                    })
                    .collect(),
            );
            detailed(Code::InvalidArgument, message, details)
        }
        Rejection::WrongProcedure { .. } => field(message, "procedure_code", r, info()),
        Rejection::UnknownStep { .. } => field(message, "step_id", r, info()),
        Rejection::NoItems => field(message, "items", r, info()),
        Rejection::ReasonRequired { .. } => field(message, "reason", r, info()),
        _ => detailed(Code::FailedPrecondition, message, info()),
    }
}

fn field(message: String, name: &str, r: &Rejection, mut details: ErrorDetails) -> Status {
    add_violations(&mut details, vec![(name.to_string(), r.to_string())]);
    detailed(Code::InvalidArgument, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_their_codes() {
        let r = Rejection::StepNotOpen {
            dossier: "D".into(),
            step: "s".into(),
            status: "pending".into(),
        };
        let s = from_rejection(&r);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message().starts_with("[step-not-open]"),
            "{}",
            s.message()
        );
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "step-not-open");

        let r = Rejection::NotYourStep {
            step: "s".into(),
            owner: "a".into(),
            actor: "b".into(),
        };
        assert_eq!(from_rejection(&r).code(), Code::PermissionDenied);

        let r = Rejection::ReasonRequired {
            action: "refuse".into(),
        };
        let s = from_rejection(&r);
        assert_eq!(s.code(), Code::InvalidArgument);
        let bad = s.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "reason");
    }

    #[test]
    fn messages_and_details_are_bounded() {
        let name = "é".repeat(50_000);
        let s = invalid(&name, format!("`{name}` is wrong"));
        assert!(
            s.message().len() <= STATUS_MESSAGE_BYTES_MAX,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with("more bytes)"), "says it was cut");
        let bad = s.get_details_bad_request().expect("bad request");
        assert!(bad.field_violations[0].field.len() <= FIELD_TEXT_BYTES_MAX);
        let many = (0..500)
            .map(|i| (format!("f{i}"), "wrong".to_string()))
            .collect();
        let s = invalid_fields("many", many);
        let bad = s.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations.len(), FIELD_VIOLATIONS_MAX + 1);
        assert!(
            bad.field_violations[FIELD_VIOLATIONS_MAX]
                .description
                .contains("490 more")
        );
        assert_eq!(bounded("short", 10), "short");
    }

    #[test]
    fn engine_errors_map_to_their_codes() {
        let reused = runtime::Error::KeyReused {
            actor: "a".into(),
            key: "k".into(),
        };
        assert_eq!(from_engine(reused).code(), Code::AlreadyExists);
        assert_eq!(
            from_engine(runtime::Error::NotFound("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            from_engine(runtime::Error::Store(store::Error::Closed)).code(),
            Code::Unavailable
        );
        assert_eq!(
            from_engine(runtime::Error::BadKey(0)).code(),
            Code::InvalidArgument
        );
        let full = from_engine(runtime::Error::Store(store::Error::DiskFull {
            free_bytes: 1,
            min_bytes: 2,
        }));
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert_eq!(
            full.get_details_error_info().map(|i| i.reason),
            Some("disk-full".to_string())
        );
        assert_eq!(
            full.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(DISK_FULL_RETRY_AFTER)
        );
    }
}
