//! Given/when/then harness for the dossier state machine tests, shared by the `dossier_*.rs`
//! test files through `#[path = "support/dossier.rs"] mod support;`.
//!
//! It loads the real `workflows/` catalog (the shipped birth-group procedure and the `vn`
//! calendar), wraps accepted decisions into events the way the runtime does (seq, recorded-at,
//! actor), and applies them with `evolve`, so every test also runs the fold.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use lienthong_calendar::Calendar;
use lienthong_engine::dossier::{
    self, Addressee, Applicant, Command, CompleteStep, DecideContext, Document, DossierState,
    FireTimer, IssueApology, ProvideSupplement, Refuse, RejectStep, Rejection, RequestSupplement,
    ReturnResult, Stop, Submit, TimerKind, Withdraw,
};
use lienthong_proto::v1::{Actor, Channel, Envelope, Event, Outcome, event::Body};
use lienthong_workflow::{AgencyCode, AttrValue, Catalog, StepId, Workflow};

/// The birth group's national procedure code.
pub const BIRTH: &str = "2.000986";
/// The one-stop desk of the commune (receives and returns).
pub const DESK: &str = "ubnd-xa";
/// Commune justice officer: registers the birth.
pub const TU_PHAP: &str = "tu-phap";
/// Commune police: registers residence.
pub const CONG_AN: &str = "cong-an";
/// Social insurance: issues the health card.
pub const BHXH: &str = "bhxh";
/// The applicant.
pub const CITIZEN: &str = "citizen";
/// The land transfer's (placeholder) procedure code.
pub const LAND: &str = "LT.CHUYEN-NHUONG-DAT";
/// The provincial public-service centre (one-stop desk of the land transfer).
pub const TTHCC: &str = "tthcc";
/// The land registration office.
pub const VPDK: &str = "vpdk-dat";
/// The tax office.
pub const THUE: &str = "thue";
/// The engine (timers).
pub const ENGINE: &str = "engine";
/// The dossier code the harness stamps on envelopes.
pub const CODE: &str = "UBND.XA-260302-0001";

/// The shipped catalog, loaded once.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        match Catalog::load(&dir) {
            Ok(c) => c,
            Err(ds) => panic!("workflows/ does not load: {ds:#?}"),
        }
    })
}

/// The shipped birth-group workflow.
pub fn birth() -> Arc<Workflow> {
    catalog()
        .procedure(BIRTH)
        .cloned()
        .expect("the birth group is shipped")
}

/// A workflow from TOML text, checked against the shipped agencies and calendars.
pub fn workflow(source: &str) -> Arc<Workflow> {
    match catalog().parse_workflow(source, "test.toml") {
        Ok(wf) => Arc::new(wf),
        Err(ds) => panic!("test workflow does not load: {ds:#?}"),
    }
}

/// The `vn` calendar family.
pub fn vn() -> &'static Calendar {
    catalog()
        .calendar("vn")
        .expect("the vn calendar is shipped")
}

/// Local time in Hà Nội (UTC+7, no DST) as a UTC instant.
pub fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    let naive = NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(h, min, 0))
        .expect("valid local time");
    Utc.from_utc_datetime(&(naive - chrono::Duration::hours(7)))
}

/// Monday 2 March 2026, 09:00 in Hà Nội: a plain working morning.
pub fn monday_morning() -> DateTime<Utc> {
    local(2026, 3, 2, 9, 0)
}

/// An actor of `agency` through the agency system.
pub fn actor(agency: &str) -> Actor {
    Actor {
        agency: agency.to_string(),
        officer: String::new(),
        channel: Channel::System as i32,
    }
}

/// A dossier under test: its workflow, events so far, live state and the current time.
pub struct Dossier {
    /// The pinned workflow.
    pub wf: Arc<Workflow>,
    /// Every accepted event, as the runtime would have appended them.
    pub events: Vec<Event>,
    /// The live state: each event applied with `evolve` as it was appended.
    pub state: DossierState,
    /// The time passed to `decide` and stamped as recorded-at.
    pub now: DateTime<Utc>,
}

impl Dossier {
    /// An empty stream of the birth group, on Monday morning.
    pub fn birth() -> Self {
        Dossier::new(birth())
    }

    /// An empty stream of `wf`, on Monday morning.
    pub fn new(wf: Arc<Workflow>) -> Self {
        Dossier {
            wf,
            events: Vec::new(),
            state: DossierState::default(),
            now: monday_morning(),
        }
    }

    /// Given: applies accepted commands; panics on a rejection (a broken premise).
    pub fn given(mut self, acts: &[(&str, Command)]) -> Self {
        for (agency, cmd) in acts {
            if let Err(r) = self.when(agency, cmd.clone()) {
                panic!("given `{agency}` {}: rejected: {r}", cmd.kind());
            }
        }
        self
    }

