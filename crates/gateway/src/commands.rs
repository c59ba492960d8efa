//! Every mutating request of the API as one engine command, in one place: the gRPC services use
//! it, and so does the engine node serving the same requests over the bus (`crates/node`), so a
//! command means the same on both paths.
//!
//! [`ToCommand`] says, per request message, which RPC it is, which dossier it names, its
//! idempotency key and officer, who may make it ([`Act`]) and how it becomes a [`Command`] (with
//! the input checks and named limits of [`convert`]). Content is converted only after the role
//! check (see [`Shared::run`](crate::shared::Shared::run)).

use lienthong_engine::dossier::{
    Command, CompleteStep, IssueApology, ProvideSupplement, Refuse, RejectStep, RequestSupplement,
    ReturnResult, Stop, Withdraw,
};
use lienthong_proto::v1 as pb;
use lienthong_workflow::StepId;
use tonic::Status;

use crate::config::Limits;
use crate::convert::{self, required};
use crate::shared::Act;
use crate::status::invalid;

/// A request message that is one engine command.
pub trait ToCommand {
    /// The RPC's name, for logs and spans.
    const RPC: &'static str;
    /// Who may make it.
    const ACT: Act;
    /// The dossier it names (id or code); `None` for a submission.
    fn dossier(&self) -> Option<&str>;
    /// The caller's idempotency key.
    fn idempotency_key(&self) -> &str;
    /// The officer named in the request.
    fn officer(&self) -> &str;
    /// The channel the actor used, when the request says (a submission).
    fn channel(&self) -> Option<i32> {
        None
    }
    /// The engine command, after the input checks.
    fn command(&self, limits: &Limits) -> Result<Command, Status>;
}

fn step(field: &str, value: &str) -> Result<StepId, Status> {
    Ok(StepId(required(field, value)?.to_string()))
}

/// The fields every request carries the same way.
macro_rules! common {
    () => {
        fn dossier(&self) -> Option<&str> {
            Some(&self.dossier)
        }
        fn idempotency_key(&self) -> &str {
            &self.idempotency_key
        }
        fn officer(&self) -> &str {
            &self.officer
        }
    };
}

impl ToCommand for pb::SubmitRequest {
    const RPC: &'static str = "Submit";
    const ACT: Act = Act::AsDesk;
    fn dossier(&self) -> Option<&str> {
        None
    }
    fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    fn officer(&self) -> &str {
        &self.officer
    }
    fn channel(&self) -> Option<i32> {
        Some(self.channel)
    }
    fn command(&self, limits: &Limits) -> Result<Command, Status> {
        convert::submit(self, limits)
    }
}

impl ToCommand for pb::CompleteStepRequest {
    const RPC: &'static str = "CompleteStep";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, limits: &Limits) -> Result<Command, Status> {
        Ok(Command::CompleteStep(CompleteStep {
            step: step("step_id", &self.step_id)?,
            outcome: self.outcome.clone(),
            results: convert::documents("results", &self.results, limits)?,
            note: self.note.clone(),
        }))
    }
}

impl ToCommand for pb::RejectStepRequest {
    const RPC: &'static str = "RejectStep";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, _: &Limits) -> Result<Command, Status> {
        Ok(Command::RejectStep(RejectStep {
            step: step("step_id", &self.step_id)?,
            reason: self.reason.clone(),
        }))
    }
}

impl ToCommand for pb::RequestSupplementRequest {
    const RPC: &'static str = "RequestSupplement";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, _: &Limits) -> Result<Command, Status> {
        Ok(Command::RequestSupplement(RequestSupplement {
            step: convert::opt_step(&self.step_id),
            items: self.items.clone(),
            reason: self.reason.clone(),
            addressed_to: convert::addressee(&self.addressed_to),
        }))
    }
}

