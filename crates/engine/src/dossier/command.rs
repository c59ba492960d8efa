//! The commands a dossier accepts: one enum, one struct per act.
//!
//! A command says what an agency (or the citizen) wants to do; [`super::decide`] says whether it
//! may and which events follow. Commands serialise to canonical JSON (fields in declaration order,
//! maps ordered) because the runtime fingerprints them for idempotency and adapters may carry
//! them over NATS. The workflow crate's newtypes have no serde support, so the few fields that use
//! them go through the small `with` modules at the bottom of this file.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use lienthong_calendar::Duration;
use lienthong_proto::v1::{self as pb, Channel};
use lienthong_workflow::{AgencyCode, AttrValue, StepId};
use serde::{Deserialize, Serialize};

use super::timers::TimerKind;

/// The agency code of the applicant acting for themself (online filing, withdrawal, supplements).
pub const CITIZEN: &str = "citizen";
/// The agency code of the engine's own acts (timers), as the contract's `Actor` documents.
pub const ENGINE: &str = "engine";

/// Anything the dossier state machine can be asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Command {
    /// File a new dossier (receipt and appointment slip).
    Submit(Submit),
    /// An agency finished its step.
    CompleteStep(CompleteStep),
    /// An agency rejects its step; the workflow says whether that refuses or reworks.
    RejectStep(RejectStep),
    /// Ask for everything missing, at once.
    RequestSupplement(RequestSupplement),
    /// The missing items were handed in.
    ProvideSupplement(ProvideSupplement),
    /// Refuse the dossier (Phiếu từ chối).
    Refuse(Refuse),
    /// Stop processing (Thông báo dừng giải quyết).
    Stop(Stop),
    /// The citizen withdraws the dossier.
    Withdraw(Withdraw),
    /// Apologise and set a new appointment (at most once per dossier).
    IssueApology(IssueApology),
    /// Hand the result back to the citizen.
    ReturnResult(ReturnResult),
    /// A durable timer came due: warn about a near deadline, or record a missed one (engine).
    FireTimer(FireTimer),
    /// The bus set a task aside as a dead letter: its agency's system never acknowledged it
    /// (engine).
    RecordUndeliverable(RecordUndeliverable),
}

impl Command {
    /// A stable short name for logs, traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Submit(_) => "submit",
            Command::CompleteStep(_) => "complete-step",
            Command::RejectStep(_) => "reject-step",
            Command::RequestSupplement(_) => "request-supplement",
            Command::ProvideSupplement(_) => "provide-supplement",
            Command::Refuse(_) => "refuse",
            Command::Stop(_) => "stop",
            Command::Withdraw(_) => "withdraw",
            Command::IssueApology(_) => "issue-apology",
            Command::ReturnResult(_) => "return-result",
            Command::FireTimer(_) => "fire-timer",
            Command::RecordUndeliverable(_) => "record-undeliverable",
        }
    }
}

/// File a new dossier for a procedure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submit {
    /// National procedure code, e.g. `2.000986`; must be the workflow's code.
    pub procedure_code: String,
    /// How the dossier reached the desk (counts for the online-filing rate).
    #[serde(with = "channel")]
    pub channel: Channel,
    /// Who files it, as written on the receipt.
    pub applicant: Applicant,
    /// The typed data the workflow's conditions read; checked against the declared attributes.
    #[serde(with = "attrs")]
    pub attributes: BTreeMap<String, AttrValue>,
    /// The documents handed in.
    pub documents: Vec<Document>,
}

/// An agency finished its step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompleteStep {
    /// The step, which must be open and belong to the acting agency.
    #[serde(with = "step_id")]
    pub step: StepId,
    /// The outcome name (e.g. `approve`), recorded for the process-control slip.
    pub outcome: String,
    /// Documents the step produced (e.g. the birth certificate).
    pub results: Vec<Document>,
    /// Free text for the next agency.
    pub note: String,
}

/// An agency rejects its step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectStep {
    /// The step, which must be open and belong to the acting agency.
    #[serde(with = "step_id")]
    pub step: StepId,
    /// Why; required, it is written on the refusal or sent back with the rework.
    pub reason: String,
}

/// Who must supplement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Addressee {
    /// The applicant (the default).
    #[default]
    Citizen,
    /// Another agency, e.g. tax asking the land office.
    Agency(AgencyCode),
}

impl Addressee {
    /// The contract's text: `citizen` or the agency code.
    pub fn as_str(&self) -> &str {
        match self {
            Addressee::Citizen => CITIZEN,
            Addressee::Agency(a) => &a.0,
        }
    }

