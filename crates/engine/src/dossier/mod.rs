//! The dossier state machine: the pure heart of the engine.
//!
//! - [`decide`]`(state, command, context) -> events | rejection`: every business rule, and the
//!   routing between agencies that follows each act. Time, actor, workflow and calendar come in
//!   the [`DecideContext`]; nothing is read from a clock, randomness or storage.
//! - [`evolve`]`(state, event) -> state`: no rules, never fails; surprises become anomalies.
//! - [`fold`] and [`state_at`]: the state after a history, or at an instant of it (auditors).
//! - [`clock`]: the legal clock rules (supplement pause/restart, intake completion, payment
//!   waits) that `decide` records as `DeadlinesMoved`.
//! - [`timers`]: the current deadlines and the durable timers they need ([`timers_for`]).
//!
//! The runtime wraps the bodies `decide` returns into events with envelopes, appends them, and
//! applies each with `evolve`. Commands are in [`command`], the state in [`state`], the rejections
//! in [`rejection`], and conversions between typed values and the protobuf contract in
//! [`convert`].

pub mod clock;
pub mod command;
pub mod convert;
mod decide;
pub mod rejection;
pub mod state;
pub mod timers;

pub use command::{
    Addressee, Applicant, CITIZEN, Command, CompleteStep, Document, ENGINE, FireTimer,
    IssueApology, ProvideSupplement, RecordUndeliverable, Refuse, RejectStep, RequestSupplement,
    ReturnResult, Stop, Submit, Withdraw,
};
pub use convert::{attr_from_proto, attr_to_proto, attrs_from_proto, attrs_to_proto};
pub use decide::{
    ATTRIBUTES_MAX, DOCUMENTS_PER_COMMAND_MAX, DecideContext, ITEMS_PER_REQUEST_MAX,
    TEXT_BYTES_MAX, decide,
};
pub use rejection::{AttributeProblem, Rejection};
pub use state::{
    Anomaly, Apology, Closure, DeadlineMove, DossierState, Ending, Notice, Status, StepRecord,
    StepStatus, StepView, Supplement, evolve, fold, state_at,
};
pub use timers::{
    Deadline, Timer, TimerKind, TimerOp, TimerPolicy, current_deadlines, needed_timers, next_timer,
    rearm, timer_changes, timers_for, warning_instant,
};