    /// Sets the clock.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// When: decides; on acceptance appends and evolves, on rejection checks nothing changed.
    pub fn when(&mut self, agency: &str, cmd: Command) -> Result<Vec<Body>, Rejection> {
        let actor = actor(agency);
        let ctx = DecideContext {
            now: self.now,
            actor: &actor,
            workflow: &self.wf,
            calendar: vn(),
        };
        let bodies = dossier::decide(&self.state, &cmd, &ctx)?;
        for body in &bodies {
            let event = Event {
                envelope: Some(Envelope {
                    dossier_id: "0190f000-0000-7000-8000-000000000001".to_string(),
                    dossier_code: CODE.to_string(),
                    seq: self.state.seq + 1,
                    global_position: 0,
                    recorded_at: Some(prost_types::Timestamp {
                        seconds: self.now.timestamp(),
                        nanos: 0,
                    }),
                    actor: Some(actor.clone()),
                    command_id: String::new(),
                    prev_hash: Vec::new(),
                }),
                body: Some(body.clone()),
            };
            self.state = dossier::evolve(std::mem::take(&mut self.state), &event);
            self.events.push(event);
        }
        assert_eq!(
            dossier::fold(&self.events),
            self.state,
            "fold(events) must equal the live state"
        );
        Ok(bodies)
    }

    /// When, expecting acceptance: the one-line summaries of the events.
    pub fn ok(&mut self, agency: &str, cmd: Command) -> Vec<String> {
        match self.when(agency, cmd) {
            Ok(bodies) => bodies.iter().map(summary).collect(),
            Err(r) => panic!("expected acceptance, got [{}] {r}", r.code()),
        }
    }

    /// When, expecting a rejection; checks that nothing was appended.
    pub fn rejected(&mut self, agency: &str, cmd: Command) -> Rejection {
        let before = self.events.len();
        match self.when(agency, cmd) {
            Ok(bodies) => panic!(
                "expected a rejection, got {:?}",
                bodies.iter().map(summary).collect::<Vec<_>>()
            ),
            Err(r) => {
                assert_eq!(self.events.len(), before, "a rejection appends nothing");
                r
            }
        }
    }

    /// The routing view of one step, as text.
    pub fn step(&self, id: &str) -> &'static str {
        self.state
            .step_view(&self.wf)
            .into_iter()
            .find(|(s, _)| s == id)
            .map_or("absent", |(_, v)| v.as_str())
    }

    /// The dossier status, as text.
    pub fn status(&self) -> &'static str {
        self.state.status().as_str()
    }
}

/// A one-line summary of an event body, for then-assertions.
pub fn summary(body: &Body) -> String {
    match body {
        Body::Received(r) => format!("received {}", r.procedure_code),
        Body::StepOpened(o) => format!("opened {} @{}", o.step_id, o.agency),
        Body::StepCompleted(c) => format!("completed {} @{}", c.step_id, c.agency),
        Body::StepRejected(r) => format!("rejected {} @{}", r.step_id, r.agency),
        Body::StepSkipped(s) => format!("skipped {}", s.step_id),
        Body::SupplementRequested(s) => {
            format!(
                "supplement #{} requested by {} to {}",
                s.ordinal, s.requested_by, s.addressed_to
            )
        }
        Body::SupplementProvided(_) => "supplement provided".to_string(),
        Body::Refused(r) => format!("refused by {}", r.agency),
        Body::ProcessingStopped(s) => format!("stopped by {}", s.agency),
        Body::Withdrawn(_) => "withdrawn".to_string(),
        Body::ApologyIssued(a) => format!("apology by {} late={}", a.agency, a.late),
        Body::ResultReturned(r) => format!("result returned by {}", r.agency),
        Body::Closed(c) => format!(
            "closed {}",
            Outcome::try_from(c.outcome).map_or("?", |o| o.as_str_name())
        ),
        Body::DeadlinesMoved(m) => format!(
            "deadlines moved ({}) excluding {}s",
            m.rule, m.excluded_working_seconds
        ),
        Body::DeadlineWarning(w) => {
            format!("warning {} @{}", or_appointment(&w.step_id), w.agency)
        }
        Body::DeadlineMissed(m) => {
            format!("missed {} @{}", or_appointment(&m.step_id), m.agency)
        }
        Body::TaskUndeliverable(u) => format!(
            "undeliverable {} @{} after {}",
            or_appointment(&u.step_id),
            u.agency,
            u.deliveries
        ),
    }
}

fn or_appointment(step_id: &str) -> &str {
    if step_id.is_empty() {
        "appointment"
    } else {
        step_id
    }
}

/// Local time in Hà Nội, to the second.
pub fn local_s(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    local(y, m, d, h, min) + chrono::Duration::seconds(i64::from(s))
}

/// The shipped land-transfer procedure (payment excluded, tax asks the land office).
pub fn land_transfer() -> Arc<Workflow> {
    catalog()
        .procedure(LAND)
        .cloned()
        .expect("the land transfer is shipped")
}