impl ToCommand for pb::RefuseRequest {
    const RPC: &'static str = "Refuse";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, _: &Limits) -> Result<Command, Status> {
        Ok(Command::Refuse(Refuse {
            step: convert::opt_step(&self.step_id),
            reason: self.reason.clone(),
        }))
    }
}

impl ToCommand for pb::StopRequest {
    const RPC: &'static str = "Stop";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, _: &Limits) -> Result<Command, Status> {
        Ok(Command::Stop(Stop {
            reason: self.reason.clone(),
        }))
    }
}

impl ToCommand for pb::IssueApologyRequest {
    const RPC: &'static str = "IssueApology";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, _: &Limits) -> Result<Command, Status> {
        let new_appointment =
            lienthong_engine::dossier::convert::instant(self.new_appointment.as_ref())
                .ok_or_else(|| invalid("new_appointment", "is required: a valid instant"))?;
        Ok(Command::IssueApology(IssueApology {
            step: convert::opt_step(&self.step_id),
            reason: self.reason.clone(),
            new_appointment,
        }))
    }
}

impl ToCommand for pb::ProvideSupplementRequest {
    const RPC: &'static str = "ProvideSupplement";
    const ACT: Act = Act::AsAgency;
    common!();
    fn command(&self, limits: &Limits) -> Result<Command, Status> {
        Ok(Command::ProvideSupplement(ProvideSupplement {
            documents: convert::documents("documents", &self.documents, limits)?,
            note: self.note.clone(),
        }))
    }
}

impl ToCommand for pb::ReturnResultRequest {
    const RPC: &'static str = "ReturnResult";
    const ACT: Act = Act::AsDesk;
    common!();
    fn command(&self, limits: &Limits) -> Result<Command, Status> {
        let channel = convert::channel(self.channel, "how the result was handed back")?;
        Ok(Command::ReturnResult(ReturnResult {
            results: convert::documents("results", &self.results, limits)?,
            channel,
        }))
    }
}

impl ToCommand for pb::WithdrawRequest {
    const RPC: &'static str = "Withdraw";
    const ACT: Act = Act::AsDesk;
    common!();
    fn command(&self, _: &Limits) -> Result<Command, Status> {
        Ok(Command::Withdraw(Withdraw {
            reason: self.reason.clone(),
        }))
    }
}

/// A request message as the bus carries it (`lienthong.v1.BusCommand`'s `command`), naming its
/// dossier by id: what a gateway over the bus forwards to the engine that owns the dossier.
pub trait ToBus {
    /// The bus form; `dossier_id` replaces the dossier the request names (an id or a code) by
    /// its id, since the bus routes by id. A submission names none.
    fn to_bus(&self, dossier_id: Option<&str>) -> BusCommandKind;
}

/// The `command` of a `lienthong.v1.BusCommand`.
pub type BusCommandKind = pb::bus_command::Command;

impl ToBus for pb::SubmitRequest {
    fn to_bus(&self, _: Option<&str>) -> BusCommandKind {
        BusCommandKind::Submit(self.clone())
    }
}

/// [`ToBus`] for the requests on an existing dossier.
macro_rules! to_bus {
    ($($request:ident => $variant:ident),* $(,)?) => {
        $(impl ToBus for pb::$request {
            fn to_bus(&self, dossier_id: Option<&str>) -> BusCommandKind {
                let mut r = self.clone();
                if let Some(id) = dossier_id {
                    r.dossier = id.to_string();
                }
                BusCommandKind::$variant(r)
            }
        })*
    };
}

to_bus!(
    CompleteStepRequest => CompleteStep,
    RejectStepRequest => RejectStep,
    RequestSupplementRequest => RequestSupplement,
    ProvideSupplementRequest => ProvideSupplement,
    RefuseRequest => Refuse,
    StopRequest => Stop,
    IssueApologyRequest => IssueApology,
    ReturnResultRequest => ReturnResult,
    WithdrawRequest => Withdraw,
    GetDossierRequest => Get,
);
