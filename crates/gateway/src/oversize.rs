//! Over-size requests answer RESOURCE_EXHAUSTED, as the gRPC status-code guide says and other
//! gRPC implementations do.
//!
//! tonic refuses a request larger than `max_decoding_message_size` itself, before any handler
//! runs, but reports it as OUT_OF_RANGE. This layer, wrapped around every service, rewrites exactly
//! that answer (status OUT_OF_RANGE in the response headers with tonic's "decoded message length
//! too large" message) into RESOURCE_EXHAUSTED naming the configured limit `message_bytes_max`.
//! Nothing else passes through it changed.

use tonic::{Code, Status};
use tower::util::MapResponseLayer;

/// The text tonic's decoder puts in its over-size error.
const TONIC_TOO_LARGE: &str = "decoded message length too large";

/// A response as the tonic server produces it.
type Response = http::Response<tonic::body::Body>;

/// The layer, for a server whose limit is `message_bytes_max`.
pub fn layer(message_bytes_max: usize) -> MapResponseLayer<impl Fn(Response) -> Response + Clone> {
    MapResponseLayer::new(move |r| rewrite(r, message_bytes_max))
}

/// Rewrites tonic's over-size answer; passes every other response through.
fn rewrite(mut response: Response, message_bytes_max: usize) -> Response {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != Code::OutOfRange || !status.message().contains(TONIC_TOO_LARGE) {
        return response;
    }
    let exhausted = Status::resource_exhausted(format!(
        "message_bytes_max: the request is larger than {message_bytes_max} bytes, the limit of this server's configuration (documents travel by reference, not inline) [{}]",
        status.message()
    ));
    if let Err(e) = exhausted.add_header(response.headers_mut()) {
        tracing::warn!(error = %e, "could not rewrite an over-size status");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oversize_answer_is_rewritten() {
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

        let other = Status::out_of_range("page 7 of 3");
        let r = rewrite(other.into_http(), 4096);
        let s = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(s.code(), Code::OutOfRange, "other statuses pass through");

        let ok = http::Response::new(tonic::body::Body::empty());
        assert!(Status::from_header_map(rewrite(ok, 4096).headers()).is_none());
    }
}
