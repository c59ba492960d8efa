//! `lienthong demo --simulate DURATION`: months of realistic load on a time-skipping clock.
//!
//! A discrete-event simulation over the real engine and store: the engine's clock is a
//! [`ManualClock`] that jumps from one scheduled act to the next, so 90 days of a province's
//! traffic run in seconds while every deadline, timer and indicator is computed exactly as in
//! production (working days, holidays, cut-off, supplements).
//!
//! - Arrivals: on every working day, a number of dossiers drawn around `--per-day`, at random
//!   instants within office hours, spread over the shipped procedures.
//! - Agencies: each has a speed (how much of a step's budget it typically uses); a few are slow,
//!   so some steps and dossiers end up late and the boards and breaches have something to show.
//! - Citizens answer supplement requests after one to five working days; the desk returns results
//!   within half a working day.
//! - Timers: before every act the clock is set to the act's instant and the due timers fire, so
//!   warnings and missed deadlines are recorded as they would be live.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Days, TimeDelta, Utc};
use lienthong_calendar::Calendar;
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{CITIZEN, Command};
use lienthong_engine::runtime::{Engine, ManualClock, Outcome, Request};
use lienthong_proto::v1::{Actor, Channel};
use lienthong_workflow::{StepId, Workflow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sim::{self, FollowUp, Mix};

/// Acts executed at most in one simulation, whatever the duration: a guard against a runaway.
const SIM_ACTS_MAX: u64 = 5_000_000;

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct Params {
    /// How much simulated time to run.
    pub span: TimeDelta,
    /// Mean dossiers arriving per working day.
    pub per_day: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

/// What the simulation did.
#[derive(Default, Debug)]
pub struct Summary {
    /// Simulated start and end.
    pub start: Option<DateTime<Utc>>,
    /// End of the simulated span.
    pub end: Option<DateTime<Utc>>,
    /// Dossiers submitted.
    pub submitted: u64,
    /// Dossiers closed, by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Commands executed.
    pub commands: u64,
    /// Events appended (including timer notices).
    pub events: u64,
    /// Timer firings that recorded a notice.
    pub timer_notices: u64,
    /// Commands refused by the engine, by code.
    pub rejections: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Submit {
        procedure: String,
    },
    Work {
        dossier: DossierId,
        step: String,
        agency: String,
        again: bool,
    },
    Answer {
        dossier: DossierId,
        to: String,
    },
    Return {
        dossier: DossierId,
        desk: String,
    },
}

struct World {
    engine: Engine,
    clock: ManualClock,
    rng: StdRng,
    mix: Mix,
    /// Per agency: the share of a step's budget it typically uses, in percent.
    speed_pct: BTreeMap<String, u32>,
    /// Scheduled acts by instant (a sequence number keeps equal instants in order).
    queue: BinaryHeap<Reverse<(DateTime<Utc>, u64, Act)>>,
    seq: u64,
    summary: Summary,
}

/// Runs the simulation from `start` on `engine` (whose clock must be `clock`).
pub async fn run(
    engine: Engine,
    clock: ManualClock,
    start: DateTime<Utc>,
    params: &Params,
) -> Result<Summary> {
    let procedures: Vec<Arc<Workflow>> = engine.catalog().procedures.values().cloned().collect();
    let calendar = procedures
        .first()
        .and_then(|wf| engine.catalog().calendar(&wf.calendar))
        .cloned()
        .ok_or_else(|| anyhow!("no procedure with a loaded calendar"))?;
    let mut rng = StdRng::seed_from_u64(params.seed);
    // Most agencies use 40-90% of their budget; one in four is overloaded and uses 80-160%.
    let speed_pct = engine
        .catalog()
        .agencies
        .keys()
        .map(|a| {
            let pct = if rng.random_range(0..4) == 0 {
                rng.random_range(80..=160)
            } else {
                rng.random_range(40..=90)
            };
            (a.clone(), pct)
        })
        .collect();
    let end = start + params.span;
    let mut world = World {
        engine,
        clock,
        rng,
        mix: Mix::default(),
        speed_pct,
        queue: BinaryHeap::new(),
        seq: 0,
        summary: Summary {
            start: Some(start),
            end: Some(end),
            ..Summary::default()
        },
    };
    world.schedule_arrivals(&calendar, &procedures, start, end, params.per_day)?;
    let mut acts = 0;
    while let Some(Reverse((at, _, act))) = world.queue.pop() {
        if at > end {
            break;
        }
        acts += 1;
        if acts > SIM_ACTS_MAX {
            return Err(anyhow!("simulation stopped after {SIM_ACTS_MAX} acts"));
        }
        world.clock.set(at);
        world.summary.timer_notices += world.engine.fire_due_timers().await? as u64;
        world.perform(act).await?;
    }
    // Let the clock reach the end so that the last deadlines are judged.
    world.clock.set(end);
    world.summary.timer_notices += world.engine.fire_due_timers().await? as u64;
    Ok(world.summary)
}

impl World {
    fn at(&mut self, when: DateTime<Utc>, act: Act) {
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq, act)));
    }

    /// Arrivals on every working day of the span, inside office hours.
    fn schedule_arrivals(
        &mut self,
        calendar: &Calendar,
        procedures: &[Arc<Workflow>],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        per_day: u32,
    ) -> Result<()> {
        let tz = calendar.timezone();
        let mut day = start.with_timezone(&tz).date_naive();
        let last = end.with_timezone(&tz).date_naive();
        let day_minutes = calendar.working_day_length().num_minutes().max(1);
        while day <= last {
            if calendar.working_day(day)? {
                let opening = calendar.next_working_instant(
                    day.and_hms_opt(0, 0, 0)
                        .and_then(|t| t.and_local_timezone(tz).earliest())
                        .map(|t| t.with_timezone(&Utc))
                        .ok_or_else(|| anyhow!("no local midnight on {day}"))?,
                )?;
                let n = self.rng.random_range(per_day / 2..=per_day + per_day / 2);
                for _ in 0..n {
                    let offset = TimeDelta::minutes(self.rng.random_range(0..day_minutes));
                    let when = calendar.add_working(opening, offset)?;
                    if when >= start && when <= end {
                        let wf = &procedures[self.rng.random_range(0..procedures.len())];
                        self.at(
                            when,
                            Act::Submit {
                                procedure: wf.code.clone(),
                            },
                        );
                    }
                }
            }
            day = day
                .checked_add_days(Days::new(1))
                .ok_or_else(|| anyhow!("date overflow"))?;
        }
        Ok(())
    }

    async fn perform(&mut self, act: Act) -> Result<()> {
        let now = self.clock.now();
        let n = self.summary.commands;
        let (dossier, agency, command) = match act {
            Act::Submit { procedure } => {
                let Some(wf) = self.engine.catalog().procedure(&procedure).cloned() else {
                    return Ok(());
                };
                let today = now
                    .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
                    .date_naive();
                let submit = sim::submission(&mut self.rng, &wf, today);
                self.summary.submitted += 1;
                (None, wf.receiving_agency.0.clone(), Command::Submit(submit))
            }
            Act::Work {
                dossier,
                step,
                agency,
                again,
            } => {
                let state = self.engine.state(dossier).await?;
                let Some(wf) = self
                    .engine
                    .catalog()
                    .procedure(&state.procedure_code)
                    .cloned()
                else {
                    return Ok(());
                };
                let cmd = sim::work_step(&mut self.rng, &self.mix, &wf, &StepId(step), again);
                (Some(dossier), agency, cmd)
            }
            Act::Answer { dossier, to } => {
                let cmd = sim::answer_supplement(&mut self.rng, &self.mix);
                let who = sim::answerer(&cmd, to);
                (Some(dossier), who, cmd)
            }
            Act::Return { dossier, desk } => {
                (Some(dossier), desk, sim::return_result(&mut self.rng))
            }
        };
        let channel = if agency == CITIZEN {
            Channel::Online
        } else {
            Channel::System
        };
        let req = Request {
            dossier,
            actor: Actor {
                agency: agency.clone(),
                officer: format!("{agency}-01"),
                channel: channel as i32,
            },
            idempotency_key: format!("sim-{n}"),
            command,
        };
        self.summary.commands += 1;
        match self.engine.execute(req).await {
            Ok(out) => self.react(out),
            Err(lienthong_engine::runtime::Error::Rejected(r)) => {
                *self
                    .summary
                    .rejections
                    .entry(r.code().to_string())
                    .or_default() += 1;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Schedules the acts that follow what a command appended.
    fn react(&mut self, out: Outcome) -> Result<()> {
        let now = self.clock.now();
        self.summary.events += out.events.len() as u64;
        let wf = self
            .engine
            .catalog()
            .procedure(&out.state.procedure_code)
            .cloned();
        let Some(wf) = wf else { return Ok(()) };
        let Some(calendar) = self.engine.catalog().calendar(&wf.calendar).cloned() else {
            return Ok(());
        };
        let day = calendar.working_day_length();
        let dossier = out.dossier;
        for next in sim::follow_ups(&out) {
            match next {
                FollowUp::Work {
                    step,
                    agency,
                    again,
                } => {
                    // A first pass takes about the step's budget; a pass after a supplement, half a day.
                    let budget = if again {
                        day / 2
                    } else {
                        wf.step(&step.0)
                            .and_then(|st| calendar.working_time(st.budget))
                            .unwrap_or(day)
                    };
                    let when = self.work_time(&calendar, &agency, budget, now)?;
                    self.at(
                        when,
                        Act::Work {
                            dossier,
                            step: step.0,
                            agency,
                            again,
                        },
                    );
                }
                FollowUp::Answer { to } => {
                    let days = self.rng.random_range(1..=5);
                    let when = calendar.add_working(now, day * days)?;
                    self.at(when, Act::Answer { dossier, to });
                }
                FollowUp::Return { desk } => {
                    let minutes = self.rng.random_range(10..=day.num_minutes().max(11) / 2);
                    let when = calendar.add_working(now, TimeDelta::minutes(minutes))?;
                    self.at(when, Act::Return { dossier, desk });
                }
                FollowUp::Closed { outcome } => {
                    *self
                        .summary
                        .outcomes
                        .entry(outcome.to_string())
                        .or_default() += 1;
                }
            }
        }
        Ok(())
    }

    /// When `agency` finishes a piece of work of `budget` started `now`: its speed times the
    /// budget, give or take half.
    fn work_time(
        &mut self,
        calendar: &Calendar,
        agency: &str,
        budget: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>> {
        let pct = i64::from(*self.speed_pct.get(agency).unwrap_or(&70));
        let jitter = self.rng.random_range(50..=150);
        let minutes = (budget.num_minutes() * pct * jitter / 10_000).max(5);
        Ok(calendar.add_working(now, TimeDelta::minutes(minutes))?)
    }
}
