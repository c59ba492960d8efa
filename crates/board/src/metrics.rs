//! Prometheus metrics (`GET /metrics`), in the text exposition format 0.0.4: for each family a
//! `# HELP` line, a `# TYPE` line, then its samples; label values escaped (`\\`, `\"`, `\n`).
//!
//! The figures come from the running system, read at scrape time: the store's writer counters
//! (this process's engine, since it started), the read models' checkpoint and the store's head
//! (projection lag), the deadline board at the engine's clock (open steps per agency and state,
//! dossiers past their appointment per holding agency), the gRPC calls received by method, and
//! the board's own HTTP requests and live streams. Nothing is sampled or estimated.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lienthong_engine::store::Stats;
use lienthong_projections::views::{Board, BoardState};

/// Where the outbox of an engine on the bus stands (see `lienthong_node::outbox::Progress`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxGauges {
    /// The last store position the bus acknowledged on its feed.
    pub published_position: u64,
    /// The store's last position when the outbox last looked.
    pub store_position: u64,
    /// Tasks waiting in the spill for a full agency queue.
    pub spilled_tasks: u64,
}

/// Everything one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The engine's store writer since it opened (none in the projections role: no store here).
    pub store: Option<Stats>,
    /// The outbox to the bus (none without a bus).
    pub outbox: Option<OutboxGauges>,
    /// The feed position the read models have folded.
    pub checkpoint: u64,
    /// The last durable feed position of the store (or of the mirror the views fold).
    pub head: u64,
    /// The board at the engine's clock (open steps, dossiers past their appointment).
    pub board: Option<Board>,
    /// gRPC calls received, by method path.
    pub grpc_requests: BTreeMap<String, u64>,
    /// gRPC streaming calls open now (task streams, histories, exports).
    pub grpc_streams_open: u64,
    /// The board's HTTP requests, by (route, status code).
    pub http_requests: BTreeMap<(String, u16), u64>,
    /// Live streams (server-sent events) open now.
    pub live_streams: u64,
}

