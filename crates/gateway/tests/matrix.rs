//! The authorisation matrix (issue #5): every RPC of the dossier, agency, audit and report
//! services, called by every kind of caller, against one table that states the expected outcome
//! of each cell.
//!
//! What it proves: for each cell of [`TABLE`] (an RPC, sometimes in a named variant, times a
//! [`Caller`]) the real gateway — a real tonic client over TCP, real server, real engine and sled
//! store ([`common::TestServer`]) — answers as the table says: `A` the call succeeds (every cell is
//! set up so that an allowed call really does its work: a domain refusal would hide whether the
//! authorisation passed), `D` PERMISSION_DENIED, `U` UNAUTHENTICATED, `I` past the authorisation
//! but refused as INVALID_ARGUMENT. Streaming RPCs are judged by their first message or their
//! status. After every mutating call that did not succeed, the dossier's history and the global
//! feed are as long as before: a refused call leaves no event behind.
//!
//! How: each cell gets its own dossier, set up from scratch by the principals whose job it is
//! (see [`State`]), and its own idempotency keys, so no cell sees another's effects. The cells run
//! one after the other; every mismatch is collected, and the test fails listing all of them with
//! the whole grid of what the server answered.
//!
//! The same table runs three ways ([`Transport`]): plaintext with bearer tokens, server TLS with
//! bearer tokens, and mutual TLS where every principal (desk, agencies, auditor and admin: the
//! auth file lets any role accept a certificate naming its agency) calls over its own connection
//! with its client certificate and no token, so a cell can pass only if the certificate
//! authenticated it. `none` and `bad` stay a connection without a certificate (with no token, or
//! an unknown one). The set-up and the "nothing left behind" checks use tokens in every run.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::pki::Pki;
use common::{Clients, TestServer, birth, doc, feed_end, req};
use lienthong_gateway::auth::ACT_AS_HEADER;
use lienthong_proto::v1 as pb;
use tonic::{Code, Status};

/// The longest any one call of a cell may take before the cell counts as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Who calls. The agencies are named by their part in the cell's dossier (see [`State`]): the
/// dossier is always a birth dossier received by the desk `ubnd-xa`, whose first step
/// `register-birth` (`tu-phap`) is done, whose step `register-residence` (`cong-an`) is the one
/// the cell is about, and whose health-card step (`bhxh`) was skipped (the child has a card).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// No `authorization` header and no client certificate.
    NoToken,
    /// A bearer token no principal has.
    BadToken,
    /// The one-stop desk `ubnd-xa` (desk role): the dossier's receiving agency.
    Desk,
    /// `cong-an` (agency role): the agency of the step the cell acts on.
    StepAgency,
    /// `tu-phap` (agency role): the dossier is routed to it (its step is done), the step is not its.
    RoutedAgency,
    /// `bhxh` (agency role): the dossier is not routed to it at all (its step was skipped).
    OtherAgency,
    /// `auditor` (agency `kiem-toan`).
    Auditor,
    /// `admin` (agency `quan-tri`), naming in `lienthong-act-as` the agency a mutating call needs.
    Admin,
    /// `admin` without the act-as header: it acts as its own agency `quan-tri`.
    AdminSelf,
}

/// The columns of the table, in order.
const CALLERS: [Caller; 9] = [
    Caller::NoToken,
    Caller::BadToken,
    Caller::Desk,
    Caller::StepAgency,
    Caller::RoutedAgency,
    Caller::OtherAgency,
    Caller::Auditor,
    Caller::Admin,
    Caller::AdminSelf,
];

impl Caller {
    /// The principal's id in [`common::PRINCIPALS`] (empty: none).
    fn principal(self) -> &'static str {
        match self {
            Caller::NoToken | Caller::BadToken => "",
            Caller::Desk => "desk",
            Caller::StepAgency => "cong-an",
            Caller::RoutedAgency => "tu-phap",
            Caller::OtherAgency => "bhxh",
            Caller::Auditor => "auditor",
            Caller::Admin | Caller::AdminSelf => "admin",
        }
    }

    /// The column header.
    fn label(self) -> &'static str {
        match self {
            Caller::NoToken => "none",
            Caller::BadToken => "bad",
            Caller::Desk => "desk",
            Caller::StepAgency => "step",
            Caller::RoutedAgency => "routed",
            Caller::OtherAgency => "other",
            Caller::Auditor => "audit",
            Caller::Admin => "admin",
            Caller::AdminSelf => "self",
        }
    }
}