    /// Reads the contract's text back.
    pub fn parse(s: &str) -> Addressee {
        if s == CITIZEN {
            Addressee::Citizen
        } else {
            Addressee::Agency(AgencyCode(s.to_string()))
        }
    }
}

impl fmt::Display for Addressee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Addressee {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Addressee {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Addressee::parse(&s))
    }
}

/// Ask for everything missing, at once (Phiếu yêu cầu bổ sung).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSupplement {
    /// The asking step; `None` when the receiving desk asks at intake.
    #[serde(with = "opt_step_id")]
    pub step: Option<StepId>,
    /// Every missing item; at least one.
    pub items: Vec<String>,
    /// Why.
    pub reason: String,
    /// Who must supplement.
    #[serde(default)]
    pub addressed_to: Addressee,
}

/// The missing items were handed in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProvideSupplement {
    /// What was handed in.
    pub documents: Vec<Document>,
    /// Free text.
    pub note: String,
}

/// Refuse the dossier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refuse {
    /// The step refusing, if it is a step's agency that refuses.
    #[serde(with = "opt_step_id")]
    pub step: Option<StepId>,
    /// Why; required, it is written on the refusal slip.
    pub reason: String,
}

/// Stop processing the dossier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// Why; required, it is written on the notice.
    pub reason: String,
}

/// The citizen withdraws the dossier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Withdraw {
    /// Why, if the citizen said (may be empty).
    pub reason: String,
}

/// Apologise for being late and set a new appointment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueApology {
    /// The step that is late, if one is to blame.
    #[serde(with = "opt_step_id")]
    pub step: Option<StepId>,
    /// Why; required.
    pub reason: String,
    /// The new appointment; must be after the current one.
    pub new_appointment: DateTime<Utc>,
}

/// Hand the result back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReturnResult {
    /// The documents handed back.
    pub results: Vec<Document>,
    /// How they were handed back.
    #[serde(with = "channel")]
    pub channel: Channel,
}

/// A timer came due (sent by the engine's timer loop, actor [`ENGINE`], channel SYSTEM).
///
/// It says which deadline the timer was set for; `decide` records the notice only when that
/// deadline is still current (same due, step still open or dossier not processed, clock not on
/// hold) and was not noticed before: otherwise the timer is stale and nothing is recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FireTimer {
    /// A warning (the deadline is near) or a miss (it passed).
    pub timer: TimerKind,
    /// The step whose due it watches; `None` for the dossier's appointment.
    #[serde(with = "opt_step_id")]
    pub step: Option<StepId>,
    /// The deadline it watches, exactly as recorded in the events.
    pub due: DateTime<Utc>,
    /// For a warning: the lead it was set with, written on the notice.
    #[serde(with = "opt_duration", default)]
    pub lead: Option<Duration>,
}

/// A task of the dossier that its agency's system never acknowledged, set aside by the bus as a
/// dead letter (sent by the engine node that owns the dossier, actor [`ENGINE`], channel SYSTEM,
/// idempotency key `dead/<task id>`, so that it is recorded once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordUndeliverable {
    /// The agency the task was for.
    pub agency: String,
    /// The task's id on the bus (`<dossier id>/<seq>`).
    pub task_id: String,
    /// The step it was about, if any.
    #[serde(with = "opt_step_id")]
    pub step: Option<StepId>,
    /// The task's kind, by its `TaskKind` name (`task_kind`: `kind` is the command's tag).
    pub task_kind: String,
    /// How many times it was delivered.
    pub deliveries: u32,
}

/// The applicant as written on the receipt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applicant {
    /// Full name.
    pub full_name: String,
    /// Personal identification number (CCCD) or enterprise code.
    pub id_number: String,
    /// Phone, may be empty.
    pub phone: String,
    /// Email, may be empty.
    pub email: String,
}

impl From<&Applicant> for pb::Applicant {
    fn from(a: &Applicant) -> Self {
        pb::Applicant {
            full_name: a.full_name.clone(),
            id_number: a.id_number.clone(),
            phone: a.phone.clone(),
            email: a.email.clone(),
        }
    }
}

/// A document by reference: the bytes live elsewhere, the hash pins them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// What it is, e.g. `to-khai-khai-sinh`.
    pub kind: String,
    /// Where it is stored.
    pub uri: String,
    /// Lower-case hex SHA-256 of its bytes.
    pub sha256: String,
}

impl From<&Document> for pb::DocumentRef {
    fn from(d: &Document) -> Self {
        pb::DocumentRef {
            kind: d.kind.clone(),
            uri: d.uri.clone(),
            sha256: d.sha256.clone(),
        }
    }
}

