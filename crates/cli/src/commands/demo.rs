//! `lienthong demo`: the main job on the embedded default.
//!
//! Starts the engine in-process on a sled store, submits dossiers for every shipped procedure at
//! the one-stop desk, and lets simulated agencies work the steps routed to them (mostly approvals,
//! some supplements, a few rejections, stops and withdrawals). Every command goes through the real
//! engine: decided, appended durably (group commit) and only then answered. At the end the whole
//! store is verified and a summary is printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lienthong_engine::DossierId;
use lienthong_engine::dossier::{CITIZEN, Command};
use lienthong_engine::runtime::{Engine, ManualClock, Options, Outcome, Request, SystemClock};
use lienthong_engine::store::EventStore;
use lienthong_proto::v1::{Actor, Channel};
use lienthong_workflow::{StepId, Workflow};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc};

use crate::sim::{self, FollowUp, Mix};
use crate::simulate;

/// `90d` or `12h` (wall-clock spans; working units need a calendar and are refused here).
fn parse_span(s: &str) -> Result<chrono::TimeDelta> {
    match s.parse::<lienthong_calendar::Duration>()? {
        lienthong_calendar::Duration::Days(n) => Ok(chrono::TimeDelta::days(i64::from(n))),
        lienthong_calendar::Duration::Hours(n) => Ok(chrono::TimeDelta::hours(i64::from(n))),
        other => bail!("--simulate takes calendar time (`90d`, `48h`), not `{other}`"),
    }
}

/// Midnight of today in Vietnam's time zone: the simulation starts at the beginning of a day.
fn local_midnight_today() -> Result<chrono::DateTime<chrono::Utc>> {
    let tz = chrono_tz::Asia::Ho_Chi_Minh;
    chrono::Utc::now()
        .with_timezone(&tz)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(tz).earliest())
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok_or_else(|| anyhow::anyhow!("no local midnight today"))
}

/// Folds the simulated history into the read models and renders the indicators and breaches.
fn simulation_report(
    data: &std::path::Path,
    store: Arc<lienthong_engine::store::SledStore>,
    catalog: Arc<lienthong_workflow::Catalog>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<String> {
    use lienthong_projections::report::{self, Format};
    use lienthong_projections::{BreachQuery, FeedSource, IndicatorQuery, Projections};
    let feed: Arc<dyn FeedSource> = store;
    let dir = data.join(super::projections::PROJECTIONS_DIR);
    let p = Projections::open(&dir, feed, catalog)?;
    p.catch_up()?;
    let now = end.unwrap_or_else(chrono::Utc::now);
    let indicators = p.indicators(&IndicatorQuery {
        agency: None,
        month: None,
    })?;
    let breaches = p.breaches(
        now,
        &BreachQuery {
            agency: None,
            month: None,
        },
    )?;
    let mut out = String::from("\n");
    out.push_str(&report::indicators(&indicators, Format::Table));
    out.push_str(&format!(
        "\n{} late dossier(s) with attribution: `lienthong report breaches --data {} --now {}`\n",
        breaches.breaches.len(),
        data.display(),
        now.with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
            .to_rfc3339()
    ));
    Ok(out)
}

fn render_simulation(s: &simulate::Summary, elapsed: Duration) -> String {
    let tz = chrono_tz::Asia::Ho_Chi_Minh;
    let day = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.with_timezone(&tz).format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let mut out = format!(
        "simulated {} -> {} in {:.1}s: {} dossiers submitted, {} commands, {} events, {} deadline notices\n",
        day(s.start),
        day(s.end),
        elapsed.as_secs_f64(),
        s.submitted,
        s.commands,
        s.events,
        s.timer_notices
    );
    out.push_str("closed:");
    for (k, v) in &s.outcomes {
        out.push_str(&format!(" {k} {v};"));
    }
    out.push('\n');
    if !s.rejections.is_empty() {
        out.push_str("commands refused by the engine:");
        for (k, v) in &s.rejections {
            out.push_str(&format!(" {k} {v};"));
        }
        out.push('\n');
    }
    out
}

/// Officers working at once in each simulated agency.
const OFFICERS_PER_AGENCY: usize = 8;

/// Longest simulated think time of an officer or citizen, in milliseconds.
const THINK_MS_MAX: u64 = 5;

/// A run with no dossier finishing for this long is stuck: stop and say so.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a simulated officer comes back to a step held by another step's supplement.
const STEP_TRIES_MAX: usize = 500;

/// How long the officer waits before coming back, in milliseconds.
const STEP_RETRY_MS: u64 = 20;

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many dossiers to run end to end.
    #[arg(long, default_value_t = 200)]
    dossiers: u64,
    /// Data directory (created if missing; an existing store is appended to). Default `data`, or
    /// `data-sim` with `--simulate`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The workflow directory.
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// Dossiers in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seed of the simulated actors' choices.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Run this much simulated time (e.g. `90d`) on a time-skipping clock instead of real time,
    /// then print the indicator report. Arrivals come on working days; `--dossiers` is ignored.
    #[arg(long)]
    simulate: Option<String>,
    /// With `--simulate`: mean dossiers arriving per working day.
    #[arg(long, default_value_t = 20)]
    per_day: u32,
    /// How long before a deadline its holder is warned (`1wd`, `4wh` ...).
    #[arg(long, default_value = "1wd")]
    warning_lead: String,
}

