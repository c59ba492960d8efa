//! The read models: deadline board, SLA breaches, indicators. Queries over the projections
//! database; the ones that judge against the clock take `now` (the projections never read it).
//!
//! Instants are shown in the zone of the dossier's calendar (the header's `now` in the zone of
//! the first loaded calendar). Working times are in the dossier's calendar and rendered with
//! [`Calendar::format_working_time`] (`1wd 2h30m`); JSON carries the seconds as well.
//!
//! - [`Projections::board`]: every open step per holding agency in due order, classified
//!   *overdue* (working time has elapsed past its due), *due-soon* (due within the window, default
//!   `1wd` of working time, or past due with no working time lost yet), *paused* (the engine's
//!   clock rules hold the due, exactly as `lienthong_engine::dossier::current_deadlines` leaves
//!   it out: the citizen's supplement, a payment that does not count; no lateness accrues) or
//!   *on-track*; and the open dossiers past their appointment in force
//!   (an apology's new date counts here: the board is what agencies must meet now).
//! - [`Projections::breaches`]: every late dossier (finished late, late by rule, or unfinished
//!   with working time past its rate appointment, measured up to `now` or, while a supplement is
//!   outstanding, up to the request), with its process-control slip and the hand-offs
//!   that overran their own due (attributed), the time spent waiting on the citizen, on other
//!   agencies and on payment. `--agency` keeps the breaches attributed to that agency (the
//!   receiving agency when no hand-off overran); `--month` keeps those whose rate appointment falls
//!   in that local month. [`Projections::timeline`] is the same view of any one dossier, late or
//!   not (the live board's timeline of a selected dossier).
//! - [`Projections::indicators`]: Decision 766 counters per month × level × agency × procedure.
//!   `dossier` rows are attributed to the receiving agency (received in the month of receipt;
//!   finished, early/on-time/late, processing time in the month of the finish; withdrawn in the
//!   month of withdrawal). `step` rows are attributed to each step's agency (hand-offs received in
//!   the month of the opening; finished and judged against the step's own due in the month of its
//!   completion or rejection). On-time rate = (early + on time) / finished, in per-mille, rounded
//!   half up; channel shares likewise over received.

use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use chrono_tz::Tz;
use lienthong_calendar::{Calendar, Duration};
use serde::Serialize;
use uuid::Uuid;

use crate::error::Error;
use crate::keys;
use crate::projector::{Lag, Projections, decode};
use crate::record::{DossierRecord, HandoffEnd, OpenDossierEntry, OpenStepEntry, Verdict};

/// Rows a board or breach report returns at most; the header says when more were left out.
pub const REPORT_ROWS_MAX: usize = 10_000;

/// A month `YYYY-MM`, local to the calendars' zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    /// The year.
    pub year: i32,
    /// 1..=12.
    pub month: u32,
}

impl std::str::FromStr for Month {
    type Err = Error;
    fn from_str(s: &str) -> Result<Month, Error> {
        let bad = || Error::Query(format!("month `{s}` is not YYYY-MM (e.g. 2026-11)"));
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// What every report starts with: how fresh it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Header {
    /// `board`, `breaches` or `indicators`.
    pub report: String,
    /// The instant the report judges against (none for indicators, which do not depend on it).
    pub now: Option<DateTime<FixedOffset>>,
    /// Checkpoint, store head, lag.
    #[serde(flatten)]
    pub lag: Lag,
    /// The filters applied.
    pub agency: Option<String>,
    /// The month filter.
    pub month: Option<String>,
    /// Rows left out beyond [`REPORT_ROWS_MAX`].
    pub truncated: bool,
}

/// How an open step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardState {
    /// Working time has elapsed past its due.
    Overdue,
    /// Due within the window (or past due with no working time lost yet).
    DueSoon,
    /// The engine's clock rules hold the due (the citizen's supplement, a payment that does not
    /// count): no lateness accrues, the clock rule decides the due later.
    Paused,
    /// Neither.
    OnTrack,
}

