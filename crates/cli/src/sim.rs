//! Simulated agencies and citizens, for the demo (and later for load and what-if runs).
//!
//! A simulated agency receives the steps routed to it and answers the way real officers do: most
//! steps are approved, a few ask for a supplement (which the citizen provides a little later), a
//! few are rejected, and now and then a dossier is stopped or withdrawn. Every choice comes from a
//! seeded RNG, so a run can be repeated.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use lienthong_engine::dossier::Command;
use lienthong_engine::dossier::{
    Applicant, CompleteStep, Document, ProvideSupplement, RejectStep, RequestSupplement,
    ReturnResult, Stop, Submit, Withdraw,
};
use lienthong_proto::v1::Channel;
use lienthong_workflow::{AttrType, AttrValue, StepId, Workflow};
use rand::Rng;
use rand::rngs::StdRng;

/// How often simulated actors take each unusual path, in parts per thousand.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// A step asks for a supplement (when its workflow allows it).
    pub supplement_per_mille: u32,
    /// A step is rejected.
    pub reject_per_mille: u32,
    /// An agency stops processing.
    pub stop_per_mille: u32,
    /// The citizen withdraws instead of supplementing.
    pub withdraw_per_mille: u32,
}

impl Mix {
    /// Every step approved, nothing unusual (the bench's).
    pub const NONE: Mix = Mix {
        supplement_per_mille: 0,
        reject_per_mille: 0,
        stop_per_mille: 0,
        withdraw_per_mille: 0,
    };
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            supplement_per_mille: 60,
            reject_per_mille: 20,
            stop_per_mille: 5,
            withdraw_per_mille: 100,
        }
    }
}

const GIVEN_NAMES: [&str; 8] = ["An", "Bình", "Chi", "Dũng", "Giang", "Hà", "Khánh", "Linh"];
const FAMILY_NAMES: [&str; 6] = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ"];

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn document(rng: &mut StdRng, kind: &str) -> Document {
    let n: u64 = rng.random();
    Document {
        kind: kind.to_string(),
        uri: format!("dms://demo/{kind}/{n:016x}"),
        sha256: format!("{:016x}{:016x}{:016x}{:016x}", n, n ^ 1, n ^ 2, n ^ 3),
    }
}

/// A plausible value of the given type for attribute `name`.
fn attribute(rng: &mut StdRng, name: &str, ty: AttrType, today: NaiveDate) -> AttrValue {
    match ty {
        AttrType::Integer if name.contains("month") => AttrValue::Integer(rng.random_range(0..120)),
        AttrType::Integer => AttrValue::Integer(rng.random_range(0..10)),
        AttrType::Boolean => AttrValue::Boolean(rng.random_bool(0.5)),
        AttrType::Text => AttrValue::Text(format!("{}-{}", name, rng.random_range(1..100))),
        AttrType::Date => AttrValue::Date(
            today
                .checked_sub_days(Days::new(rng.random_range(0..3650)))
                .unwrap_or(today),
        ),
    }
}

/// A submission for `wf` with every declared attribute filled (optional ones half the time).
pub fn submission(rng: &mut StdRng, wf: &Workflow, today: NaiveDate) -> Submit {
    let mut attributes = BTreeMap::new();
    for spec in wf.attributes.values() {
        if spec.required || rng.random_bool(0.5) {
            attributes.insert(
                spec.name.clone(),
                attribute(rng, &spec.name, spec.ty, today),
            );
        }
    }
    let channel = match rng.random_range(0..10) {
        0..=5 => Channel::Online,
        6..=8 => Channel::InPerson,
        _ => Channel::Post,
    };
    Submit {
        procedure_code: wf.code.clone(),
        channel,
        applicant: Applicant {
            full_name: format!(
                "{} Văn {}",
                pick(rng, &FAMILY_NAMES),
                pick(rng, &GIVEN_NAMES)
            ),
            id_number: format!("0010{:08}", rng.random_range(0..100_000_000u32)),
            phone: format!("09{:08}", rng.random_range(0..100_000_000u32)),
            email: String::new(),
        },
        attributes,
        documents: vec![document(rng, "to-khai"), document(rng, "giay-to-tuy-than")],
    }
}

