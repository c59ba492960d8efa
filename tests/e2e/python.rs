//! A client nobody here wrote: the Python integrator example (`examples/python/lienthong_client.py`,
//! `grpcio` with stubs that `grpcio-tools` generates from `proto/` at run time) against the real
//! `lienthong serve`.
//!
//! What it proves: `proto/` alone is enough for another language's gRPC stack to submit a
//! birth-group dossier as the desk, stream and complete tasks as three agencies (two of them in
//! parallel), return the result, replay an idempotent retry, and verify the history's hash chain
//! from the raw bytes. How: the test starts the binary on a free port, runs the example with the
//! project's Python environment, checks the JSON summary it prints, then stops the server and
//! checks that the store's own export ends the dossier's chain with the hash the client computed.
//!
//! The interpreter is [`lienthong_e2e::python`] (`.tools/venv`, made by `scripts/python-env.sh`,
//! or `LIENTHONG_PYTHON`). A missing interpreter fails the test: it is never skipped.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_e2e::{Serving, python, repo_root};
use serde_json::{Value, json};

/// The longest the example may run before the test kills it (the example's own deadlines are
/// [`CLIENT_TIMEOUT_S`] per call and per wait for a task).
const CLIENT_RUN_S_MAX: u64 = 180;
/// `--timeout-s` passed to the example.
const CLIENT_TIMEOUT_S: &str = "30";
/// How long the server may take to stop on SIGTERM.
const SERVE_STOP_MS_MAX: u64 = 15_000;

/// Runs the example against `addr`; returns (success, stdout, stderr), killing it after
/// [`CLIENT_RUN_S_MAX`].
fn run_client(addr: &str) -> (bool, String, String) {
    let python = python();
    let mut child = Command::new(&python)
        .arg("examples/python/lienthong_client.py")
        .args(["--addr", addr, "--timeout-s", CLIENT_TIMEOUT_S])
        .current_dir(repo_root())
        // Unbuffered, so a killed client still shows how far it got.
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run scripts/python-env.sh, or set LIENTHONG_PYTHON)",
                python.display()
            )
        });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(CLIENT_RUN_S_MAX);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, mut err) = (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    );
    if status.is_none() {
        err.push_str(&format!("\n(killed after {CLIENT_RUN_S_MAX} s)"));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

#[test]
fn python_grpcio_client_walks_a_birth_dossier_and_verifies_its_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Serving::start(dir.path());

    let (ok, out, err) = run_client(&server.addr);
    assert!(
        ok,
        "the Python client failed.\n--- its stderr:\n{err}\n--- its stdout:\n{out}\n--- server log:\n{}",
        server.log_tail()
    );
    let last = out.lines().rev().find(|l| !l.trim().is_empty());
    let summary: Value = last
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the last stdout line is not a JSON summary:\n{out}\n{err}"));

    // The dossier went the whole way and was closed by returning the result.
    assert_eq!(summary["ok"], json!(true), "{summary:#}");
    assert_eq!(summary["procedure_code"], json!("2.000986"), "{summary:#}");
    assert_eq!(
        summary["status"],
        json!("DOSSIER_STATUS_CLOSED"),
        "{summary:#}"
    );
    assert_eq!(
        summary["outcome"],
        json!("OUTCOME_RESULT_RETURNED"),
        "{summary:#}"
    );
    assert_eq!(
        summary["status_text"],
        json!("closed:result-returned"),
        "{summary:#}"
    );
    let code = summary["dossier_code"].as_str().expect("dossier_code");
    assert!(code.starts_with("UBND.XA-"), "{summary:#}");
    // Each step was completed by its own agency: the desk, then tu-phap, then cong-an and bhxh
    // in parallel, then the desk's return step.
    assert_eq!(
        summary["completed_by"],
        json!({
            "register-birth": "tu-phap",
            "register-residence": "cong-an",
            "issue-health-card": "bhxh",
            "return-result": "ubnd-xa",
        }),
        "{summary:#}"
    );
    for step in summary["steps"].as_object().expect("steps").values() {
        assert_eq!(
            step["status"],
            json!("STEP_STATUS_COMPLETED"),
            "{summary:#}"
        );
    }

    // The history: at least receipt, 4 openings, 4 completions, return and close (deadline
    // notices could add more), its chain checked by the client from the raw bytes.
    assert_eq!(summary["chain_verified"], json!(true), "{summary:#}");
    let kinds: Vec<&str> = summary["event_kinds"]
        .as_array()
        .expect("event_kinds")
        .iter()
        .map(|k| k.as_str().expect("kind"))
        .collect();
    let events = summary["events"].as_u64().expect("events");
    assert_eq!(events, kinds.len() as u64, "{summary:#}");
    assert!(events >= 11, "{summary:#}");
    assert_eq!(kinds.first(), Some(&"received"), "{summary:#}");
    assert_eq!(kinds.last(), Some(&"closed"), "{summary:#}");
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(count("step_opened"), 4, "{summary:#}");
    assert_eq!(count("step_completed"), 4, "{summary:#}");
    assert_eq!(count("result_returned"), 1, "{summary:#}");

    // Idempotency, resume and the error statuses an integrator handles.
    assert_eq!(summary["idempotent_replay"], json!(true), "{summary:#}");
    assert_eq!(summary["resume_redelivered"], json!(0), "{summary:#}");
    assert_eq!(
        summary["errors_seen"],
        json!({
            "no_token": "UNAUTHENTICATED",
            "key_reused": "ALREADY_EXISTS/idempotency-key-reused",
            "return_too_early": "FAILED_PRECONDITION/not-processed",
        }),
        "{summary:#}"
    );

    // The store agrees: its export ends this dossier's chain with the hash the client computed,
    // after the same number of events.
    let status = server.stop(SERVE_STOP_MS_MAX);
    assert!(status.success(), "serve exit status {status:?}");
    let data = dir.path().display().to_string();
    let export = lienthong_e2e::run(&["export", "--data", &data]);
    assert!(
        export.status.success(),
        "{}",
        lienthong_e2e::stderr(&export)
    );
    let dossier_id = summary["dossier_id"].as_str().expect("dossier_id");
    let stored: Vec<Value> = lienthong_e2e::stdout(&export)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("export line is JSON"))
        .filter(|e| e["dossier_id"] == json!(dossier_id))
        .collect();
    assert_eq!(stored.len() as u64, events, "export of {dossier_id}");
    let last = stored
        .iter()
        .max_by_key(|e| e["seq"].as_u64())
        .expect("events");
    assert_eq!(
        last["hash"], summary["last_hash"],
        "last hash of {dossier_id}"
    );
}