/// A label value escaped for the exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One family: HELP, TYPE, then `samples` (`(labels, value)`; labels already rendered).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The exposition text of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    if let Some(st) = &s.store {
        let counters = [
            (
                "lienthong_commands_executed_total",
                "Commands whose events this process's engine made durable (appends committed), since start.",
                st.appends,
            ),
            (
                "lienthong_commands_refused_by_store_total",
                "Appends the store refused (conflict, duplicate key, limit), since start.",
                st.rejected,
            ),
            (
                "lienthong_events_appended_total",
                "Events made durable by this process's store, since start.",
                st.events,
            ),
            (
                "lienthong_store_group_commits_total",
                "Group commits (one atomic batch and one fdatasync each), since start.",
                st.groups,
            ),
        ];
        for (name, help, v) in counters {
            family(&mut out, name, "counter", help, &[(String::new(), v)]);
        }
    }
    if let Some(o) = &s.outbox {
        let gauges = [
            (
                "lienthong_outbox_published_position",
                "Last store position the bus acknowledged on its feed.",
                o.published_position,
            ),
            (
                "lienthong_outbox_lag_events",
                "Events stored but not yet on the bus's feed (agencies wait for their tasks): grows while the broker is unreachable, drains after.",
                o.store_position.saturating_sub(o.published_position),
            ),
            (
                "lienthong_outbox_spilled_tasks",
                "Tasks waiting in the spill for a full agency queue.",
                o.spilled_tasks,
            ),
        ];
        for (name, help, v) in gauges {
            family(&mut out, name, "gauge", help, &[(String::new(), v)]);
        }
    }
    family(
        &mut out,
        "lienthong_feed_head_position",
        "gauge",
        "Position of the last durable event of the feed the read models fold.",
        &[(String::new(), s.head)],
    );
    family(
        &mut out,
        "lienthong_projections_checkpoint_position",
        "gauge",
        "Last feed position folded into the read models.",
        &[(String::new(), s.checkpoint)],
    );
    family(
        &mut out,
        "lienthong_projections_lag_events",
        "gauge",
        "Events the read models are behind the feed (head - checkpoint).",
        &[(String::new(), s.head.saturating_sub(s.checkpoint))],
    );
    if let Some(b) = &s.board {
        let mut steps: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for st in &b.steps {
            *steps.entry((&st.agency, st.state.as_str())).or_insert(0) += 1;
        }
        // Every agency that has open steps gets all four states, so a state that empties shows 0.
        let agencies: std::collections::BTreeSet<&str> = steps.keys().map(|k| k.0).collect();
        let mut samples = Vec::new();
        for a in &agencies {
            for state in [
                BoardState::Overdue,
                BoardState::DueSoon,
                BoardState::Paused,
                BoardState::OnTrack,
            ] {
                let n = steps.get(&(*a, state.as_str())).copied().unwrap_or(0);
                samples.push((
                    format!("agency=\"{}\",state=\"{}\"", label(a), state.as_str()),
                    n,
                ));
            }
        }
        family(
            &mut out,
            "lienthong_open_steps",
            "gauge",
            "Open steps by holding agency and deadline state (overdue, due-soon, paused, on-track) at the engine's clock.",
            &samples,
        );
        let mut late: BTreeMap<&str, u64> = BTreeMap::new();
        for d in &b.dossiers {
            for h in &d.holders {
                *late.entry(h).or_insert(0) += 1;
            }
        }
        let samples: Vec<(String, u64)> = late
            .iter()
            .map(|(a, n)| (format!("agency=\"{}\"", label(a)), *n))
            .collect();
        family(
            &mut out,
            "lienthong_overdue_dossiers",
            "gauge",
            "Open dossiers past their appointment in force, by holding agency, at the engine's clock.",
            &samples,
        );
        family(
            &mut out,
            "lienthong_board_truncated",
            "gauge",
            "1 when the board had more rows than a report returns (10,000): lienthong_open_steps and lienthong_overdue_dossiers then count only the first ones.",
            &[(String::new(), u64::from(b.header.truncated))],
        );
    }
    let samples: Vec<(String, u64)> = s
        .grpc_requests
        .iter()
        .map(|(m, n)| (format!("method=\"{}\"", label(m)), *n))
        .collect();
    family(
        &mut out,
        "lienthong_grpc_requests_total",
        "counter",
        "gRPC calls received by method (refused ones included), since start.",
        &samples,
    );
    family(
        &mut out,
        "lienthong_grpc_streams_open",
        "gauge",
        "gRPC streaming calls open now (task streams, histories, exports); at most streams_max.",
        &[(String::new(), s.grpc_streams_open)],
    );
    let samples: Vec<(String, u64)> = s
        .http_requests
        .iter()
        .map(|((r, c), n)| (format!("route=\"{}\",code=\"{c}\"", label(r)), *n))
        .collect();
    family(
        &mut out,
        "lienthong_http_requests_total",
        "counter",
        "Requests to the board's HTTP listener by route and status code, since start.",
        &samples,
    );
    family(
        &mut out,
        "lienthong_board_live_streams",
        "gauge",
        "Board pages following the live updates (server-sent events) now.",
        &[(String::new(), s.live_streams)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_projections::Lag;
    use lienthong_projections::views::{BoardDossier, BoardStep, Header};

    fn at(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339(s).expect("instant")
    }

    fn step(agency: &str, state: BoardState) -> BoardStep {
        BoardStep {
            agency: agency.into(),
            dossier_code: "UBND.XA-261207-0001".into(),
            procedure: "2.000986".into(),
            step: "register-birth".into(),
            opened_at: at("2026-12-07T08:00:00+07:00"),
            due: at("2026-12-08T17:00:00+07:00"),
            state,
            overdue_working_seconds: 0,
            overdue: String::new(),
            undeliverable_deliveries: 0,
        }
    }

    #[test]
    fn every_family_has_help_and_type_and_real_values() {
        let board = Board {
            header: Header {
                report: "board".into(),
                now: None,
                lag: Lag {
                    checkpoint: 7,
                    head: 9,
                    lag: 2,
                },
                agency: None,
                month: None,
                truncated: false,
            },
            due_soon_window: "1wd".into(),
            steps: vec![
                step("tu-phap", BoardState::Overdue),
                step("tu-phap", BoardState::Overdue),
                step("bhxh", BoardState::OnTrack),
            ],
            dossiers: vec![BoardDossier {
                holders: vec!["tu-phap".into()],
                dossier_code: "UBND.XA-261207-0001".into(),
                procedure: "2.000986".into(),
                receiving_agency: "ubnd-xa".into(),
                appointment: at("2026-12-09T17:00:00+07:00"),
                apologised: false,
                paused: false,
                overdue_working_seconds: 3600,
                overdue: "1h".into(),
            }],
        };
        let mut grpc = BTreeMap::new();
        grpc.insert("/lienthong.v1.DossierService/Submit".to_string(), 3);
        let mut http = BTreeMap::new();
        http.insert(("/board".to_string(), 200), 5);
        let text = render(&Snapshot {
            store: Some(Stats {
                appends: 4,
                rejected: 1,
                events: 12,
                groups: 3,
                fsyncs: 3,
                largest_group: 2,
            }),
            outbox: Some(OutboxGauges {
                published_position: 6,
                store_position: 9,
                spilled_tasks: 0,
            }),
            checkpoint: 7,
            head: 9,
            board: Some(board),
            grpc_requests: grpc,
            grpc_streams_open: 2,
            http_requests: http,
            live_streams: 1,
        });
        for line in [
            "# TYPE lienthong_commands_executed_total counter",
            "lienthong_commands_executed_total 4",
            "lienthong_events_appended_total 12",
            "lienthong_projections_lag_events 2",
            "lienthong_outbox_published_position 6",
            "lienthong_outbox_lag_events 3",
            "lienthong_outbox_spilled_tasks 0",
            "lienthong_open_steps{agency=\"tu-phap\",state=\"overdue\"} 2",
            "lienthong_open_steps{agency=\"tu-phap\",state=\"due-soon\"} 0",
            "lienthong_open_steps{agency=\"bhxh\",state=\"on-track\"} 1",
            "lienthong_overdue_dossiers{agency=\"tu-phap\"} 1",
            "lienthong_grpc_requests_total{method=\"/lienthong.v1.DossierService/Submit\"} 3",
            "lienthong_grpc_streams_open 2",
            "lienthong_http_requests_total{route=\"/board\",code=\"200\"} 5",
            "lienthong_board_live_streams 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // Each family: HELP then TYPE, once, before any of its samples.
        let mut seen = std::collections::BTreeSet::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("name");
                assert!(seen.insert(name.to_string()), "{name} twice");
                assert!(
                    lines[i + 1].starts_with(&format!("# TYPE {name} ")),
                    "{name}: TYPE after HELP"
                );
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().expect("name");
                assert!(seen.contains(name), "{name} sampled before its HELP");
            }
        }
    }

    #[test]
    fn label_values_are_escaped_and_a_projections_role_has_no_store_counters() {
        let mut grpc = BTreeMap::new();
        grpc.insert("a\"b\\c\nd".to_string(), 1);
        let text = render(&Snapshot {
            grpc_requests: grpc,
            ..Snapshot::default()
        });
        assert!(text.contains("method=\"a\\\"b\\\\c\\nd\"} 1"), "{text}");
        assert!(
            !text.contains("lienthong_commands_executed_total"),
            "{text}"
        );
    }
}