/// What a cell must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Allowed, and set up to succeed: OK (for a stream, a first message or a clean end).
    Allowed,
    /// Past the authorisation, refused for its input with this code.
    Refused(Code),
    /// PERMISSION_DENIED.
    Denied,
    /// UNAUTHENTICATED.
    Unauth,
}

const A: Expect = Expect::Allowed;
const D: Expect = Expect::Denied;
const U: Expect = Expect::Unauth;
const I: Expect = Expect::Refused(Code::InvalidArgument);

/// What a cell's dossier looks like before the call (every dossier starts as described at
/// [`Caller`]; a state adds to that).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No dossier.
    Nothing,
    /// `register-residence` (`cong-an`) is open.
    StepOpen,
    /// And `cong-an` asked the citizen for a supplement.
    SupplementFromCitizen,
    /// And `cong-an` asked `tu-phap` for a supplement (the police return data to justice).
    SupplementFromRouted,
    /// Every step done, the desk's `return-result` too: the result waits to be handed back.
    ReadyToReturn,
}

/// Who sends the `lienthong-act-as` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActAs {
    /// Nobody (reads).
    Nobody,
    /// Only the [`Caller::Admin`] column, naming the agency whose authority the call needs.
    Admin(&'static str),
    /// Every caller (so `admin` and `self` are the same call).
    Everyone(&'static str),
}

/// The calls, with the variant of the request where the rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Submit,
    Get,
    History,
    /// Answers a supplement request addressed to the citizen.
    ProvideSupplementCitizen,
    /// Answers a supplement request addressed to `tu-phap`.
    ProvideSupplementAgency,
    ReturnResult,
    Withdraw,
    /// The caller's own tasks (`agency` empty).
    StreamTasksOwn,
    /// The tasks of `cong-an`, named in the request.
    StreamTasksNamed,
    CompleteStep,
    /// `CompleteStep` without a step id.
    CompleteStepMalformed,
    /// `CompleteStep` with the admin acting as an agency that does not exist.
    CompleteStepActAsUnknown,
    RejectStep,
    /// At `register-residence`, to the citizen.
    RequestSupplementStep,
    /// At intake (no step), to the citizen.
    RequestSupplementIntake,
    /// At `register-residence`.
    RefuseStep,
    /// At `register-residence`, every caller claiming to act as `cong-an`.
    RefuseStepActAsStepAgency,
    /// The dossier as a whole (no step).
    RefuseDossier,
    Stop,
    /// At `register-residence`.
    IssueApology,
    Replay,
    /// One dossier's chain.
    VerifyDossier,
    /// The whole store.
    VerifyStore,
    ExportFeed,
    /// Every agency the caller may see (`agency` empty).
    BoardAll,
    /// `agency = cong-an`.
    BoardNamed,
    BreachesAll,
    BreachesNamed,
    IndicatorsAll,
    IndicatorsNamed,
}

