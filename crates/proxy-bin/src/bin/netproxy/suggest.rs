//! `netproxy suggest REPORT|AUDIT_LOG`: the policy `run --learn` would suggest, from the
//! decisions of a `--report` file or an `audit_log` (docs/run.md, "Learn mode").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use netproxy::suggest::{Usage, suggest as suggestion};

use super::{PolicyOptions, sources};

#[derive(Debug, Args)]
pub(crate) struct SuggestArgs {
    /// A managed requirements file of the run (repeatable; the system's are counted too): a
    /// target one of its patterns allowed needs no entry
    #[arg(long = "requirements", value_name = "FILE")]
    requirements: Vec<PathBuf>,
    /// A `run --report` file, or an `audit_log` file (JSON lines)
    #[arg(value_name = "REPORT|AUDIT_LOG")]
    file: PathBuf,
}

/// Prints the suggestion on stdout; a file that cannot be read, or that is neither a report
/// nor an audit log, exits 1 with the reason.
pub(crate) fn suggest(args: &SuggestArgs) -> ExitCode {
    let policy = PolicyOptions {
        requirements: args.requirements.clone(),
        ..PolicyOptions::default()
    };
    // The layers a managed pattern's decisions name: the requirements files' paths.
    let managed = sources(&policy)
        .requirement_paths()
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    match Usage::read(&args.file, managed) {
        Ok((usage, warnings)) => {
            for w in warnings {
                eprintln!("netproxy suggest: warning: {w}");
            }
            let origin = format!("from {}", args.file.display());
            print!("{}", suggestion(&usage, &origin).toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netproxy suggest: {e}");
            ExitCode::from(1)
        }
    }
}
