//! Secrets never reach the logs: the real `lienthong serve` and `lienthong agent`, at the most
//! verbose level (`RUST_LOG=trace`, every crate), over mutual TLS, driven with right and wrong
//! credentials; then everything both processes wrote (stdout and stderr) is searched.
//!
//! What it proves: no bearer token (right, wrong, or sent in a malformed `authorization` header,
//! over gRPC or to the board's HTTP listener, as `Bearer` or as the HTTP Basic password),
//! no token's SHA-256, no `authorization` header value, and no private key (the server's, the
//! client certificate's; their PEM bodies and every line of them) appears in any output, while the
//! output is the real trace-level log (it holds the gateway's own debug lines about the refused
//! calls and the HTTP/2 library's frame traces, so the search ran over what an operator at the
//! most verbose level would keep). A token's hash is kept out as well: the auth file holds the
//! hashes, the logs need none of them, and a wrong token's hash would tell a reader which secret
//! a caller tried.
//!
//! How: the test makes its own CA, server and client certificates (rcgen) and an auth file whose
//! tokens are fresh random strings (so any match is a leak, never a coincidence), starts the
//! binary with both streams written to files, makes the calls with a tonic client, runs the agent
//! twice (a good token, then a wrong one, which must fail), stops the server with SIGTERM and
//! reads the files.
//!
//! And a password written into the `--nats` URL authenticates to a nats-server that demands it,
//! and is never written either, when connected at trace level or when the connection fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_e2e::{bearer, birth, lienthong_bin, repo_root};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::agency_service_client::AgencyServiceClient;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How long the server may take to print its address.
const START_WAIT: Duration = Duration::from_secs(60);

/// A fresh random token (a UUID's random bits), with a readable prefix.
fn token(who: &str) -> String {
    format!("{who}-{}", uuid::Uuid::now_v7().simple())
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The base64 body of a PEM block (between its BEGIN and END lines), on one line.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect()
}

/// The certificates of the test, as PEM files in `dir`: `ca.pem`, `server.pem`, `server.key`,
/// `client.pem`, `client.key` (the client certificate names `tu-phap`). Returns the two keys.
fn make_pki(dir: &Path) -> (String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "lienthong secrets test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut client = CertificateParams::new(vec!["tu-phap".to_string()]).expect("params");
    client
        .distinguished_name
        .push(DnType::CommonName, "tu-phap");
    let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write PEM");
    write("ca.pem", &ca_cert.pem());
    write("server.pem", &server_cert.pem());
    write("server.key", &server_key.serialize_pem());
    write("client.pem", &client_cert.pem());
    write("client.key", &client_key.serialize_pem());
    (server_key.serialize_pem(), client_key.serialize_pem())
}

/// A TLS channel to `port` trusting the test CA in `dir`, with the client certificate if asked.
async fn channel(dir: &Path, port: &str, with_certificate: bool) -> Channel {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("read PEM");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if with_certificate {
        tls = tls.identity(Identity::from_pem(read("client.pem"), read("client.key")));
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("TLS connects")
}

/// A request with a raw `authorization` header value.
fn with_header<T>(value: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", value.parse().expect("ascii"));
    r
}

/// `GET path` on the board's HTTP listener with an `Authorization` value; the status code.
fn http_get(addr: &str, path: &str, authorization: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect to the board");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code")
}

