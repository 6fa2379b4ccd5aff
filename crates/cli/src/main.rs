//! The `quiesce` command: each subcommand wires the focused crates together.
//!
//! Exit codes follow the brief: 0 success, 1 the job failed or was blocked (the output says
//! why), 2 a usage error (clap's own convention, kept for every subcommand).

mod cmd;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Zero-downtime node patching and graceful pod termination for Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "quiesce",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("QUIESCE_BUILD_COMMIT"), ")"),
    about,
    long_about = None,
    propagate_version = true
)]
struct Cli {
    /// Log filter in `tracing` syntax, e.g. `info` or `quiesce=debug,kube=info` [default:
    /// info; warn for `lab`, whose progress lines say what happens].
    #[arg(long, global = true, env = "QUIESCE_LOG")]
    log: Option<String>,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(
        long,
        global = true,
        env = "QUIESCE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local Kubernetes API with a simulated cluster (kubectl works against it).
    Sandbox(cmd::sandbox::Args),
    /// Drain a node and wait until every evicted pod's replacement is Ready elsewhere.
    Drain(cmd::drain::Args),
    /// Check that manifests' preStop delays and grace periods cover their discovery stack.
    Audit(cmd::audit::Args),
    /// Drain nodes for Auto Scaling lifecycle hooks read from SQS (the in-cluster Deployment).
    Drainer(cmd::drainer::Args),
    /// Replace every node of a sandbox node group under live traffic; count dropped requests.
    Lab(cmd::lab::Args),
    /// Roll a node group to a new launch template version: pre-flight, Instance Refresh with
    /// the drainer on every hook, an SLO gate that holds, cancels or rolls back.
    Roll(cmd::roll::Args),
}

/// Hidden subcommands: the programs of `quiesce lab`'s container image, which is this binary
/// (so `cargo run --bin quiesce -- lab` needs no other build). They take their arguments raw,
/// before clap and logging, exactly as the programs they stand for do.
fn hidden(args: &[String]) -> Option<ExitCode> {
    let (sub, rest) = args.split_first()?;
    match sub.as_str() {
        // quiesce-init itself, the same code as the quiesce-init binary.
        "__init" => Some(quiesce_init::run(rest)),
        "__lab-app" => Some(quiesce_lab::app::main(rest)),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = hidden(&args) {
        return code;
    }
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Lab(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log.as_deref().unwrap_or(default_log), cli.log_format);
    let outcome = match cli.command {
        Command::Sandbox(args) => cmd::sandbox::run(args),
        Command::Drain(args) => cmd::drain::run(args),
        Command::Audit(args) => cmd::audit::run(args),
        Command::Drainer(args) => cmd::drainer::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Roll(args) => cmd::roll::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
