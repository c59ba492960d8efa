//! `lienthong.v1.ReportService`: the deadline board, the SLA breaches and the Decision 766
//! indicators of `lienthong_projections` over gRPC (see `proto/lienthong/v1/report.proto`; the
//! definitions of every figure are in the `lienthong-projections` crate docs).
//!
//! Every call folds what is new in the store into the projections under the [`ReadModels`] lock
//! held for writing, then reads its view under the same lock held for reading: a report reflects
//! every command acknowledged before the call, one fold runs at a time, reports run side by side
//! but never while a fold changes the views. (Two interleaved folds of one
//! database could count a dossier's contribution twice: a batch reads a record and the counters it
//! changes separately, then writes both.) The same handle keeps the views warm between calls
//! ([`ReadModels::spawn_catch_up_loop`], run by `lienthong serve`), so a call's own fold is
//! usually empty.
//!
//! Who sees what is [`scope`]: auditors and admins every agency, agencies and the desk their own.
//! `now` defaults to the engine's clock, so that a test moving a `ManualClock` gets reports judged
//! at the time it set.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use lienthong_engine::dossier::convert::{instant, timestamp};
use lienthong_projections::views::{
    ApologyView, BoardDossier, BoardStep, Header, SlipLine as SlipView,
};
use lienthong_projections::{
    Board, BoardQuery, BoardState, Breach, BreachQuery, Breaches, IndicatorQuery, IndicatorRow,
    Indicators, Month, Progress, Projections,
};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::report_service_server::ReportService;
use lienthong_workflow::Catalog;
use tokio::sync::RwLock;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{Principal, Role};
use crate::shared::Shared;
use crate::status::{self, denied, invalid};

/// The projections the report service reads, and the lock that keeps folds apart from each other
/// and from reads (reads run side by side). Cheap to clone: clones share both.
#[derive(Clone, Debug)]
pub struct ReadModels {
    /// The read models' database, folding the engine's store.
    projections: Arc<Projections>,
    /// Held for writing, for the whole blocking task, by a fold; for reading by a query: folds
    /// never interleave, and a report never reads a view while a fold is changing it.
    folding: Arc<RwLock<()>>,
}

impl ReadModels {
    /// The handle over `projections` (opened over the same store as the engine).
    pub fn new(projections: Arc<Projections>) -> Self {
        ReadModels {
            projections,
            folding: Arc::new(RwLock::new(())),
        }
    }

    /// The projections.
    pub fn projections(&self) -> &Arc<Projections> {
        &self.projections
    }

    /// Runs `f` on the projections in a blocking task that holds `guard` (the lock, for writing
    /// or reading). The guard moves into the task: a caller that goes away (a cancelled call)
    /// does not release it before `f` ends.
    async fn blocking<G, T, F>(&self, guard: G, f: F) -> Result<T, Status>
    where
        G: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&Projections) -> Result<T, lienthong_projections::Error> + Send + 'static,
    {
        let projections = self.projections.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            f(&projections)
        })
        .await
        .map_err(|e| Status::internal(format!("the report task failed: {e}")))?
        .map_err(status::from_projections)
    }

    /// Folds everything new in the store.
    pub async fn catch_up(&self) -> Result<Progress, Status> {
        let guard = self.folding.clone().write_owned().await;
        self.blocking(guard, |p| p.catch_up()).await
    }

    /// Folds everything new in the store (so the answer reflects every command acknowledged
    /// before the call), then answers `query` from the views; queries run side by side.
    pub async fn read<T, F>(&self, query: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Projections) -> Result<T, lienthong_projections::Error> + Send + 'static,
    {
        let progress = self.catch_up().await?;
        if progress.events > 0 {
            tracing::debug!(
                events = progress.events,
                checkpoint = progress.to,
                "projections caught up for a report"
            );
        }
        let guard = self.folding.clone().read_owned().await;
        self.blocking(guard, query).await
    }

    /// Folds what is new every `period` (the first time at once) until `shutdown` completes, so
    /// that the views stay warm and a report's own fold is small. A failing fold is logged (once
    /// until it succeeds again) and retried at the next tick.
    pub fn spawn_catch_up_loop(
        &self,
        period: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let models = self.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tick.tick() => {}
                }
                let result = tokio::select! {
                    _ = &mut shutdown => break,
                    r = models.catch_up() => r,
                };
                match result {
                    Ok(p) => {
                        if failing {
                            tracing::info!(checkpoint = p.to, "projections fold again");
                        } else if p.events > 0 {
                            tracing::debug!(
                                events = p.events,
                                checkpoint = p.to,
                                "projections caught up"
                            );
                        }
                        failing = false;
                    }
                    Err(s) if !failing => {
                        tracing::warn!(
                            code = ?s.code(),
                            "the projections cannot catch up with the store: {}; reports fail until this is fixed (retrying every {period:?})",
                            s.message()
                        );
                        failing = true;
                    }
                    Err(s) => {
                        tracing::debug!(code = ?s.code(), message = s.message(), "projections still failing")
                    }
                }
            }
            tracing::debug!("projections catch-up loop stopped");
        })
    }
}

