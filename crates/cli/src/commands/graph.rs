//! `lienthong graph PROCEDURE [--format mermaid|dot]`: the routing diagram.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

/// Diagram syntaxes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// Mermaid flowchart (renders in Markdown viewers).
    Mermaid,
    /// Graphviz dot.
    Dot,
}

/// Arguments of `graph`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Procedure code (e.g. 2.000986) or file name without `.toml` (e.g. birth-group).
    procedure: String,
    #[arg(long, value_enum, default_value = "mermaid")]
    format: Format,
    /// The workflow directory.
    #[arg(long)]
    workflows: Option<PathBuf>,
}

/// Prints the diagram of one procedure.
pub fn run(args: Args) -> Result<ExitCode> {
    let dir = crate::common::workflows_dir(&args.workflows);
    let catalog = crate::common::load_catalog(&dir)?;
    let wf = catalog.procedure(&args.procedure).or_else(|| {
        catalog.procedures.values().find(|wf| {
            std::path::Path::new(&wf.origin)
                .file_stem()
                .is_some_and(|s| s == args.procedure.as_str())
        })
    });
    let Some(wf) = wf else {
        let known: Vec<String> = catalog
            .procedures
            .values()
            .map(|w| format!("{} ({})", w.code, w.origin))
            .collect();
        bail!(
            "no procedure `{}`; known: {}",
            args.procedure,
            known.join(", ")
        );
    };
    let text = match args.format {
        Format::Mermaid => lienthong_workflow::graph::mermaid(wf, &catalog.agencies),
        Format::Dot => lienthong_workflow::graph::dot(wf, &catalog.agencies),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
