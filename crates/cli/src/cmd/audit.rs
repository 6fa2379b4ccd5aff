//! `quiesce audit`: the timing-budget linter for manifests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use quiesce_audit::{Level, Options};
use quiesce_core::budget::Stack;

/// Report formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Grouped by workload, for people.
    Text,
    /// An array of findings, for scripts.
    Json,
    /// SARIF 2.1.0, for code scanning.
    Sarif,
}

/// Arguments of `quiesce audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories of manifests (`-` reads stdin).
    #[arg(default_value = "-")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Discovery stacks in front of every workload that receives traffic (kube-proxy, alb, nlb,
    /// eureka, istio, linkerd), replacing the ones detected from the manifests
    /// (`--explain detection` lists the detection rules).
    #[arg(long = "stack", value_delimiter = ',')]
    stacks: Vec<Stack>,
    /// The longest request the apps serve.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    max_request: Duration,
    /// The apps' own shutdown time where the manifests do not show it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    shutdown: Duration,
    /// The kubelet's shutdownGracePeriod on the nodes (the EKS AL2023 AMI's from 1.34).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "150s")]
    node_shutdown_grace: Duration,
    /// The part of --node-shutdown-grace reserved for critical pods
    /// (shutdownGracePeriodCriticalPods).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    node_shutdown_critical_grace: Duration,
    /// Audit the live objects of a cluster instead of files.
    #[arg(long, conflicts_with = "paths")]
    cluster: bool,
    /// Kubeconfig for --cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, requires = "cluster")]
    kubeconfig: Option<PathBuf>,
    /// Print why a rule matters and how to fix it (or, for `detection`, how each discovery
    /// stack is detected), then exit.
    #[arg(long, value_name = "RULE")]
    explain: Option<String>,
}

/// Exit 0 clean, 1 on error-level findings, 2 on input that cannot be read or parsed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(id) = args.explain {
        if id == "detection" {
            println!("how quiesce audit finds the discovery stacks in front of each workload:\n");
            for (stack, rule) in quiesce_audit::detect::RULES {
                println!("{stack}: {rule}\n");
            }
            return Ok(ExitCode::SUCCESS);
        }
        let Some(rule) = quiesce_audit::rules::explain(&id) else {
            let ids: Vec<&str> = quiesce_audit::rules::RULES.iter().map(|r| r.id).collect();
            eprintln!(
                "error: unknown rule {id:?}; rules are {} (or `detection`)",
                ids.join(", ")
            );
            return Ok(ExitCode::from(2));
        };
        println!(
            "{} ({:?})\n\nwhy: {}\nfix: {}",
            rule.id, rule.level, rule.why, rule.fix
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.node_shutdown_critical_grace > args.node_shutdown_grace {
        eprintln!(
            "error: --node-shutdown-critical-grace {} is longer than --node-shutdown-grace {}: the critical pods' window is part of the whole",
            humantime::format_duration(args.node_shutdown_critical_grace),
            humantime::format_duration(args.node_shutdown_grace)
        );
        return Ok(ExitCode::from(2));
    }
    let loaded = if args.cluster {
        load_cluster(args.kubeconfig.as_deref())?
    } else {
        quiesce_audit::load::load_paths(&args.paths)
    };
    let objects = match loaded {
        Ok(objects) => objects,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    let opts = Options {
        stacks: args.stacks,
        max_request: args.max_request,
        shutdown: args.shutdown,
        node_shutdown_grace: args.node_shutdown_grace,
        node_shutdown_critical_grace: args.node_shutdown_critical_grace,
    };
    let (findings, workloads) = quiesce_audit::audit(&objects, &opts);
    tracing::debug!(
        objects = objects.len(),
        workloads,
        findings = findings.len(),
        "audited"
    );
    match args.format {
        Format::Text => print!("{}", quiesce_audit::report::text(&findings, workloads)),
        Format::Json => println!("{}", quiesce_audit::report::json(&findings)),
        Format::Sarif => println!("{}", quiesce_audit::report::sarif(&findings)),
    }
    let failed = findings.iter().any(|f| f.level == Level::Error);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads the live objects through kube-rs.
fn load_cluster(
    kubeconfig: Option<&std::path::Path>,
) -> anyhow::Result<Result<Vec<quiesce_audit::load::Object>, quiesce_audit::Error>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let config = super::kube_config(kubeconfig).await?;
        let client = kube::Client::try_from(config)?;
        Ok(quiesce_audit::cluster::load(&client).await)
    })
}