/// The report service over the shared gateway state and the read models.
#[derive(Clone)]
pub struct Reports {
    /// Credentials (authentication) and the engine (its clock and catalog).
    pub shared: Arc<Shared>,
    /// The projections the reports are read from.
    pub models: ReadModels,
}

/// The agency filter of a report for `p`, who asked for `requested` (empty: no choice made).
/// Auditors and admins read every agency: no filter, or the one they name (an agency the loaded
/// workflows define: a typo must not look like an empty report). Agencies and the desk read only
/// their own: no choice or their own code gives their own; another is PERMISSION_DENIED.
pub fn scope(p: &Principal, requested: &str, catalog: &Catalog) -> Result<Option<String>, Status> {
    match p.role {
        Role::Auditor | Role::Admin => {
            if requested.is_empty() {
                Ok(None)
            } else if catalog.agencies.contains_key(requested) {
                Ok(Some(requested.to_string()))
            } else {
                Err(invalid(
                    "agency",
                    format!(
                        "no agency `{requested}` is defined in this server's workflows (agencies.toml); leave it empty for every agency"
                    ),
                ))
            }
        }
        Role::Agency | Role::Desk => {
            if requested.is_empty() || requested == p.agency {
                Ok(Some(p.agency.clone()))
            } else {
                Err(denied(
                    "not-your-agency",
                    format!(
                        "`{}` reads only the reports of its own agency `{}`, not of `{requested}`: leave `agency` empty or name your own",
                        p.id, p.agency
                    ),
                ))
            }
        }
    }
}

/// The month filter: empty is none; otherwise `YYYY-MM`.
fn month(text: &str) -> Result<Option<Month>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        invalid(
            "month",
            format!("`{text}` is not a month: write YYYY-MM, e.g. 2026-03"),
        )
    })
}

/// The due-soon window: empty is the default (`1wd`).
fn due_soon(text: &str) -> Result<lienthong_calendar::Duration, Status> {
    if text.is_empty() {
        return Ok(BoardQuery::default().due_soon);
    }
    text.parse()
        .map_err(|e: lienthong_calendar::duration::Error| invalid("due_soon", e.to_string()))
}

impl Reports {
    /// The instant to judge against: the request's, else the engine's clock.
    fn now(&self, requested: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, Status> {
        match requested {
            None => Ok(self.shared.backend.now()),
            Some(t) => instant(Some(t)).ok_or_else(|| invalid("now", "is not a valid instant")),
        }
    }

    /// Authenticates the caller and resolves its agency filter.
    fn caller<T>(
        &self,
        request: &Request<T>,
        agency: &str,
    ) -> Result<(Principal, Option<String>), Status> {
        let p = self.shared.authenticate(request)?;
        let scope = scope(&p, agency, self.shared.backend.catalog())?;
        Ok((p, scope))
    }
}

fn span(rpc: &'static str, p: &Principal, agency: &Option<String>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        rpc,
        principal = %p.id,
        agency = agency.as_deref().unwrap_or("*"),
    )
}

