//! End-to-end: the `lienthong` binary as users run it.
//!
//! Proves the auditor's path across separate processes: a demo run writes a store; `dossiers`
//! lists it; `replay` shows a timeline; `export` writes JSON Lines that `verify --export` accepts
//! with nothing but the file; a single flipped byte in an exported event makes `verify` fail and
//! name the dossier and seq; `check` accepts the shipped workflows and rejects a broken one with
//! file:line:column; the `bench` scenarios (store, e2e, rebuild, scale) run and report; `migrate`
//! upgrades a store written by the schema-1 release.

use base64::Engine as _;
use lienthong_e2e::{run, stderr, stdout};

#[test]
fn demo_then_audit_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let out = run(&["demo", "--dossiers", "40", "--data", data, "--seed", "7"]);
    assert!(
        out.status.success(),
        "demo failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("40 dossiers closed"), "{text}");
    assert!(text.contains("verify: ok"), "{text}");

    let out = run(&["dossiers", "--data", data, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 40);
    assert!(
        rows.iter()
            .all(|r| r["status"].as_str().unwrap().starts_with("closed"))
    );
    let code = rows[0]["code"].as_str().unwrap().to_string();

    let out = run(&["replay", &code, "--data", data]);
    assert!(out.status.success(), "{}", stderr(&out));
    let timeline = stdout(&out);
    assert!(timeline.contains("received for procedure"), "{timeline}");
    assert!(timeline.contains("closed:"), "{timeline}");

    let out = run(&["export", "--data", data]);
    assert!(out.status.success(), "{}", stderr(&out));
    let export = stdout(&out);
    let file = dir.path().join("audit.jsonl");
    std::fs::write(&file, &export).unwrap();
    let out = run(&["verify", "--export", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("ok:"), "{}", stdout(&out));

    // Tamper: flip one byte inside the raw bytes of the 3rd line's event.
    let mut lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let victim = &mut lines[2];
    let (dossier, seq) = (
        victim["dossier_id"].as_str().unwrap().to_string(),
        victim["seq"].as_u64().unwrap(),
    );
    let mut raw = b64.decode(victim["raw"].as_str().unwrap()).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    victim["raw"] = serde_json::Value::String(b64.encode(&raw));
    let tampered: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, tampered).unwrap();
    let out = run(&["verify", "--export", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let verdict = stdout(&out);
    assert!(verdict.contains(&dossier), "{verdict}");
    assert!(verdict.contains(&format!("seq {seq}")), "{verdict}");
}

#[test]
fn check_accepts_shipped_workflows_and_names_errors() {
    let out = run(&["check", "workflows"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ok:"), "{}", stdout(&out));

    let dir = tempfile::tempdir().unwrap();
    let root = lienthong_e2e::repo_root().join("workflows");
    std::fs::create_dir_all(dir.path().join("procedures")).unwrap();
    std::fs::create_dir_all(dir.path().join("calendars")).unwrap();
    std::fs::copy(root.join("agencies.toml"), dir.path().join("agencies.toml")).unwrap();
    for f in std::fs::read_dir(root.join("calendars")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(
            &f,
            dir.path().join("calendars").join(f.file_name().unwrap()),
        )
        .unwrap();
    }
    let bad = "[procedure]\ncode = \"9.999\"\nname = \"x\"\nversion = 1\nlimit = \"3wd\"\ncalendar = \"vn\"\nreceiving_agency = \"ubnd-xa\"\n\n[[step]]\nid = \"a\"\nname = \"a\"\nagency = \"cong-ann\"\nbudget = \"1wd\"\n";
    std::fs::write(dir.path().join("procedures/bad.toml"), bad).unwrap();
    let out = run(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:12:10"), "{err}");
    assert!(err.contains("cong-ann"), "{err}");
}

#[test]
fn graph_prints_the_birth_group() {
    let out = run(&["graph", "2.000986", "--format", "mermaid"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let g = stdout(&out);
    assert!(g.contains("flowchart") || g.contains("graph"), "{g}");
    let out = run(&["graph", "2.000986", "--format", "dot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("digraph"));
}

#[test]
fn simulated_months_produce_indicators_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sim");
    let data = data.to_str().unwrap();
    let out = run(&[
        "demo",
        "--simulate",
        "12d",
        "--per-day",
        "6",
        "--data",
        data,
        "--seed",
        "11",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("simulated "), "{text}");
    assert!(text.contains("Indicators (Decision 766)"), "{text}");
    assert!(text.contains("verify: ok"), "{text}");

    // The read models answer from the same store, with a fixed `now` for a stable answer.
    for kind in ["board", "breaches", "indicators"] {
        for format in ["table", "json", "csv"] {
            let out = run(&[
                "report",
                kind,
                "--data",
                data,
                "--format",
                format,
                "--now",
                "2027-06-01T09:00:00+07:00",
            ]);
            assert!(out.status.success(), "{kind} {format}: {}", stderr(&out));
            assert!(!stdout(&out).is_empty(), "{kind} {format}");
        }
    }
    let out = run(&["report", "indicators", "--data", data, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v.is_object(), "{v}");
    let out = run(&["projections", "status", "--data", data]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("lag 0"), "{}", stdout(&out));
}

#[test]
fn calendar_commands_count_working_days() {
    // 29 Apr 2026 16:00 is after the 15:00 cut-off; 30 Apr and 1 May are holidays, 2-3 May a
    // weekend: the clock starts Monday 4 May 07:30 and 3 working days end Wednesday 17:00.
    let out = run(&[
        "calendar",
        "due",
        "--calendar",
        "workflows/calendars/vn-2026.toml",
        "--from",
        "2026-04-29T16:00:00+07:00",
        "--add",
        "3wd",
        "--cutoff",
        "15:00",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2026-05-06T17:00:00+07:00");

    let out = run(&[
        "calendar",
        "between",
        "--calendar",
        "workflows/calendars/vn-2026.toml",
        "--from",
        "2026-04-29T08:00:00+07:00",
        "--to",
        "2026-05-05T10:00:00+07:00",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("2wd 2h "), "{}", stdout(&out));

    let out = run(&[
        "calendar",
        "due",
        "--calendar",
        "workflows/calendars/vn-2026.toml",
        "--from",
        "2026-05-04T09:00:00+07:00",
        "--add",
        "3x",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown unit"), "{}", stderr(&out));
}

/// `bench store` completes and reports one JSON object with a figure per batch size and the
/// raw baseline beside it (a smoke run: no figure is judged, only that the scenario reports).
#[test]
fn bench_store_reports_figures_and_the_raw_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "bench",
        "store",
        "--seconds",
        "0.2",
        "--runs",
        "1",
        "--batch-sizes",
        "1,8",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["scenario"], "store");
    let batches = v["batches"].as_array().unwrap();
    assert_eq!(
        batches
            .iter()
            .map(|b| b["batch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 8]
    );
    for b in batches {
        for key in [
            "store_events_per_s",
            "raw_fdatasync_per_write_per_s",
            "raw_fdatasync_per_batch_per_s",
        ] {
            assert!(b[key].as_f64().unwrap() > 0.0, "{key} measured: {b}");
        }
        assert!(b["ratio_to_raw_batched"].is_number(), "{b}");
    }
    // The scratch directory is removed after the run.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `bench e2e` runs the birth group end to end over each transport (the agencies as separate
/// processes over gRPC and NATS, a nats-server of its own) and reports one JSON object: every
/// dossier closed, the same events whatever the transport, each agency's steps counted, the
/// store verified, the peak memory of each process (a smoke run: no figure is judged).
#[test]
fn bench_e2e_runs_over_every_transport_and_reports() {
    const DOSSIERS: u64 = 20;
    let mut events = Vec::new();
    for transport in ["embedded", "grpc", "nats"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(&[
            "bench",
            "e2e",
            "--transport",
            transport,
            "--dossiers",
            &DOSSIERS.to_string(),
            "--concurrency",
            "4",
            "--json",
            "--dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{transport}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(v["scenario"], "e2e", "{v}");
        assert_eq!(v["transport"], transport, "{v}");
        assert_eq!(v["dossiers"], DOSSIERS, "{v}");
        assert_eq!(v["verified"], true, "{v}");
        for key in [
            "dossiers_per_s",
            "events_per_s",
            "p50_ms",
            "p99_ms",
            "raw_fdatasync_per_s",
        ] {
            assert!(
                v[key].as_f64().unwrap() > 0.0,
                "{transport}: {key} measured: {v}"
            );
        }
        assert!(v["p50_ms"].as_f64() <= v["p99_ms"].as_f64(), "{v}");
        let rss = v["peak_rss_bytes"].as_object().unwrap();
        assert!(rss["bench"].as_u64().unwrap() > 0, "{v}");
        // CPU time per dossier for the same processes, each split by thread (a run this short
        // may use less than one clock tick in a thread, so no figure is required above zero).
        let cpu = v["cpu_us_per_dossier"].as_object().unwrap();
        assert_eq!(
            cpu.keys().collect::<Vec<_>>(),
            rss.keys().collect::<Vec<_>>(),
            "{v}"
        );
        for (process, c) in cpu {
            assert!(c["total"].as_f64().unwrap() >= 0.0, "{process}: {v}");
            assert!(
                !c["threads"].as_object().unwrap().is_empty(),
                "{process}: {v}"
            );
        }
        if transport == "embedded" {
            assert!(
                cpu["bench"]["threads"]
                    .as_object()
                    .unwrap()
                    .contains_key("lienthong-store"),
                "the store's writer thread is measured: {v}"
            );
        }
        if transport == "embedded" {
            assert_eq!(rss.len(), 1, "one process: {v}");
        } else {
            // The engine's process and three agency processes, each measured.
            assert_eq!(rss.len(), 5, "{v}");
            assert!(rss.values().all(|b| b.as_u64().unwrap() > 0), "{v}");
            let agents = v["agents"].as_array().unwrap();
            assert_eq!(agents.len(), 3, "{v}");
            for a in agents {
                assert_eq!(a["completed"], DOSSIERS, "one step per dossier: {a}");
                assert_eq!(a["failed"], 0, "{a}");
            }
        }
        events.push(v["events"].as_u64().unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "scratch removed"
        );
    }
    assert!(events[0] >= 8 * DOSSIERS, "{events:?}");
    assert!(
        events.iter().all(|e| *e == events[0]),
        "same history whatever the transport: {events:?}"
    );
}

/// `bench rebuild` makes a store of the size asked (whole birth-group histories), rebuilds the
/// projections over it and reports the rate beside reading the same feed (a smoke run).
#[test]
fn bench_rebuild_reports_the_rebuild_beside_the_feed_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "bench",
        "rebuild",
        "--events",
        "3000",
        "--runs",
        "1",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["scenario"], "rebuild", "{v}");
    let events = v["events"].as_u64().unwrap();
    assert!((3000..3100).contains(&events), "whole dossiers: {v}");
    for key in [
        "rebuild_events_per_s",
        "feed_read_events_per_s",
        "generate_events_per_s",
        "ratio_to_feed_read",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} measured: {v}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch removed"
    );
}

/// `bench scale` grows one store through the sizes and runs an engine process on each, `--runs`
/// times: one row per size, in order, with the first restart after the store grew and the later
/// ones, the command cost beside the smallest size's, and the engine process's memory (a smoke
/// run).
#[test]
fn bench_scale_reports_a_row_per_store_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "bench",
        "scale",
        "--sizes",
        "5000,1000",
        "--dossiers",
        "20",
        "--concurrency",
        "4",
        "--runs",
        "2",
        "--json",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["scenario"], "scale", "{v}");
    assert_eq!(v["runs_per_size"], 2, "{v}");
    let sizes = v["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2, "{v}");
    assert!(sizes[0]["events"].as_u64() >= Some(1000), "{v}");
    assert!(
        sizes[1]["events"].as_u64() >= Some(5000),
        "smallest first: {v}"
    );
    assert_eq!(sizes[0]["command_cost_vs_smallest"], 1.0, "{v}");
    for s in sizes {
        for key in [
            "open_ms",
            "reopen_ms",
            "command_us",
            "dossiers_per_s",
            "peak_rss_bytes",
            "store_bytes",
        ] {
            assert!(s[key].as_f64().unwrap() > 0.0, "{key} measured: {s}");
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch removed"
    );
}

/// A data directory written by the last schema-1 release (`tests/fixtures/store-schema-1`: the
/// demo's 12 dossiers) is refused with the command that upgrades it; `migrate` upgrades it in
/// place, and every event then reads back with the position and hash it had.
#[test]
fn migrate_upgrades_a_schema_1_store_and_keeps_every_event() {
    let fixtures = lienthong_e2e::repo_root().join("tests/fixtures/store-schema-1");
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(fixtures.join("data.tgz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let out = run(&["dossiers", "--data", data]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("lienthong migrate --data"),
        "{}",
        stderr(&out)
    );

    let out = run(&["migrate", "--data", data]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("schema 1 -> 2") && stdout(&out).contains("167 events verified"),
        "{}",
        stdout(&out)
    );
    let out = run(&["migrate", "--data", data]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));

    let out = run(&["verify", "--data", data]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = run(&["export", "--data", data]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {} {}",
                v["dossier_id"].as_str().unwrap(),
                v["seq"],
                v["global_position"],
                v["hash"].as_str().unwrap()
            )
        })
        .collect();
    let expected = std::fs::read_to_string(fixtures.join("events.txt")).unwrap();
    assert_eq!(events, expected.lines().collect::<Vec<_>>());
    let out = run(&["dossiers", "--data", data, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 12);
}
