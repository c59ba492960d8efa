//! The HTTP listener: routes, the live stream, shutdown.
//!
//! | route | what |
//! |---|---|
//! | `GET /board` | the board page (`?lang=en`, `?agency=CODE`, `?month=YYYY-MM`, `?now=RFC3339`, `?due_soon=1wd`) |
//! | `GET /board/dossier/{code}` | one dossier's process-control slip and apology (unknown code: 404 page) |
//! | `GET /board/events`, `GET /board/dossier/{code}/events` | the same page's `<main>`, pushed as server-sent events |
//! | `GET /board/board.css`, `GET /board/board.js` | the page's style and its 40-line script (no build, no CDN) |
//! | `GET /metrics` | Prometheus text exposition ([`crate::metrics`]) |
//!
//! Read-only: there is no route that changes anything. Every page is rendered from the read
//! models under the [`ReadModels`] lock, after they caught up with the store (so a page shows
//! every acknowledged command), judged at `?now=` or else the engine's clock (a test or an
//! inquiry can look at the board as it stands at another instant, as the report service allows).
//!
//! **Live updates.** The page's script opens an `EventSource` on its `/events` twin. The stream
//! looks every [`LIVE_TICK_MS`] at the read models' checkpoint and the feed's head, and sends a
//! freshly rendered `<main>` (event `update`) when either moved, or at the latest every
//! [`LIVE_REFRESH_MS_MAX`] (time passing makes steps overdue without any event), and only when
//! the HTML changed. At most [`LIVE_STREAMS_MAX`] streams are open at once (then 503; the browser
//! retries). On shutdown every stream ends, so a graceful stop does not wait for the browsers.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query as QueryArgs, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use lienthong_engine::store::Stats;
use lienthong_gateway::ReadModels;
use lienthong_gateway::shared::Shared;
use lienthong_projections::views::Header;
use lienthong_projections::{BoardQuery, IndicatorQuery, Month};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::access::{self, Access};
use crate::html::{self, BoardView, DossierView, Query};
use crate::i18n::Lang;
use crate::metrics::{self, Snapshot};

/// How often a live stream looks for news, in milliseconds.
pub const LIVE_TICK_MS: u64 = 1_000;

/// Longest a live page goes without a fresh render, in milliseconds (time makes steps overdue).
pub const LIVE_REFRESH_MS_MAX: u64 = 15_000;

/// Live streams open at once, at most.
pub const LIVE_STREAMS_MAX: u64 = 64;

/// Distinct (route, status) pairs counted for `/metrics`; the routes are fixed, so this bounds
/// only the status codes.
const HTTP_COUNTS_MAX: usize = 256;

/// The page's style.
const CSS: &str = include_str!("../assets/board.css");

/// The page's script: follows the live stream.
const JS: &str = include_str!("../assets/board.js");

/// Why the listener could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Plaintext HTTP on a non-loopback address without `--insecure`.
    #[error(
        "the board's HTTP listener {0} is not a loopback address and has no TLS: tokens would travel in clear; serve it on 127.0.0.1 behind a TLS proxy, or give --insecure"
    )]
    Plaintext(SocketAddr),
    /// The listener failed.
    #[error("board HTTP listener: {0}")]
    Io(#[from] std::io::Error),
}

/// What the board reads.
pub struct Sources {
    /// Credentials, the backend (clock, catalog, dossier codes) and the gRPC request counts.
    pub shared: Arc<Shared>,
    /// The read models.
    pub models: ReadModels,
    /// This process's store writer counters (none where there is no store: the projections role).
    pub store_stats: Option<Box<dyn Fn() -> Stats + Send + Sync>>,
    /// Where the outbox to the bus stands (none without a bus).
    pub outbox: Option<Box<dyn Fn() -> crate::metrics::OutboxGauges + Send + Sync>>,
}

/// The listener's state, shared by the handlers.
struct AppState {
    /// What is read.
    sources: Sources,
    /// Requests without credentials are let in (a loopback listener of a server without
    /// principals; see [`crate::access`]).
    open: bool,
    /// Requests by (route, status), for `/metrics`.
    http: Mutex<BTreeMap<(String, u16), u64>>,
    /// Live streams open now.
    live: AtomicU64,
    /// Turns true on shutdown: live streams end.
    closing: watch::Receiver<bool>,
}

