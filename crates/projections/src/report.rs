//! Rendering of the read models: `table` for people, `json` and `csv` for programs.
//!
//! - `table`: aligned text. The first line says which report, when (`now`), and how fresh
//!   (checkpoint, store head, lag in events). Columns carry a Vietnamese label on the first header
//!   line and the English one under it. Instants in the dossier's calendar zone, `YYYY-MM-DD HH:MM`.
//! - `json`: the model structs as they are (stable field names, RFC 3339 instants with the zone's
//!   offset, working times both in seconds and rendered), pretty-printed, one document.
//! - `csv`: RFC 4180 (CRLF line ends; a field with a comma, a quote, CR or LF is quoted and its
//!   quotes doubled), a header row of the JSON field names, no freshness line (a CSV has one shape;
//!   the JSON has the header). Nested parts are flattened: the board is one row per open step and
//!   one per dossier past its appointment (`kind` tells which); breaches are one row per slip line
//!   with the dossier's fields repeated.

use chrono::{DateTime, FixedOffset};

use crate::views::{Board, Breaches, Header, Indicators, percent};

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned text.
    Table,
    /// Pretty JSON.
    Json,
    /// RFC 4180 CSV.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format `{other}`: use table, json or csv")),
        }
    }
}

/// The board in `format`.
pub fn board(b: &Board, format: Format) -> String {
    match format {
        Format::Json => json(b),
        Format::Csv => {
            let mut rows = vec![strings(&[
                "kind",
                "agency",
                "dossier_code",
                "procedure",
                "step",
                "opened_at",
                "due",
                "state",
                "overdue_working_seconds",
                "overdue",
                "undeliverable_deliveries",
            ])];
            for s in &b.steps {
                rows.push(vec![
                    "step".into(),
                    s.agency.clone(),
                    s.dossier_code.clone(),
                    s.procedure.clone(),
                    s.step.clone(),
                    s.opened_at.to_rfc3339(),
                    s.due.to_rfc3339(),
                    s.state.as_str().into(),
                    s.overdue_working_seconds.to_string(),
                    s.overdue.clone(),
                    s.undeliverable_deliveries.to_string(),
                ]);
            }
            for d in &b.dossiers {
                rows.push(vec![
                    "appointment".into(),
                    d.holders.join(" "),
                    d.dossier_code.clone(),
                    d.procedure.clone(),
                    String::new(),
                    String::new(),
                    d.appointment.to_rfc3339(),
                    if d.paused { "paused" } else { "overdue" }.into(),
                    d.overdue_working_seconds.to_string(),
                    d.overdue.clone(),
                    "0".into(),
                ]);
            }
            csv(&rows)
        }
        Format::Table => {
            let mut out = title("Bảng theo dõi hạn xử lý / Deadline board", &b.header);
            out.push_str(&format!(
                "Sắp đến hạn trong / due soon within: {}\n\n",
                b.due_soon_window
            ));
            out.push_str("Bước đang xử lý / Open steps\n");
            let rows: Vec<Vec<String>> = b
                .steps
                .iter()
                .map(|s| {
                    vec![
                        s.agency.clone(),
                        s.dossier_code.clone(),
                        s.procedure.clone(),
                        s.step.clone(),
                        local(&s.opened_at),
                        local(&s.due),
                        if s.undeliverable_deliveries > 0 {
                            format!(
                                "{} / {}; KHÔNG GỬI ĐƯỢC / UNDELIVERABLE ({}x)",
                                s.state.label_vi(),
                                s.state.as_str(),
                                s.undeliverable_deliveries
                            )
                        } else {
                            format!("{} / {}", s.state.label_vi(), s.state.as_str())
                        },
                        s.overdue.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("Cơ quan", "Agency"),
                    ("Mã hồ sơ", "Dossier"),
                    ("Thủ tục", "Procedure"),
                    ("Bước", "Step"),
                    ("Nhận lúc", "Opened"),
                    ("Hạn", "Due"),
                    ("Tình trạng", "State"),
                    ("Quá hạn (giờ làm việc)", "Overdue (working)"),
                ],
                &rows,
            ));
            out.push_str("\nHồ sơ quá hẹn trả / Dossiers past their appointment\n");
            let rows: Vec<Vec<String>> = b
                .dossiers
                .iter()
                .map(|d| {
                    vec![
                        d.holders.join(" "),
                        d.dossier_code.clone(),
                        d.procedure.clone(),
                        local(&d.appointment),
                        yes_no(d.apologised),
                        yes_no(d.paused),
                        d.overdue.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("Đang giữ", "Held by"),
                    ("Mã hồ sơ", "Dossier"),
                    ("Thủ tục", "Procedure"),
                    ("Hẹn trả", "Appointment"),
                    ("Xin lỗi", "Apology"),
                    ("Chờ bổ sung", "Paused"),
                    ("Quá hạn (giờ làm việc)", "Overdue (working)"),
                ],
                &rows,
            ));
            out
        }
    }
}