impl BoardState {
    /// Stable text.
    pub fn as_str(&self) -> &'static str {
        match self {
            BoardState::Overdue => "overdue",
            BoardState::DueSoon => "due-soon",
            BoardState::Paused => "paused",
            BoardState::OnTrack => "on-track",
        }
    }

    /// Vietnamese label.
    pub fn label_vi(&self) -> &'static str {
        match self {
            BoardState::Overdue => "quá hạn",
            BoardState::DueSoon => "sắp đến hạn",
            BoardState::Paused => "tạm dừng",
            BoardState::OnTrack => "trong hạn",
        }
    }
}

/// One open step on the board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardStep {
    /// The holding agency.
    pub agency: String,
    /// Dossier code.
    pub dossier_code: String,
    /// Procedure code.
    pub procedure: String,
    /// The step.
    pub step: String,
    /// When handed over.
    pub opened_at: DateTime<FixedOffset>,
    /// Its due.
    pub due: DateTime<FixedOffset>,
    /// How it stands.
    pub state: BoardState,
    /// Working seconds past the due (0 unless overdue).
    pub overdue_working_seconds: i64,
    /// The same, rendered (`1wd 2h30m`; empty unless overdue).
    pub overdue: String,
    /// The agency's system never acknowledged this step's task: the deliveries the bus made
    /// before it set the task aside as a dead letter (0: no dead letter).
    pub undeliverable_deliveries: u32,
}

/// One open dossier past its appointment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardDossier {
    /// Who holds it: the agencies of its open steps, else the receiving agency.
    pub holders: Vec<String>,
    /// Dossier code.
    pub dossier_code: String,
    /// Procedure code.
    pub procedure: String,
    /// The receiving agency.
    pub receiving_agency: String,
    /// The appointment in force.
    pub appointment: DateTime<FixedOffset>,
    /// Whether an apology set it.
    pub apologised: bool,
    /// The appointment is on hold (the citizen's supplement, a payment that does not count).
    pub paused: bool,
    /// Working seconds past the appointment.
    pub overdue_working_seconds: i64,
    /// The same, rendered.
    pub overdue: String,
}

/// What to put on the board.
#[derive(Clone, Debug)]
pub struct BoardQuery {
    /// Only this holding agency.
    pub agency: Option<String>,
    /// Due within this much (working) time counts as due soon.
    pub due_soon: Duration,
}

impl Default for BoardQuery {
    fn default() -> Self {
        BoardQuery {
            agency: None,
            due_soon: Duration::WorkingDays(1),
        }
    }
}

/// The deadline board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Board {
    /// Freshness and filters.
    pub header: Header,
    /// The due-soon window as written.
    pub due_soon_window: String,
    /// Open steps by agency, in due order.
    pub steps: Vec<BoardStep>,
    /// Open dossiers past their appointment, in appointment order.
    pub dossiers: Vec<BoardDossier>,
}

/// One line of the process-control slip, judged at `now` when still open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlipLine {
    /// The step.
    pub step: String,
    /// Who gave.
    pub giver: String,
    /// Who received.
    pub receiver: String,
    /// When.
    pub given_at: DateTime<FixedOffset>,
    /// Its due (after deadline moves).
    pub due: Option<DateTime<FixedOffset>>,
    /// When it ended (completed or rejected); none while open.
    pub ended_at: Option<DateTime<FixedOffset>>,
    /// `completed:<outcome>`, `rejected`, `cancelled` or `open`.
    pub end: String,
    /// The budget as written.
    pub budget: String,
    /// Working seconds of the budget.
    pub budget_working_seconds: Option<i64>,
    /// Working seconds used (to `now` while open), waits excluded.
    pub actual_working_seconds: Option<i64>,
    /// Working seconds past the due (negative: ahead), to `now` while open.
    pub overrun_working_seconds: Option<i64>,
    /// Rendered budget.
    pub budget_working: String,
    /// Rendered actual.
    pub actual_working: String,
    /// Rendered overrun (empty unless positive).
    pub overrun_working: String,
    /// `early`, `on-time`, `late`, `open`, `open-late` or `cancelled`.
    pub verdict: String,
    /// This hand-off overran its own due: it is to blame.
    pub attributed: bool,
}