type St = State<Arc<AppState>>;

impl AppState {
    fn count(&self, route: &str, status: StatusCode) {
        let mut m = self.http.lock();
        let key = (route.to_string(), status.as_u16());
        if m.contains_key(&key) || m.len() < HTTP_COUNTS_MAX {
            *m.entry(key).or_insert(0) += 1;
        }
    }
}

/// Serves the board and the metrics on `listener` until `shutdown` completes. `insecure`
/// allows a non-loopback address (see [`crate::access`]).
pub async fn serve(
    listener: TcpListener,
    sources: Sources,
    insecure: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr()?;
    let loopback = addr.ip().is_loopback();
    if !loopback && !insecure {
        return Err(Error::Plaintext(addr));
    }
    // Anonymous reading only where nobody could sign in anyway: a loopback listener of a
    // server with no principals (a developer's machine). With principals, every request signs
    // in, on loopback too: a TLS proxy on the same host, or any local process, would otherwise
    // read every agency's dossiers.
    let open = loopback && sources.shared.auth.is_empty();
    if !loopback && sources.shared.auth.is_empty() {
        tracing::warn!(
            %addr,
            "the board is served on a non-loopback address and no principals are configured (--auth FILE): every request is refused"
        );
    }
    let (app, close_tx) = app(sources, open);
    tracing::info!(%addr, open, "serving the board and /metrics over HTTP");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = close_tx.send(true);
        })
        .await?;
    tracing::info!("board HTTP listener stopped");
    Ok(())
}

/// The routes over `sources`, and the signal that ends the live streams (send `true`).
/// `open`: requests without credentials are let in (see [`crate::access::authenticate`]).
/// [`serve`] uses it; tests drive it without a socket.
pub fn app(sources: Sources, open: bool) -> (Router, watch::Sender<bool>) {
    let (close_tx, closing) = watch::channel(false);
    let state = Arc::new(AppState {
        sources,
        open,
        http: Mutex::new(BTreeMap::new()),
        live: AtomicU64::new(0),
        closing,
    });
    (router(state), close_tx)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/board") }))
        .route("/board", get(board))
        .route("/board/", get(|| async { Redirect::to("/board") }))
        .route("/board/events", get(board_events))
        .route("/board/board.css", get(css))
        .route("/board/board.js", get(js))
        .route("/board/dossier/{code}", get(dossier))
        .route("/board/dossier/{code}/events", get(dossier_events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The query of a page (all optional; checked in [`parse`]).
#[derive(Debug, Default, Deserialize)]
struct Params {
    lang: Option<String>,
    now: Option<String>,
    agency: Option<String>,
    month: Option<String>,
    due_soon: Option<String>,
}

/// A refusal or failure, shown as a page.
struct Failure {
    lang: Lang,
    status: StatusCode,
    title: String,
    message: String,
}

impl Failure {
    fn new(lang: Lang, status: StatusCode, message: impl Into<String>) -> Failure {
        let title = match status {
            StatusCode::BAD_REQUEST => lang.pick("Yêu cầu không hợp lệ", "Bad request"),
            StatusCode::UNAUTHORIZED => lang.pick("Cần đăng nhập", "Sign-in needed"),
            StatusCode::FORBIDDEN => lang.pick("Không được phép", "Forbidden"),
            StatusCode::NOT_FOUND => lang.pick("Không tìm thấy", "Not found"),
            StatusCode::TOO_MANY_REQUESTS => lang.pick("Quá nhiều yêu cầu", "Too many requests"),
            StatusCode::SERVICE_UNAVAILABLE => {
                lang.pick("Tạm thời không phục vụ được", "Unavailable")
            }
            _ => lang.pick("Lỗi máy chủ", "Server error"),
        };
        Failure {
            lang,
            status,
            title: title.into(),
            message: message.into(),
        }
    }

    fn from_status(lang: Lang, s: &Status) -> Failure {
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure::new(lang, status, s.message())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = html::error_page(self.lang, self.status.as_u16(), &self.title, &self.message);
        let mut r = (self.status, html_headers(), body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"lienthong board\", charset=\"UTF-8\""),
            );
        }
        r
    }
}

fn html_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

/// A parsed page request: who, what, judged when.
struct Ask {
    access: Access,
    query: Query,
    /// `?now=`, else `None` (the engine's clock at each render).
    now: Option<DateTime<Utc>>,
    month: Option<Month>,
    agency: Option<String>,
    due_soon: lienthong_calendar::Duration,
}

fn parse(state: &AppState, headers: &HeaderMap, p: Params) -> Result<Ask, Failure> {
    let lang = Lang::parse(p.lang.as_deref().unwrap_or(""))
        .map_err(|e| Failure::new(Lang::Vi, StatusCode::BAD_REQUEST, e))?;
    let bad = |m: String| Failure::new(lang, StatusCode::BAD_REQUEST, m);
    let access = access::authenticate(&state.sources.shared, headers, state.open)
        .map_err(|s| Failure::from_status(lang, &s))?;
    let now = match p.now.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    bad(format!(
                        "now `{t}` is not an RFC 3339 instant, e.g. 2026-12-07T10:00:00+07:00"
                    ))
                })?
                .with_timezone(&Utc),
        ),
    };
    let month = match p.month.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(m) => Some(m.parse::<Month>().map_err(|e| bad(e.to_string()))?),
    };
    let due_soon = match p.due_soon.as_deref().filter(|s| !s.is_empty()) {
        None => BoardQuery::default().due_soon,
        Some(d) => d
            .parse()
            .map_err(|e: lienthong_calendar::duration::Error| bad(format!("due_soon: {e}")))?,
    };
    let agency = access
        .agency(
            p.agency.as_deref().unwrap_or(""),
            state.sources.shared.backend.catalog(),
        )
        .map_err(|s| Failure::from_status(lang, &s))?;
    Ok(Ask {
        query: Query {
            lang,
            now: p.now.filter(|s| !s.is_empty()),
            agency: p.agency.filter(|s| !s.is_empty()),
            month: p.month.filter(|s| !s.is_empty()),
        },
        access,
        now,
        month,
        agency,
        due_soon,
    })
}