/// The breaches in `format`.
pub fn breaches(b: &Breaches, format: Format) -> String {
    match format {
        Format::Json => json(b),
        Format::Csv => {
            let mut rows = vec![strings(&[
                "dossier_code",
                "procedure",
                "receiving_agency",
                "status",
                "reasons",
                "appointment",
                "apology_new_appointment",
                "finished",
                "finished_at",
                "overdue_working_seconds",
                "overdue",
                "supplement_requests",
                "waiting_citizen_working_seconds",
                "waiting_agency_working_seconds",
                "waiting_payment_working_seconds",
                "responsible",
                "step",
                "giver",
                "receiver",
                "given_at",
                "due",
                "ended_at",
                "end",
                "budget",
                "budget_working_seconds",
                "actual_working_seconds",
                "overrun_working_seconds",
                "verdict",
                "attributed",
            ])];
            for d in &b.breaches {
                for l in &d.slip {
                    rows.push(vec![
                        d.dossier_code.clone(),
                        d.procedure.clone(),
                        d.receiving_agency.clone(),
                        d.status.clone(),
                        d.reasons.join(" "),
                        opt_rfc(&d.appointment),
                        d.apology
                            .as_ref()
                            .map(|a| opt_rfc(&a.new_appointment))
                            .unwrap_or_default(),
                        d.finished.clone().unwrap_or_default(),
                        opt_rfc(&d.finished_at),
                        d.overdue_working_seconds.to_string(),
                        d.overdue.clone(),
                        d.supplement_requests.to_string(),
                        d.waiting_citizen_working_seconds.to_string(),
                        d.waiting_agency_working_seconds.to_string(),
                        d.waiting_payment_working_seconds.to_string(),
                        d.responsible.join(" "),
                        l.step.clone(),
                        l.giver.clone(),
                        l.receiver.clone(),
                        l.given_at.to_rfc3339(),
                        opt_rfc(&l.due),
                        opt_rfc(&l.ended_at),
                        l.end.clone(),
                        l.budget.clone(),
                        opt_num(l.budget_working_seconds),
                        opt_num(l.actual_working_seconds),
                        opt_num(l.overrun_working_seconds),
                        l.verdict.clone(),
                        l.attributed.to_string(),
                    ]);
                }
            }
            csv(&rows)
        }
        Format::Table => {
            let mut out = title("Hồ sơ trễ hạn và trách nhiệm / SLA breaches", &b.header);
            out.push_str(&format!(
                "Số hồ sơ trễ hạn / late dossiers: {}\n",
                b.breaches.len()
            ));
            for d in &b.breaches {
                out.push('\n');
                out.push_str(&format!(
                    "{}  {}  tiếp nhận / received by {}  [{}]\n",
                    d.dossier_code, d.procedure, d.receiving_agency, d.status
                ));
                out.push_str(&format!(
                    "  Lý do / reasons: {}\n  Hẹn trả (tính tỉ lệ) / rate appointment: {}\n",
                    d.reasons.join(", "),
                    d.appointment.as_ref().map(local).unwrap_or_default()
                ));
                if let Some(a) = &d.apology {
                    out.push_str(&format!(
                        "  Xin lỗi, hẹn lại / apology, new appointment: {} ({}{})\n",
                        a.new_appointment.as_ref().map(local).unwrap_or_default(),
                        a.agency,
                        if a.late { ", muộn / late" } else { "" }
                    ));
                }
                out.push_str(&format!(
                    "  Kết thúc / finished: {}\n  Quá hạn / overdue: {}\n",
                    match (&d.finished, &d.finished_at) {
                        (Some(k), Some(t)) => format!("{k} {}", local(t)),
                        _ => "chưa / not yet".into(),
                    },
                    if d.overdue.is_empty() {
                        "-"
                    } else {
                        &d.overdue
                    }
                ));
                out.push_str(&format!(
                    "  Chờ công dân / waiting on citizen: {} ({} yêu cầu bổ sung / supplement requests); chờ cơ quan khác / on agencies: {}; chờ nộp tiền / on payment: {}\n",
                    d.waiting_citizen, d.supplement_requests, d.waiting_agency, d.waiting_payment
                ));
                out.push_str(&format!(
                    "  Trách nhiệm / responsible: {}\n",
                    d.responsible.join(", ")
                ));
                out.push_str("  Phiếu kiểm soát quá trình / process-control slip\n");
                let rows: Vec<Vec<String>> = d
                    .slip
                    .iter()
                    .map(|l| {
                        vec![
                            l.step.clone(),
                            l.giver.clone(),
                            l.receiver.clone(),
                            local(&l.given_at),
                            l.due.as_ref().map(local).unwrap_or_default(),
                            l.ended_at.as_ref().map(local).unwrap_or_default(),
                            l.budget_working.clone(),
                            l.actual_working.clone(),
                            l.overrun_working.clone(),
                            verdict_label(&l.verdict),
                            if l.attributed { "*" } else { "" }.into(),
                        ]
                    })
                    .collect();
                for line in table(
                    &[
                        ("Bước", "Step"),
                        ("Bên giao", "Giver"),
                        ("Bên nhận", "Receiver"),
                        ("Giao lúc", "Given at"),
                        ("Hạn", "Due"),
                        ("Xong lúc", "Ended"),
                        ("Định mức", "Budget"),
                        ("Thực tế", "Actual"),
                        ("Vượt", "Overrun"),
                        ("Kết quả", "Verdict"),
                        ("TN", "Blame"),
                    ],
                    &rows,
                )
                .lines()
                {
                    out.push_str("  ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// The indicators in `format`.
pub fn indicators(i: &Indicators, format: Format) -> String {
    match format {
        Format::Json => json(i),
        Format::Csv => {
            let mut rows = vec![strings(&[
                "month",
                "level",
                "agency",
                "procedure",
                "received",
                "in_person",
                "online",
                "post",
                "other_channel",
                "online_permille",
                "finished",
                "early",
                "on_time",
                "late",
                "late_by_rule",
                "apologised",
                "withdrawn",
                "on_time_permille",
                "on_time_rate",
                "avg_processing_working_seconds",
                "avg_processing_working_days",
            ])];
            for r in &i.rows {
                rows.push(vec![
                    r.month.clone(),
                    r.level.clone(),
                    r.agency.clone(),
                    r.procedure.clone(),
                    r.received.to_string(),
                    r.in_person.to_string(),
                    r.online.to_string(),
                    r.post.to_string(),
                    r.other_channel.to_string(),
                    opt_num(r.online_permille),
                    r.finished.to_string(),
                    r.early.to_string(),
                    r.on_time.to_string(),
                    r.late.to_string(),
                    r.late_by_rule.to_string(),
                    r.apologised.to_string(),
                    r.withdrawn.to_string(),
                    opt_num(r.on_time_permille),
                    r.on_time_rate.clone(),
                    opt_num(r.avg_processing_working_seconds),
                    r.avg_processing_working_days.clone(),
                ]);
            }
            csv(&rows)
        }
        Format::Table => {
            let mut out = title(
                "Chỉ số đánh giá (QĐ 766/QĐ-TTg) / Indicators (Decision 766)",
                &i.header,
            );
            out.push_str(
                "Cấp hồ sơ: tính cho cơ quan tiếp nhận; cấp bước: cho cơ quan xử lý bước / dossier rows: receiving agency; step rows: the step's agency\n\n",
            );
            let rows: Vec<Vec<String>> = i
                .rows
                .iter()
                .map(|r| {
                    let dossier = r.level == "dossier";
                    vec![
                        r.month.clone(),
                        if dossier {
                            "hồ sơ / dossier"
                        } else {
                            "bước / step"
                        }
                        .into(),
                        r.agency.clone(),
                        r.procedure.clone(),
                        r.received.to_string(),
                        if dossier {
                            format!("{}/{}/{}", r.in_person, r.online, r.post)
                        } else {
                            "-".into()
                        },
                        if dossier {
                            percent(r.online_permille)
                        } else {
                            "-".into()
                        },
                        r.finished.to_string(),
                        r.early.to_string(),
                        r.on_time.to_string(),
                        r.late.to_string(),
                        r.on_time_rate.clone(),
                        r.avg_processing_working_days.clone(),
                        if dossier {
                            r.apologised.to_string()
                        } else {
                            "-".into()
                        },
                        if dossier {
                            r.withdrawn.to_string()
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    ("Tháng", "Month"),
                    ("Cấp", "Level"),
                    ("Cơ quan", "Agency"),
                    ("Thủ tục", "Procedure"),
                    ("Tiếp nhận", "Received"),
                    ("TT/TT/BC", "InPers/Onl/Post"),
                    ("Trực tuyến", "Online"),
                    ("Đã giải quyết", "Finished"),
                    ("Trước hạn", "Early"),
                    ("Đúng hạn", "On time"),
                    ("Quá hạn", "Late"),
                    ("Tỉ lệ đúng hạn", "On-time rate"),
                    ("TG xử lý TB (ngày LV)", "Avg time (wd)"),
                    ("Xin lỗi", "Apologies"),
                    ("Rút", "Withdrawn"),
                ],
                &rows,
            ));
            out
        }
    }
}

fn verdict_label(v: &str) -> String {
    let vi = match v {
        "early" => "trước hạn",
        "on-time" => "đúng hạn",
        "late" => "quá hạn",
        "open" => "đang xử lý",
        "open-late" => "đang xử lý, quá hạn",
        "cancelled" => "hủy",
        _ => "-",
    };
    format!("{vi} / {v}")
}

fn title(name: &str, h: &Header) -> String {
    let mut out = format!("{name}\n");
    if let Some(now) = &h.now {
        out.push_str(&format!(
            "Thời điểm / now: {}\n",
            now.format("%Y-%m-%d %H:%M %:z")
        ));
    }
    out.push_str(&format!(
        "Điểm kiểm tra / checkpoint: {}  đầu sổ / store head: {}  độ trễ / lag: {} sự kiện / events\n",
        h.lag.checkpoint, h.lag.head, h.lag.lag
    ));
    let mut filters = Vec::new();
    if let Some(a) = &h.agency {
        filters.push(format!("cơ quan / agency = {a}"));
    }
    if let Some(m) = &h.month {
        filters.push(format!("tháng / month = {m}"));
    }
    if !filters.is_empty() {
        out.push_str(&format!("Lọc / filter: {}\n", filters.join(", ")));
    }
    if h.truncated {
        out.push_str(&format!(
            "CẢNH BÁO / WARNING: more than {} rows; narrow with --agency\n",
            crate::views::REPORT_ROWS_MAX
        ));
    }
    out.push('\n');
    out
}

fn local(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn opt_rfc(t: &Option<DateTime<FixedOffset>>) -> String {
    t.as_ref().map(DateTime::to_rfc3339).unwrap_or_default()
}

fn opt_num(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

fn yes_no(b: bool) -> String {
    if b { "có / yes" } else { "" }.into()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // The models hold only strings, integers, booleans and instants: serialising cannot fail.
    let mut s = serde_json::to_string_pretty(v)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialise the report: {e}\"}}"));
    s.push('\n');
    s
}

/// Aligned text: two header lines (Vietnamese, English), a rule, the rows. Widths count chars.
pub fn table(columns: &[(&str, &str)], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(vi, en)| width(vi).max(width(en)))
        .collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.push_str(&" ".repeat(w - width(cell)));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = String::new();
    out.push_str(&line(&mut columns.iter().map(|c| c.0)));
    out.push_str(&line(&mut columns.iter().map(|c| c.1)));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    if rows.is_empty() {
        out.push_str("(không có / none)\n");
    }
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// RFC 4180: CRLF line ends; fields with `,`, `"`, CR or LF quoted, quotes doubled.
pub fn csv(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for row in rows {
        let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_rfc_4180_requires() {
        let rows = vec![vec![
            "plain".to_string(),
            "a,b".to_string(),
            "say \"hi\"".to_string(),
            "two\nlines".to_string(),
            String::new(),
        ]];
        assert_eq!(
            csv(&rows),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn table_aligns_by_characters_not_bytes() {
        let t = table(
            &[("Cơ quan", "Agency"), ("Số", "N")],
            &[vec!["tư-pháp".into(), "1".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Cơ quan  Số");
        assert_eq!(lines[1], "Agency   N");
        assert_eq!(lines[3], "tư-pháp  1");
    }
}
