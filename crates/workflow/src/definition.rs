//! The typed, immutable workflow definition that validation produces.
//!
//! Everything downstream (the dossier state machine, projections, `lienthong graph`) reads these
//! types and never the raw TOML. Construction goes only through validation, so a `Workflow` that
//! exists is known to be well formed: every agency is known, every `after` names an existing step,
//! the graph has no cycle, every step is reachable and can finish, every condition type-checks.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{NaiveDate, NaiveTime};
use lienthong_calendar::Duration;

use crate::condition::Condition;

/// An agency code from `workflows/agencies.toml`, e.g. `tu-phap`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgencyCode(pub String);

/// A step id, unique inside one procedure, e.g. `register-birth`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(pub String);

impl fmt::Display for AgencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One agency as declared in `workflows/agencies.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agency {
    /// Stable code used in workflows, events and credentials.
    pub code: AgencyCode,
    /// Official name in Vietnamese (shown first in every user interface).
    pub name_vi: String,
    /// Name in English.
    pub name_en: String,
    /// Prefix of the dossier codes this agency issues when it receives dossiers (e.g. `UBND.XA`).
    pub code_prefix: String,
}

/// How the dossier clock behaves while the citizen (or another agency) supplements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupplementClock {
    /// Supplement time is excluded: the clock resumes where it stopped.
    Pause,
    /// The clock starts again from zero when the supplement arrives.
    Restart,
}

/// Types of the dossier attributes that conditions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    /// UTF-8 text.
    Text,
    /// Signed 64-bit integer (counts, ages in months; never money in floating point).
    Integer,
    /// true / false.
    Boolean,
    /// A calendar date (`YYYY-MM-DD`).
    Date,
}

/// A typed attribute value on a dossier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// UTF-8 text.
    Text(String),
    /// Signed 64-bit integer.
    Integer(i64),
    /// true / false.
    Boolean(bool),
    /// A calendar date.
    Date(NaiveDate),
}

impl AttrValue {
    /// The type of this value.
    pub fn attr_type(&self) -> AttrType {
        match self {
            AttrValue::Text(_) => AttrType::Text,
            AttrValue::Integer(_) => AttrType::Integer,
            AttrValue::Boolean(_) => AttrType::Boolean,
            AttrValue::Date(_) => AttrType::Date,
        }
    }
}

/// A declared attribute of a procedure's dossiers (`[attributes]` in the workflow file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeSpec {
    /// Dotted name, e.g. `child.age_months` (read in conditions as `child.age_months`).
    pub name: String,
    /// Its type; a submitted value of another type is rejected.
    pub ty: AttrType,
    /// Whether a dossier must carry it at submission.
    pub required: bool,
    /// What it means, for the people who fill it in.
    pub description: String,
}

/// Where a step's rejection sends the dossier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnReject {
    /// The dossier is refused (Phiếu từ chối) with the step's reason and processing ends.
    Refuse,
    /// The dossier goes back to an earlier step on the same path for rework; that step and the
    /// steps after it are opened again. Re-routing never restarts the dossier clock.
    Rework(StepId),
}

/// One step: a piece of work for one agency.
#[derive(Clone, Debug)]
pub struct Step {
    /// Unique id inside the procedure.
    pub id: StepId,
    /// Human name (Vietnamese first).
    pub name: String,
    /// The agency that does the work.
    pub agency: AgencyCode,
    /// Steps that must be done (completed or skipped) before this one opens: a join when more
    /// than one. Empty for the first steps.
    pub after: Vec<StepId>,
    /// Condition over the dossier's attributes; when false the step is skipped (and counts as
    /// done for joins).
    pub when: Option<Condition>,
    /// The step's own share of the time limit.
    pub budget: Duration,
    /// Whether this step may ask for a supplement.
    pub supplement: bool,
    /// Where a rejection sends the dossier.
    pub on_reject: OnReject,
    /// The step is not part of the normal flow: it opens only when a later step's `on_reject`
    /// names it (e.g. the land office completing cadastral data at the tax office's request).
    /// Such a step has no `after`, no step waits for it, and when it completes the dossier goes
    /// back to the step that sent it there. Validation guarantees all three.
    pub rework_only: bool,
    /// The step is the wait for the citizen's payment (e.g. tax confirming that the amount was
    /// paid): while it is open the work waits for the citizen, so when the procedure's
    /// `payment_counts` is false the time it stays open is excluded from the dossier's deadlines.
    /// Validation guarantees it is a normal step (not rework-only) that asks for no supplement.
    pub payment: bool,
}

/// A validated procedure definition, pinned by content hash.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// National procedure code, e.g. `2.000986`.
    pub code: String,
    /// Official name (Vietnamese).
    pub name: String,
    /// Version number written by the designer (informational; the hash is the identity).
    pub version: u32,
    /// The whole dossier's time limit.
    pub limit: Duration,
    /// Receipts after this local time count from the next working day.
    pub cutoff: Option<NaiveTime>,
    /// Name of the working-day calendar (family) used for every deadline.
    pub calendar: String,
    /// Pause or restart on supplements during processing.
    pub supplement_clock: SupplementClock,
    /// Whether time spent waiting for the citizen's payment counts toward the deadline.
    pub payment_counts: bool,
    /// The agency that receives dossiers and returns results (the one-stop desk).
    pub receiving_agency: AgencyCode,
    /// Declared attributes, by dotted name.
    pub attributes: BTreeMap<String, AttributeSpec>,
    /// Steps in a topological order of `after` (every step after the steps it waits for).
    pub steps: Vec<Step>,
    /// Lower-case hex SHA-256 of the exact source bytes: the definition's identity.
    pub hash: String,
    /// The exact source text, kept so that it can be stored content-addressed.
    pub source: String,
    /// Where it was loaded from (for messages only).
    pub origin: String,
}

impl Workflow {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id.0 == id)
    }

    /// Steps with no `after` that are not only reachable as rework targets: opened at receipt.
    pub fn initial_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .filter(|s| s.after.is_empty() && !s.rework_only)
    }

    /// Steps that are entered only through a rework (`rework_only = true`).
    pub fn rework_only_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.rework_only)
    }

    /// Steps that are the wait for the citizen's payment (`payment = true`).
    pub fn payment_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.payment)
    }

    /// Steps that wait for `id` (directly).
    pub fn dependents<'a>(&'a self, id: &'a StepId) -> impl Iterator<Item = &'a Step> + 'a {
        self.steps.iter().filter(move |s| s.after.contains(id))
    }
}