impl Rpc {
    /// The row header.
    fn label(self) -> &'static str {
        match self {
            Rpc::Submit => "Dossier.Submit",
            Rpc::Get => "Dossier.Get",
            Rpc::History => "Dossier.History",
            Rpc::ProvideSupplementCitizen => "Dossier.ProvideSupplement (to citizen)",
            Rpc::ProvideSupplementAgency => "Dossier.ProvideSupplement (to tu-phap)",
            Rpc::ReturnResult => "Dossier.ReturnResult",
            Rpc::Withdraw => "Dossier.Withdraw",
            Rpc::StreamTasksOwn => "Agency.StreamTasks (own)",
            Rpc::StreamTasksNamed => "Agency.StreamTasks (agency=cong-an)",
            Rpc::CompleteStep => "Agency.CompleteStep",
            Rpc::CompleteStepMalformed => "Agency.CompleteStep (no step_id)",
            Rpc::CompleteStepActAsUnknown => "Agency.CompleteStep (admin as unknown)",
            Rpc::RejectStep => "Agency.RejectStep",
            Rpc::RequestSupplementStep => "Agency.RequestSupplement (step)",
            Rpc::RequestSupplementIntake => "Agency.RequestSupplement (intake)",
            Rpc::RefuseStep => "Agency.Refuse (step)",
            Rpc::RefuseStepActAsStepAgency => "Agency.Refuse (step, all act as cong-an)",
            Rpc::RefuseDossier => "Agency.Refuse (dossier)",
            Rpc::Stop => "Agency.Stop",
            Rpc::IssueApology => "Agency.IssueApology (step)",
            Rpc::Replay => "Audit.Replay",
            Rpc::VerifyDossier => "Audit.Verify (dossier)",
            Rpc::VerifyStore => "Audit.Verify (store)",
            Rpc::ExportFeed => "Audit.ExportFeed",
            Rpc::BoardAll => "Report.Board",
            Rpc::BoardNamed => "Report.Board (agency=cong-an)",
            Rpc::BreachesAll => "Report.Breaches",
            Rpc::BreachesNamed => "Report.Breaches (agency=cong-an)",
            Rpc::IndicatorsAll => "Report.Indicators",
            Rpc::IndicatorsNamed => "Report.Indicators (agency=cong-an)",
        }
    }

    /// The dossier the cell needs.
    fn state(self) -> State {
        match self {
            Rpc::Submit
            | Rpc::StreamTasksOwn
            | Rpc::StreamTasksNamed
            | Rpc::VerifyStore
            | Rpc::BoardAll
            | Rpc::BoardNamed
            | Rpc::BreachesAll
            | Rpc::BreachesNamed
            | Rpc::IndicatorsAll
            | Rpc::IndicatorsNamed => State::Nothing,
            Rpc::ProvideSupplementCitizen => State::SupplementFromCitizen,
            Rpc::ProvideSupplementAgency => State::SupplementFromRouted,
            Rpc::ReturnResult => State::ReadyToReturn,
            // The feed is never empty once a dossier exists.
            _ => State::StepOpen,
        }
    }

    /// Whether the call may append events.
    fn mutating(self) -> bool {
        !matches!(
            self,
            Rpc::Get
                | Rpc::History
                | Rpc::StreamTasksOwn
                | Rpc::StreamTasksNamed
                | Rpc::Replay
                | Rpc::VerifyDossier
                | Rpc::VerifyStore
                | Rpc::ExportFeed
                | Rpc::BoardAll
                | Rpc::BoardNamed
                | Rpc::BreachesAll
                | Rpc::BreachesNamed
                | Rpc::IndicatorsAll
                | Rpc::IndicatorsNamed
        )
    }

    /// Who sends the act-as header, naming which agency.
    fn act_as(self) -> ActAs {
        match self {
            Rpc::Submit
            | Rpc::ProvideSupplementCitizen
            | Rpc::ReturnResult
            | Rpc::Withdraw
            | Rpc::RequestSupplementIntake => ActAs::Admin("ubnd-xa"),
            Rpc::ProvideSupplementAgency => ActAs::Admin("tu-phap"),
            Rpc::CompleteStep
            | Rpc::CompleteStepMalformed
            | Rpc::RejectStep
            | Rpc::RequestSupplementStep
            | Rpc::RefuseStep
            | Rpc::RefuseDossier
            | Rpc::Stop
            | Rpc::IssueApology => ActAs::Admin("cong-an"),
            Rpc::CompleteStepActAsUnknown => ActAs::Admin("no-such-agency"),
            Rpc::RefuseStepActAsStepAgency => ActAs::Everyone("cong-an"),
            _ => ActAs::Nobody,
        }
    }
}

/// One row: an RPC and what each caller of [`CALLERS`] must get.
struct Row {
    /// The call.
    rpc: Rpc,
    /// The expected outcome per column.
    expect: [Expect; 9],
}

const fn row(rpc: Rpc, expect: [Expect; 9]) -> Row {
    Row { rpc, expect }
}

