//! The board's HTML: whole pages for the first load, and the live fragment (`<main>`'s content)
//! that the server pushes again whenever the read models move (see [`crate::server`]).
//!
//! Everything is rendered here from the projections' own models ([`Board`], [`Indicators`],
//! [`Breach`]): the page computes no deadline and no rate of its own, so it always agrees with
//! `lienthong report` and the gRPC report service. Every text that comes from data is escaped
//! with [`esc`]; links keep the page's query (`now`, `agency`, `month`, `lang`).

use std::collections::BTreeMap;

use lienthong_projections::views::{Board, BoardState, Breach, Indicators, Month};
use lienthong_workflow::Catalog;

use crate::chart::{self, Bar};
use crate::i18n::Lang;

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value or a path segment (everything but RFC 3986's unreserved).
pub fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a page was asked for, kept on its links and its live stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// The language.
    pub lang: Lang,
    /// The instant the page judges against, as given (`None`: the engine's clock, moving).
    pub now: Option<String>,
    /// The agency filter, as given.
    pub agency: Option<String>,
    /// The month of the charts, as given (`None`: the month of `now`).
    pub month: Option<String>,
}

impl Query {
    /// `?lang=..&now=..` for this query in `lang` (empty values left out).
    pub fn string(&self, lang: Lang) -> String {
        let mut parts = vec![format!("lang={}", lang.code())];
        for (k, v) in [
            ("now", &self.now),
            ("agency", &self.agency),
            ("month", &self.month),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", enc(v)));
            }
        }
        format!("?{}", parts.join("&"))
    }
}

/// The agency's name in `lang` (its code when the workflows do not define it).
fn agency_name<'a>(catalog: &'a Catalog, code: &'a str, lang: Lang) -> &'a str {
    catalog
        .agencies
        .get(code)
        .map_or(code, |a| lang.pick(&a.name_vi, &a.name_en))
}

/// The procedure's name (its code when unknown).
fn procedure_name<'a>(catalog: &'a Catalog, code: &'a str) -> &'a str {
    catalog
        .procedures
        .get(code)
        .map_or(code, |w| w.name.as_str())
}

/// What the board page shows.
pub struct BoardView<'a> {
    /// The page's query.
    pub query: &'a Query,
    /// The deadline board at the page's `now`.
    pub board: &'a Board,
    /// The indicator rows of the charts' month.
    pub indicators: &'a Indicators,
    /// The charts' month.
    pub month: Month,
    /// Agency and procedure names.
    pub catalog: &'a Catalog,
}

/// A whole HTML document around `main` (a fragment), with the live stream at `events`.
pub fn document(lang: Lang, title: &str, query: &Query, events: &str, main: &str) -> String {
    let other = lang.other();
    format!(
        "<!DOCTYPE html>\n<html lang=\"{code}\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{title}</title>\n<link rel=\"stylesheet\" href=\"/board/board.css\">\n\
<link rel=\"icon\" href=\"data:,\">\n\
<script src=\"/board/board.js\" defer></script>\n</head>\n\
<body data-events=\"{events}\">\n<header class=\"bar\">\n<h1><a href=\"/board{home}\">{heading}</a></h1>\n\
<span id=\"live-status\" class=\"live\" data-live=\"{live}\" data-lost=\"{lost}\">{live}</span>\n\
<a class=\"lang\" href=\"{toggle}\" hreflang=\"{ocode}\">{olabel}</a>\n</header>\n\
<main id=\"live\">\n{main}</main>\n</body>\n</html>\n",
        code = lang.code(),
        title = esc(title),
        events = esc(events),
        home = esc(&query.string(lang)),
        heading = lang.pick(
            "Theo dõi hạn xử lý hồ sơ liên thông",
            "Inter-agency dossier SLA board"
        ),
        live = lang.pick("trực tiếp", "live"),
        lost = lang.pick("mất kết nối, đang thử lại…", "disconnected, retrying…"),
        toggle = esc(&query.string(other)),
        ocode = other.code(),
        olabel = lang.pick("English", "Tiếng Việt"),
    )
}

/// The board page: the document around [`board_fragment`].
pub fn board_page(v: &BoardView) -> String {
    let lang = v.query.lang;
    document(
        lang,
        lang.pick("Bảng theo dõi hạn xử lý", "SLA board"),
        v.query,
        &format!("/board/events{}", v.query.string(lang)),
        &board_fragment(v),
    )
}

