//! The live SLA board of `lienthong serve` (`--http`), in a real headless Chromium.
//!
//! What it proves: the real binary serves `/board` and `/metrics` on the address it prints; a
//! dossier submitted over gRPC and judged at an instant past its first step's due is on the
//! board as overdue, by the same working time the gRPC report service gives; a browser
//! (Debian's `/usr/bin/chromium` driven by Selenium through `/usr/bin/chromedriver`, script
//! `tests/browser/board_check.py`) loads the page with no console error, sees that dossier,
//! sees a second dossier appear WITHOUT a reload (the server-sent events), opens the first one's
//! process-control slip, fits a laptop screen and switches to English; bad requests get clear
//! error pages (unknown dossier 404, bad `now` 400); and the server still stops at once on
//! SIGTERM with a live stream open. Screenshots are kept in `target/test-artefacts/`
//! (`board.png`, `dossier.png`, `board-laptop.png`).
//!
//! How the dossier becomes overdue: exactly as the report service allows any caller, the board
//! is asked at `?now=` two weeks after the submission (the projections' queries take `now`; the
//! engine, its deadlines and the read models are the real ones, untouched).
//!
//! `bad_http_settings_are_refused_before_serving`: `--http` errors (bad address, off loopback
//! without `--insecure`, a role without read models, a bad settings file) stop `serve` at once.
//!
//! Chromium, chromedriver and the Python venv come from `scripts/chromium.sh` and
//! `scripts/python-env.sh` (both run by `scripts/test.sh`); a missing one fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_e2e::{Serving, bearer, birth, python, repo_root};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use lienthong_proto::v1::report_service_client::ReportServiceClient;
use serde_json::Value;

/// The longest the browser check may run before the test kills it.
const BROWSER_RUN_S_MAX: u64 = 240;
/// How long the server may take to stop on SIGTERM (with a live stream open).
const SERVE_STOP_MS_MAX: u64 = 15_000;

/// Where the screenshots go: `$CARGO_TARGET_DIR/test-artefacts`, else `target/test-artefacts`.
fn artefacts() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("test-artefacts")
}

/// The auditor's development credential (examples/auth.toml).
const AUDITOR: Option<&str> = Some("Bearer dev-auditor");

fn get(addr: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
    lienthong_e2e::http_get(addr, path, auth)
}