/// The matrix. The rules it encodes:
///
/// - No credentials or an unknown token: UNAUTHENTICATED, before anything else.
/// - **Agency**: reads (Get, History) only the dossiers routed to it — it received the dossier,
///   one of its steps was opened, or a supplement request names it; a routed agency reads the
///   whole dossier, history included, since the history is the dossier. It acts only on dossiers
///   routed to it and, on those, only on its own open step (the engine's `not-your-step`); the
///   acts without a step (Refuse, Stop) need an open step of its own. It answers a supplement
///   request only when the request is addressed to it. It never submits, returns a result or
///   withdraws. It streams only its own tasks.
/// - **Desk** (`ubnd-xa`, the receiving agency): an agency that also submits, returns results,
///   withdraws, answers the citizen's supplements and asks for one at intake; as the receiving
///   agency the engine also lets it refuse, stop or apologise for the dossier, even at another
///   agency's step — but it never completes, rejects or asks for a supplement at another
///   agency's step.
/// - **Auditor**: reads everything (Get, History, the audit service, anyone's task stream, since
///   tasks are reads) and changes nothing: every mutating call is PERMISSION_DENIED.
/// - **Admin**: reads everything; may act on any dossier and any step, by naming in
///   `lienthong-act-as` the agency it acts for (the events record that agency and the officer
///   `admin:<id>`). Without the header it acts as its own agency, which owns no step and
///   receives no dossier, so the engine refuses its acts (PERMISSION_DENIED). An act-as agency
///   that does not exist is INVALID_ARGUMENT.
/// - Only an admin may send act-as: anyone else naming another agency is PERMISSION_DENIED
///   rather than silently acting as itself (naming its own agency is harmless).
/// - The audit service is for auditors and admins only.
/// - Reports (Board, Breaches, Indicators): auditors and admins see every agency and may name
///   one; agencies and the desk see only their own agency (an empty filter means theirs), and
///   naming another agency is PERMISSION_DENIED.
/// - The role is checked before the request's content: an auditor is told it may not act, not
///   that its step id is missing.
#[rustfmt::skip]
const TABLE: &[Row] = &[
    //                                    none bad desk step routed other audit admin self
    row(Rpc::Submit,                      [U,  U,  A,   D,   D,     D,    D,    A,    D]),
    row(Rpc::Get,                         [U,  U,  A,   A,   A,     D,    A,    A,    A]),
    row(Rpc::History,                     [U,  U,  A,   A,   A,     D,    A,    A,    A]),
    row(Rpc::ProvideSupplementCitizen,    [U,  U,  A,   D,   D,     D,    D,    A,    D]),
    row(Rpc::ProvideSupplementAgency,     [U,  U,  D,   D,   A,     D,    D,    A,    D]),
    row(Rpc::ReturnResult,                [U,  U,  A,   D,   D,     D,    D,    A,    D]),
    row(Rpc::Withdraw,                    [U,  U,  A,   D,   D,     D,    D,    A,    D]),
    row(Rpc::StreamTasksOwn,              [U,  U,  A,   A,   A,     A,    A,    A,    A]),
    row(Rpc::StreamTasksNamed,            [U,  U,  D,   A,   D,     D,    A,    A,    A]),
    row(Rpc::CompleteStep,                [U,  U,  D,   A,   D,     D,    D,    A,    D]),
    row(Rpc::CompleteStepMalformed,       [U,  U,  I,   I,   I,     I,    D,    I,    I]),
    row(Rpc::CompleteStepActAsUnknown,    [U,  U,  D,   A,   D,     D,    D,    I,    D]),
    row(Rpc::RejectStep,                  [U,  U,  D,   A,   D,     D,    D,    A,    D]),
    row(Rpc::RequestSupplementStep,       [U,  U,  D,   A,   D,     D,    D,    A,    D]),
    row(Rpc::RequestSupplementIntake,     [U,  U,  A,   D,   D,     D,    D,    A,    D]),
    row(Rpc::RefuseStep,                  [U,  U,  A,   A,   D,     D,    D,    A,    D]),
    row(Rpc::RefuseStepActAsStepAgency,   [U,  U,  D,   A,   D,     D,    D,    A,    A]),
    row(Rpc::RefuseDossier,               [U,  U,  A,   A,   D,     D,    D,    A,    D]),
    row(Rpc::Stop,                        [U,  U,  A,   A,   D,     D,    D,    A,    D]),
    row(Rpc::IssueApology,                [U,  U,  A,   A,   D,     D,    D,    A,    D]),
    row(Rpc::Replay,                      [U,  U,  D,   D,   D,     D,    A,    A,    A]),
    row(Rpc::VerifyDossier,               [U,  U,  D,   D,   D,     D,    A,    A,    A]),
    row(Rpc::VerifyStore,                 [U,  U,  D,   D,   D,     D,    A,    A,    A]),
    row(Rpc::ExportFeed,                  [U,  U,  D,   D,   D,     D,    A,    A,    A]),
    row(Rpc::BoardAll,                    [U,  U,  A,   A,   A,     A,    A,    A,    A]),
    row(Rpc::BoardNamed,                  [U,  U,  D,   A,   D,     D,    A,    A,    A]),
    row(Rpc::BreachesAll,                 [U,  U,  A,   A,   A,     A,    A,    A,    A]),
    row(Rpc::BreachesNamed,               [U,  U,  D,   A,   D,     D,    A,    A,    A]),
    row(Rpc::IndicatorsAll,               [U,  U,  A,   A,   A,     A,    A,    A,    A]),
    row(Rpc::IndicatorsNamed,             [U,  U,  D,   A,   D,     D,    A,    A,    A]),
];

/// The cell's dossier (empty for [`State::Nothing`]).
#[derive(Clone, Debug, Default)]
struct Fixture {
    /// Dossier id.
    id: String,
}