/// The apology, shown apart (it does not change the rate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApologyView {
    /// The apologising agency.
    pub agency: String,
    /// When.
    pub issued_at: Option<DateTime<FixedOffset>>,
    /// The new appointment promised.
    pub new_appointment: Option<DateTime<FixedOffset>>,
    /// Issued later than 1 working day before the appointment.
    pub late: bool,
}

/// One dossier with its process-control slip: a late one in the breach report, any one in a
/// [`Projections::timeline`] (then `reasons` may be empty, and `responsible` is meaningful only
/// when it is not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Breach {
    /// Dossier code.
    pub dossier_code: String,
    /// Dossier id.
    pub dossier_id: Uuid,
    /// Procedure code.
    pub procedure: String,
    /// The receiving agency.
    pub receiving_agency: String,
    /// Status text.
    pub status: String,
    /// `late`, `late-by-rule`, `open-past-appointment`.
    pub reasons: Vec<String>,
    /// The appointment the rate is judged against.
    pub appointment: Option<DateTime<FixedOffset>>,
    /// The apology, if any.
    pub apology: Option<ApologyView>,
    /// `processed`, `returned`, `refused`, `stopped`; none while open.
    pub finished: Option<String>,
    /// When it finished.
    pub finished_at: Option<DateTime<FixedOffset>>,
    /// Working seconds past the rate appointment (at the finish, or at `now`).
    pub overdue_working_seconds: i64,
    /// Rendered.
    pub overdue: String,
    /// Supplement requests.
    pub supplement_requests: u32,
    /// Working seconds waiting on the citizen (supplements addressed to them; to `now` if open).
    pub waiting_citizen_working_seconds: i64,
    /// Rendered.
    pub waiting_citizen: String,
    /// Working seconds waiting on another agency's supplement.
    pub waiting_agency_working_seconds: i64,
    /// Rendered.
    pub waiting_agency: String,
    /// Working seconds excluded while waiting for payment.
    pub waiting_payment_working_seconds: i64,
    /// Rendered.
    pub waiting_payment: String,
    /// Agencies of the attributed hand-offs, in slip order (the receiving agency if none).
    pub responsible: Vec<String>,
    /// The process-control slip.
    pub slip: Vec<SlipLine>,
}

/// Which breaches.
#[derive(Clone, Debug, Default)]
pub struct BreachQuery {
    /// Only breaches attributed to this agency.
    pub agency: Option<String>,
    /// Only those whose rate appointment falls in this month.
    pub month: Option<Month>,
}

/// The breach report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Breaches {
    /// Freshness and filters.
    pub header: Header,
    /// Late dossiers in code order.
    pub breaches: Vec<Breach>,
}

/// Which indicator rows.
#[derive(Clone, Debug, Default)]
pub struct IndicatorQuery {
    /// Only this agency.
    pub agency: Option<String>,
    /// Only this month.
    pub month: Option<Month>,
}

/// One indicator row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IndicatorRow {
    /// `YYYY-MM`.
    pub month: String,
    /// `dossier` (attributed to the receiving agency) or `step` (to the step's agency).
    pub level: String,
    /// The agency.
    pub agency: String,
    /// Procedure code.
    pub procedure: String,
    /// Received in the month.
    pub received: i64,
    /// Of which in person.
    pub in_person: i64,
    /// Of which online.
    pub online: i64,
    /// Of which by post.
    pub post: i64,
    /// Of which another channel.
    pub other_channel: i64,
    /// Online share of received, per-mille (none when nothing received or step level).
    pub online_permille: Option<i64>,
    /// Finished in the month.
    pub finished: i64,
    /// Early.
    pub early: i64,
    /// On time.
    pub on_time: i64,
    /// Late.
    pub late: i64,
    /// Of late, by rule (more than one supplement request).
    pub late_by_rule: i64,
    /// Of finished, with an apology (judged against the first appointment all the same).
    pub apologised: i64,
    /// Withdrawn in the month.
    pub withdrawn: i64,
    /// (early + on time) / finished, per-mille; none when nothing finished.
    pub on_time_permille: Option<i64>,
    /// Rendered, one decimal (`97.5%`, `-`).
    pub on_time_rate: String,
    /// Average processing time, working seconds; none when nothing measured.
    pub avg_processing_working_seconds: Option<i64>,
    /// Average in working days, two decimals (`1.25`).
    pub avg_processing_working_days: String,
}