/// What the run observed.
#[derive(Default)]
struct Tally {
    /// Dossiers closed, by outcome name.
    outcomes: BTreeMap<String, u64>,
    /// Submit-to-close latency of each closed dossier, in microseconds.
    latencies_us: Vec<u64>,
    /// Commands the engine refused, by rejection code (e.g. a parallel branch acting after a stop).
    rejections: BTreeMap<String, u64>,
    /// Supplement requests.
    supplements: u64,
    /// Events appended.
    events: u64,
    /// Unexpected errors (faults), first few kept.
    faults: Vec<String>,
}

struct Sim {
    engine: Engine,
    mix: Mix,
    seed: u64,
    /// Source of distinct RNG streams and idempotency keys.
    counter: AtomicU64,
    /// One semaphore per agency: its officers.
    officers: BTreeMap<String, Arc<Semaphore>>,
    /// When each dossier was submitted.
    started: Mutex<BTreeMap<DossierId, Instant>>,
    tally: Mutex<Tally>,
    /// Told once per closed dossier.
    done: mpsc::UnboundedSender<()>,
}

/// Runs the demo and prints the summary.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.dossiers == 0 || args.concurrency == 0 || args.per_day == 0 {
        bail!("--dossiers, --concurrency and --per-day must be at least 1");
    }
    let dir = crate::common::workflows_dir(&args.workflows);
    let catalog = crate::common::load_catalog(&dir)?;
    let data = args.data.clone().unwrap_or_else(|| {
        PathBuf::from(if args.simulate.is_some() {
            "data-sim"
        } else {
            crate::common::DATA_DIR_DEFAULT
        })
    });
    let store = crate::common::open_store(&data)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = match &args.simulate {
        Some(span) => {
            let span = parse_span(span)?;
            let start = local_midnight_today()?;
            let clock = ManualClock::new(start);
            let options = Options {
                warning_lead: args
                    .warning_lead
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--warning-lead `{}`: {e}", args.warning_lead))?,
                ..Options::default()
            };
            let engine = Engine::with_options(
                store.clone(),
                catalog.clone(),
                Arc::new(clock.clone()),
                options,
            );
            let params = simulate::Params {
                span,
                per_day: args.per_day,
                seed: args.seed,
            };
            let began = Instant::now();
            let s = rt.block_on(simulate::run(engine, clock, start, &params))?;
            let mut text = render_simulation(&s, began.elapsed());
            text.push_str(&simulation_report(
                &data,
                store.clone(),
                catalog.clone(),
                s.end,
            )?);
            text
        }
        None => {
            let engine = Engine::new(store.clone(), catalog.clone(), Arc::new(SystemClock));
            rt.block_on(drive(engine, &args))?
        }
    };
    let report = store.verify()?;
    drop(rt);
    println!("{summary}");
    if report.is_clean() {
        println!(
            "verify: ok, {} events in {} dossiers, every hash chain intact",
            report.chains.events, report.chains.dossiers
        );
    } else {
        println!(
            "verify: BROKEN ({} chain break(s), {} other problem(s))",
            report.chains.breaks.len(),
            report.problems.len()
        );
        for b in &report.chains.breaks {
            println!("  {b}");
        }
        for p in &report.problems {
            println!("  {p}");
        }
    }
    let data = data.display();
    println!("\nnext:");
    println!("  lienthong dossiers --data {data}");
    println!("  lienthong replay <CODE> --data {data}");
    println!(
        "  lienthong export --data {data} > audit.jsonl && lienthong verify --export audit.jsonl"
    );
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn drive(engine: Engine, args: &Args) -> Result<String> {
    let procedures: Vec<Arc<Workflow>> = engine.catalog().procedures.values().cloned().collect();
    if procedures.is_empty() {
        bail!("no procedures loaded: nothing to demo");
    }
    let officers = engine
        .catalog()
        .agencies
        .keys()
        .map(|a| (a.clone(), Arc::new(Semaphore::new(OFFICERS_PER_AGENCY))))
        .collect();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let sim = Arc::new(Sim {
        engine,
        mix: Mix::default(),
        seed: args.seed,
        counter: AtomicU64::new(0),
        officers,
        started: Mutex::new(BTreeMap::new()),
        tally: Mutex::new(Tally::default()),
        done: done_tx,
    });
    let bar = ProgressBar::new(args.dossiers);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} dossiers closed {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let began = Instant::now();
    let in_flight = Arc::new(Semaphore::new(args.concurrency));
    let submitter = {
        let sim = sim.clone();
        let in_flight = in_flight.clone();
        let n = args.dossiers;
        tokio::spawn(async move {
            for i in 0..n {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                permit.forget();
                let wf = procedures[(i as usize) % procedures.len()].clone();
                let sim = sim.clone();
                tokio::spawn(async move { sim.submit(&wf).await });
            }
        })
    };
    let mut closed = 0;
    while closed < args.dossiers {
        match tokio::time::timeout(STALL_TIMEOUT, done_rx.recv()).await {
            Ok(Some(())) => {
                closed += 1;
                in_flight.add_permits(1);
                bar.inc(1);
                if closed % 16 == 0 {
                    let t = sim.tally.lock();
                    bar.set_message(format!(
                        "({} events, {} supplements)",
                        t.events, t.supplements
                    ));
                }
            }
            Ok(None) => break,
            Err(_) => {
                bar.abandon();
                let t = sim.tally.lock();
                bail!(
                    "no dossier closed for {}s ({closed}/{} closed); faults: {:?}",
                    STALL_TIMEOUT.as_secs(),
                    args.dossiers,
                    t.faults
                );
            }
        }
    }
    submitter.await?;
    bar.finish_and_clear();
    let elapsed = began.elapsed();
    let mut t = std::mem::take(&mut *sim.tally.lock());
    Ok(render(&mut t, args.dossiers, elapsed))
}

