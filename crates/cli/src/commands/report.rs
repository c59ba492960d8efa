//! `lienthong report board|breaches|indicators --data DIR [--agency X] [--month YYYY-MM]
//! [--format table|json|csv] [--workflows DIR] [--now RFC3339] [--due-soon 1wd]`: catches the
//! read models up with the store, then prints one of them (definitions in the
//! `lienthong-projections` crate docs). `--now` defaults to the wall clock; pass it for
//! reproducible output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use lienthong_projections::report::{self, Format};
use lienthong_projections::{BoardQuery, BreachQuery, IndicatorQuery, Month};

use super::DataArg;

/// Which report.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Kind {
    /// Open steps per agency with their due: overdue (working time past due), due soon, paused;
    /// and dossiers past their appointment.
    Board,
    /// Late dossiers with the process-control slip and the steps/agencies that overran.
    Breaches,
    /// Decision 766 indicators per month × agency × procedure (dossier and step rows).
    Indicators,
}

/// Arguments of `report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The report.
    #[arg(value_enum)]
    kind: Kind,
    #[command(flatten)]
    data: DataArg,
    /// Only this agency (holder on the board, attributed agency for breaches, row agency for
    /// indicators).
    #[arg(long)]
    agency: Option<String>,
    /// Only this local month, YYYY-MM (breaches: by rate appointment; indicators: row month).
    #[arg(long)]
    month: Option<String>,
    /// Output format: table, json or csv.
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: Format,
    /// Workflow directory (calendars measure working time).
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// The instant to judge against (RFC 3339); default: now.
    #[arg(long)]
    now: Option<String>,
    /// Board: due within this much time counts as due soon (e.g. 1wd, 4wh).
    #[arg(long, default_value = "1wd")]
    due_soon: String,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// Catches up, then prints the report.
pub fn run(args: Args) -> Result<ExitCode> {
    let now: DateTime<Utc> = match &args.now {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| anyhow!("--now `{s}` is not an RFC 3339 instant ({e})"))?,
        None => Utc::now(),
    };
    let month: Option<Month> = args.month.as_deref().map(str::parse).transpose()?;
    let p = super::projections::open(&args.data.data, &args.workflows)?;
    let progress = p.catch_up()?;
    tracing::info!(
        events = progress.events,
        checkpoint = progress.to,
        "projections caught up"
    );
    let out = match args.kind {
        Kind::Board => {
            if month.is_some() {
                bail!("--month does not apply to the board (it shows what is open now)");
            }
            let due_soon = args
                .due_soon
                .parse()
                .map_err(|e| anyhow!("--due-soon `{}`: {e}", args.due_soon))?;
            let q = BoardQuery {
                agency: args.agency,
                due_soon,
            };
            report::board(&p.board(now, &q)?, args.format)
        }
        Kind::Breaches => {
            let q = BreachQuery {
                agency: args.agency,
                month,
            };
            report::breaches(&p.breaches(now, &q)?, args.format)
        }
        Kind::Indicators => {
            let q = IndicatorQuery {
                agency: args.agency,
                month,
            };
            report::indicators(&p.indicators(&q)?, args.format)
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