/// The indicator report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Indicators {
    /// Freshness and filters.
    pub header: Header,
    /// Rows in (month, level, agency, procedure) order.
    pub rows: Vec<IndicatorRow>,
}

/// `num / den` in per-mille, rounded half up; `None` when `den` is 0.
pub fn permille(num: i64, den: i64) -> Option<i64> {
    (den > 0).then(|| (num * 2000 + den) / (2 * den))
}

/// A per-mille as a percentage with one decimal: `975` → `97.5%`; `None` → `-`.
pub fn percent(p: Option<i64>) -> String {
    match p {
        Some(p) => format!("{}.{}%", p / 10, p % 10),
        None => "-".into(),
    }
}

fn with_tz(t: DateTime<Utc>, tz: Tz) -> DateTime<FixedOffset> {
    t.with_timezone(&tz).fixed_offset()
}

impl Projections {
    /// The zone the header's `now` is shown in: the first loaded calendar's, else UTC.
    pub fn display_tz(&self) -> Tz {
        self.catalog()
            .calendars
            .values()
            .next()
            .map_or(Tz::UTC, Calendar::timezone)
    }

    fn calendar(&self, name: &str) -> Result<&Calendar, Error> {
        self.catalog()
            .calendar(name)
            .ok_or_else(|| Error::UnknownCalendar(name.to_string()))
    }

    fn header(
        &self,
        report: &str,
        now: Option<DateTime<Utc>>,
        agency: &Option<String>,
        month: Option<Month>,
    ) -> Result<Header, Error> {
        Ok(Header {
            report: report.into(),
            now: now.map(|t| with_tz(t, self.display_tz())),
            lag: self.lag()?,
            agency: agency.clone(),
            month: month.map(|m| m.to_string()),
            truncated: false,
        })
    }

    /// The deadline board at `now`.
    pub fn board(&self, now: DateTime<Utc>, q: &BoardQuery) -> Result<Board, Error> {
        let mut header = self.header("board", Some(now), &q.agency, None)?;
        let prefix = match &q.agency {
            Some(a) => keys::open_step_prefix(a),
            None => keys::OPEN_STEP.to_vec(),
        };
        let mut steps = Vec::new();
        for kv in self.db().scan_prefix(&prefix) {
            let (k, v) = kv?;
            if steps.len() >= REPORT_ROWS_MAX {
                header.truncated = true;
                break;
            }
            let e: OpenStepEntry = decode(&k, &v)?;
            let cal = self.calendar(&e.calendar)?;
            let err = |source| Error::Calendar {
                dossier: e.code.clone(),
                source: Box::new(source),
            };
            let past = cal.working_time_between(e.due, now).map_err(err)?;
            // Held exactly when the engine does not watch this due (its `current_deadlines`):
            // a citizen's supplement (every step, or the asking one under "restart"), an open
            // payment step that does not count (every step, and the payment step itself).
            let state = if e.held {
                BoardState::Paused
            } else if past > TimeDelta::zero() {
                BoardState::Overdue
            } else if e.due <= cal.add(now, q.due_soon).map_err(err)? {
                BoardState::DueSoon
            } else {
                BoardState::OnTrack
            };
            let overdue = state == BoardState::Overdue;
            let tz = cal.timezone();
            steps.push(BoardStep {
                agency: e.agency.clone(),
                dossier_code: e.code.clone(),
                procedure: e.procedure.clone(),
                step: e.step.clone(),
                opened_at: with_tz(e.opened_at, tz),
                due: with_tz(e.due, tz),
                state,
                overdue_working_seconds: if overdue { past.num_seconds() } else { 0 },
                overdue: if overdue {
                    cal.format_working_time(past)
                } else {
                    String::new()
                },
                undeliverable_deliveries: e.undeliverable_deliveries,
            });
        }
        let mut dossiers = Vec::new();
        let bound = [keys::OPEN_DOSSIER, &keys::instant_bound(now)].concat();
        for kv in self.db().range(keys::OPEN_DOSSIER.to_vec()..bound) {
            let (k, v) = kv?;
            let e: OpenDossierEntry = decode(&k, &v)?;
            if let Some(a) = &q.agency
                && !e.holders.contains(a)
            {
                continue;
            }
            let cal = self.calendar(&e.calendar)?;
            let at = e.paused_since.map_or(now, |p| p.min(now));
            let past = cal
                .working_time_between(e.appointment, at)
                .map_err(|source| Error::Calendar {
                    dossier: e.code.clone(),
                    source: Box::new(source),
                })?;
            if past <= TimeDelta::zero() {
                continue;
            }
            if dossiers.len() >= REPORT_ROWS_MAX {
                header.truncated = true;
                break;
            }
            dossiers.push(BoardDossier {
                holders: e.holders.clone(),
                dossier_code: e.code.clone(),
                procedure: e.procedure.clone(),
                receiving_agency: e.receiving_agency.clone(),
                appointment: with_tz(e.appointment, cal.timezone()),
                apologised: e.apologised,
                paused: e.paused_since.is_some(),
                overdue_working_seconds: past.num_seconds(),
                overdue: cal.format_working_time(past),
            });
        }
        Ok(Board {
            header,
            due_soon_window: q.due_soon.to_string(),
            steps,
            dossiers,
        })
    }