/// Renders the board for `ask`: (whole page, live fragment).
async fn render_board(state: &AppState, ask: &Ask) -> Result<(String, String), Failure> {
    let lang = ask.query.lang;
    let now = ask
        .now
        .unwrap_or_else(|| state.sources.shared.backend.now());
    let q = BoardQuery {
        agency: ask.agency.clone(),
        due_soon: ask.due_soon,
    };
    let month = ask.month;
    let (board, indicators, month) = state
        .sources
        .models
        .read(move |p| {
            let month = match month {
                Some(m) => m,
                None => now
                    .with_timezone(&p.display_tz())
                    .format("%Y-%m")
                    .to_string()
                    .parse()?,
            };
            let board = p.board(now, &q)?;
            let indicators = p.indicators(&IndicatorQuery {
                agency: q.agency.clone(),
                month: Some(month),
            })?;
            Ok((board, indicators, month))
        })
        .await
        .map_err(|s| Failure::from_status(lang, &s))?;
    let view = BoardView {
        query: &ask.query,
        board: &board,
        indicators: &indicators,
        month,
        catalog: state.sources.shared.backend.catalog(),
    };
    Ok((html::board_page(&view), html::board_fragment(&view)))
}

/// Renders one dossier for `ask`: (whole page, live fragment).
async fn render_dossier(
    state: &AppState,
    ask: &Ask,
    code: &str,
) -> Result<(String, String), Failure> {
    let lang = ask.query.lang;
    let unknown = || {
        Failure::new(
            lang,
            StatusCode::NOT_FOUND,
            format!(
                "{} `{code}`",
                lang.pick("Không có hồ sơ mã", "There is no dossier with the code")
            ),
        )
    };
    let id = state
        .sources
        .shared
        .backend
        .dossier_by_code(code)
        .map_err(|e| {
            Failure::new(
                lang,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot look the code up: {e}"),
            )
        })?
        .ok_or_else(unknown)?;
    let now = ask
        .now
        .unwrap_or_else(|| state.sources.shared.backend.now());
    let (timeline, header) = state
        .sources
        .models
        .read(move |p| {
            let header = Header {
                report: "timeline".into(),
                now: Some(now.with_timezone(&p.display_tz()).fixed_offset()),
                lag: p.lag()?,
                agency: None,
                month: None,
                truncated: false,
            };
            Ok((p.timeline(&id.0, now)?, header))
        })
        .await
        .map_err(|s| Failure::from_status(lang, &s))?;
    let dossier = timeline.ok_or_else(unknown)?;
    // A dossier the caller may not read is answered as one that does not exist: a 403 would
    // tell an agency which codes (sequential per desk and day) other agencies hold.
    if !ask.access.may_see(&dossier) {
        return Err(unknown());
    }
    let view = DossierView {
        query: &ask.query,
        dossier: &dossier,
        header: &header,
        catalog: state.sources.shared.backend.catalog(),
    };
    Ok((html::dossier_page(&view), html::dossier_fragment(&view)))
}