#[tonic::async_trait]
impl ReportService for Reports {
    async fn board(
        &self,
        request: Request<pb::BoardRequest>,
    ) -> Result<Response<pb::BoardReply>, Status> {
        let (p, agency) = self.caller(&request, &request.get_ref().agency)?;
        let req = request.into_inner();
        let q = BoardQuery {
            agency,
            due_soon: due_soon(&req.due_soon)?,
        };
        let now = self.now(req.now.as_ref())?;
        let span = span("Board", &p, &q.agency);
        async move {
            let board = self.models.read(move |v| v.board(now, &q)).await?;
            tracing::info!(
                steps = board.steps.len(),
                dossiers = board.dossiers.len(),
                checkpoint = board.header.lag.checkpoint,
                "board"
            );
            Ok(Response::new(board_reply(&board)))
        }
        .instrument(span)
        .await
    }

    async fn breaches(
        &self,
        request: Request<pb::BreachesRequest>,
    ) -> Result<Response<pb::BreachesReply>, Status> {
        let (p, agency) = self.caller(&request, &request.get_ref().agency)?;
        let req = request.into_inner();
        let q = BreachQuery {
            agency,
            month: month(&req.month)?,
        };
        let now = self.now(req.now.as_ref())?;
        let span = span("Breaches", &p, &q.agency);
        async move {
            let breaches = self.models.read(move |v| v.breaches(now, &q)).await?;
            tracing::info!(
                breaches = breaches.breaches.len(),
                checkpoint = breaches.header.lag.checkpoint,
                "breaches"
            );
            Ok(Response::new(breaches_reply(&breaches)))
        }
        .instrument(span)
        .await
    }

    async fn indicators(
        &self,
        request: Request<pb::IndicatorsRequest>,
    ) -> Result<Response<pb::IndicatorsReply>, Status> {
        let (p, agency) = self.caller(&request, &request.get_ref().agency)?;
        let req = request.into_inner();
        let q = IndicatorQuery {
            agency,
            month: month(&req.month)?,
        };
        let span = span("Indicators", &p, &q.agency);
        async move {
            let indicators = self.models.read(move |v| v.indicators(&q)).await?;
            tracing::info!(
                rows = indicators.rows.len(),
                checkpoint = indicators.header.lag.checkpoint,
                "indicators"
            );
            Ok(Response::new(indicators_reply(&indicators)))
        }
        .instrument(span)
        .await
    }
}

/// An instant for the wire.
fn ts(t: &DateTime<FixedOffset>) -> Option<prost_types::Timestamp> {
    Some(timestamp(t.with_timezone(&Utc)))
}

/// An optional instant for the wire.
fn opt_ts(t: &Option<DateTime<FixedOffset>>) -> Option<prost_types::Timestamp> {
    t.as_ref().and_then(ts)
}

