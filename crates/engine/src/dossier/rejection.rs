//! Why a command is not allowed now.
//!
//! A [`Rejection`] is a business answer, not a failure: nothing was written and retrying the
//! same command on the same state gives the same answer. It is kept apart from conflicts (retry)
//! and faults (I/O, corruption), which belong to the runtime and the store. Every variant has a
//! stable machine-readable [`Rejection::code`] for clients and a message for people that names
//! the dossier, step and agencies involved.

use chrono::{DateTime, Utc};

/// One way a submitted attribute does not match the procedure's declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeProblem {
    /// A required attribute is absent.
    Missing {
        /// The attribute.
        name: String,
    },
    /// The value has another type than declared.
    WrongType {
        /// The attribute.
        name: String,
        /// The declared type.
        expected: String,
        /// The submitted type.
        got: String,
    },
    /// The procedure declares no such attribute.
    Undeclared {
        /// The attribute.
        name: String,
    },
}

impl AttributeProblem {
    /// Stable code: `missing-attribute`, `attribute-type`, `undeclared-attribute`.
    pub fn code(&self) -> &'static str {
        match self {
            AttributeProblem::Missing { .. } => "missing-attribute",
            AttributeProblem::WrongType { .. } => "attribute-type",
            AttributeProblem::Undeclared { .. } => "undeclared-attribute",
        }
    }

    /// The attribute concerned.
    pub fn name(&self) -> &str {
        match self {
            AttributeProblem::Missing { name }
            | AttributeProblem::WrongType { name, .. }
            | AttributeProblem::Undeclared { name } => name,
        }
    }
}

impl std::fmt::Display for AttributeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeProblem::Missing { name } => write!(f, "`{name}` is required but missing"),
            AttributeProblem::WrongType {
                name,
                expected,
                got,
            } => write!(f, "`{name}` must be {expected}, got {got}"),
            AttributeProblem::Undeclared { name } => {
                write!(f, "`{name}` is not declared by the procedure")
            }
        }
    }
}

