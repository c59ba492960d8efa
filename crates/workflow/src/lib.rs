//! Workflow definitions: TOML procedure files parsed and validated into typed, immutable
//! [`Workflow`]s.
//!
//! A procedure (thủ tục hành chính) that several agencies handle together (liên thông) is described
//! by designers in a TOML file. This crate reads it in two stages: [`raw`] mirrors the TOML with
//! positions, [`validate`] checks everything that can be checked without a dossier and builds the
//! model in [`definition`]. Problems come back as [`Diagnostic`]s that point at `file:line:column`,
//! every problem of a file at once. [`Catalog`] loads a whole `workflows/` directory (agencies,
//! calendars, procedures); [`graph`] draws the routing.
//!
//! A definition's identity is the SHA-256 of its exact text ([`Workflow::hash`]): the engine stores
//! the text content-addressed, pins every dossier to the hash, and re-parses the text with
//! [`Workflow::parse`] after a restart.
//!
//! # Workflow file format (`workflows/procedures/*.toml`)
//!
//! ```toml
//! [procedure]
//! code = "2.000986"            # required; national procedure code; unique in the catalog
//! name = "Liên thông ..."      # required; official name
//! version = 1                  # required; integer >= 1, informational (the hash is the identity)
//! limit = "3wd"                # required; whole-dossier limit: Nwd | Nwh | Nd | Nh
//! cutoff = "15:00"             # optional (default: none); HH:MM, receipts later count from the
//!                              #   next working day
//! calendar = "vn"              # required; a calendar family from workflows/calendars/
//! supplement_clock = "pause"   # optional (default "pause"); or "restart"
//! payment_counts = false       # optional (default false); whether waiting for the citizen's
//!                              #   payment counts toward the deadline
//! receiving_agency = "ubnd-xa" # required; the one-stop desk that receives and returns results
//!
//! [attributes]                 # optional; the dossier's typed attributes that conditions read
//! "child.age_months" = { type = "integer", required = true, description = "..." }
//! #   type: "text" | "integer" | "boolean" | "date" (required key)
//! #   required: default false; an optional attribute needs a dotted name (for `has(...)`)
//! #   description: default ""
//! #   names: dotted CEL identifiers; quote them (a bare dotted key is a nested TOML table)
//!
//! [[step]]                     # one or more
//! id = "register-birth"        # required; [a-z0-9][a-z0-9_-]*, unique
//! name = "Đăng ký khai sinh"   # optional (default: the id)
//! agency = "tu-phap"           # required; an agency of workflows/agencies.toml
//! budget = "1wd"               # required; the step's own share of the limit
//! after = []                   # optional (default []); steps that must be done or skipped first;
//!                              #   several make a join, several steps after one make a split
//! when = "child.age_months < 72"   # optional; CEL condition, false skips the step (a skipped
//!                              #   step counts as done for the steps after it)
//! supplement = true            # optional (default true); may this step ask for a supplement
//! on_reject = "refuse"         # optional (default "refuse"); or the id of an earlier step on
//!                              #   this step's path (rework), or of a rework-only step
//! rework_only = false          # optional (default false); the step opens only when a later
//!                              #   step's on_reject names it; it has no `after` and nothing
//!                              #   waits for it; when done the dossier returns to the sender
//! payment = false              # optional (default false); the step is the wait for the
//!                              #   citizen's payment: with `payment_counts = false` the time it
//!                              #   stays open does not count toward the deadlines; it must be a
//!                              #   normal step (not rework-only) with `supplement = false`
//! ```
//!
//! Unknown keys are errors everywhere. Validation also rejects: unknown agencies and calendar
//! families, bad durations and cut-off times, duplicate step ids, `after` naming no step, cycles,
//! steps that can never run (a constantly false `when`; a rework-only step no `on_reject` names),
//! steps that can never open (waiting for a rework-only step), payment steps that are rework-only
//! or may ask for a supplement, and conditions that do not parse
//! or do not type-check. Steps in [`Workflow::steps`] are in a topological order of `after` (file
//! order among steps that are ready together).
//!
//! # Conditions
//!
//! `when` is [CEL](https://cel.dev), checked statically against `[attributes]` (see
//! [`condition`] for the full rules): attributes read as nested maps (`child.age_months`);
//! integer, text, boolean and date (`date('2025-07-01')`) values; comparisons only between values
//! of one type; the result must be boolean; optional attributes only behind `has(...)`.
//!
//! # Agencies file (`workflows/agencies.toml`)
//!
//! ```toml
//! [agency.tu-phap]             # the agency code used in workflows ([a-z0-9-]+)
//! name_vi = "Công chức Tư pháp - Hộ tịch cấp xã"   # required
//! name_en = "Commune justice and civil status officer"   # required
//! code_prefix = "TP.XA"        # required; prefix of the dossier codes it issues ([A-Z0-9.-]+)
//! ```

pub mod catalog;
pub mod condition;
pub mod definition;
pub mod diagnostic;
pub mod graph;
pub mod raw;
pub mod validate;

pub use catalog::Catalog;
pub use condition::Condition;
pub use definition::{
    Agency, AgencyCode, AttrType, AttrValue, AttributeSpec, OnReject, Step, StepId,
    SupplementClock, Workflow,
};
pub use diagnostic::Diagnostic;
pub use graph::{dot, mermaid};