/// The same instant as RFC 3339 text in its own zone (`2026-03-03T09:00:00+07:00`).
fn local(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The local text of an optional instant (empty when absent).
fn opt_local(t: &Option<DateTime<FixedOffset>>) -> String {
    t.as_ref().map(local).unwrap_or_default()
}

fn header(h: &Header) -> pb::ReportHeader {
    pb::ReportHeader {
        report: h.report.clone(),
        now: opt_ts(&h.now),
        now_local: opt_local(&h.now),
        checkpoint: h.lag.checkpoint,
        head: h.lag.head,
        lag: h.lag.lag,
        agency: h.agency.clone().unwrap_or_default(),
        month: h.month.clone().unwrap_or_default(),
        truncated: h.truncated,
    }
}

fn board_state(s: BoardState) -> pb::BoardState {
    match s {
        BoardState::Overdue => pb::BoardState::Overdue,
        BoardState::DueSoon => pb::BoardState::DueSoon,
        BoardState::Paused => pb::BoardState::Paused,
        BoardState::OnTrack => pb::BoardState::OnTrack,
    }
}

fn board_step(s: &BoardStep) -> pb::BoardStep {
    pb::BoardStep {
        agency: s.agency.clone(),
        dossier_code: s.dossier_code.clone(),
        procedure_code: s.procedure.clone(),
        step_id: s.step.clone(),
        opened_at: ts(&s.opened_at),
        opened_at_local: local(&s.opened_at),
        due: ts(&s.due),
        due_local: local(&s.due),
        state: board_state(s.state) as i32,
        overdue_working_seconds: s.overdue_working_seconds,
        overdue: s.overdue.clone(),
        undeliverable_deliveries: s.undeliverable_deliveries,
    }
}

fn board_dossier(d: &BoardDossier) -> pb::BoardDossier {
    pb::BoardDossier {
        holders: d.holders.clone(),
        dossier_code: d.dossier_code.clone(),
        procedure_code: d.procedure.clone(),
        receiving_agency: d.receiving_agency.clone(),
        appointment: ts(&d.appointment),
        appointment_local: local(&d.appointment),
        apologised: d.apologised,
        paused: d.paused,
        overdue_working_seconds: d.overdue_working_seconds,
        overdue: d.overdue.clone(),
    }
}

/// The board for the wire.
pub fn board_reply(b: &Board) -> pb::BoardReply {
    pb::BoardReply {
        header: Some(header(&b.header)),
        due_soon: b.due_soon_window.clone(),
        steps: b.steps.iter().map(board_step).collect(),
        dossiers: b.dossiers.iter().map(board_dossier).collect(),
    }
}

fn slip_line(l: &SlipView) -> pb::SlipLine {
    pb::SlipLine {
        step_id: l.step.clone(),
        giver: l.giver.clone(),
        receiver: l.receiver.clone(),
        given_at: ts(&l.given_at),
        given_at_local: local(&l.given_at),
        due: opt_ts(&l.due),
        due_local: opt_local(&l.due),
        ended_at: opt_ts(&l.ended_at),
        ended_at_local: opt_local(&l.ended_at),
        end: l.end.clone(),
        budget: l.budget.clone(),
        budget_working_seconds: l.budget_working_seconds,
        budget_working: l.budget_working.clone(),
        actual_working_seconds: l.actual_working_seconds,
        actual_working: l.actual_working.clone(),
        overrun_working_seconds: l.overrun_working_seconds,
        overrun_working: l.overrun_working.clone(),
        verdict: l.verdict.clone(),
        attributed: l.attributed,
    }
}

fn apology(a: &ApologyView) -> pb::Apology {
    pb::Apology {
        agency: a.agency.clone(),
        issued_at: opt_ts(&a.issued_at),
        issued_at_local: opt_local(&a.issued_at),
        new_appointment: opt_ts(&a.new_appointment),
        new_appointment_local: opt_local(&a.new_appointment),
        late: a.late,
    }
}

fn breach(b: &Breach) -> pb::Breach {
    pb::Breach {
        dossier_code: b.dossier_code.clone(),
        dossier_id: b.dossier_id.to_string(),
        procedure_code: b.procedure.clone(),
        receiving_agency: b.receiving_agency.clone(),
        status: b.status.clone(),
        reasons: b.reasons.clone(),
        appointment: opt_ts(&b.appointment),
        appointment_local: opt_local(&b.appointment),
        apology: b.apology.as_ref().map(apology),
        finished: b.finished.clone().unwrap_or_default(),
        finished_at: opt_ts(&b.finished_at),
        finished_at_local: opt_local(&b.finished_at),
        overdue_working_seconds: b.overdue_working_seconds,
        overdue: b.overdue.clone(),
        supplement_requests: b.supplement_requests,
        waiting_citizen_working_seconds: b.waiting_citizen_working_seconds,
        waiting_citizen: b.waiting_citizen.clone(),
        waiting_agency_working_seconds: b.waiting_agency_working_seconds,
        waiting_agency: b.waiting_agency.clone(),
        waiting_payment_working_seconds: b.waiting_payment_working_seconds,
        waiting_payment: b.waiting_payment.clone(),
        responsible: b.responsible.clone(),
        slip: b.slip.iter().map(slip_line).collect(),
    }
}

/// The breaches for the wire.
pub fn breaches_reply(b: &Breaches) -> pb::BreachesReply {
    pb::BreachesReply {
        header: Some(header(&b.header)),
        breaches: b.breaches.iter().map(breach).collect(),
    }
}

fn indicator_row(r: &IndicatorRow) -> pb::IndicatorRow {
    pb::IndicatorRow {
        month: r.month.clone(),
        level: r.level.clone(),
        agency: r.agency.clone(),
        procedure_code: r.procedure.clone(),
        received: r.received,
        in_person: r.in_person,
        online: r.online,
        post: r.post,
        other_channel: r.other_channel,
        online_permille: r.online_permille,
        finished: r.finished,
        early: r.early,
        on_time: r.on_time,
        late: r.late,
        late_by_rule: r.late_by_rule,
        apologised: r.apologised,
        withdrawn: r.withdrawn,
        on_time_permille: r.on_time_permille,
        on_time_rate: r.on_time_rate.clone(),
        avg_processing_working_seconds: r.avg_processing_working_seconds,
        avg_processing_working_days: r.avg_processing_working_days.clone(),
    }
}

/// The indicators for the wire.
pub fn indicators_reply(i: &Indicators) -> pb::IndicatorsReply {
    pb::IndicatorsReply {
        header: Some(header(&i.header)),
        rows: i.rows.iter().map(indicator_row).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Via;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn principal(agency: &str, role: Role) -> Principal {
        Principal {
            id: format!("{agency}-system"),
            agency: agency.into(),
            role,
            via: Via::Token,
        }
    }

    fn catalog() -> Catalog {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        Catalog::load(&dir).expect("the project's workflows load")
    }

    #[test]
    fn agencies_read_only_their_own_agency() {
        let c = catalog();
        let tp = principal("tu-phap", Role::Agency);
        assert_eq!(scope(&tp, "", &c).ok(), Some(Some("tu-phap".into())));
        assert_eq!(scope(&tp, "tu-phap", &c).ok(), Some(Some("tu-phap".into())));
        let e = scope(&tp, "cong-an", &c).expect_err("another agency");
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(
            e.get_details_error_info().expect("error info").reason,
            "not-your-agency"
        );
        let desk = principal("ubnd-xa", Role::Desk);
        assert_eq!(scope(&desk, "", &c).ok(), Some(Some("ubnd-xa".into())));
        assert_eq!(
            scope(&desk, "bhxh", &c).map_err(|e| e.code()).err(),
            Some(Code::PermissionDenied)
        );
    }

    #[test]
    fn auditors_and_admins_read_every_known_agency() {
        let c = catalog();
        for role in [Role::Auditor, Role::Admin] {
            let p = principal("kiem-toan", role);
            assert_eq!(scope(&p, "", &c).ok(), Some(None));
            assert_eq!(scope(&p, "bhxh", &c).ok(), Some(Some("bhxh".into())));
            let e = scope(&p, "no-such-agency", &c).expect_err("unknown agency");
            assert_eq!(e.code(), Code::InvalidArgument);
            assert_eq!(
                e.get_details_bad_request()
                    .expect("bad request")
                    .field_violations[0]
                    .field,
                "agency"
            );
        }
    }

    #[test]
    fn bad_month_and_window_name_their_field() {
        assert_eq!(month("").ok(), Some(None));
        assert!(month("2026-03").is_ok_and(|m| m.is_some()));
        for (got, field) in [
            (month("2026-13").map(|_| ()), "month"),
            (month("03/2026").map(|_| ()), "month"),
            (due_soon("soon").map(|_| ()), "due_soon"),
            (due_soon("0wd").map(|_| ()), "due_soon"),
        ] {
            let e = got.expect_err("invalid");
            assert_eq!(e.code(), Code::InvalidArgument);
            assert_eq!(
                e.get_details_bad_request()
                    .expect("bad request")
                    .field_violations[0]
                    .field,
                field
            );
        }
        assert_eq!(
            due_soon("").ok(),
            Some(lienthong_calendar::Duration::WorkingDays(1))
        );
    }

    #[test]
    fn projection_errors_map_to_their_codes() {
        use lienthong_projections::Error as E;
        let cases = [
            (
                E::Store(lienthong_engine::store::Error::Closed),
                Code::Unavailable,
            ),
            (E::Db("io".into()), Code::Unavailable),
            (
                E::Corrupt {
                    key: "k".into(),
                    reason: "r".into(),
                },
                Code::Internal,
            ),
            (
                E::Feed {
                    position: 1,
                    reason: "r".into(),
                },
                Code::DataLoss,
            ),
            (
                E::AheadOfStore {
                    checkpoint: 2,
                    head: 1,
                },
                Code::FailedPrecondition,
            ),
            (E::UnknownCalendar("vn".into()), Code::Internal),
            (E::Query("q".into()), Code::InvalidArgument),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let s = status::from_projections(e);
            assert_eq!(s.code(), code, "{text}");
            assert!(s.message().contains(&text), "the operator's advice is kept");
        }
    }
}
