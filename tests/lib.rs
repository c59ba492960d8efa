//! Helpers for the end-to-end tests: find the `lienthong` binary and run it as a separate process.
//!
//! The binary is the one cargo built for this workspace (`target/<profile>/lienthong`, next to the
//! test executable's `deps/` folder). `scripts/test.sh` builds it before running the tests; a
//! missing binary is a test failure with that instruction, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the built `lienthong` binary.
pub fn lienthong_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LIENTHONG_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("lienthong");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build --bin lienthong` (scripts/test.sh does), or set LIENTHONG_BIN",
        bin.display()
    );
    bin
}

/// The repository's root (where `workflows/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Python interpreter of the tests that run Python (the integrator example, the browser
/// check): `.tools/venv/bin/python`, made by `scripts/python-env.sh` (which `scripts/test.sh`
/// runs first) with `examples/python/requirements.txt` and `tests/browser/requirements.txt`;
/// `LIENTHONG_PYTHON` names another interpreter that has them. Missing: the test fails, with
/// that instruction.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LIENTHONG_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".tools/venv/bin/python");
    assert!(
        venv.exists(),
        "{} not found: run scripts/python-env.sh (scripts/test.sh does) to install the pinned \
         packages of examples/python/requirements.txt and tests/browser/requirements.txt into \
         .tools/venv, or set LIENTHONG_PYTHON to an interpreter that has them",
        venv.display()
    );
    venv
}

/// Runs `lienthong ARGS` from the repository root and returns its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(lienthong_bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run lienthong")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lines of a served process's stderr kept for failure messages (the most recent ones).
pub const SERVE_LOG_LINES_MAX: usize = 200;

/// A running `lienthong serve`: killed on `Drop` if the test did not stop it.
pub struct Serving {
    /// The server process.
    pub child: std::process::Child,
    /// The address it printed (`host:port`), with the port the OS picked.
    pub addr: String,
    /// The board's HTTP address it printed (`host:port`), if it serves one.
    pub http_addr: Option<String>,
    /// The last [`SERVE_LOG_LINES_MAX`] lines of its stderr, for failure messages.
    log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl Serving {
    /// Starts `lienthong serve --grpc 127.0.0.1:0 --http 127.0.0.1:0 --auth examples/auth.toml
    /// --data DATA` from the repository root and waits for the line that names the address it
    /// listens on (and, before it, the board's).
    pub fn start(data: &Path) -> Serving {
        Self::start_with(data, &[])
    }

    /// [`Serving::start`] with more arguments (a role, `--nats URL`, ...). Unless `extra` sets
    /// `--http`, the board listens on a free loopback port (`--http off` for the roles that hold
    /// no read models), so that servers started side by side never fight over 8080.
    pub fn start_with(data: &Path, extra: &[&str]) -> Serving {
        use std::io::{BufRead, BufReader};
        let role = extra
            .iter()
            .position(|a| *a == "--role")
            .and_then(|i| extra.get(i + 1));
        let http: &[&str] = if extra.contains(&"--http") {
            &[]
        } else if matches!(role, Some(&"engine") | Some(&"gateway")) {
            &["--http", "off"]
        } else {
            &["--http", "127.0.0.1:0"]
        };
        let mut child = Command::new(lienthong_bin())
            .args([
                "serve",
                "--grpc",
                "127.0.0.1:0",
                "--auth",
                "examples/auth.toml",
                "--data",
            ])
            .arg(data)
            .args(http)
            .args(extra)
            .current_dir(repo_root())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn lienthong serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let mut http_addr = None;
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "lienthong serve exited before printing its address:\n{}",
                    seen.join("\n")
                );
            };
            let line = line.expect("stderr line");
            if let Some(rest) = line.strip_prefix("lienthong: serving the board on http://") {
                http_addr = rest.split('/').next().map(str::to_string);
            }
            if let Some(rest) = line.strip_prefix("lienthong: serving gRPC on ") {
                break rest.split_whitespace().next().expect("address").to_string();
            }
            seen.push(line);
        };
        // Keep draining stderr (so the server never blocks on a full pipe), keeping the tail.
        let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            seen,
        )));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if log.len() == SERVE_LOG_LINES_MAX {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        Serving {
            child,
            addr,
            http_addr,
            log,
        }
    }

    /// The server's recent stderr, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Stops the server with SIGTERM and waits up to `wait_ms_max` for it to exit; returns its
    /// exit status.
    pub fn stop(&mut self, wait_ms_max: u64) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on the child's pid, which we own and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to lienthong serve");
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms_max);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for lienthong serve") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "lienthong serve did not stop within {wait_ms_max} ms of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A birth-group submission (2.000986: justice, then police and social insurance in parallel,
/// then the desk returns the result) with the idempotency key `key`.
pub fn birth(key: &str) -> lienthong_proto::v1::SubmitRequest {
    use lienthong_proto::v1 as pb;
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert(
        "child.age_months".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Integer(1)),
        },
    );
    attributes.insert(
        "child.birth_date".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Date("2026-10-01".into())),
        },
    );
    pb::SubmitRequest {
        idempotency_key: key.into(),
        procedure_code: "2.000986".into(),
        channel: pb::Channel::InPerson as i32,
        applicant: Some(pb::Applicant {
            full_name: "Đỗ Thị G".into(),
            ..Default::default()
        }),
        attributes,
        documents: Vec::new(),
        officer: "can-bo-mot-cua".into(),
    }
}