impl From<&pb::DocumentRef> for Document {
    fn from(d: &pb::DocumentRef) -> Self {
        Document {
            kind: d.kind.clone(),
            uri: d.uri.clone(),
            sha256: d.sha256.clone(),
        }
    }
}

/// Serde for the contract's `Channel` enum, as its proto name (`CHANNEL_ONLINE`).
mod channel {
    use lienthong_proto::v1::Channel;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(c: &Channel, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_str_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Channel, D::Error> {
        let s = String::deserialize(d)?;
        Channel::from_str_name(&s).ok_or_else(|| D::Error::custom(format!("unknown channel `{s}`")))
    }
}

/// Serde for a step id, as its text.
mod step_id {
    use lienthong_workflow::StepId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &StepId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StepId, D::Error> {
        Ok(StepId(String::deserialize(d)?))
    }
}

/// Serde for an optional step id, as its text or null.
mod opt_step_id {
    use lienthong_workflow::StepId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<StepId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(&id.0),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StepId>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(StepId))
    }
}

/// Serde for an optional duration, as its text (`1wd`) or null.
mod opt_duration {
    use lienthong_calendar::Duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(D::Error::custom))
            .transpose()
    }
}

/// Serde for typed attributes: `{"child.age_months": {"integer": 14}}`, dates as `YYYY-MM-DD`.
mod attrs {
    use std::collections::BTreeMap;

    use chrono::NaiveDate;
    use lienthong_workflow::AttrValue;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The serialised shape of one value.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Wire {
        Text(String),
        Integer(i64),
        Boolean(bool),
        Date(NaiveDate),
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, AttrValue>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let wire: BTreeMap<&str, Wire> = map
            .iter()
            .map(|(k, v)| {
                let w = match v {
                    AttrValue::Text(t) => Wire::Text(t.clone()),
                    AttrValue::Integer(i) => Wire::Integer(*i),
                    AttrValue::Boolean(b) => Wire::Boolean(*b),
                    AttrValue::Date(d) => Wire::Date(*d),
                };
                (k.as_str(), w)
            })
            .collect();
        wire.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, AttrValue>, D::Error> {
        let wire = BTreeMap::<String, Wire>::deserialize(d)?;
        Ok(wire
            .into_iter()
            .map(|(k, w)| {
                let v = match w {
                    Wire::Text(t) => AttrValue::Text(t),
                    Wire::Integer(i) => AttrValue::Integer(i),
                    Wire::Boolean(b) => AttrValue::Boolean(b),
                    Wire::Date(d) => AttrValue::Date(d),
                };
                (k, v)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn commands_round_trip_through_json() {
        let cmds = vec![
            Command::Submit(Submit {
                procedure_code: "2.000986".into(),
                channel: Channel::Online,
                applicant: Applicant {
                    full_name: "Trần Thị B".into(),
                    ..Applicant::default()
                },
                attributes: BTreeMap::from([
                    ("child.age_months".to_string(), AttrValue::Integer(2)),
                    (
                        "child.birth_date".to_string(),
                        AttrValue::Date(NaiveDate::from_ymd_opt(2026, 1, 5).expect("valid")),
                    ),
                ]),
                documents: vec![Document::default()],
            }),
            Command::RequestSupplement(RequestSupplement {
                step: Some(StepId("register-birth".into())),
                items: vec!["giấy chứng sinh".into()],
                reason: "thiếu".into(),
                addressed_to: Addressee::Agency(AgencyCode("vpdk".into())),
            }),
            Command::Refuse(Refuse {
                step: None,
                reason: "x".into(),
            }),
            Command::FireTimer(FireTimer {
                timer: TimerKind::Warning,
                step: Some(StepId("register-birth".into())),
                due: DateTime::from_timestamp(1_772_416_800, 5).expect("valid"),
                lead: Some(Duration::WorkingDays(1)),
            }),
            Command::RecordUndeliverable(RecordUndeliverable {
                agency: "bhxh".into(),
                task_id: "0190a1b2-0000-7000-8000-000000000001/4".into(),
                step: Some(StepId("issue-health-card".into())),
                task_kind: "TASK_KIND_STEP_OPENED".into(),
                deliveries: 10,
            }),
        ];
        for c in cmds {
            let json = serde_json::to_string(&c).expect("serialises");
            let back: Command = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(back, c, "{json}");
        }
    }

    #[test]
    fn json_shape_is_readable() {
        let c = Command::Withdraw(Withdraw {
            reason: "đổi ý".into(),
        });
        let json = serde_json::to_string(&c).expect("serialises");
        assert_eq!(json, r#"{"kind":"withdraw","reason":"đổi ý"}"#);
    }
}