    /// The SLA breaches at `now`.
    pub fn breaches(&self, now: DateTime<Utc>, q: &BreachQuery) -> Result<Breaches, Error> {
        let mut header = self.header("breaches", Some(now), &q.agency, q.month)?;
        let mut candidates: BTreeSet<Uuid> = BTreeSet::new();
        for k in self.db().scan_prefix(keys::LATE).keys() {
            candidates.extend(keys::trailing_dossier(&k?));
        }
        let bound = [keys::RATE_DUE, &keys::instant_bound(now)].concat();
        for k in self.db().range(keys::RATE_DUE.to_vec()..bound).keys() {
            candidates.extend(keys::trailing_dossier(&k?));
        }
        let mut out = Vec::new();
        for id in candidates {
            let Some(rec) = self.record(&id)? else {
                return Err(Error::Corrupt {
                    key: keys::printable(&keys::dossier_key(&id)),
                    reason: "indexed but missing".into(),
                });
            };
            let b = self.slip(&rec, now)?;
            if b.reasons.is_empty() {
                continue;
            }
            if let Some(a) = &q.agency
                && !b.responsible.contains(a)
            {
                continue;
            }
            if let Some(m) = q.month {
                let in_month = b
                    .appointment
                    .is_some_and(|t| t.format("%Y-%m").to_string() == m.to_string());
                if !in_month {
                    continue;
                }
            }
            if out.len() >= REPORT_ROWS_MAX {
                header.truncated = true;
                break;
            }
            out.push(b);
        }
        out.sort_by(|a, b| a.dossier_code.cmp(&b.dossier_code));
        Ok(Breaches {
            header,
            breaches: out,
        })
    }

    /// One dossier at `now` as the breach report shows it (its process-control slip, apology,
    /// waits and lateness), late or not: the board's timeline of a selected dossier. `None` when
    /// the projections hold no record of `id` (unknown, or not folded yet).
    pub fn timeline(&self, id: &Uuid, now: DateTime<Utc>) -> Result<Option<Breach>, Error> {
        self.record(id)?.map(|rec| self.slip(&rec, now)).transpose()
    }