/// How the callers of a run reach the server.
enum Transport {
    /// Every caller over the one channel, with its bearer token.
    Tokens,
    /// Each principal (by id) over its own mutual-TLS channel with its agency's client
    /// certificate and no token; `none` and `bad` over the one channel, without a certificate.
    Certificates(Vec<(&'static str, Clients)>),
}

impl Transport {
    /// The clients `caller` calls with, and whether it is authenticated by certificate.
    fn clients(&self, caller: Caller, shared: &Clients) -> (Clients, bool) {
        match self {
            Transport::Tokens => (shared.clone(), false),
            Transport::Certificates(by_id) => by_id
                .iter()
                .find(|(id, _)| *id == caller.principal())
                .map_or((shared.clone(), false), |(_, c)| (c.clone(), true)),
        }
    }
}

/// A request from `caller` (with its token unless it calls `by_certificate`), with the act-as
/// header if `act_as` names an agency.
fn request<T>(
    caller: Caller,
    act_as: Option<&str>,
    by_certificate: bool,
    msg: T,
) -> tonic::Request<T> {
    let mut r = match caller {
        _ if by_certificate => tonic::Request::new(msg),
        Caller::NoToken => tonic::Request::new(msg),
        Caller::BadToken => {
            let mut r = tonic::Request::new(msg);
            r.metadata_mut().insert(
                "authorization",
                "Bearer not-a-token".parse().expect("ascii"),
            );
            r
        }
        _ => req(caller.principal(), msg),
    };
    if let Some(agency) = act_as {
        r.metadata_mut()
            .insert(ACT_AS_HEADER, agency.parse().expect("ascii"));
    }
    r
}

/// A birth dossier whose child already holds a health card: the health-insurance step is
/// skipped, so `bhxh` is never routed the dossier.
fn birth_with_card(key: &str) -> pb::SubmitRequest {
    let mut s = birth(key, 14);
    s.attributes.insert(
        "child.has_health_card".into(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Boolean(true)),
        },
    );
    s
}

fn complete(key: &str, dossier: &str, step: &str) -> pb::CompleteStepRequest {
    pb::CompleteStepRequest {
        idempotency_key: key.into(),
        dossier: dossier.into(),
        step_id: step.into(),
        outcome: "approve".into(),
        results: vec![doc(&format!("ket-qua-{step}"))],
        note: String::new(),
        officer: "can-bo".into(),
    }
}

fn ask_supplement(key: &str, dossier: &str, step: &str, to: &str) -> pb::RequestSupplementRequest {
    pb::RequestSupplementRequest {
        idempotency_key: key.into(),
        dossier: dossier.into(),
        step_id: step.into(),
        items: vec!["ban-sao-cccd-cua-me".into()],
        reason: "thiếu giấy tờ".into(),
        addressed_to: to.into(),
        officer: "can-bo".into(),
    }
}

/// Sets up the dossier of a cell; `key` makes its idempotency keys unique.
async fn setup(c: &mut Clients, state: State, key: &str) -> Result<Fixture, Status> {
    if state == State::Nothing {
        return Ok(Fixture::default());
    }
    let id = c
        .dossiers
        .submit(req("desk", birth_with_card(&format!("{key}/submit"))))
        .await?
        .into_inner()
        .dossier_id;
    c.agencies
        .complete_step(req(
            "tu-phap",
            complete(&format!("{key}/birth"), &id, "register-birth"),
        ))
        .await?;
    match state {
        State::Nothing | State::StepOpen => {}
        State::SupplementFromCitizen => {
            c.agencies
                .request_supplement(req(
                    "cong-an",
                    ask_supplement(&format!("{key}/ask"), &id, "register-residence", ""),
                ))
                .await?;
        }
        State::SupplementFromRouted => {
            c.agencies
                .request_supplement(req(
                    "cong-an",
                    ask_supplement(&format!("{key}/ask"), &id, "register-residence", "tu-phap"),
                ))
                .await?;
        }
        State::ReadyToReturn => {
            c.agencies
                .complete_step(req(
                    "cong-an",
                    complete(&format!("{key}/residence"), &id, "register-residence"),
                ))
                .await?;
            c.agencies
                .complete_step(req(
                    "desk",
                    complete(&format!("{key}/return"), &id, "return-result"),
                ))
                .await?;
        }
    }
    Ok(Fixture { id })
}

/// The outcome of a streaming call: its status, else its first message (or its clean end).
async fn first<T>(
    call: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<(), Status> {
    call?.into_inner().message().await.map(|_| ())
}

/// Makes the cell's call (by certificate: without a token).
async fn call(
    c: &mut Clients,
    rpc: Rpc,
    caller: Caller,
    by_certificate: bool,
    fx: &Fixture,
    key: &str,
) -> Result<(), Status> {
    let act_as = match rpc.act_as() {
        ActAs::Nobody => None,
        ActAs::Admin(a) => (caller == Caller::Admin).then_some(a),
        ActAs::Everyone(a) => Some(a),
    };
    let id = fx.id.clone();
    let key = key.to_string();
    match rpc {
        Rpc::Submit => c
            .dossiers
            .submit(request(
                caller,
                act_as,
                by_certificate,
                birth_with_card(&key),
            ))
            .await
            .map(drop),
        Rpc::Get => c
            .dossiers
            .get(request(
                caller,
                act_as,
                by_certificate,
                pb::GetDossierRequest { dossier: id },
            ))
            .await
            .map(drop),
        Rpc::History => {
            let msg = pb::HistoryRequest {
                dossier: id,
                after_seq: 0,
            };
            first(
                c.dossiers
                    .history(request(caller, act_as, by_certificate, msg))
                    .await,
            )
            .await
        }
        Rpc::ProvideSupplementCitizen | Rpc::ProvideSupplementAgency => {
            let msg = pb::ProvideSupplementRequest {
                idempotency_key: key,
                dossier: id,
                documents: vec![doc("ban-sao-cccd-cua-me")],
                note: "đã bổ sung".into(),
                officer: "can-bo".into(),
            };
            c.dossiers
                .provide_supplement(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::ReturnResult => {
            let msg = pb::ReturnResultRequest {
                idempotency_key: key,
                dossier: id,
                results: vec![doc("giay-khai-sinh")],
                channel: pb::Channel::InPerson as i32,
                officer: "can-bo".into(),
            };
            c.dossiers
                .return_result(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::Withdraw => {
            let msg = pb::WithdrawRequest {
                idempotency_key: key,
                dossier: id,
                reason: "công dân rút hồ sơ".into(),
                officer: "can-bo".into(),
            };
            c.dossiers
                .withdraw(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::StreamTasksOwn | Rpc::StreamTasksNamed => {
            let msg = pb::StreamTasksRequest {
                after_position: 0,
                agency: if rpc == Rpc::StreamTasksNamed {
                    "cong-an".into()
                } else {
                    String::new()
                },
                backlog_only: true,
            };
            first(
                c.agencies
                    .stream_tasks(request(caller, act_as, by_certificate, msg))
                    .await,
            )
            .await
        }
        Rpc::CompleteStep | Rpc::CompleteStepActAsUnknown => c
            .agencies
            .complete_step(request(
                caller,
                act_as,
                by_certificate,
                complete(&key, &id, "register-residence"),
            ))
            .await
            .map(drop),
        Rpc::CompleteStepMalformed => c
            .agencies
            .complete_step(request(
                caller,
                act_as,
                by_certificate,
                complete(&key, &id, ""),
            ))
            .await
            .map(drop),
        Rpc::RejectStep => {
            let msg = pb::RejectStepRequest {
                idempotency_key: key,
                dossier: id,
                step_id: "register-residence".into(),
                reason: "sai thông tin hộ tịch".into(),
                officer: "can-bo".into(),
            };
            c.agencies
                .reject_step(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::RequestSupplementStep | Rpc::RequestSupplementIntake => {
            let step = if rpc == Rpc::RequestSupplementStep {
                "register-residence"
            } else {
                ""
            };
            c.agencies
                .request_supplement(request(
                    caller,
                    act_as,
                    by_certificate,
                    ask_supplement(&key, &id, step, ""),
                ))
                .await
                .map(drop)
        }
        Rpc::RefuseStep | Rpc::RefuseStepActAsStepAgency | Rpc::RefuseDossier => {
            let msg = pb::RefuseRequest {
                idempotency_key: key,
                dossier: id,
                step_id: if rpc == Rpc::RefuseDossier {
                    String::new()
                } else {
                    "register-residence".into()
                },
                reason: "không đủ điều kiện".into(),
                officer: "can-bo".into(),
            };
            c.agencies
                .refuse(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::Stop => {
            let msg = pb::StopRequest {
                idempotency_key: key,
                dossier: id,
                reason: "dừng xử lý".into(),
                officer: "can-bo".into(),
            };
            c.agencies
                .stop(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::IssueApology => {
            let later = common::monday_morning() + chrono::Duration::days(14);
            let msg = pb::IssueApologyRequest {
                idempotency_key: key,
                dossier: id,
                step_id: "register-residence".into(),
                reason: "chậm xác minh".into(),
                new_appointment: Some(prost_types::Timestamp {
                    seconds: later.timestamp(),
                    nanos: 0,
                }),
                officer: "can-bo".into(),
            };
            c.agencies
                .issue_apology(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::Replay => {
            let msg = pb::ReplayRequest {
                dossier: id,
                as_of: None,
            };
            c.audit
                .replay(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::VerifyDossier | Rpc::VerifyStore => {
            let msg = pb::VerifyRequest { dossier: id };
            c.audit
                .verify(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::ExportFeed => {
            let msg = pb::ExportFeedRequest {
                after_position: 0,
                limit: 1,
            };
            first(
                c.audit
                    .export_feed(request(caller, act_as, by_certificate, msg))
                    .await,
            )
            .await
        }
        Rpc::BoardAll | Rpc::BoardNamed => {
            let msg = pb::BoardRequest {
                agency: named(rpc == Rpc::BoardNamed),
                ..Default::default()
            };
            c.reports
                .board(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::BreachesAll | Rpc::BreachesNamed => {
            let msg = pb::BreachesRequest {
                agency: named(rpc == Rpc::BreachesNamed),
                ..Default::default()
            };
            c.reports
                .breaches(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
        Rpc::IndicatorsAll | Rpc::IndicatorsNamed => {
            let msg = pb::IndicatorsRequest {
                agency: named(rpc == Rpc::IndicatorsNamed),
                ..Default::default()
            };
            c.reports
                .indicators(request(caller, act_as, by_certificate, msg))
                .await
                .map(drop)
        }
    }
}

/// The agency filter of a report row: `cong-an` (the step agency) or none.
fn named(named: bool) -> String {
    if named {
        "cong-an".into()
    } else {
        String::new()
    }
}

/// Events in a dossier's history (read by the auditor).
async fn history_len(c: &mut Clients, id: &str) -> Result<usize, Status> {
    let msg = pb::HistoryRequest {
        dossier: id.into(),
        after_seq: 0,
    };
    let mut s = c.dossiers.history(req("auditor", msg)).await?.into_inner();
    let mut n = 0;
    while s.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// The length of the dossier `id`'s history (0 without a dossier) and the feed's last position
/// (reading on from `known`).
async fn lengths(c: &mut Clients, id: &str, known: u64) -> Result<(usize, u64), Status> {
    let history = if id.is_empty() {
        0
    } else {
        history_len(c, id).await?
    };
    Ok((history, feed_end(c, known).await?))
}

/// What a call answered, as a table mark: `A` OK, `D`, `U`, or the code's name.
fn mark(outcome: &Result<(), Status>) -> String {
    match outcome {
        Ok(()) => "A".into(),
        Err(s) if s.code() == Code::PermissionDenied => "D".into(),
        Err(s) if s.code() == Code::Unauthenticated => "U".into(),
        Err(s) if s.code() == Code::InvalidArgument => "I".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

fn matches(expect: Expect, outcome: &Result<(), Status>) -> bool {
    match (expect, outcome) {
        (Expect::Allowed, Ok(())) => true,
        (Expect::Denied, Err(s)) => s.code() == Code::PermissionDenied,
        (Expect::Unauth, Err(s)) => s.code() == Code::Unauthenticated,
        (Expect::Refused(code), Err(s)) => s.code() == code,
        _ => false,
    }
}

/// Runs a future that must not hang.
async fn timed<T>(what: &str, f: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what} took longer than {CALL_TIMEOUT:?}"
        ))),
    }
}

/// Checks once that a set-up dossier is what the table's columns assume: `register-residence`
/// open for `cong-an`, `register-birth` done by `tu-phap`, the health-card step skipped, so that
/// `bhxh` is not routed the dossier; and that the feed carries the positions the "no event left
/// behind" check compares.
async fn check_the_premise(c: &mut Clients) {
    let fx = setup(c, State::StepOpen, "premise")
        .await
        .expect("the premise's dossier sets up");
    let d = c
        .dossiers
        .get(req("admin", pb::GetDossierRequest { dossier: fx.id }))
        .await
        .expect("admin reads")
        .into_inner();
    let status = |id: &str| {
        d.steps
            .iter()
            .find(|s| s.step_id == id)
            .map(|s| (s.agency.clone(), s.status()))
    };
    assert_eq!(d.receiving_agency, "ubnd-xa");
    assert_eq!(
        status("register-birth"),
        Some(("tu-phap".into(), pb::StepStatus::Completed))
    );
    assert_eq!(
        status("register-residence"),
        Some(("cong-an".into(), pb::StepStatus::Open))
    );
    assert_eq!(
        status("issue-health-card"),
        Some(("bhxh".into(), pb::StepStatus::Skipped))
    );
    // The "left nothing behind" check reads feed positions: they must be real.
    let end = feed_end(c, 0).await.expect("the auditor exports the feed");
    assert!(end > 0, "the feed has positions, got {end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_caller_answers_as_the_table_says() {
    let server = TestServer::start().await;
    let c = server.clients().await;
    run_the_table(server, c, Transport::Tokens).await;
}

/// The same table over server TLS (certificates made here with rcgen), as deployed: bearer tokens
/// travel only inside TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_every_rpc_for_every_caller_answers_as_the_table_says() {
    let pki = Pki::new();
    let server = TestServer::start_with(Some(pki.server.clone()), &[]).await;
    let c = Clients::over(pki.channel(&server, None).await);
    run_the_table(server, c, Transport::Tokens).await;
}

/// The same table over mutual TLS: every principal calls with its client certificate and no
/// token (every principal of the auth file accepts a certificate naming its agency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_every_rpc_for_every_certificate_caller_answers_as_the_table_says() {
    let pki = Pki::new();
    let agencies: Vec<&str> = common::PRINCIPALS.iter().map(|p| p.1).collect();
    let server = TestServer::start_with(Some(pki.server.clone()), &agencies).await;
    let c = Clients::over(pki.channel(&server, None).await);
    let mut by_id = Vec::new();
    for (id, agency, _, _) in common::PRINCIPALS {
        let ch = pki.channel(&server, Some(pki.client(agency))).await;
        by_id.push((*id, Clients::over(ch)));
    }
    run_the_table(server, c, Transport::Certificates(by_id)).await;
}

/// Runs every cell of [`TABLE`] against `server`, each caller reaching it as `transport` says
/// (set-up and checks through `c`, with tokens), then stops the server.
async fn run_the_table(server: TestServer, mut c: Clients, transport: Transport) {
    check_the_premise(&mut c).await;

    let mut problems: Vec<String> = Vec::new();
    let mut grid = String::new();
    let _ = write!(grid, "{:<42}", "");
    for caller in CALLERS {
        let _ = write!(grid, " {:>7}", caller.label());
    }
    grid.push('\n');
    let mut feed = 0u64;
    let mut cells = 0usize;
    for (r, row) in TABLE.iter().enumerate() {
        let _ = write!(grid, "{:<42}", row.rpc.label());
        for (caller, expect) in CALLERS.into_iter().zip(row.expect) {
            cells += 1;
            let cell = format!("{} x {}", row.rpc.label(), caller.label());
            let key = format!("r{r}-{}", caller.label());
            let fx = match timed("setup", setup(&mut c, row.rpc.state(), &key)).await {
                Ok(fx) => fx,
                Err(e) => {
                    problems.push(format!("{cell}: setup failed: {e:?}"));
                    let _ = write!(grid, " {:>7}", "setup!");
                    continue;
                }
            };
            let before = if row.rpc.mutating() {
                match timed("lengths", lengths(&mut c, &fx.id, feed)).await {
                    Ok(l) => {
                        feed = l.1;
                        Some(l)
                    }
                    Err(e) => {
                        problems.push(format!("{cell}: cannot read the lengths before: {e:?}"));
                        None
                    }
                }
            } else {
                None
            };
            let (mut caller_clients, by_certificate) = transport.clients(caller, &c);
            let outcome = timed(
                "call",
                call(
                    &mut caller_clients,
                    row.rpc,
                    caller,
                    by_certificate,
                    &fx,
                    &key,
                ),
            )
            .await;
            let got = mark(&outcome);
            let ok = matches(expect, &outcome);
            if !ok {
                let detail = match &outcome {
                    Ok(()) => "OK".to_string(),
                    Err(s) => format!("{:?}: {}", s.code(), s.message()),
                };
                problems.push(format!("{cell}: expected {expect:?}, got {detail}"));
            }
            let _ = write!(grid, " {:>7}", if ok { got } else { format!("{got}!") });
            // A call that did not succeed must have left nothing behind.
            if let (Some(before), Err(_)) = (before, &outcome) {
                let after = timed("lengths", lengths(&mut c, &fx.id, before.1)).await;
                if after.as_ref().ok() != Some(&before) {
                    problems.push(format!(
                        "{cell}: refused, yet (history events, feed position) went from {before:?} to {after:?}"
                    ));
                }
            }
        }
        grid.push('\n');
    }
    server.stop().await;
    assert!(
        problems.is_empty(),
        "{} of {cells} cells disagree with the table:\n  {}\n\nWhat the server answered (`!`: not as expected):\n{grid}",
        problems.len(),
        problems.join("\n  ")
    );
    eprintln!("{cells} cells as expected:\n{grid}");
}