/// What an agency does with an open step. `supplemented` tells whether this step already had a
/// supplement round (a real officer asks once, then decides).
pub fn work_step(
    rng: &mut StdRng,
    mix: &Mix,
    wf: &Workflow,
    step: &StepId,
    supplemented: bool,
) -> Command {
    let allows_supplement = wf.step(&step.0).is_some_and(|s| s.supplement);
    let roll = rng.random_range(0..1000);
    if allows_supplement && !supplemented && roll < mix.supplement_per_mille {
        return Command::RequestSupplement(RequestSupplement {
            step: Some(step.clone()),
            items: vec!["ban-sao-giay-to".into(), "xac-nhan-cu-tru".into()],
            reason: "thiếu giấy tờ theo quy định".into(),
            addressed_to: Default::default(),
        });
    }
    let roll = rng.random_range(0..1000);
    if roll < mix.stop_per_mille {
        return Command::Stop(Stop {
            reason: "hồ sơ thuộc diện phải xác minh thêm ngoài thẩm quyền".into(),
        });
    }
    if roll < mix.stop_per_mille + mix.reject_per_mille {
        return Command::RejectStep(RejectStep {
            step: step.clone(),
            reason: "không đủ điều kiện theo quy định".into(),
        });
    }
    Command::CompleteStep(CompleteStep {
        step: step.clone(),
        outcome: "approve".into(),
        results: vec![document(rng, &format!("ket-qua-{}", step.0))],
        note: String::new(),
    })
}

/// What the citizen does with a supplement request: usually provide it, sometimes withdraw.
pub fn answer_supplement(rng: &mut StdRng, mix: &Mix) -> Command {
    if rng.random_range(0..1000) < mix.withdraw_per_mille {
        Command::Withdraw(Withdraw {
            reason: "công dân rút hồ sơ".into(),
        })
    } else {
        Command::ProvideSupplement(ProvideSupplement {
            documents: vec![document(rng, "giay-to-bo-sung")],
            note: String::new(),
        })
    }
}

/// The desk hands the result back.
pub fn return_result(rng: &mut StdRng) -> Command {
    Command::ReturnResult(ReturnResult {
        results: vec![document(rng, "ket-qua")],
        channel: if rng.random_bool(0.5) {
            Channel::InPerson
        } else {
            Channel::Online
        },
    })
}

/// What the simulated actors do next because of what one command appended. Both drivers (the
/// real-time demo and the time-skipping simulation) schedule these; they differ only in when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowUp {
    /// `agency` works `step` (`again`: after a supplement round on it).
    Work {
        /// The step.
        step: StepId,
        /// Its agency.
        agency: String,
        /// True when the step comes back after its supplement was provided.
        again: bool,
    },
    /// The addressee (`citizen` or an agency) answers a supplement request.
    Answer {
        /// Who was asked.
        to: String,
    },
    /// The desk hands the result back (every step is done).
    Return {
        /// The receiving agency.
        desk: String,
    },
    /// The dossier closed with this outcome name.
    Closed {
        /// e.g. `result-returned`.
        outcome: &'static str,
    },
}

/// The follow-ups of one command's outcome, in event order.
pub fn follow_ups(out: &lienthong_engine::runtime::Outcome) -> Vec<FollowUp> {
    use lienthong_engine::dossier::Status;
    use lienthong_proto::v1::event::Body;
    let mut next = Vec::new();
    let mut completed = false;
    for r in &out.events {
        match &r.event.body {
            Some(Body::StepOpened(s)) => next.push(FollowUp::Work {
                step: StepId(s.step_id.clone()),
                agency: s.agency.clone(),
                again: false,
            }),
            Some(Body::SupplementRequested(s)) => next.push(FollowUp::Answer {
                to: s.addressed_to.clone(),
            }),
            Some(Body::SupplementProvided(s)) if !s.step_id.is_empty() => {
                if let Some(step) = out.state.steps.get(&s.step_id) {
                    next.push(FollowUp::Work {
                        step: StepId(s.step_id.clone()),
                        agency: step.agency.clone(),
                        again: true,
                    });
                }
            }
            Some(Body::StepCompleted(_)) | Some(Body::StepSkipped(_)) => completed = true,
            Some(Body::Closed(c)) => next.push(FollowUp::Closed {
                outcome: lienthong_engine::view::outcome_name(c.outcome),
            }),
            _ => {}
        }
    }
    if completed && out.state.status() == Status::ReadyToReturn {
        next.push(FollowUp::Return {
            desk: out.state.receiving_agency.clone(),
        });
    }
    next
}

/// Who acts on a supplement answer: the citizen withdraws in person, otherwise the addressee.
pub fn answerer(command: &Command, addressee: String) -> String {
    if matches!(command, Command::Withdraw(_)) {
        lienthong_engine::dossier::CITIZEN.to_string()
    } else {
        addressee
    }
}