/// The freshness line: when, in which zone, how far the read models lag the store.
fn freshness(lang: Lang, board_header: &lienthong_projections::views::Header) -> String {
    let lag = &board_header.lag;
    let now = board_header
        .now
        .as_ref()
        .map(|t| {
            format!(
                "{} <span class=\"zone\">(UTC{})</span>",
                esc(&lang.instant(t)),
                t.format("%:z")
            )
        })
        .unwrap_or_default();
    let lag_class = if lag.lag == 0 { "ok" } else { "behind" };
    let mut out = format!(
        "<section class=\"fresh\"><span>{} <time id=\"now\">{now}</time></span> \
<span id=\"lag\" class=\"{lag_class}\">{} <b>{}</b> {} ({} {} / {} {})</span>",
        lang.pick("Thời điểm", "As of"),
        lang.pick("Độ trễ dữ liệu:", "Projection lag:"),
        lag.lag,
        lang.pick("sự kiện", "events"),
        lang.pick("điểm kiểm tra", "checkpoint"),
        lag.checkpoint,
        lang.pick("đầu sổ", "store head"),
        lag.head,
    );
    if let Some(a) = &board_header.agency {
        out.push_str(&format!(
            " <span class=\"filter\">{} {}</span>",
            lang.pick("Cơ quan:", "Agency:"),
            esc(a)
        ));
    }
    if board_header.truncated {
        out.push_str(&format!(
            " <span class=\"warning\">{}</span>",
            lang.pick(
                "Quá nhiều dòng: chọn một cơ quan (?agency=…)",
                "Too many rows: choose an agency (?agency=…)"
            )
        ));
    }
    out.push_str("</section>\n");
    out
}

fn state_label(lang: Lang, s: BoardState) -> &'static str {
    match s {
        BoardState::Overdue => lang.pick("quá hạn", "overdue"),
        BoardState::DueSoon => lang.pick("sắp đến hạn", "due soon"),
        BoardState::Paused => lang.pick("tạm dừng", "paused"),
        BoardState::OnTrack => lang.pick("trong hạn", "on track"),
    }
}