fn page(state: &AppState, route: &str, result: Result<String, Failure>) -> Response {
    let response = match result {
        Ok(body) => (StatusCode::OK, html_headers(), body).into_response(),
        Err(f) => f.into_response(),
    };
    state.count(route, response.status());
    response
}

async fn board(State(state): St, headers: HeaderMap, QueryArgs(p): QueryArgs<Params>) -> Response {
    let result = match parse(&state, &headers, p) {
        Ok(ask) => render_board(&state, &ask).await.map(|(page, _)| page),
        Err(f) => Err(f),
    };
    page(&state, "/board", result)
}

async fn dossier(
    State(state): St,
    Path(code): Path<String>,
    headers: HeaderMap,
    QueryArgs(p): QueryArgs<Params>,
) -> Response {
    let result = match parse(&state, &headers, p) {
        Ok(ask) => render_dossier(&state, &ask, &code)
            .await
            .map(|(page, _)| page),
        Err(f) => Err(f),
    };
    page(&state, "/board/dossier/{code}", result)
}

/// What a live stream follows.
enum Follow {
    Board,
    Dossier(String),
}

/// Decrements the live-stream gauge when a stream ends or its browser goes away.
struct LiveGuard(Arc<AppState>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One live stream's state between two events.
struct Live {
    guard: LiveGuard,
    ask: Ask,
    follow: Follow,
    /// (checkpoint, head) at the last render.
    seen: Option<(u64, u64)>,
    last_render: Instant,
    last_html: String,
    closing: watch::Receiver<bool>,
}

async fn live(
    state: Arc<AppState>,
    route: &str,
    ask: Result<Ask, Failure>,
    follow: Follow,
) -> Response {
    let ask = match ask {
        Ok(a) => a,
        Err(f) => {
            let r = f.into_response();
            state.count(route, r.status());
            return r;
        }
    };
    // The page must render before a stream is granted: a stream of a dossier that does not
    // exist, or that the caller may not read, would hold one of the few slots forever while
    // sending nothing.
    let first_render = match &follow {
        Follow::Board => render_board(&state, &ask).await,
        Follow::Dossier(code) => render_dossier(&state, &ask, code).await,
    };
    match first_render {
        Ok(_) => {}
        Err(f) => {
            let r = f.into_response();
            state.count(route, r.status());
            return r;
        }
    }
    if state.live.fetch_add(1, Ordering::Relaxed) >= LIVE_STREAMS_MAX {
        state.live.fetch_sub(1, Ordering::Relaxed);
        let r = Failure::new(
            ask.query.lang,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{LIVE_STREAMS_MAX} live pages are open already; retry later"),
        )
        .into_response();
        state.count(route, r.status());
        return r;
    }
    state.count(route, StatusCode::OK);
    let first = Live {
        guard: LiveGuard(state.clone()),
        ask,
        follow,
        seen: None,
        last_render: Instant::now(),
        last_html: String::new(),
        closing: state.closing.clone(),
    };
    let stream = futures_util::stream::unfold(first, |mut l| async move {
        loop {
            if *l.closing.borrow() {
                return None;
            }
            tokio::select! {
                _ = l.closing.changed() => return None,
                _ = tokio::time::sleep(Duration::from_millis(LIVE_TICK_MS)) => {}
            }
            let state = l.guard.0.clone();
            let projections = state.sources.models.projections().clone();
            let positions = tokio::task::spawn_blocking(move || {
                projections.lag().map(|g| (g.checkpoint, g.head))
            })
            .await
            .ok()
            .and_then(Result::ok);
            let stale = l.last_render.elapsed() >= Duration::from_millis(LIVE_REFRESH_MS_MAX);
            if positions.is_some() && positions == l.seen && !stale {
                continue;
            }
            l.seen = positions;
            l.last_render = Instant::now();
            let rendered = match &l.follow {
                Follow::Board => render_board(&state, &l.ask).await,
                Follow::Dossier(code) => render_dossier(&state, &l.ask, code).await,
            };
            let fragment = match rendered {
                Ok((_, fragment)) => fragment,
                Err(f) => {
                    tracing::debug!(status = %f.status, message = %f.message, "live page not rendered");
                    continue;
                }
            };
            if fragment == l.last_html {
                continue;
            }
            l.last_html = fragment.clone();
            let event = Event::default().event("update").data(fragment);
            return Some((Ok::<Event, std::convert::Infallible>(event), l));
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn board_events(
    State(state): St,
    headers: HeaderMap,
    QueryArgs(p): QueryArgs<Params>,
) -> Response {
    let ask = parse(&state, &headers, p);
    live(state, "/board/events", ask, Follow::Board).await
}

async fn dossier_events(
    State(state): St,
    Path(code): Path<String>,
    headers: HeaderMap,
    QueryArgs(p): QueryArgs<Params>,
) -> Response {
    let ask = parse(&state, &headers, p);
    live(
        state,
        "/board/dossier/{code}/events",
        ask,
        Follow::Dossier(code),
    )
    .await
}

/// A static asset of the page, counted under its own route.
fn asset(
    state: &AppState,
    route: &str,
    content_type: &'static str,
    body: &'static str,
) -> Response {
    state.count(route, StatusCode::OK);
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn css(State(state): St) -> Response {
    asset(&state, "/board/board.css", "text/css; charset=utf-8", CSS)
}

async fn js(State(state): St) -> Response {
    asset(
        &state,
        "/board/board.js",
        "text/javascript; charset=utf-8",
        JS,
    )
}

async fn metrics(State(state): St, headers: HeaderMap) -> Response {
    let response = match metrics_text(&state, &headers).await {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(f) => f.into_response(),
    };
    state.count("/metrics", response.status());
    response
}

async fn metrics_text(state: &AppState, headers: &HeaderMap) -> Result<String, Failure> {
    let lang = Lang::En;
    let access = access::authenticate(&state.sources.shared, headers, state.open)
        .map_err(|s| Failure::from_status(lang, &s))?;
    if !access.reads_everything() {
        return Err(Failure::new(
            lang,
            StatusCode::FORBIDDEN,
            format!(
                "`{}` may not read /metrics: it spans every agency (auditor or admin only)",
                access.who()
            ),
        ));
    }
    let now = state.sources.shared.backend.now();
    let (board, lag) = state
        .sources
        .models
        .read(move |p| Ok((p.board(now, &BoardQuery::default())?, p.lag()?)))
        .await
        .map_err(|s| Failure::from_status(lang, &s))?;
    let snapshot = Snapshot {
        store: state.sources.store_stats.as_ref().map(|f| f()),
        outbox: state.sources.outbox.as_ref().map(|f| f()),
        checkpoint: lag.checkpoint,
        head: lag.head,
        board: Some(board),
        grpc_requests: state.sources.shared.requests.snapshot(),
        grpc_streams_open: state.sources.shared.streams_open() as u64,
        http_requests: state.http.lock().clone(),
        live_streams: state.live.load(Ordering::Relaxed),
    };
    Ok(metrics::render(&snapshot))
}

async fn not_found(State(state): St) -> Response {
    state.count("unmatched", StatusCode::NOT_FOUND);
    Failure::new(
        Lang::Vi,
        StatusCode::NOT_FOUND,
        "Không có trang này / no such page: see /board and /metrics",
    )
    .into_response()
}