fn render(t: &mut Tally, dossiers: u64, elapsed: Duration) -> String {
    t.latencies_us.sort_unstable();
    let pct = |p: usize| -> f64 {
        if t.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((t.latencies_us.len() - 1) * p) / 100;
        t.latencies_us[i] as f64 / 1000.0
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut s = String::new();
    s.push_str(&format!(
        "{dossiers} dossiers closed in {:.2}s: {:.0} dossiers/s, {} events ({:.0} events/s)\n",
        secs,
        dossiers as f64 / secs,
        t.events,
        t.events as f64 / secs
    ));
    s.push_str(&format!(
        "submit -> closed latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms (simulated officers think up to {THINK_MS_MAX} ms per act)\n",
        pct(50),
        pct(90),
        pct(99)
    ));
    s.push_str("outcomes:");
    for (k, v) in &t.outcomes {
        s.push_str(&format!(" {k} {v};"));
    }
    s.push_str(&format!("\nsupplement requests: {}\n", t.supplements));
    if !t.rejections.is_empty() {
        s.push_str("commands refused by the engine (e.g. a parallel branch acting after a stop):");
        for (k, v) in &t.rejections {
            s.push_str(&format!(" {k} {v};"));
        }
        s.push('\n');
    }
    if !t.faults.is_empty() {
        s.push_str(&format!("FAULTS: {:?}\n", t.faults));
    }
    s
}

impl Sim {
    fn rng(&self) -> (StdRng, u64) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (
            StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            n,
        )
    }

    async fn think(&self, rng: &mut StdRng) {
        let ms = rng.random_range(0..=THINK_MS_MAX);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    async fn submit(self: Arc<Self>, wf: &Workflow) {
        let (mut rng, n) = self.rng();
        let today = self
            .engine
            .now()
            .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
            .date_naive();
        let submit = sim::submission(&mut rng, wf, today);
        let actor = Actor {
            agency: wf.receiving_agency.0.clone(),
            officer: "can-bo-mot-cua".into(),
            channel: submit.channel as i32,
        };
        let began = Instant::now();
        let req = Request {
            dossier: None,
            actor,
            idempotency_key: format!("demo-submit-{}-{n}", self.seed),
            command: Command::Submit(submit),
        };
        match self.engine.execute(req).await {
            Ok(out) => {
                self.started.lock().insert(out.dossier, began);
                self.react(out);
            }
            Err(e) => self.fault(format!("submit: {e}")),
        }
    }

    /// Runs one command as `agency` and reacts to what it appended.
    async fn act(self: Arc<Self>, dossier: DossierId, agency: String, command: Command) {
        self.act_or_rejection(dossier, agency, command).await;
    }

    /// [`Self::act`], answering the rejection's code when the engine refused the command.
    async fn act_or_rejection(
        self: Arc<Self>,
        dossier: DossierId,
        agency: String,
        command: Command,
    ) -> Option<&'static str> {
        let (_, n) = self.rng();
        let channel = if agency == CITIZEN {
            Channel::Online
        } else {
            Channel::System
        };
        let req = Request {
            dossier: Some(dossier),
            actor: Actor {
                agency: agency.clone(),
                officer: format!("{agency}-01"),
                channel: channel as i32,
            },
            idempotency_key: format!("demo-{}-{n}", self.seed),
            command,
        };
        match self.engine.execute(req).await {
            Ok(out) => {
                self.react(out);
                None
            }
            Err(lienthong_engine::runtime::Error::Rejected(r)) => {
                *self
                    .tally
                    .lock()
                    .rejections
                    .entry(r.code().to_string())
                    .or_default() += 1;
                Some(r.code())
            }
            Err(e) => {
                self.fault(format!("{dossier}: {e}"));
                None
            }
        }
    }

    fn fault(&self, what: String) {
        tracing::error!(%what, "demo command failed");
        let mut t = self.tally.lock();
        if t.faults.len() < 10 {
            t.faults.push(what);
        }
    }

    /// Turns what a command appended into the next simulated acts.
    fn react(self: &Arc<Self>, out: Outcome) {
        let dossier = out.dossier;
        self.tally.lock().events += out.events.len() as u64;
        for next in sim::follow_ups(&out) {
            match next {
                FollowUp::Work {
                    step,
                    agency,
                    again,
                } => self.spawn_step(dossier, step, agency, again),
                FollowUp::Answer { to } => {
                    self.tally.lock().supplements += 1;
                    let me = self.clone();
                    tokio::spawn(async move {
                        let (mut rng, _) = me.rng();
                        me.think(&mut rng).await;
                        let cmd = sim::answer_supplement(&mut rng, &me.mix);
                        let who = sim::answerer(&cmd, to);
                        me.act(dossier, who, cmd).await;
                    });
                }
                FollowUp::Return { desk } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let (mut rng, _) = me.rng();
                        me.think(&mut rng).await;
                        let cmd = sim::return_result(&mut rng);
                        me.act(dossier, desk, cmd).await;
                    });
                }
                FollowUp::Closed { outcome } => {
                    let latency = self
                        .started
                        .lock()
                        .remove(&dossier)
                        .map(|t| t.elapsed().as_micros() as u64);
                    let mut t = self.tally.lock();
                    *t.outcomes.entry(outcome.to_string()).or_default() += 1;
                    if let Some(l) = latency {
                        t.latencies_us.push(l);
                    }
                    drop(t);
                    let _ = self.done.send(());
                }
            }
        }
    }

    /// Works one step, coming back to it while a supplement holds the dossier.
    fn spawn_step(self: &Arc<Self>, dossier: DossierId, step: StepId, agency: String, again: bool) {
        let me = self.clone();
        tokio::spawn(async move {
            let officers = me.officers.get(&agency).cloned();
            let _permit = match &officers {
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            // A parallel step's supplement holds the dossier: the officer comes back to the step
            // once it is answered (as a real one would), instead of dropping the work.
            for _ in 0..STEP_TRIES_MAX {
                let (mut rng, _) = me.rng();
                me.think(&mut rng).await;
                let wf = match me.engine.state(dossier).await {
                    Ok(st) => me.engine.catalog().procedure(&st.procedure_code).cloned(),
                    Err(_) => None,
                };
                let Some(wf) = wf else { return };
                let cmd = sim::work_step(&mut rng, &me.mix, &wf, &step, again);
                match me
                    .clone()
                    .act_or_rejection(dossier, agency.clone(), cmd)
                    .await
                {
                    Some("awaiting-supplement" | "supplement-outstanding") => {
                        tokio::time::sleep(Duration::from_millis(STEP_RETRY_MS)).await;
                    }
                    _ => return,
                }
            }
        });
    }
}