/// Runs `lienthong agent` for `cong-an` against the server with `token`, at trace level; returns
/// whether it succeeded and everything it wrote.
fn agent(dir: &Path, port: &str, token: &str) -> (bool, String) {
    let out = Command::new(lienthong_bin())
        .args([
            "agent",
            "--grpc",
            &format!("https://localhost:{port}"),
            "--agency",
            "cong-an",
            "--ca-cert",
        ])
        .arg(dir.join("ca.pem"))
        .args(["--exit-when-idle", "2s", "--json"])
        .env("LIENTHONG_TOKEN", token)
        .env("RUST_LOG", "trace")
        .current_dir(repo_root())
        .output()
        .expect("agent runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every `bearer <value>` (any case) in `text` whose value is not a word of the gateway's advice
/// to a client (`Bearer <token>`, "unknown bearer token: ask the operator ...").
fn header_values(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("bearer ") {
        let start = from + at + "bearer ".len();
        let word: String = lower[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '`' | '"' | '\'' | ','))
            .collect();
        if !matches!(word.as_str(), "<token>" | "token" | "token:" | "tokens") {
            found.push(text[from + at..].chars().take(80).collect());
        }
        from = start;
    }
    found
}

#[test]
fn the_header_search_finds_values_not_the_advice() {
    assert!(header_values("send `authorization: Bearer <token>` or ...").is_empty());
    assert!(header_values("unknown bearer token: ask the operator").is_empty());
    assert_eq!(header_values("x authorization: bearer abc").len(), 1);
    assert_eq!(header_values("\"Bearer s3cr3t\"").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_trace_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (server_key, client_key) = make_pki(d);
    let desk = token("desk");
    let tu_phap = token("tu-phap");
    let cong_an = token("cong-an");
    let auditor = token("auditor");
    let wrong = token("wrong");
    let mut auth = String::new();
    for (id, agency, role, tok, cert) in [
        ("desk", "ubnd-xa", "desk", &desk, false),
        ("tu-phap", "tu-phap", "agency", &tu_phap, true),
        ("cong-an", "cong-an", "agency", &cong_an, false),
        ("auditor", "kiem-toan", "auditor", &auditor, false),
    ] {
        auth.push_str(&format!(
            "[[principal]]\nid = \"{id}\"\nagency = \"{agency}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\nclient_cert = {cert}\n\n",
            sha256_hex(tok)
        ));
    }
    std::fs::write(d.join("auth.toml"), &auth).expect("auth file");

    // The server, at trace level, both streams to files.
    let stdout_path = d.join("serve.stdout");
    let stderr_path = d.join("serve.stderr");
    let mut server = Command::new(lienthong_bin())
        .args(["serve", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--auth")
        .arg(d.join("auth.toml"))
        .arg("--data")
        .arg(d.join("data"))
        .arg("--tls-cert")
        .arg(d.join("server.pem"))
        .arg("--tls-key")
        .arg(d.join("server.key"))
        .arg("--client-ca")
        .arg(d.join("ca.pem"))
        .env("RUST_LOG", "trace")
        .current_dir(repo_root())
        .stdout(Stdio::from(
            std::fs::File::create(&stdout_path).expect("file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(&stderr_path).expect("file"),
        ))
        .spawn()
        .expect("spawn lienthong serve");
    let started = Instant::now();
    let (port, http_addr) = loop {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let grpc = log
            .lines()
            .find_map(|l| l.strip_prefix("lienthong: serving gRPC on "));
        let http = log
            .lines()
            .find_map(|l| l.strip_prefix("lienthong: serving the board on http://"));
        if let (Some(grpc), Some(http)) = (grpc, http) {
            let addr = grpc.split_whitespace().next().expect("address");
            let port = addr.rsplit(':').next().expect("port").to_string();
            let http = http.split('/').next().expect("board address").to_string();
            break (port, http);
        }
        if let Some(status) = server.try_wait().expect("wait") {
            panic!("lienthong serve exited ({status}) before serving:\n{log}");
        }
        assert!(
            started.elapsed() < START_WAIT,
            "lienthong serve printed no address"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Right and wrong credentials over TLS.
    let tls = channel(d, &port, false).await;
    let mut dossiers = DossierServiceClient::new(tls.clone());
    let id = dossiers
        .submit(bearer(&desk, birth("secrets-1")))
        .await
        .expect("the desk's token")
        .into_inner()
        .dossier_id;
    let get = || pb::GetDossierRequest {
        dossier: id.clone(),
    };
    dossiers
        .get(bearer(&auditor, get()))
        .await
        .expect("the auditor's token");
    for (what, header) in [
        ("a wrong token", format!("Bearer {wrong}")),
        ("a token without the Bearer scheme", desk.clone()),
        ("a token with another scheme", format!("Basic {desk}")),
        (
            "a token with trailing garbage",
            format!("Bearer {desk} {wrong}"),
        ),
        ("a token twice", format!("Bearer Bearer {tu_phap}")),
    ] {
        let e = dossiers
            .get(with_header(&header, get()))
            .await
            .expect_err(what);
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{what}: {e:?}");
        assert!(!e.message().contains(&desk) && !e.message().contains(&wrong));
    }

    // The board's HTTP listener: Bearer and Basic (the token as the password), right and wrong.
    use base64::Engine as _;
    let basic = |tok: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("officer:{tok}"))
        )
    };
    assert_eq!(
        http_get(&http_addr, "/board", &format!("Bearer {desk}")),
        200
    );
    assert_eq!(http_get(&http_addr, "/board", &basic(&desk)), 200);
    assert_eq!(
        http_get(&http_addr, "/metrics", &format!("Bearer {auditor}")),
        200
    );
    assert_eq!(
        http_get(&http_addr, "/board", &format!("Bearer {wrong}")),
        401
    );
    assert_eq!(http_get(&http_addr, "/board", &basic(&wrong)), 401);
    assert_eq!(http_get(&http_addr, "/board", &desk), 401);

    // The client certificate of tu-phap (no token): its task, and its act.
    let mut agencies = AgencyServiceClient::new(channel(d, &port, true).await);
    let mut s = agencies
        .stream_tasks(tonic::Request::new(pb::StreamTasksRequest {
            backlog_only: true,
            ..Default::default()
        }))
        .await
        .expect("stream by certificate")
        .into_inner();
    while s.message().await.expect("stream").is_some() {}
    agencies
        .complete_step(tonic::Request::new(pb::CompleteStepRequest {
            idempotency_key: "secrets-c1".into(),
            dossier: id.clone(),
            step_id: "register-birth".into(),
            outcome: "approve".into(),
            ..Default::default()
        }))
        .await
        .expect("complete by certificate");

    // The agent with cong-an's token does its step; with a wrong token it fails.
    let (ok, good_agent) = agent(d, &port, &cong_an);
    assert!(ok, "the agent with the right token:\n{good_agent}");
    let (ok, bad_agent) = agent(d, &port, &wrong);
    assert!(!ok, "the agent with a wrong token must fail:\n{bad_agent}");

    // SIGTERM, then read everything the server wrote.
    // SAFETY: plain kill(2) on the child's pid, which we own and have not reaped.
    let rc = unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + START_WAIT;
    while server.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let serve_log = format!(
        "{}\n{}",
        std::fs::read_to_string(&stdout_path).expect("stdout"),
        std::fs::read_to_string(&stderr_path).expect("stderr")
    );

    // The search ran over a real trace-level log: the gateway's debug line about refused calls,
    // the HTTP/2 library's frame traces, the agent's own trace.
    assert!(
        serve_log.contains("unauthenticated call"),
        "the server's log lacks the gateway's debug lines"
    );
    assert!(
        serve_log.contains("TRACE") && serve_log.contains("h2::"),
        "the server's log is not at trace level"
    );
    assert!(
        good_agent.contains("TRACE"),
        "the agent's log is not at trace level"
    );

    let mut secrets: Vec<(String, String)> = Vec::new();
    for (name, tok) in [
        ("desk token", &desk),
        ("tu-phap token", &tu_phap),
        ("cong-an token", &cong_an),
        ("auditor token", &auditor),
        ("wrong token", &wrong),
    ] {
        secrets.push((name.to_string(), tok.clone()));
        secrets.push((format!("{name}'s SHA-256"), sha256_hex(tok)));
        secrets.push((format!("{name} as HTTP Basic"), basic(tok)[6..].to_string()));
    }
    for (name, key) in [("server key", &server_key), ("client key", &client_key)] {
        secrets.push((format!("{name} (PEM body)"), pem_body(key)));
        for (i, line) in key.lines().filter(|l| !l.starts_with("-----")).enumerate() {
            if line.len() >= 16 {
                secrets.push((format!("{name} line {i}"), line.to_string()));
            }
        }
    }
    let mut leaks = Vec::new();
    for (output, text) in [
        ("lienthong serve", &serve_log),
        ("lienthong agent (right token)", &good_agent),
        ("lienthong agent (wrong token)", &bad_agent),
    ] {
        for (name, secret) in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{output}: {name}"));
            }
        }
        // The header's value, whatever the token: `Bearer <something>` in any case, other than
        // the words of the gateway's advice to a client.
        leaks.extend(
            header_values(text)
                .into_iter()
                .map(|v| format!("{output}: an authorization value `{v}`")),
        );
    }
    assert!(
        leaks.is_empty(),
        "secrets in the logs:\n  {}",
        leaks.join("\n  ")
    );
}

/// A port nobody listens on now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A password in the `--nats` URL authenticates `lienthong serve` to a nats-server that demands
/// it, and appears nowhere in what serve wrote at trace level (the NATS client logs its server
/// addresses at debug level: the credentials are taken out of them first); when the connection
/// fails, the error names the server with `***` in their place.
#[test]
fn a_password_in_the_nats_url_authenticates_and_is_never_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let password = token("nats-password");

    // A nats-server that demands a user and password.
    let nats_port = free_port();
    let config = d.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{nats_port}\"\njetstream {{\n  store_dir: {:?}\n  max_file_store: {}\n}}\nauthorization {{\n  user: lienthong\n  password: \"{password}\"\n}}\n",
            d.join("nats"),
            lienthong_bus::testing::TEST_MAX_FILE_STORE
        ),
    )
    .expect("nats config");
    let mut nats = Command::new(lienthong_bus::testing::find_nats_server().expect("nats-server"))
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", nats_port)).is_err() {
        assert!(started.elapsed() < START_WAIT, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let log_path = d.join("serve.log");
    let mut serve = Command::new(lienthong_bin())
        .args(["serve", "--grpc", "127.0.0.1:0", "--http", "off", "--nats"])
        .arg(format!("nats://lienthong:{password}@127.0.0.1:{nats_port}"))
        .arg("--data")
        .arg(d.join("data"))
        .env("RUST_LOG", "trace")
        .current_dir(repo_root())
        .stdout(Stdio::from(
            std::fs::File::create(d.join("serve.out")).expect("file"),
        ))
        .stderr(Stdio::from(std::fs::File::create(&log_path).expect("file")))
        .spawn()
        .expect("spawn lienthong serve");
    let started = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("lienthong: serving gRPC on ") {
            break log;
        }
        if let Some(status) = serve.try_wait().expect("wait") {
            let _ = nats.kill();
            panic!("lienthong serve exited ({status}) before serving:\n{log}");
        }
        assert!(
            started.elapsed() < START_WAIT,
            "lienthong serve printed no address"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = nats.kill();
    let _ = nats.wait();
    assert!(
        log.contains("connected to NATS"),
        "serve authenticated to NATS"
    );
    assert!(log.contains("TRACE"), "the log is at trace level");
    let out = std::fs::read_to_string(d.join("serve.out")).unwrap_or_default();
    assert!(
        !log.contains(&password) && !out.contains(&password),
        "the NATS password is in serve's output"
    );

    // No server there: the error names it without the password.
    let port = free_port();
    let url = format!("nats://lienthong:{password}@127.0.0.1:{port}");
    let out = Command::new(lienthong_bin())
        .args([
            "serve",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "off",
            "--nats",
            &url,
        ])
        .arg("--data")
        .arg(d.join("data-2"))
        .env("RUST_LOG", "trace")
        .current_dir(repo_root())
        .output()
        .expect("lienthong serve runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "no NATS server there");
    assert!(
        text.contains(&format!("nats://***@127.0.0.1:{port}")),
        "the error names the server"
    );
    assert!(
        !text.contains(&password),
        "the NATS password is in serve's error output"
    );
}