/// Submit the land transfer; `exempt` skips the payment.
pub fn submit_land(exempt: bool) -> Command {
    Command::Submit(Submit {
        procedure_code: LAND.to_string(),
        channel: Channel::InPerson,
        applicant: Applicant {
            full_name: "Trần Văn Minh".to_string(),
            id_number: "001080000002".to_string(),
            ..Applicant::default()
        },
        attributes: BTreeMap::from([
            ("transfer.exempt".to_string(), AttrValue::Boolean(exempt)),
            ("parcel.area_m2".to_string(), AttrValue::Integer(120)),
        ]),
        documents: vec![doc("hop-dong-chuyen-nhuong")],
    })
}

/// Fire a timer (as the engine does).
pub fn fire(kind: TimerKind, step: Option<&str>, due: DateTime<Utc>) -> Command {
    Command::FireTimer(FireTimer {
        timer: kind,
        step: step.map(|s| StepId(s.to_string())),
        due,
        lead: (kind == TimerKind::Warning).then_some(lienthong_calendar::Duration::WorkingDays(1)),
    })
}

/// The birth group's attributes for a child `age_months` old.
pub fn child(age_months: i64) -> BTreeMap<String, AttrValue> {
    BTreeMap::from([
        (
            "child.age_months".to_string(),
            AttrValue::Integer(age_months),
        ),
        (
            "child.birth_date".to_string(),
            AttrValue::Date(NaiveDate::from_ymd_opt(2026, 1, 5).expect("valid date")),
        ),
    ])
}

/// Submit with these attributes.
pub fn submit_with(attributes: BTreeMap<String, AttrValue>) -> Command {
    Command::Submit(Submit {
        procedure_code: BIRTH.to_string(),
        channel: Channel::InPerson,
        applicant: Applicant {
            full_name: "Nguyễn Thị Lan".to_string(),
            id_number: "001190000001".to_string(),
            ..Applicant::default()
        },
        attributes,
        documents: vec![doc("to-khai-khai-sinh")],
    })
}

/// Submit the birth group for a child `age_months` old.
pub fn submit(age_months: i64) -> Command {
    submit_with(child(age_months))
}

/// A document reference.
pub fn doc(kind: &str) -> Document {
    Document {
        kind: kind.to_string(),
        uri: format!("doc://{kind}"),
        sha256: "0".repeat(64),
    }
}

/// Complete a step.
pub fn complete(step: &str) -> Command {
    Command::CompleteStep(CompleteStep {
        step: StepId(step.to_string()),
        outcome: "approve".to_string(),
        results: Vec::new(),
        note: String::new(),
    })
}

/// Reject a step.
pub fn reject(step: &str) -> Command {
    Command::RejectStep(RejectStep {
        step: StepId(step.to_string()),
        reason: "thông tin không khớp".to_string(),
    })
}

/// Ask the citizen for a supplement (`None`: at intake).
pub fn request(step: Option<&str>) -> Command {
    Command::RequestSupplement(RequestSupplement {
        step: step.map(|s| StepId(s.to_string())),
        items: vec!["giấy chứng sinh".to_string()],
        reason: "thiếu giấy chứng sinh".to_string(),
        addressed_to: Addressee::Citizen,
    })
}

/// Ask another agency for a supplement.
pub fn request_from(step: &str, agency: &str) -> Command {
    Command::RequestSupplement(RequestSupplement {
        step: Some(StepId(step.to_string())),
        items: vec!["trích lục".to_string()],
        reason: "cần xác minh".to_string(),
        addressed_to: Addressee::Agency(AgencyCode(agency.to_string())),
    })
}

/// Hand in the supplement.
pub fn provide() -> Command {
    Command::ProvideSupplement(ProvideSupplement {
        documents: vec![doc("giay-chung-sinh")],
        note: String::new(),
    })
}

/// Refuse the dossier.
pub fn refuse(step: Option<&str>) -> Command {
    Command::Refuse(Refuse {
        step: step.map(|s| StepId(s.to_string())),
        reason: "không đủ điều kiện".to_string(),
    })
}

/// Stop processing.
pub fn stop() -> Command {
    Command::Stop(Stop {
        reason: "theo yêu cầu của cơ quan có thẩm quyền".to_string(),
    })
}

/// Withdraw.
pub fn withdraw() -> Command {
    Command::Withdraw(Withdraw {
        reason: "nộp lại sau".to_string(),
    })
}

/// Apologise with a new appointment.
pub fn apology(step: Option<&str>, new_appointment: DateTime<Utc>) -> Command {
    Command::IssueApology(IssueApology {
        step: step.map(|s| StepId(s.to_string())),
        reason: "cần xác minh thêm".to_string(),
        new_appointment,
    })
}

/// Return the result at the desk.
pub fn return_result() -> Command {
    Command::ReturnResult(ReturnResult {
        results: vec![doc("giay-khai-sinh")],
        channel: Channel::InPerson,
    })
}

/// The whole happy path of a young child up to "ready to return".
pub fn processed_birth() -> Dossier {
    Dossier::birth().given(&[
        (DESK, submit(2)),
        (TU_PHAP, complete("register-birth")),
        (CONG_AN, complete("register-residence")),
        (BHXH, complete("issue-health-card")),
        (DESK, complete("return-result")),
    ])
}