async fn submit(addr: &str, key: &str) -> String {
    let mut client = DossierServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    client
        .submit(bearer("dev-desk", birth(key)))
        .await
        .expect("submitted")
        .into_inner()
        .dossier_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_shows_an_overdue_dossier_live_in_chromium() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Serving::start(dir.path());
    let http = server
        .http_addr
        .clone()
        .unwrap_or_else(|| panic!("serve printed no board address:\n{}", server.log_tail()));
    let code = submit(&server.addr, "board-e2e-1").await;

    // Two weeks on, the first step (1wd with justice) is overdue: the report service says by
    // how much, and the board must say the same.
    let now = (chrono::Utc::now() + chrono::TimeDelta::days(14))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut reports = ReportServiceClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connects");
    let board = reports
        .board(bearer(
            "dev-auditor",
            pb::BoardRequest {
                now: Some(prost_types_timestamp(&now)),
                ..Default::default()
            },
        ))
        .await
        .expect("board")
        .into_inner();
    let step = board
        .steps
        .iter()
        .find(|s| s.dossier_code == code)
        .unwrap_or_else(|| panic!("{code} not on the gRPC board: {board:?}"));
    assert_eq!(step.state, pb::BoardState::Overdue as i32, "{step:?}");
    assert!(!step.overdue.is_empty(), "{step:?}");

    // Plain HTTP first: the page, its errors, the metrics. The server has principals, so even
    // on loopback every request signs in (here as the auditor).
    let query = format!("now={now}");
    let (status, head, page) = get(&http, &format!("/board?{query}"), None);
    assert_eq!(status, 401, "no credentials, no board:\n{head}\n{page}");
    let (status, head, page) = get(&http, &format!("/board?{query}"), AUDITOR);
    assert_eq!(status, 200, "{head}\n{page}");
    assert!(head.contains("text/html; charset=utf-8"), "{head}");
    let row = page
        .lines()
        .find(|l| l.contains("<tr class=\"overdue\"") && l.contains(&code))
        .unwrap_or_else(|| panic!("no overdue row for {code}:\n{page}"));
    assert!(
        row.contains(&format!("<td class=\"n\">{}</td>", step.overdue)),
        "the board says another overdue time than the report service ({}):\n{row}",
        step.overdue
    );
    let (status, _, page404) = get(&http, "/board/dossier/UBND.XA-000000-9999", AUDITOR);
    assert_eq!(status, 404, "{page404}");
    assert!(page404.contains("Không có hồ sơ mã"), "{page404}");
    let (status, _, bad) = get(&http, "/board?now=yesterday", AUDITOR);
    assert_eq!(status, 400, "{bad}");
    assert!(bad.contains("RFC 3339"), "{bad}");
    let (status, _, bad) = get(&http, "/board?agency=no-such-agency", AUDITOR);
    assert_eq!(status, 400, "{bad}");
    let (status, head, metrics) = get(&http, "/metrics", AUDITOR);
    assert_eq!(status, 200, "{metrics}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for line in [
        "lienthong_commands_executed_total 1",
        "lienthong_grpc_requests_total{method=\"/lienthong.v1.DossierService/Submit\"} 1",
        "lienthong_open_steps{agency=\"tu-phap\",state=\"overdue\"} 0",
        "lienthong_http_requests_total{route=\"/board/dossier/{code}\",code=\"404\"} 1",
        "lienthong_projections_lag_events 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }

    // The browser.
    let out_dir = artefacts();
    let _ = std::fs::remove_file(out_dir.join("board.png"));
    let mut browser = Command::new(python())
        .arg("tests/browser/board_check.py")
        .args(["--board", &format!("http://{http}/board?{query}")])
        .args(["--dossier", &code])
        .args(["--token", "dev-auditor"])
        .arg("--artefacts")
        .arg(&out_dir)
        .current_dir(repo_root())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the browser check: {e}"));
    let started = Instant::now();
    let stderr = browser.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = browser.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("browser: {line}");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    // The next JSON line, or the check's stderr when it ended (or hung) without one.
    let mut err_reader = Some(err_reader);
    let mut next = |what: &str, browser: &mut std::process::Child| {
        let left = Duration::from_secs(BROWSER_RUN_S_MAX).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(v) => v,
            Err(e) => {
                let _ = browser.kill();
                let _ = browser.wait();
                let err = err_reader
                    .take()
                    .and_then(|r| r.join().ok())
                    .unwrap_or_default();
                panic!("no {what} from the browser check ({e}); its stderr:\n{err}");
            }
        }
    };
    let first = next("first line", &mut browser);
    assert_eq!(
        first["event"], "loaded",
        "the browser check failed before the live step: {first:#}"
    );
    // The second dossier, submitted while the page is open.
    let fresh = submit(&server.addr, "board-e2e-2").await;
    let mut stdin = browser.stdin.take().expect("stdin");
    writeln!(stdin, "{}", serde_json::json!({ "expect": fresh })).expect("tell the browser");
    drop(stdin);
    let verdict = next("verdict", &mut browser);
    let status = browser.wait().expect("browser check ran");
    let err = err_reader
        .take()
        .and_then(|r| r.join().ok())
        .unwrap_or_default();
    assert!(
        verdict["ok"] == true && status.success(),
        "the browser check failed: {verdict:#}\n--- its stderr:\n{err}\n--- server log:\n{}",
        server.log_tail()
    );
    for shot in ["board.png", "dossier.png", "board-laptop.png"] {
        let len = std::fs::metadata(out_dir.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes");
    }

    // A live stream open at shutdown ends with the server: SIGTERM still stops it at once.
    let mut live = TcpStream::connect(&http).expect("connect");
    write!(
        live,
        "GET /board/events?{query} HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer dev-auditor\r\n\r\n"
    )
    .expect("send");
    let mut head = [0u8; 12];
    live.read_exact(&mut head).expect("stream answered");
    assert_eq!(&head, b"HTTP/1.1 200", "live stream");
    let status = server.stop(SERVE_STOP_MS_MAX);
    assert!(status.success(), "serve exit status {status:?}");
}

/// An RFC 3339 instant for the wire.
fn prost_types_timestamp(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("instant");
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// `--http` is checked before anything starts: a bad address, a plaintext listener off loopback
/// without `--insecure`, and a board asked of a role that holds no read models are refused with
/// a message that says what to do (also from the settings file); `--http off` is accepted.
#[test]
fn bad_http_settings_are_refused_before_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--http", "localhost-8080"],
            "is not an address like 127.0.0.1:8080",
        ),
        (&["--http", "0.0.0.0:8080"], "give --insecure"),
        (
            &[
                "--role",
                "engine",
                "--nats",
                "nats://127.0.0.1:9",
                "--http",
                "127.0.0.1:0",
            ],
            "the board needs the read models",
        ),
        (
            &[
                "--role",
                "gateway",
                "--nats",
                "nats://127.0.0.1:9",
                "--http",
                "127.0.0.1:0",
            ],
            "the board needs the read models",
        ),
    ];
    for (extra, says) in cases {
        let out = lienthong_e2e::run(&[&["serve", "--data", &data][..], extra].concat());
        let err = lienthong_e2e::stderr(&out);
        assert!(!out.status.success(), "{extra:?} was accepted: {err}");
        assert!(err.contains(says), "{extra:?}: `{says}` not in {err}");
    }
    let settings = dir.path().join("lienthong.toml");
    std::fs::write(&settings, "[serve]\nhttp = \"everywhere\"\n").expect("write settings");
    let out = lienthong_e2e::run(&[
        "serve",
        "--data",
        &data,
        "--config",
        &settings.display().to_string(),
    ]);
    let err = lienthong_e2e::stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("lienthong.toml: http: `everywhere` is not an address"),
        "{err}"
    );
    // `off` with a role that has no board is fine: it gets as far as the bus (absent here).
    let out = lienthong_e2e::run(&[
        "serve",
        "--data",
        &data,
        "--role",
        "engine",
        "--nats",
        "nats://127.0.0.1:9",
        "--http",
        "off",
    ]);
    let err = lienthong_e2e::stderr(&out);
    assert!(!out.status.success(), "no bus at port 9: {err}");
    assert!(!err.contains("--http"), "{err}");
}
