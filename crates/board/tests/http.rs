//! The board's HTTP routes over a real engine, store and read models, driven without a socket
//! (`lienthong_board::app` and tower's `oneshot`): who is let in, what is refused and how.
//!
//! What it proves: where credentials are required (`open = false`: any server with principals,
//! on loopback too) a request without them is 401 with a Basic challenge (so a browser prompts),
//! a wrong token is 401, the gateway's tokens work as Bearer and as Basic passwords, an agency
//! reads only its own agency (another is 403) and not `/metrics` (403), an auditor reads both;
//! on an open board (`open = true`: loopback, no principals) no credentials are needed from a
//! loopback host name, any other host is 403, and a wrong token is still refused; an unknown
//! dossier is a 404 page; bad query values are 400 pages that say what to write.

use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lienthong_engine::runtime::{Engine, ManualClock};
use lienthong_engine::store::SledStore;
use lienthong_gateway::auth::{Authenticator, token_hash_hex};
use lienthong_gateway::shared::Shared;
use lienthong_gateway::{Limits, ReadModels};
use lienthong_projections::{FeedSource, Projections};
use lienthong_workflow::Catalog;
use tower::ServiceExt;

/// The sources of one app, and the directory that holds their databases.
struct Fixture {
    _dir: tempfile::TempDir,
    sources: Option<lienthong_board::Sources>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let workflows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let catalog = Arc::new(Catalog::load(&workflows).expect("the project's workflows load"));
    let store = Arc::new(SledStore::open(&dir.path().join("store")).expect("store"));
    let feed: Arc<dyn FeedSource> = store.clone();
    let projections =
        Projections::open(&dir.path().join("projections"), feed, catalog.clone()).expect("views");
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-03-02T09:00:00+07:00")
        .expect("instant")
        .with_timezone(&Utc);
    let engine = Engine::new(store.clone(), catalog, Arc::new(ManualClock::new(start)));
    let auth = Authenticator::from_toml(
        &format!(
            "[[principal]]\nid = \"tp\"\nagency = \"tu-phap\"\nrole = \"agency\"\ntoken_sha256 = \"{}\"\n\n\
             [[principal]]\nid = \"audit\"\nagency = \"kiem-toan\"\nrole = \"auditor\"\ntoken_sha256 = \"{}\"\n",
            token_hash_hex("tok-tu-phap"),
            token_hash_hex("tok-auditor")
        ),
        "test",
    )
    .expect("auth");
    let sources = lienthong_board::Sources {
        shared: Shared::new(engine, auth, Limits::default()),
        models: ReadModels::new(Arc::new(projections)),
        store_stats: Some(Box::new(move || store.stats())),
        outbox: None,
    };
    Fixture {
        _dir: dir,
        sources: Some(sources),
    }
}

/// GET `path` on a fresh app (`open`: requests without credentials are let in) with an
/// optional `Authorization`, for the host `127.0.0.1:8080`.
async fn get(
    open: bool,
    path: &str,
    auth: Option<String>,
) -> (StatusCode, http::HeaderMap, String) {
    get_from(open, "127.0.0.1:8080", path, auth).await
}

/// [`get`] naming `host` in the request.
async fn get_from(
    open: bool,
    host: &str,
    path: &str,
    auth: Option<String>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut f = fixture();
    let sources = f.sources.take().expect("sources");
    let (app, _close) = lienthong_board::app(sources, open);
    let mut req = Request::get(path).header("host", host);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("answered");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("giam-sat:{token}"))
    )
}

#[tokio::test]
async fn off_loopback_every_request_needs_the_gateways_credentials() {
    let (status, headers, body) = get(false, "/board", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    assert!(body.contains("Cần đăng nhập"), "{body}");

    let (status, _, body) = get(false, "/board", Some(basic("not-a-token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("not-a-token"), "a token is never echoed");

    let (status, _, body) = get(false, "/board", Some(basic("tok-auditor"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<html lang=\"vi\">"), "{body}");

    let (status, _, body) = get(false, "/board?lang=en", Some("Bearer tok-tu-phap".into())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An agency's board is its own agency's: one summary row, its own.
    assert_eq!(body.matches("<tr data-agency=").count(), 1, "{body}");
    assert!(body.contains("<tr data-agency=\"tu-phap\">"), "{body}");

    let (status, _, body) = get(false, "/board?agency=bhxh", Some(basic("tok-tu-phap"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("tu-phap"), "{body}");

    let (status, _, body) = get(false, "/metrics", Some(basic("tok-tu-phap"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, headers, body) = get(false, "/metrics", Some("Bearer tok-auditor".into())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        body.contains("# TYPE lienthong_projections_lag_events gauge"),
        "{body}"
    );
    assert!(
        body.contains("lienthong_commands_executed_total 0"),
        "{body}"
    );
}

/// An open board (a loopback listener of a server without principals) lets requests without
/// credentials in, only when they name a loopback host (a page loaded from elsewhere cannot
/// reach it by DNS rebinding), and still refuses wrong credentials.
#[tokio::test]
async fn an_open_board_needs_no_credentials_but_a_loopback_host() {
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
        "LOCALHOST",
    ] {
        let (status, _, body) = get_from(true, host, "/board", None).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    for host in ["evil.example:8080", "127.0.0.1.evil.example", ""] {
        let (status, _, body) = get_from(true, host, "/board", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {body}");
    }
    let (status, _, body) = get(true, "/board", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Every agency of the workflows has its summary row.
    assert!(body.matches("<tr data-agency=").count() >= 4, "{body}");
    let (status, _, _) = get(true, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(true, "/board", Some(basic("wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_requests_get_pages_that_say_what_is_wrong() {
    let cases = [
        (
            "/board/dossier/UBND.XA-260302-0001",
            StatusCode::NOT_FOUND,
            "Không có hồ sơ mã",
        ),
        (
            "/board/dossier/X?lang=en",
            StatusCode::NOT_FOUND,
            "There is no dossier with the code `X`",
        ),
        ("/board?now=monday", StatusCode::BAD_REQUEST, "RFC 3339"),
        ("/board?month=2026-13", StatusCode::BAD_REQUEST, "YYYY-MM"),
        ("/board?due_soon=soon", StatusCode::BAD_REQUEST, "due_soon"),
        ("/board?lang=fr", StatusCode::BAD_REQUEST, "vi or en"),
        ("/board?agency=no-such", StatusCode::BAD_REQUEST, "no-such"),
        ("/nowhere", StatusCode::NOT_FOUND, "/board"),
        // A live stream is granted only to a page that renders: none holds a slot for nothing.
        (
            "/board/dossier/UBND.XA-260302-0001/events",
            StatusCode::NOT_FOUND,
            "Không có hồ sơ mã",
        ),
        (
            "/board/events?now=monday",
            StatusCode::BAD_REQUEST,
            "RFC 3339",
        ),
    ];
    for (path, want, says) in cases {
        let (status, headers, body) = get(true, path, None).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(body.contains(says), "{path}: `{says}` not in\n{body}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
    }
}
