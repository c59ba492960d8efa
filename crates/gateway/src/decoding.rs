//! tonic's own refusals of a request it could not decode, brought in line with the gateway's
//! error map ([`status::from_decoder`](crate::status::from_decoder) decides the codes).
//!
//! tonic refuses some requests itself, before any handler runs, with codes that blame the server
//! or name the wrong thing: a request larger than `max_decoding_message_size` is OUT_OF_RANGE,
//! and a request whose protobuf does not decode (a string field that is not UTF-8, a truncated
//! field, a wrong wire type) is INTERNAL. This layer, wrapped around every service, looks at the
//! status in each response's headers (where tonic puts such a refusal) and rewrites exactly those
//! answers: RESOURCE_EXHAUSTED naming `message_bytes_max`, and INVALID_ARGUMENT naming the field.
//! Nothing else passes through it changed.

use tonic::Status;
use tower::util::MapResponseLayer;

use crate::status;

/// A response as the tonic server produces it.
type Response = http::Response<tonic::body::Body>;

/// The layer, for a server whose limit is `message_bytes_max`.
pub fn layer(message_bytes_max: usize) -> MapResponseLayer<impl Fn(Response) -> Response + Clone> {
    MapResponseLayer::new(move |r| rewrite(r, message_bytes_max))
}

/// Rewrites tonic's decoder refusals; passes every other response through.
fn rewrite(mut response: Response, message_bytes_max: usize) -> Response {
    let Some(tonic_says) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let Some(ours) = status::from_decoder(&tonic_says, message_bytes_max) else {
        return response;
    };
    // The details header of tonic's answer (none) must not outlive its status.
    response.headers_mut().remove("grpc-status-details-bin");
    if let Err(e) = ours.add_header(response.headers_mut()) {
        tracing::warn!(error = %e, "could not rewrite a decoder refusal");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn only_the_decoder_refusals_are_rewritten() {
        let tonic_says = Status::out_of_range(
            "Error, decoded message length too large: found 8525 bytes, the limit is: 4096 bytes",
        );
        let r = rewrite(tonic_says.into_http(), 4096);
        let s = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().starts_with("message_bytes_max:"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("8525 bytes"), "{}", s.message());

        let tonic_says = Status::internal(
            "failed to decode Protobuf message: Applicant.full_name: SubmitRequest.applicant: invalid string value: data is not UTF-8 encoded",
        );
        let r = rewrite(tonic_says.into_http(), 4096);
        let s = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        let bad = s.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "applicant.full_name");

        let other = Status::out_of_range("page 7 of 3");
        let r = rewrite(other.into_http(), 4096);
        let s = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(s.code(), Code::OutOfRange, "other statuses pass through");
        let bug = Status::internal("a missing definition");
        let r = rewrite(bug.into_http(), 4096);
        let s = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(s.code(), Code::Internal, "other statuses pass through");

        let ok = http::Response::new(tonic::body::Body::empty());
        assert!(Status::from_header_map(rewrite(ok, 4096).headers()).is_none());
    }
}
