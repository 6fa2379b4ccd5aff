//! `quiesce drain NODE`: kubectl drain that waits for replacements to be Ready elsewhere.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quiesce_aws::elbv2::{DEFAULT_RATE, Elbv2};
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_drainer::args::DrainSwitches;
use quiesce_drainer::targets;
use quiesce_kube::engine::{self, DrainSpec};
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::{DrainReport, GateEnd, Outcome, Stage};

/// Output format of the final report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts: verdict, phases with seconds, pods, blockers.
    Json,
}

/// Arguments of `quiesce drain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node to drain.
    pub node: String,
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Give up after this long (e.g. `30s`, `10m`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The drain switches, shared with `quiesce drainer` and the Lambda.
    #[command(flatten)]
    pub switches: DrainSwitches,
    /// Evict pods with emptyDir volumes (their data is lost).
    #[arg(long, env = "QUIESCE_DELETE_EMPTYDIR_DATA", value_parser = clap::builder::BoolishValueParser::new())]
    pub delete_emptydir_data: bool,
    /// Make the node schedulable again if the drain fails or times out.
    #[arg(long)]
    pub uncordon_on_failure: bool,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs the drain; exit 0 drained (or a clean dry run), 1 blocked or failed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(drain(args))
}

async fn drain(args: Args) -> anyhow::Result<ExitCode> {
    let config = super::kube_config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let cluster = KubeCluster::new(client.clone());
    let spec = DrainSpec {
        node: args.node.clone(),
        options: args.switches.options(args.delete_emptydir_data),
        timeout: args.timeout,
        dry_run: args.dry_run,
        uncordon_on_failure: args.uncordon_on_failure,
        replacement_gate: true,
        // A node drained by hand stays in its load balancers unless asked.
        cordon: args.switches.cordon(false),
    };
    let live = args.output == Output::Text && std::io::stderr().is_terminal();
    let progress = |pod: &str, stage: Stage| {
        if live {
            eprintln!("  {pod}: {}", stage_word(stage));
        }
    };
    let mut report = engine::drain(&cluster, &spec, &progress).await?;
    // Off by default by hand: it needs AWS credentials.
    let load_balancers = args.switches.load_balancers(false);
    if load_balancers.enabled && report.outcome == Outcome::Drained {
        let aws = sdk_config(&AwsOptions::default()).await;
        let lb = Elbv2::new(&aws, DEFAULT_RATE);
        targets::after_drain(&client, &lb, &spec.cordon, &load_balancers, &mut report).await?;
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_text(&report),
    }
    let ok = match report.outcome {
        Outcome::Drained => true,
        Outcome::Planned => report.verdict != quiesce_core::Verdict::Impossible,
        Outcome::Blocked | Outcome::Failed => false,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn stage_word(stage: Stage) -> &'static str {
    match stage {
        Stage::Pending => "pending",
        Stage::Evicting => "evicting",
        Stage::Terminating => "terminating",
        Stage::Gone => "gone",
        Stage::Replaced => "replacement Ready",
        Stage::Skipped => "skipped",
    }
}

fn print_text(report: &DrainReport) {
    let outcome = match report.outcome {
        Outcome::Drained => "drained",
        Outcome::Planned => "dry run, nothing changed",
        Outcome::Blocked => "blocked, nothing changed",
        Outcome::Failed => "failed",
    };
    println!(
        "node {}: {outcome} (verdict: {:?})",
        report.node, report.verdict
    );
    for pod in &report.pods {
        println!(
            "  pod {:<50} {:?}, {}",
            pod.pod,
            pod.action,
            stage_word(pod.stage)
        );
    }
    for blocker in &report.blockers {
        println!("  blocker: {blocker}");
    }
    for gate in &report.gates {
        let state = match gate.state {
            GateEnd::Pending => "not whole yet",
            GateEnd::Whole => "whole again elsewhere",
            GateEnd::Deleted => "deleted during the drain",
        };
        println!(
            "  waits for {}: {} Available elsewhere ({state})",
            gate.workload, gate.available_before
        );
    }
    for ungated in &report.ungated {
        println!("  ungated {}: {}", ungated.workload, ungated.reason);
    }
    for note in &report.notes {
        println!("  note: {note}");
    }
    for phase in &report.phases {
        println!("  {:<20} {:>8.2}s", phase.name.as_str(), phase.seconds);
    }
    if let Some(err) = &report.error {
        println!(
            "  error: {err}{}",
            if report.uncordoned {
                " (node uncordoned)"
            } else {
                ""
            }
        );
    }
}