    /// The breach view of one record at `now`; `reasons` is empty when it is not late.
    fn slip(&self, rec: &DossierRecord, now: DateTime<Utc>) -> Result<Breach, Error> {
        let cal = self.calendar(&rec.calendar)?;
        let tz = cal.timezone();
        let err = |source| Error::Calendar {
            dossier: rec.code.clone(),
            source: Box::new(source),
        };
        let fmt = |s: i64| cal.format_working_time(TimeDelta::seconds(s));
        // While a supplement is outstanding the clock is frozen at the request.
        let at = rec.paused_since().map_or(now, |p| p.min(now));
        let mut reasons = Vec::new();
        let overdue_s = match (rec.finished, rec.rate_appointment) {
            (Some(_), _) => {
                let s = rec.overdue_s.unwrap_or(0);
                if s > 0 {
                    reasons.push("late".to_string());
                }
                s
            }
            (None, Some(due)) if rec.is_open() => {
                let s = cal
                    .working_time_between(due, at)
                    .map_err(err)?
                    .num_seconds();
                if s > 0 {
                    reasons.push("open-past-appointment".to_string());
                }
                s
            }
            _ => 0,
        };
        if rec.late_by_rule && (rec.is_open() || rec.finished.is_some()) {
            reasons.push("late-by-rule".to_string());
        }
        let (mut citizen_s, mut agency_s) = (0, 0);
        for s in &rec.supplements {
            let waited = match (s.waited_s, s.requested_at) {
                (Some(w), _) => w,
                (None, Some(from)) if rec.is_open() => cal
                    .working_time_between(from, now)
                    .map_err(err)?
                    .num_seconds(),
                _ => 0,
            };
            if s.addressed_to == "citizen" {
                citizen_s += waited;
            } else {
                agency_s += waited;
            }
        }
        let mut slip = Vec::with_capacity(rec.handoffs.len());
        let mut responsible: Vec<String> = Vec::new();
        for h in &rec.handoffs {
            let (actual, overrun, verdict) = match (&h.end, h.due) {
                (None, Some(due)) => {
                    let used = cal.working_time_between(h.given_at, at).map_err(err)?;
                    let past = cal.working_time_between(due, at).map_err(err)?;
                    let v = if past > TimeDelta::zero() {
                        "open-late"
                    } else {
                        "open"
                    };
                    (
                        Some((used.num_seconds() - h.waits_s).max(0)),
                        Some(past.num_seconds()),
                        v.to_string(),
                    )
                }
                (None, None) => (None, None, "open".to_string()),
                (Some(HandoffEnd::Cancelled), _) => (None, None, "cancelled".to_string()),
                (Some(_), _) => (
                    h.actual_s,
                    h.overrun_s,
                    h.verdict.map_or("-", |v: Verdict| v.as_str()).to_string(),
                ),
            };
            let attributed =
                overrun.is_some_and(|o| o > 0) && !matches!(h.end, Some(HandoffEnd::Cancelled));
            if attributed && !responsible.contains(&h.receiver) {
                responsible.push(h.receiver.clone());
            }
            slip.push(SlipLine {
                step: h.step.clone(),
                giver: h.giver.clone(),
                receiver: h.receiver.clone(),
                given_at: with_tz(h.given_at, tz),
                due: h.due.map(|t| with_tz(t, tz)),
                ended_at: h.ended_at.map(|t| with_tz(t, tz)),
                end: match &h.end {
                    None => "open".into(),
                    Some(HandoffEnd::Completed(o)) => format!("completed:{o}"),
                    Some(HandoffEnd::Rejected(_)) => "rejected".into(),
                    Some(HandoffEnd::Cancelled) => "cancelled".into(),
                },
                budget: h.budget.clone(),
                budget_working_seconds: h.budget_s,
                actual_working_seconds: actual,
                overrun_working_seconds: overrun,
                budget_working: h.budget_s.map(fmt).unwrap_or_default(),
                actual_working: actual.map(fmt).unwrap_or_default(),
                overrun_working: overrun.filter(|&o| o > 0).map(fmt).unwrap_or_default(),
                verdict,
                attributed,
            });
        }
        if responsible.is_empty() {
            responsible.push(rec.receiving_agency.clone());
        }
        Ok(Breach {
            dossier_code: rec.code.clone(),
            dossier_id: rec.id,
            procedure: rec.procedure.clone(),
            receiving_agency: rec.receiving_agency.clone(),
            status: rec.status.clone(),
            reasons,
            appointment: rec.rate_appointment.map(|t| with_tz(t, tz)),
            apology: rec.apology.as_ref().map(|a| ApologyView {
                agency: a.agency.clone(),
                issued_at: a.issued_at.map(|t| with_tz(t, tz)),
                new_appointment: a.new_appointment.map(|t| with_tz(t, tz)),
                late: a.late,
            }),
            finished: rec.finished.map(|(k, _)| k.as_str().to_string()),
            finished_at: rec.finished.map(|(_, t)| with_tz(t, tz)),
            overdue_working_seconds: overdue_s.max(0),
            overdue: if overdue_s > 0 {
                fmt(overdue_s)
            } else {
                String::new()
            },
            supplement_requests: u32::try_from(rec.supplements.len()).unwrap_or(u32::MAX),
            waiting_citizen_working_seconds: citizen_s,
            waiting_citizen: fmt(citizen_s),
            waiting_agency_working_seconds: agency_s,
            waiting_agency: fmt(agency_s),
            waiting_payment_working_seconds: rec.payment_excluded_s,
            waiting_payment: fmt(rec.payment_excluded_s),
            responsible,
            slip,
        })
    }