/// Joins attribute problems for a message.
fn list(problems: &[AttributeProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a command was not accepted. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A second submission on a dossier that exists.
    #[error("dossier {dossier} was already received; a new filing is a new dossier")]
    AlreadyReceived {
        /// The dossier code.
        dossier: String,
    },
    /// A command other than submit on a dossier that was never received.
    #[error("no dossier was received yet: submit it first")]
    NotReceived,
    /// The dossier's life is over.
    #[error("dossier {dossier} is closed ({outcome}) since {since}: nothing may follow")]
    Closed {
        /// The dossier code.
        dossier: String,
        /// How it ended, e.g. `refused`.
        outcome: String,
        /// When it closed (RFC 3339), or `an unknown time`.
        since: String,
    },
    /// The submission names another procedure than the workflow it was routed to.
    #[error("procedure `{got}` was submitted to the workflow of procedure `{expected}`")]
    WrongProcedure {
        /// The workflow's code.
        expected: String,
        /// The submitted code.
        got: String,
    },
    /// Attributes do not match the procedure's declaration; every problem is listed.
    #[error("attributes do not match procedure {procedure}: {}", list(.problems))]
    Attributes {
        /// The procedure code.
        procedure: String,
        /// Every problem found, ordered by attribute name.
        problems: Vec<AttributeProblem>,
    },
    /// The workflow has no such step.
    #[error("procedure {procedure} has no step `{step}`")]
    UnknownStep {
        /// The procedure code.
        procedure: String,
        /// The step named.
        step: String,
    },
    /// The step is not open (pending, completed, skipped or sent back).
    #[error("step `{step}` of dossier {dossier} is not open (it is {status})")]
    StepNotOpen {
        /// The dossier code.
        dossier: String,
        /// The step.
        step: String,
        /// Its status, e.g. `pending`, `completed`.
        status: String,
    },
    /// An agency acted on another agency's step.
    #[error("step `{step}` belongs to `{owner}`, not to `{actor}`")]
    NotYourStep {
        /// The step.
        step: String,
        /// Its agency.
        owner: String,
        /// Who tried.
        actor: String,
    },
    /// The actor may not do this on this dossier.
    #[error("`{actor}` may not {action} on dossier {dossier}: only {allowed} may")]
    NotAllowed {
        /// Who tried.
        actor: String,
        /// What, e.g. `return the result`.
        action: String,
        /// The dossier code.
        dossier: String,
        /// Who may, in words.
        allowed: String,
    },
    /// The workflow does not let this step ask for a supplement.
    #[error("step `{step}` may not ask for a supplement (the workflow sets `supplement = false`)")]
    SupplementNotAllowed {
        /// The step.
        step: String,
    },
    /// A supplement request is already outstanding.
    #[error(
        "dossier {dossier} already awaits supplement #{ordinal} (asked by `{requested_by}`): ask for everything missing at once, after it is provided"
    )]
    SupplementOutstanding {
        /// The dossier code.
        dossier: String,
        /// The outstanding request's ordinal.
        ordinal: u32,
        /// Who asked.
        requested_by: String,
    },
    /// Nothing was asked for.
    #[error("dossier {dossier} has no outstanding supplement request")]
    NoSupplementOutstanding {
        /// The dossier code.
        dossier: String,
    },
    /// The step is waiting for the supplement it asked for.
    #[error("step `{step}` awaits supplement #{ordinal} addressed to `{addressed_to}`")]
    AwaitingSupplement {
        /// The step (or `intake`).
        step: String,
        /// The outstanding request's ordinal.
        ordinal: u32,
        /// Who must supplement.
        addressed_to: String,
    },
    /// A supplement request with no item.
    #[error("a supplement request must list every missing item, and this one lists none")]
    NoItems,
    /// A required reason is empty.
    #[error("a reason is required to {action}")]
    ReasonRequired {
        /// What, e.g. `refuse`.
        action: String,
    },
    /// A list or text over its limit.
    #[error("{what} is too large: {got} > {max}")]
    TooLarge {
        /// What, e.g. `documents`.
        what: String,
        /// The limit.
        max: usize,
        /// What was given.
        got: usize,
    },
    /// The one apology of the dossier was already issued.
    #[error(
        "dossier {dossier} already had its apology on {at}: the appointment may be re-set at most once"
    )]
    ApologyAlreadyIssued {
        /// The dossier code.
        dossier: String,
        /// When (RFC 3339).
        at: String,
    },
    /// The new appointment is not after the current one.
    #[error("the new appointment {proposed} must be after the current one, {current}")]
    AppointmentNotLater {
        /// The current appointment (RFC 3339).
        current: String,
        /// The proposed one (RFC 3339).
        proposed: String,
    },
    /// The result cannot be returned yet.
    #[error("dossier {dossier} is not processed yet: steps {pending} are not done")]
    NotProcessed {
        /// The dossier code.
        dossier: String,
        /// The steps not done, comma-separated.
        pending: String,
    },
    /// The calendar could not compute a deadline (e.g. the year is not published).
    #[error("{0}")]
    Calendar(String),
    /// A step condition could not be evaluated on the dossier's attributes.
    #[error("the condition of step `{step}` could not be evaluated: {message}")]
    Condition {
        /// The step.
        step: String,
        /// The evaluator's message.
        message: String,
    },
    /// The history holds something the rules cannot continue from (see the state's anomalies).
    #[error("dossier {dossier} cannot take commands: {detail}")]
    Inconsistent {
        /// The dossier code.
        dossier: String,
        /// What is wrong.
        detail: String,
    },
}

impl Rejection {
    /// Stable machine-readable code, e.g. `step-not-open`.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::AlreadyReceived { .. } => "already-received",
            Rejection::NotReceived => "not-received",
            Rejection::Closed { .. } => "closed",
            Rejection::WrongProcedure { .. } => "wrong-procedure",
            Rejection::Attributes { .. } => "invalid-attributes",
            Rejection::UnknownStep { .. } => "unknown-step",
            Rejection::StepNotOpen { .. } => "step-not-open",
            Rejection::NotYourStep { .. } => "not-your-step",
            Rejection::NotAllowed { .. } => "not-allowed",
            Rejection::SupplementNotAllowed { .. } => "supplement-not-allowed",
            Rejection::SupplementOutstanding { .. } => "supplement-outstanding",
            Rejection::NoSupplementOutstanding { .. } => "no-supplement-outstanding",
            Rejection::AwaitingSupplement { .. } => "awaiting-supplement",
            Rejection::NoItems => "no-items",
            Rejection::ReasonRequired { .. } => "reason-required",
            Rejection::TooLarge { .. } => "too-large",
            Rejection::ApologyAlreadyIssued { .. } => "apology-already-issued",
            Rejection::AppointmentNotLater { .. } => "appointment-not-later",
            Rejection::NotProcessed { .. } => "not-processed",
            Rejection::Calendar(_) => "calendar",
            Rejection::Condition { .. } => "condition",
            Rejection::Inconsistent { .. } => "inconsistent-history",
        }
    }
}

/// RFC 3339 text of an instant, for messages.
pub(crate) fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "an unknown time".to_string(), |t| t.to_rfc3339())
}