/// A gRPC request with a development bearer token of `examples/auth.toml`.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    r
}

/// Starts `lienthong agent --grpc` against the gateway at `addr` for `agency` with its
/// development token, printing a JSON summary and stopping after 3 s without a task; `extra`
/// adds arguments.
pub fn grpc_agent(addr: &str, agency: &str, token: &str, extra: &[&str]) -> std::process::Child {
    Command::new(lienthong_bin())
        .args([
            "agent",
            "--grpc",
            &format!("http://{addr}"),
            "--agency",
            agency,
        ])
        .args(["--exit-when-idle", "3s", "--json"])
        .args(extra)
        .env("LIENTHONG_TOKEN", token)
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lienthong agent")
}

/// Waits for `agency`'s agent and checks that it completed one step for each of `dossiers`
/// dossiers and that no act failed; returns its summary.
pub fn worked_every_dossier(
    child: std::process::Child,
    agency: &str,
    dossiers: u64,
) -> serde_json::Value {
    let s = summary(child);
    assert_eq!(s["agency"], agency, "{s}");
    assert_eq!(
        s["completed"], dossiers,
        "{agency} completes one step per dossier: {s}"
    );
    assert_eq!(s["failed"], 0, "{agency}: {s}");
    s
}

/// Waits for an agent and returns its JSON summary; fails the test if the agent failed.
pub fn summary(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("agent ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "agent failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary `{stdout}`: {e}"))
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lienthong serve --nats URL --role engine --partition-count N --data DATA` plus `extra`, once
/// it says it joined the bus. Its log goes to the test's output (shown when a test fails).
pub fn engine_node(nats: &str, data: &Path, partitions: u32, extra: &[&str]) -> Proc {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(lienthong_bin())
        .args(["serve", "--role", "engine", "--nats", nats])
        .args(["--partition-count", &partitions.to_string(), "--data"])
        .arg(data)
        .args(extra)
        .current_dir(repo_root())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn lienthong serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!(
                "the engine exited before joining the bus:\n{}",
                seen.join("\n")
            );
        };
        if line.starts_with("lienthong: engine node on NATS") {
            break;
        }
        seen.push(line);
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("engine: {line}");
        }
    });
    Proc(child)
}

/// One HTTP/1.1 GET to `addr` (with `auth` as the `Authorization` header): (status, head, body).
pub fn http_get(addr: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head.to_string(), body.to_string())
}

/// Events on a bus's feed, and the last one's position (0 for an empty feed).
pub async fn bus_feed_len(feed: &dyn lienthong_bus::Feed) -> (u64, u64) {
    let (mut n, mut last, mut from) = (0u64, 0u64, 1u64);
    loop {
        let batch = feed.read(from, 512).await.expect("feed read");
        let Some(end) = batch.last() else {
            return (n, last);
        };
        n += batch.len() as u64;
        last = end.position;
        from = last + 1;
    }
}

/// Reads each dossier of `ids` over gRPC at `addr` with the development token `token`, checks
/// that it closed with its result returned, and returns how many events they hold in all.
pub async fn all_returned(addr: &str, token: &str, ids: &[String]) -> u64 {
    use lienthong_proto::v1 as pb;
    let mut c = lienthong_proto::v1::dossier_service_client::DossierServiceClient::connect(
        format!("http://{addr}"),
    )
    .await
    .expect("connects");
    let mut events = 0;
    for id in ids {
        let d = c
            .get(bearer(
                token,
                pb::GetDossierRequest {
                    dossier: id.clone(),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("get {id}: {e}"))
            .into_inner();
        assert_eq!(d.status_text, "closed:result-returned", "{}", d.code);
        events += d.seq;
    }
    events
}
