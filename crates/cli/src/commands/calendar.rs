//! `lienthong calendar due|between`: working-day arithmetic for workflow designers.
//!
//! `--calendar FILE` names one calendar file; the other files of the same family in the same
//! directory (other years) are loaded with it, so a deadline may cross a year end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, NaiveTime, Utc};
use lienthong_calendar::{Calendar, Duration};

/// Arguments of `calendar`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    op: Op,
}

#[derive(clap::Subcommand, Debug)]
enum Op {
    /// The due instant: FROM plus DURATION in the calendar's working time.
    Due {
        /// A calendar file (workflows/calendars/*.toml).
        #[arg(long)]
        calendar: PathBuf,
        /// The start instant, RFC 3339 (e.g. 2026-05-04T09:00:00+07:00).
        #[arg(long)]
        from: String,
        /// The duration: `Nwd`, `Nwh`, `Nd` or `Nh`.
        #[arg(long)]
        add: String,
        /// Receipts after this local time (HH:MM) count from the next working day.
        #[arg(long)]
        cutoff: Option<String>,
        /// Office hours of this agency or province (an `[office.KEY]` override in the file).
        #[arg(long)]
        office: Option<String>,
    },
    /// The working time between two instants.
    Between {
        /// A calendar file (workflows/calendars/*.toml).
        #[arg(long)]
        calendar: PathBuf,
        /// The first instant, RFC 3339.
        #[arg(long)]
        from: String,
        /// The second instant, RFC 3339.
        #[arg(long)]
        to: String,
        /// Office hours of this agency or province.
        #[arg(long)]
        office: Option<String>,
    },
}

/// Prints the answer on one line.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.op {
        Op::Due {
            calendar,
            from,
            add,
            cutoff,
            office,
        } => {
            let cal = load_family(&calendar, office.as_deref())?;
            let from = instant(&from)?;
            let d: Duration = add.parse()?;
            let cutoff = cutoff
                .map(|c| {
                    NaiveTime::parse_from_str(&c, "%H:%M").map_err(|_| {
                        anyhow!("--cutoff `{c}` is not a time: write HH:MM, e.g. 15:00")
                    })
                })
                .transpose()?;
            let working = matches!(d, Duration::WorkingDays(_) | Duration::WorkingHours(_));
            let start = if working || cutoff.is_some() {
                cal.clock_start(from, cutoff)?
            } else {
                from
            };
            let due = cal.add(start, d)?;
            println!("{}", due.with_timezone(&cal.timezone()).to_rfc3339());
        }
        Op::Between {
            calendar,
            from,
            to,
            office,
        } => {
            let cal = load_family(&calendar, office.as_deref())?;
            let t = cal.working_time_between(instant(&from)?, instant(&to)?)?;
            println!(
                "{} ({} working minutes; a working day is {} minutes)",
                cal.format_working_time(t),
                t.num_minutes(),
                cal.working_day_length().num_minutes()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn instant(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            anyhow!("`{s}` is not an RFC 3339 instant ({e}): write e.g. 2026-05-04T09:00:00+07:00")
        })
}

/// The family of `file`, with the other years found beside it.
fn load_family(file: &Path, office: Option<&str>) -> Result<Calendar> {
    let one = Calendar::load(file)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let family = Calendar::load_dir(dir)
        .map_err(|errs| {
            let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
            anyhow!(text.join("\n"))
        })
        .with_context(|| format!("loading the calendars beside {}", file.display()))?
        .remove(one.name())
        .unwrap_or(one);
    Ok(match office {
        Some(k) => family.for_office(k),
        None => family,
    })
}