/// The live part of the board page.
pub fn board_fragment(v: &BoardView) -> String {
    let lang = v.query.lang;
    let q = v.query.string(lang);
    let b = v.board;
    let mut out = freshness(lang, &b.header);
    out.push_str("<div class=\"grid\">\n<div class=\"col\">\n");

    // Overdue and due-soon steps, one table per agency, worst first.
    out.push_str(&format!(
        "<section class=\"attention\"><h2>{} <span class=\"hint\">({} {})</span></h2>\n",
        lang.pick("Quá hạn và sắp đến hạn", "Overdue and due soon"),
        lang.pick("sắp đến hạn: trong vòng", "due soon: within"),
        esc(&b.due_soon_window),
    ));
    let mut by_agency: BTreeMap<&str, Vec<&lienthong_projections::views::BoardStep>> =
        BTreeMap::new();
    for s in &b.steps {
        if matches!(s.state, BoardState::Overdue | BoardState::DueSoon) {
            by_agency.entry(&s.agency).or_default().push(s);
        }
    }
    if by_agency.is_empty() {
        out.push_str(&format!(
            "<p class=\"empty\">{}</p>\n",
            lang.pick(
                "Không có bước nào quá hạn hay sắp đến hạn.",
                "No step is overdue or due soon."
            )
        ));
    }
    // Agencies with the most overdue steps first, then the longest overdue.
    let mut groups: Vec<(&str, Vec<&lienthong_projections::views::BoardStep>)> =
        by_agency.into_iter().collect();
    groups.sort_by_key(|(agency, steps)| {
        let overdue = steps
            .iter()
            .filter(|s| s.state == BoardState::Overdue)
            .count();
        let worst = steps
            .iter()
            .map(|s| s.overdue_working_seconds)
            .max()
            .unwrap_or(0);
        (
            std::cmp::Reverse(overdue),
            std::cmp::Reverse(worst),
            *agency,
        )
    });
    for (agency, mut steps) in groups {
        steps.sort_by(|a, b| {
            b.overdue_working_seconds
                .cmp(&a.overdue_working_seconds)
                .then(a.due.cmp(&b.due))
        });
        out.push_str(&format!(
            "<h3 data-agency=\"{}\">{}</h3>\n<table class=\"steps\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"n\">{}</th></tr></thead><tbody>\n",
            esc(agency),
            esc(agency_name(v.catalog, agency, lang)),
            lang.pick("Mã hồ sơ", "Dossier"),
            lang.pick("Thủ tục", "Procedure"),
            lang.pick("Bước", "Step"),
            lang.pick("Hạn", "Due"),
            lang.pick("Tình trạng", "State"),
            lang.pick("Quá hạn (giờ làm việc)", "Over by (working time)"),
        ));
        for s in steps {
            let undeliverable = if s.undeliverable_deliveries > 0 {
                format!(
                    " <span class=\"tag bad\">{} ({}×)</span>",
                    lang.pick("không gửi được", "undeliverable"),
                    s.undeliverable_deliveries
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "<tr class=\"{state}\" data-dossier=\"{code}\"><td><a href=\"/board/dossier/{ecode}{q}\">{code}</a></td><td title=\"{pname}\">{proc}</td><td>{step}</td><td class=\"t\">{due}</td><td><span class=\"tag {state}\">{label}</span>{undeliverable}</td><td class=\"n\">{over}</td></tr>\n",
                state = s.state.as_str(),
                code = esc(&s.dossier_code),
                ecode = enc(&s.dossier_code),
                q = esc(&q),
                pname = esc(procedure_name(v.catalog, &s.procedure)),
                proc = esc(&s.procedure),
                step = esc(&s.step),
                due = esc(&lang.instant(&s.due)),
                label = state_label(lang, s.state),
                over = esc(&s.overdue),
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");

    let mut summary = String::new();
    // Counts per agency: every agency of the workflows (or the filtered one), so that a wall
    // screen shows the quiet ones too.
    let mut counts: BTreeMap<&str, [usize; 5]> = BTreeMap::new();
    for code in v.catalog.agencies.keys() {
        if b.header.agency.as_ref().is_none_or(|a| a == code) {
            counts.insert(code, [0; 5]);
        }
    }
    for s in &b.steps {
        let i = match s.state {
            BoardState::Overdue => 0,
            BoardState::DueSoon => 1,
            BoardState::Paused => 2,
            BoardState::OnTrack => 3,
        };
        counts.entry(&s.agency).or_insert([0; 5])[i] += 1;
    }
    for d in &b.dossiers {
        for h in &d.holders {
            if let Some(c) = counts.get_mut(h.as_str()) {
                c[4] += 1;
            }
        }
    }
    summary.push_str(&format!(
        "<section class=\"summary\"><h2>{}</h2>\n<table><thead><tr><th>{}</th><th class=\"n overdue\">{}</th><th class=\"n due-soon\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th></tr></thead><tbody>\n",
        lang.pick("Bước đang xử lý theo cơ quan", "Open steps by agency"),
        lang.pick("Cơ quan", "Agency"),
        lang.pick("Quá hạn", "Overdue"),
        lang.pick("Sắp đến hạn", "Due soon"),
        lang.pick("Tạm dừng", "Paused"),
        lang.pick("Trong hạn", "On track"),
        lang.pick("Hồ sơ quá hẹn trả", "Past appointment"),
    ));
    for (code, c) in &counts {
        summary.push_str(&format!(
            "<tr data-agency=\"{}\"><td>{}</td><td class=\"n{}\">{}</td><td class=\"n{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td></tr>\n",
            esc(code),
            esc(agency_name(v.catalog, code, lang)),
            if c[0] > 0 { " overdue" } else { "" },
            c[0],
            if c[1] > 0 { " due-soon" } else { "" },
            c[1],
            c[2],
            c[3],
            if c[4] > 0 { " overdue" } else { "" },
            c[4],
        ));
    }
    summary.push_str("</tbody></table></section>\n");
    // The overview comes after what needs attention (a laptop sees that first).
    out.push_str(&summary);

    // Dossiers past the appointment in force.
    out.push_str(&format!(
        "<section class=\"late-dossiers\"><h2>{}</h2>\n",
        lang.pick(
            "Hồ sơ quá hẹn trả kết quả",
            "Dossiers past their appointment"
        )
    ));
    if b.dossiers.is_empty() {
        out.push_str(&format!(
            "<p class=\"empty\">{}</p>\n",
            lang.pick("Không có.", "None.")
        ));
    } else {
        out.push_str(&format!(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"n\">{}</th></tr></thead><tbody>\n",
            lang.pick("Mã hồ sơ", "Dossier"),
            lang.pick("Đang giữ", "Held by"),
            lang.pick("Hẹn trả", "Appointment"),
            lang.pick("Ghi chú", "Notes"),
            lang.pick("Quá hạn (giờ làm việc)", "Over by (working time)"),
        ));
        for d in &b.dossiers {
            let mut notes = Vec::new();
            if d.apologised {
                notes.push(lang.pick("đã xin lỗi, hẹn lại", "apologised, new date"));
            }
            if d.paused {
                notes.push(lang.pick("chờ bổ sung", "awaiting supplement"));
            }
            let holders: Vec<&str> = d
                .holders
                .iter()
                .map(|h| agency_name(v.catalog, h, lang))
                .collect();
            out.push_str(&format!(
                "<tr class=\"overdue\" data-dossier=\"{code}\"><td><a href=\"/board/dossier/{ecode}{q}\">{code}</a></td><td>{holders}</td><td>{at}</td><td>{notes}</td><td class=\"n\">{over}</td></tr>\n",
                code = esc(&d.dossier_code),
                ecode = enc(&d.dossier_code),
                q = esc(&q),
                holders = esc(&holders.join(", ")),
                at = esc(&lang.instant(&d.appointment)),
                notes = esc(&notes.join("; ")),
                over = esc(&d.overdue),
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n</div>\n<div class=\"col\">\n");

    // Charts of the month: steps by the step's agency, dossiers by procedure.
    let mut agencies: BTreeMap<String, Bar> = BTreeMap::new();
    let mut procedures: BTreeMap<String, Bar> = BTreeMap::new();
    for r in &v.indicators.rows {
        // Agencies by name; procedures by code (their names are sentences), named in full in
        // the tooltip and the legend under the chart.
        let (map, key, label, title) = if r.level == "step" {
            let name = agency_name(v.catalog, &r.agency, lang).to_string();
            (&mut agencies, r.agency.clone(), name.clone(), name)
        } else {
            (
                &mut procedures,
                r.procedure.clone(),
                r.procedure.clone(),
                format!(
                    "{} {}",
                    r.procedure,
                    procedure_name(v.catalog, &r.procedure)
                ),
            )
        };
        let bar = map.entry(key).or_insert(Bar {
            label,
            title,
            on_time: 0,
            finished: 0,
        });
        bar.on_time += r.early + r.on_time;
        bar.finished += r.finished;
    }
    let agencies: Vec<Bar> = agencies.into_values().filter(|b| b.finished > 0).collect();
    let procedures: Vec<Bar> = procedures
        .into_values()
        .filter(|b| b.finished > 0)
        .collect();
    let title_a = format!(
        "{} {}",
        lang.pick(
            "Tỉ lệ đúng hạn theo cơ quan (từng bước), tháng",
            "On-time rate by agency (its steps), month"
        ),
        v.month
    );
    let title_p = format!(
        "{} {}",
        lang.pick(
            "Tỉ lệ đúng hạn theo thủ tục (hồ sơ), tháng",
            "On-time rate by procedure (dossiers), month"
        ),
        v.month
    );
    out.push_str(&format!(
        "<section class=\"chart-box\" id=\"rate-agency\"><h2>{}</h2>\n{}\n</section>\n",
        esc(&title_a),
        chart::on_time_chart(&title_a, &agencies, lang)
    ));
    let legend: String = procedures
        .iter()
        .map(|b| format!("<li>{}</li>", esc(&b.title)))
        .collect();
    out.push_str(&format!(
        "<section class=\"chart-box\" id=\"rate-procedure\"><h2>{}</h2>\n{}\n<ul class=\"legend\">{legend}</ul>\n</section>\n",
        esc(&title_p),
        chart::on_time_chart(&title_p, &procedures, lang)
    ));
    out.push_str(&format!(
        "<p class=\"hint\">{}</p>\n",
        lang.pick(
            "Đúng hạn = (trước hạn + đúng hạn) / đã giải quyết trong tháng; hồ sơ có hơn một lần yêu cầu bổ sung tính là quá hạn (QĐ 766/QĐ-TTg).",
            "On time = (early + on time) / finished in the month; a dossier with more than one supplement request counts as late (Decision 766)."
        )
    ));
    out.push_str("</div>\n</div>\n");
    out
}

/// What the dossier page shows.
pub struct DossierView<'a> {
    /// The page's query.
    pub query: &'a Query,
    /// The dossier as the breach report shows it (late or not).
    pub dossier: &'a Breach,
    /// When the page judges open steps.
    pub header: &'a lienthong_projections::views::Header,
    /// Agency and procedure names.
    pub catalog: &'a Catalog,
}

/// The dossier page: the document around [`dossier_fragment`].
pub fn dossier_page(v: &DossierView) -> String {
    let lang = v.query.lang;
    document(
        lang,
        &format!(
            "{} {}",
            lang.pick("Hồ sơ", "Dossier"),
            v.dossier.dossier_code
        ),
        v.query,
        &format!(
            "/board/dossier/{}/events{}",
            enc(&v.dossier.dossier_code),
            v.query.string(lang)
        ),
        &dossier_fragment(v),
    )
}

/// The live part of a dossier's page: its facts, its apology, its process-control slip.
pub fn dossier_fragment(v: &DossierView) -> String {
    let lang = v.query.lang;
    let d = v.dossier;
    let c = v.catalog;
    let mut out = freshness(lang, v.header);
    out.push_str(&format!(
        "<p><a href=\"/board{}\">← {}</a></p>\n<section class=\"dossier\" data-dossier=\"{}\"><h2>{} <span class=\"code\">{}</span></h2>\n<p class=\"procedure\">{} — {}</p>\n<dl>\n",
        esc(&v.query.string(lang)),
        lang.pick("Bảng theo dõi", "Board"),
        esc(&d.dossier_code),
        lang.pick("Hồ sơ", "Dossier"),
        esc(&d.dossier_code),
        esc(&d.procedure),
        esc(procedure_name(c, &d.procedure)),
    ));
    let late = !d.reasons.is_empty();
    let mut fact = |k: &str, v: String| {
        out.push_str(&format!("<dt>{}</dt><dd>{v}</dd>\n", esc(k)));
    };
    fact(
        lang.pick("Cơ quan tiếp nhận", "Received by"),
        esc(agency_name(c, &d.receiving_agency, lang)),
    );
    fact(lang.pick("Trạng thái", "Status"), esc(&d.status));
    fact(
        lang.pick("Hẹn trả (tính tỉ lệ)", "Appointment (for the rate)"),
        d.appointment
            .as_ref()
            .map(|t| esc(&lang.instant(t)))
            .unwrap_or_else(|| "-".into()),
    );
    fact(
        lang.pick("Giải quyết xong", "Finished"),
        match (&d.finished, &d.finished_at) {
            (Some(k), Some(t)) => format!("{} {}", esc(k), esc(&lang.instant(t))),
            _ => lang.pick("chưa", "not yet").to_string(),
        },
    );
    fact(
        lang.pick("Đánh giá", "Verdict"),
        if late {
            let reasons: Vec<&str> = d
                .reasons
                .iter()
                .map(|r| match r.as_str() {
                    "late" => lang.pick("giải quyết quá hạn", "finished late"),
                    "late-by-rule" => lang.pick(
                        "quá hạn theo quy định (hơn một lần bổ sung)",
                        "late by rule (more than one supplement)",
                    ),
                    "open-past-appointment" => {
                        lang.pick("quá hẹn, chưa giải quyết", "past its appointment, open")
                    }
                    other => other,
                })
                .collect();
            format!(
                "<span class=\"tag overdue\">{}</span> {} {}",
                esc(&reasons.join(", ")),
                if d.overdue.is_empty() {
                    String::new()
                } else {
                    format!("{} {}", lang.pick("quá", "over by"), esc(&d.overdue))
                },
                format_args!(
                    "— {} {}",
                    lang.pick("trách nhiệm:", "responsible:"),
                    esc(&d
                        .responsible
                        .iter()
                        .map(|a| agency_name(c, a, lang))
                        .collect::<Vec<_>>()
                        .join(", "))
                )
            )
        } else {
            format!(
                "<span class=\"tag on-track\">{}</span>",
                lang.pick("không trễ hạn", "not late")
            )
        },
    );
    fact(
        lang.pick("Chờ bổ sung", "Waiting"),
        format!(
            "{} {} ({} {}); {} {}; {} {}",
            lang.pick("công dân", "citizen"),
            esc(&d.waiting_citizen),
            d.supplement_requests,
            lang.pick("yêu cầu", "requests"),
            lang.pick("cơ quan khác", "other agencies"),
            esc(&d.waiting_agency),
            lang.pick("nộp tiền", "payment"),
            esc(&d.waiting_payment),
        ),
    );
    out.push_str("</dl>\n");
    match &d.apology {
        Some(a) => out.push_str(&format!(
            "<div class=\"apology{}\"><h3>{}</h3><p>{} <b>{}</b>, {} {}; {} <b>{}</b>{}</p></div>\n",
            if a.late { " late" } else { "" },
            lang.pick(
                "Phiếu xin lỗi và hẹn lại ngày trả kết quả",
                "Apology and new appointment"
            ),
            lang.pick("Cơ quan", "Agency"),
            esc(agency_name(c, &a.agency, lang)),
            lang.pick("lập lúc", "issued"),
            a.issued_at
                .as_ref()
                .map(|t| esc(&lang.instant(t)))
                .unwrap_or_else(|| "-".into()),
            lang.pick("hẹn mới", "new appointment"),
            a.new_appointment
                .as_ref()
                .map(|t| esc(&lang.instant(t)))
                .unwrap_or_else(|| "-".into()),
            if a.late {
                format!(
                    " — <span class=\"tag overdue\">{}</span>",
                    lang.pick(
                        "muộn: chưa đủ 1 ngày làm việc trước hạn",
                        "late: less than 1 working day before the due"
                    )
                )
            } else {
                String::new()
            },
        )),
        None => out.push_str(&format!(
            "<p class=\"hint\">{}</p>\n",
            lang.pick(
                "Không có phiếu xin lỗi, gia hạn.",
                "No apology or extension."
            )
        )),
    }
    out.push_str(&format!(
        "<h3>{}</h3>\n<table class=\"slip\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th>{}</th></tr></thead><tbody>\n",
        lang.pick(
            "Phiếu kiểm soát quá trình giải quyết hồ sơ",
            "Process-control slip"
        ),
        lang.pick("Bước", "Step"),
        lang.pick("Bên giao", "Given by"),
        lang.pick("Bên nhận", "Received by"),
        lang.pick("Giao lúc", "Given at"),
        lang.pick("Hạn", "Due"),
        lang.pick("Xong lúc", "Ended"),
        lang.pick("Định mức", "Budget"),
        lang.pick("Thực tế", "Actual"),
        lang.pick("Vượt", "Over"),
        lang.pick("Kết quả", "Verdict"),
    ));
    let opt = |t: &Option<chrono::DateTime<chrono::FixedOffset>>| {
        t.as_ref()
            .map(|t| esc(&lang.instant(t)))
            .unwrap_or_default()
    };
    for l in &d.slip {
        out.push_str(&format!(
            "<tr class=\"{verdict}{blame}\"><td>{step}</td><td>{giver}</td><td>{receiver}</td><td>{given}</td><td>{due}</td><td>{ended}</td><td class=\"n\">{budget}</td><td class=\"n\">{actual}</td><td class=\"n\">{over}</td><td><span class=\"tag {verdict}\">{label}</span></td></tr>\n",
            verdict = esc(&l.verdict),
            blame = if l.attributed { " blamed" } else { "" },
            step = esc(&l.step),
            giver = esc(agency_name(c, &l.giver, lang)),
            receiver = esc(agency_name(c, &l.receiver, lang)),
            given = esc(&lang.instant(&l.given_at)),
            due = opt(&l.due),
            ended = opt(&l.ended_at),
            budget = esc(&l.budget_working),
            actual = esc(&l.actual_working),
            over = esc(&l.overrun_working),
            label = lang.verdict(&l.verdict),
        ));
    }
    out.push_str("</tbody></table>\n</section>\n");
    out
}

/// A whole page for a refusal or a failure (unknown dossier, bad query, no credentials ...).
pub fn error_page(lang: Lang, status: u16, title: &str, message: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{code}\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{status} {title}</title>\n<link rel=\"stylesheet\" href=\"/board/board.css\">\n\
<link rel=\"icon\" href=\"data:,\">\n</head>\n<body>\n<header class=\"bar\"><h1><a href=\"/board?lang={code}\">{heading}</a></h1></header>\n\
<main class=\"error\"><h2>{status} {title}</h2>\n<p>{message}</p>\n</main>\n</body>\n</html>\n",
        code = lang.code(),
        title = esc(title),
        message = esc(message),
        heading = lang.pick(
            "Theo dõi hạn xử lý hồ sơ liên thông",
            "Inter-agency dossier SLA board"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset};
    use lienthong_projections::Lag;
    use lienthong_projections::views::{
        ApologyView, BoardDossier, BoardStep, Header, IndicatorRow, SlipLine,
    };

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("instant")
    }

    fn catalog() -> Catalog {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        Catalog::load(&dir).expect("the project's workflows load")
    }

    fn header(lag: u64) -> Header {
        Header {
            report: "board".into(),
            now: Some(at("2026-12-21T10:00:00+07:00")),
            lag: Lag {
                checkpoint: 10 - lag,
                head: 10,
                lag,
            },
            agency: None,
            month: None,
            truncated: false,
        }
    }

    fn board() -> Board {
        Board {
            header: header(2),
            due_soon_window: "1wd".into(),
            steps: vec![
                BoardStep {
                    agency: "tu-phap".into(),
                    dossier_code: "UBND.XA-261207-0001".into(),
                    procedure: "2.000986".into(),
                    step: "register-birth".into(),
                    opened_at: at("2026-12-07T08:00:00+07:00"),
                    due: at("2026-12-08T08:00:00+07:00"),
                    state: BoardState::Overdue,
                    overdue_working_seconds: 9 * 8 * 3600,
                    overdue: "9wd".into(),
                    undeliverable_deliveries: 3,
                },
                BoardStep {
                    agency: "bhxh".into(),
                    dossier_code: "UBND.XA-261207-<b>".into(),
                    procedure: "2.000986".into(),
                    step: "issue-health-card".into(),
                    opened_at: at("2026-12-21T08:00:00+07:00"),
                    due: at("2026-12-22T08:00:00+07:00"),
                    state: BoardState::DueSoon,
                    overdue_working_seconds: 0,
                    overdue: String::new(),
                    undeliverable_deliveries: 0,
                },
            ],
            dossiers: vec![BoardDossier {
                holders: vec!["tu-phap".into()],
                dossier_code: "UBND.XA-261207-0001".into(),
                procedure: "2.000986".into(),
                receiving_agency: "ubnd-xa".into(),
                appointment: at("2026-12-10T08:00:00+07:00"),
                apologised: true,
                paused: false,
                overdue_working_seconds: 7 * 8 * 3600,
                overdue: "7wd".into(),
            }],
        }
    }

    fn row(level: &str, agency: &str, on_time: i64, late: i64) -> IndicatorRow {
        IndicatorRow {
            month: "2026-12".into(),
            level: level.into(),
            agency: agency.into(),
            procedure: "2.000986".into(),
            received: on_time + late,
            in_person: on_time + late,
            online: 0,
            post: 0,
            other_channel: 0,
            online_permille: None,
            finished: on_time + late,
            early: 0,
            on_time,
            late,
            late_by_rule: 0,
            apologised: 0,
            withdrawn: 0,
            on_time_permille: None,
            on_time_rate: String::new(),
            avg_processing_working_seconds: None,
            avg_processing_working_days: String::new(),
        }
    }

    fn indicators() -> Indicators {
        Indicators {
            header: header(0),
            rows: vec![
                row("dossier", "ubnd-xa", 3, 1),
                row("step", "tu-phap", 4, 0),
                row("step", "bhxh", 1, 1),
            ],
        }
    }

    #[test]
    fn the_board_lists_overdue_steps_per_agency_with_their_working_time() {
        let c = catalog();
        let (b, i) = (board(), indicators());
        let q = Query {
            now: Some("2026-12-21T10:00:00+07:00".into()),
            ..Query::default()
        };
        let v = BoardView {
            query: &q,
            board: &b,
            indicators: &i,
            month: "2026-12".parse().expect("month"),
            catalog: &c,
        };
        let html = board_fragment(&v);
        // The overdue step: in its agency's table, linked to its timeline with the page's query
        // (the `+` of the offset encoded), with the working time it is over.
        assert!(
            html.contains("<tr class=\"overdue\" data-dossier=\"UBND.XA-261207-0001\"><td><a href=\"/board/dossier/UBND.XA-261207-0001?lang=vi&amp;now=2026-12-21T10%3A00%3A00%2B07%3A00\">"),
            "{html}"
        );
        assert!(html.contains("<td class=\"n\">9wd</td>"), "{html}");
        // The agency with overdue steps comes before the one with steps only due soon.
        let pos = |a: &str| html.find(&format!("<h3 data-agency=\"{a}\">")).expect(a);
        assert!(pos("tu-phap") < pos("bhxh"), "{html}");
        assert!(html.contains("08/12/2026 08:00"), "{html}");
        assert!(html.contains("không gửi được (3×)"), "{html}");
        // Data is escaped.
        assert!(html.contains("UBND.XA-261207-&lt;b&gt;"), "{html}");
        assert!(!html.contains("<b>\""), "{html}");
        // Summary: justice has 1 overdue and 1 dossier past its appointment.
        assert!(
            html.contains("<tr data-agency=\"tu-phap\"><td>Công chức Tư pháp - Hộ tịch cấp xã</td><td class=\"n overdue\">1</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n overdue\">1</td></tr>"),
            "{html}"
        );
        // Lag and the apology note; the charts of the month: agencies by their steps (100% and
        // 50%), procedures by their dossiers (75%).
        assert!(html.contains("Độ trễ dữ liệu: <b>2</b> sự kiện"), "{html}");
        assert!(html.contains("đã xin lỗi, hẹn lại"), "{html}");
        assert!(html.contains("100.0% (4/4)"), "{html}");
        assert!(html.contains("50.0% (1/2)"), "{html}");
        assert!(html.contains("75.0% (3/4)"), "{html}");
        assert!(html.contains("tháng 2026-12"), "{html}");

        let en = Query {
            lang: Lang::En,
            ..q.clone()
        };
        let v = BoardView { query: &en, ..v };
        let page = board_page(&v);
        assert!(
            page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"),
            "{page}"
        );
        assert!(page.contains("Overdue and due soon"), "{page}");
        assert!(page.contains("2026-12-08 08:00"), "{page}");
        assert!(
            page.contains("Commune justice and civil-status officer"),
            "{page}"
        );
        // The live stream keeps the query; the toggle goes to Vietnamese.
        assert!(
            page.contains(
                "data-events=\"/board/events?lang=en&amp;now=2026-12-21T10%3A00%3A00%2B07%3A00\""
            ),
            "{page}"
        );
        assert!(page.contains("hreflang=\"vi\">Tiếng Việt</a>"), "{page}");
    }

    #[test]
    fn a_quiet_board_says_so() {
        let c = catalog();
        let b = Board {
            steps: Vec::new(),
            dossiers: Vec::new(),
            ..board()
        };
        let i = Indicators {
            header: header(0),
            rows: Vec::new(),
        };
        let q = Query::default();
        let html = board_fragment(&BoardView {
            query: &q,
            board: &b,
            indicators: &i,
            month: "2026-12".parse().expect("month"),
            catalog: &c,
        });
        assert!(
            html.contains("Không có bước nào quá hạn hay sắp đến hạn."),
            "{html}"
        );
        assert!(
            html.contains("Chưa có hồ sơ nào được giải quyết trong tháng."),
            "{html}"
        );
    }

    fn slip(step: &str, receiver: &str, verdict: &str, attributed: bool) -> SlipLine {
        SlipLine {
            step: step.into(),
            giver: "ubnd-xa".into(),
            receiver: receiver.into(),
            given_at: at("2026-12-07T08:00:00+07:00"),
            due: Some(at("2026-12-08T08:00:00+07:00")),
            ended_at: None,
            end: "open".into(),
            budget: "1wd".into(),
            budget_working_seconds: Some(8 * 3600),
            actual_working_seconds: Some(10 * 8 * 3600),
            overrun_working_seconds: Some(9 * 8 * 3600),
            budget_working: "1wd".into(),
            actual_working: "10wd".into(),
            overrun_working: "9wd".into(),
            verdict: verdict.into(),
            attributed,
        }
    }

    #[test]
    fn the_timeline_is_the_process_control_slip_with_the_apology() {
        let c = catalog();
        let d = Breach {
            dossier_code: "UBND.XA-261207-0001".into(),
            dossier_id: uuid_nil(),
            procedure: "2.000986".into(),
            receiving_agency: "ubnd-xa".into(),
            status: "processing".into(),
            reasons: vec!["open-past-appointment".into()],
            appointment: Some(at("2026-12-10T08:00:00+07:00")),
            apology: Some(ApologyView {
                agency: "tu-phap".into(),
                issued_at: Some(at("2026-12-09T16:00:00+07:00")),
                new_appointment: Some(at("2026-12-15T17:00:00+07:00")),
                late: true,
            }),
            finished: None,
            finished_at: None,
            overdue_working_seconds: 7 * 8 * 3600,
            overdue: "7wd".into(),
            supplement_requests: 0,
            waiting_citizen_working_seconds: 0,
            waiting_citizen: "0h".into(),
            waiting_agency_working_seconds: 0,
            waiting_agency: "0h".into(),
            waiting_payment_working_seconds: 0,
            waiting_payment: "0h".into(),
            responsible: vec!["tu-phap".into()],
            slip: vec![
                slip("register-birth", "tu-phap", "open-late", true),
                slip("issue-health-card", "bhxh", "early", false),
            ],
        };
        let q = Query::default();
        let h = header(0);
        let html = dossier_fragment(&DossierView {
            query: &q,
            dossier: &d,
            header: &h,
            catalog: &c,
        });
        assert!(
            html.contains("Phiếu kiểm soát quá trình giải quyết hồ sơ"),
            "{html}"
        );
        assert!(html.contains("<tr class=\"open-late blamed\"><td>register-birth</td><td>Bộ phận Một cửa - Ủy ban nhân dân cấp xã</td><td>Công chức Tư pháp - Hộ tịch cấp xã</td><td>07/12/2026 08:00</td><td>08/12/2026 08:00</td><td></td><td class=\"n\">1wd</td><td class=\"n\">10wd</td><td class=\"n\">9wd</td><td><span class=\"tag open-late\">đang xử lý, quá hạn</span></td></tr>"), "{html}");
        assert!(
            html.contains("<span class=\"tag early\">trước hạn</span>"),
            "{html}"
        );
        assert!(
            html.contains("Phiếu xin lỗi và hẹn lại ngày trả kết quả"),
            "{html}"
        );
        assert!(html.contains("15/12/2026 17:00"), "{html}");
        assert!(
            html.contains("muộn: chưa đủ 1 ngày làm việc trước hạn"),
            "{html}"
        );
        assert!(html.contains("quá hẹn, chưa giải quyết"), "{html}");
        assert!(html.contains("trách nhiệm: Công chức Tư pháp"), "{html}");
    }

    fn uuid_nil() -> uuid::Uuid {
        uuid::Uuid::nil()
    }

    #[test]
    fn error_pages_escape_their_message() {
        let p = error_page(Lang::En, 404, "Not found", "no dossier `<x>`");
        assert!(p.contains("<h2>404 Not found</h2>"), "{p}");
        assert!(p.contains("no dossier `&lt;x&gt;`"), "{p}");
        assert_eq!(enc("a+b c/é"), "a%2Bb%20c%2F%C3%A9");
    }
}