    /// The indicator rows (independent of `now`).
    pub fn indicators(&self, q: &IndicatorQuery) -> Result<Indicators, Error> {
        let header = self.header("indicators", None, &q.agency, q.month)?;
        let prefix = match q.month {
            Some(m) => keys::indicator_month_prefix(&m.to_string()),
            None => keys::INDICATOR.to_vec(),
        };
        let mut rows = Vec::new();
        for kv in self.db().scan_prefix(&prefix) {
            let (k, v) = kv?;
            let (month, level, agency, procedure) =
                keys::parse_indicator_key(&k).ok_or_else(|| Error::Corrupt {
                    key: keys::printable(&k),
                    reason: "not an indicator key".into(),
                })?;
            if q.agency.as_ref().is_some_and(|a| *a != agency) {
                continue;
            }
            let c: crate::record::Counters = decode(&k, &v)?;
            let day_s = self
                .catalog()
                .procedure(&procedure)
                .and_then(|wf| self.catalog().calendar(&wf.calendar))
                .map_or(8 * 3600, |cal| cal.working_day_length().num_seconds())
                .max(1);
            let avg =
                (c.measured > 0).then(|| (c.processing_s * 2 + c.measured) / (2 * c.measured));
            let avg_days = match avg {
                Some(a) => {
                    let hundredths = (a * 200 + day_s) / (2 * day_s);
                    format!("{}.{:02}", hundredths / 100, hundredths % 100)
                }
                None => "-".into(),
            };
            let on_time = permille(c.early + c.on_time, c.finished);
            let online = if level == "dossier" {
                permille(c.online, c.received)
            } else {
                None
            };
            rows.push(IndicatorRow {
                month,
                level,
                agency,
                procedure,
                received: c.received,
                in_person: c.in_person,
                online: c.online,
                post: c.post,
                other_channel: c.other_channel,
                online_permille: online,
                finished: c.finished,
                early: c.early,
                on_time: c.on_time,
                late: c.late,
                late_by_rule: c.late_by_rule,
                apologised: c.apologised,
                withdrawn: c.withdrawn,
                on_time_permille: on_time,
                on_time_rate: percent(on_time),
                avg_processing_working_seconds: avg,
                avg_processing_working_days: avg_days,
            });
        }
        Ok(Indicators { header, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_half_up_and_render_one_decimal() {
        assert_eq!(permille(0, 0), None);
        assert_eq!(permille(1, 3), Some(333));
        assert_eq!(permille(2, 3), Some(667));
        assert_eq!(permille(39, 40), Some(975));
        assert_eq!(percent(Some(975)), "97.5%");
        assert_eq!(percent(Some(1000)), "100.0%");
        assert_eq!(percent(None), "-");
    }

    #[test]
    fn months_parse_strictly() {
        assert_eq!(
            "2026-11".parse::<Month>().ok(),
            Some(Month {
                year: 2026,
                month: 11
            })
        );
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", ""] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
    }
}
