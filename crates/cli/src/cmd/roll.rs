//! `quiesce roll`: the patching automation. Pre-flight over the whole node group, an EC2 Auto
//! Scaling Instance Refresh to the new launch template version, the drainer handling every
//! hook, an SLO gate that holds, cancels or rolls back the refresh.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_drainer::args::DrainSwitches;
use quiesce_roll::aws::AwsRefresh;
use quiesce_roll::preflight::{self, DrainerCheck, Intent};
use quiesce_roll::refresh::Preferences;
use quiesce_roll::report::{Outcome, RollReport};
use quiesce_roll::run::{self, OnBreach, Progress, RollSpec, Undrainable};
use quiesce_roll::slo::{Objective, Prometheus};

/// Output format of the final report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people, with live progress on a terminal.
    Text,
    /// For CI: `{"roll": {"outcome": …, "replaced": […], "retained": […], …}}`.
    Json,
}

/// What to do when the SLO breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Breach {
    /// The drainer holds the next terminate hook (heartbeating) until the SLO is good again;
    /// after --hold-max the refresh is cancelled (outcome `held`).
    Hold,
    /// CancelInstanceRefresh: replaced instances stay; the report prints the command that
    /// resumes (a new refresh with --skip-matching).
    Cancel,
    /// RollbackInstanceRefresh: the previous launch template version comes back.
    Rollback,
}

/// What to do with a node the drainer could not drain (ABANDONed, kept Terminating:Retained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UndrainableArg {
    /// Cancel the refresh at the first such node, and refuse in pre-flight if a node's drain
    /// plan is impossible already.
    Stop,
    /// Go on; the report lists each retained instance with the drainer's reason. Release
    /// one with `quiesce roll --release INSTANCE` once fixed.
    Skip,
}

/// Arguments of `quiesce roll`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER)]
pub struct Args {
    /// The Auto Scaling group (self-managed node group) to roll.
    #[arg(long, required_unless_present = "release")]
    pub asg: Option<String>,
    /// Roll to this version of the group's launch template (a number: `$Latest` and
    /// `$Default` cannot be rolled back).
    #[arg(long, conflicts_with = "image_id", required_unless_present_any = ["release", "image_id"])]
    pub launch_template_version: Option<String>,
    /// Roll to this AMI: once pre-flight passes it becomes a new version of the group's launch
    /// template (EC2 CreateLaunchTemplateVersion from the version the group launches now).
    #[arg(long)]
    pub image_id: Option<String>,
    /// Pre-flight only: print every reason not to roll, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Percentage of the group kept in service (MinHealthyPercentage); it sets the batch:
    /// size − ⌈size × pct⌉ instances, at least one, go at once.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_healthy: u8,
    /// MaxHealthyPercentage (100–200): above 100, replacements launch before terminations.
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=200))]
    pub max_healthy: Option<u16>,
    /// Checkpoints, ascending percentages of the group replaced, e.g. `25,50,100`: the
    /// refresh soaks at each for --checkpoint-delay and the SLO is evaluated there.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=100))]
    pub checkpoints: Vec<u8>,
    /// The soak at each checkpoint (CheckpointDelay; AWS's default is 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub checkpoint_delay: Option<Duration>,
    /// After the last replacement, wait this long (alarms watched) before Successful
    /// (BakeTime).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub bake_time: Option<Duration>,
    /// Leave instances already on the desired version alone (SkipMatching): how a cancelled
    /// roll resumes.
    #[arg(long)]
    pub skip_matching: bool,
    /// How long a new instance counts as warming up (InstanceWarmup).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub instance_warmup: Option<Duration>,
    /// A CloudWatch alarm that fails the refresh (AlarmSpecification); repeat for more.
    #[arg(long = "alarm")]
    pub alarms: Vec<String>,
    /// On a failure (an alarm), let Auto Scaling roll back by itself (AutoRollback).
    #[arg(long)]
    pub auto_rollback: bool,
    /// Prometheus to evaluate --slo against (its HTTP API, e.g. `http://prometheus:9090`).
    #[arg(long, requires = "slo")]
    pub slo_prometheus: Option<String>,
    /// The SLO: `QUERY < N` (or <=, >, >=), e.g.
    /// `sum(rate(http_requests_total{code=~"5.."}[1m])) < 0.5`. An empty result is 0; a
    /// query that cannot be evaluated counts as a breach.
    #[arg(long, requires = "slo_prometheus")]
    pub slo: Option<Objective>,
    /// How often the SLO is evaluated (also at every checkpoint).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub evaluate_every: Duration,
    /// What a breach does.
    #[arg(long, value_enum, default_value_t = Breach::Hold)]
    pub on_breach: Breach,
    /// The longest the gate holds the roll (and the time a gate lapses by itself should
    /// this command die while it is red).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub hold_max: Duration,
    /// What a node the drainer could not drain does to the roll.
    #[arg(long, value_enum, default_value_t = UndrainableArg::Stop)]
    pub undrainable: UndrainableArg,
    /// Proof that a drainer answers the hooks: the drainer Deployment's leader-election Lease,
    /// NAMESPACE/NAME, renewed lately; `lambda` for the Lambda mode (an enabled event source
    /// mapping on the terminate hook's queue, read with lambda:ListEventSourceMappings);
    /// `none` skips the check.
    #[arg(long, default_value = "kube-system/quiesce-drainer")]
    pub drainer_lease: DrainerCheck,
    /// Stop following after this long (the refresh goes on without the gate).
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Let a retained instance (Terminating:Retained) go once you fixed what kept its node:
    /// its node is drained (replacements Ready elsewhere), then it is terminated.
    #[arg(long, value_name = "INSTANCE")]
    pub release: Option<String>,
    /// The drain switches pre-flight plans with (as the drainer is configured) and
    /// --release drains with.
    #[command(flatten)]
    pub switches: DrainSwitches,
    /// Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// AWS region (default: the SDK's: AWS_REGION, profile, instance metadata).
    #[arg(long)]
    pub region: Option<String>,
    /// A custom AWS endpoint (VPC endpoint, or moto in tests; default: AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

const AFTER: &str = "\
How the gate holds the roll: an Instance Refresh does not wait for anyone between its
checkpoints, but every instance it terminates waits in its terminate hook for the drainer.
While the SLO is breached (--on-breach hold) this command writes the annotation
quiesce.io/roll-gate on the group's Nodes; the drainer then heartbeats a new terminate hook
without draining its node, so no further node goes until the SLO is good again.

Exit status: 0 the roll completed (or a clean --dry-run), 1 refused, held, cancelled,
rolled back or failed (the report says why), 2 usage error.

Example:
  quiesce roll --asg eks-workers --launch-template-version 7 --min-healthy 66 \\
    --checkpoints 50,100 --checkpoint-delay 10m \\
    --slo-prometheus http://prometheus:9090 \\
    --slo 'sum(rate(http_requests_total{code=~\"5..\"}[1m])) < 0.5' --on-breach rollback

An AMI instead of a version: --image-id ami-… makes it a new version of the group's launch
template (from the version the group launches now) once pre-flight passes, and rolls to it.";

/// Runs `quiesce roll`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(roll(args))
}

fn preferences(args: &Args) -> anyhow::Result<Preferences> {
    if args.checkpoints.windows(2).any(|w| w[0] >= w[1]) {
        bail!(
            "--checkpoints {:?}: expected ascending percentages, e.g. 25,50,100",
            args.checkpoints
        );
    }
    Ok(Preferences {
        min_healthy: args.min_healthy,
        max_healthy: args.max_healthy,
        checkpoints: args.checkpoints.clone(),
        checkpoint_delay: args.checkpoint_delay,
        bake_time: args.bake_time,
        skip_matching: args.skip_matching,
        instance_warmup: args.instance_warmup,
        alarms: args.alarms.clone(),
        auto_rollback: args.auto_rollback,
    })
}

async fn roll(args: Args) -> anyhow::Result<ExitCode> {
    let aws_config = sdk_config(&AwsOptions {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await;
    let aws = AwsRefresh::new(&aws_config);
    let config = super::kube_config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let options = args.switches.options(true);
    if let Some(instance) = &args.release {
        let released =
            quiesce_roll::release::release(&aws, client, instance, args.timeout, options).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::json!({ "released": released })),
            Output::Text => println!(
                "released {} of group {} (node {} drained) and terminated it",
                released.instance,
                released.group,
                released.node.as_deref().unwrap_or("none")
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let group = args.asg.clone().context("--asg is required")?;
    let preferences = preferences(&args)?;
    let on_breach = match args.on_breach {
        Breach::Hold => OnBreach::Hold,
        Breach::Cancel => OnBreach::Cancel,
        Breach::Rollback => OnBreach::Rollback,
    };
    let undrainable = match args.undrainable {
        UndrainableArg::Stop => Undrainable::Stop,
        UndrainableArg::Skip => Undrainable::Skip,
    };
    let intent = Intent {
        preferences: &preferences,
        // An AMI becomes a numbered version: nothing a rollback could not return to.
        version: args.launch_template_version.as_deref(),
        rollback: on_breach == OnBreach::Rollback || args.auto_rollback,
        skip_undrainable: undrainable == Undrainable::Skip,
        drain: options,
    };
    let (_, pre) =
        preflight::gather(&aws, client.clone(), &group, &args.drainer_lease, &intent).await?;
    let empty = |outcome, reason: Option<String>| {
        RollReport::unstarted(&group, outcome, reason, pre.clone())
    };
    let report = if !pre.refusals.is_empty() {
        empty(
            Outcome::Refused,
            Some(format!(
                "pre-flight refused ({} reasons)",
                pre.refusals.len()
            )),
        )
    } else if args.dry_run {
        empty(Outcome::Planned, None)
    } else {
        let slo = match (&args.slo_prometheus, &args.slo) {
            (Some(url), Some(objective)) => Some(Prometheus::new(url, objective.clone())?),
            _ => None,
        };
        let version = match (&args.launch_template_version, &args.image_id) {
            (Some(v), _) => v.clone(),
            (None, Some(image)) => {
                let ec2 = quiesce_aws::ec2::Ec2::new(&aws_config)?;
                let v = aws.version_for_image(&ec2, &group, image).await?;
                tracing::info!(%image, version = %v, "the AMI is a new launch template version");
                v
            }
            (None, None) => bail!("give --launch-template-version or --image-id"),
        };
        let spec = RollSpec {
            group: group.clone(),
            version,
            preferences,
            on_breach,
            undrainable,
            hold_max: args.hold_max,
            evaluate_every: args.evaluate_every,
            poll_every: Duration::from_secs(5),
            deadline: args.timeout,
        };
        let live = args.output == Output::Text && std::io::stderr().is_terminal();
        let last = std::sync::Mutex::new(String::new());
        let progress = |p: &Progress| {
            let line = p.line();
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if live && *last != line {
                eprintln!("{line}");
                *last = line;
            }
        };
        run::roll(&aws, slo.as_ref(), client, &spec, pre, &progress).await?
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "roll": report }))?
        ),
        Output::Text => print_text(&report),
    }
    Ok(if report.outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(report: &RollReport) {
    let pre = &report.preflight;
    println!(
        "group {}: {} in service, batches of {}",
        report.group, pre.size, pre.batch
    );
    for node in &pre.nodes {
        println!(
            "  {} {:<30} {:?}, {} pods to move{}",
            node.instance,
            node.node.as_deref().unwrap_or("(no node)"),
            node.verdict,
            node.pods,
            if node.blockers.is_empty() {
                String::new()
            } else {
                format!(": {}", node.blockers.join("; "))
            }
        );
    }
    for refusal in &pre.refusals {
        println!("  refused: {refusal}\n     fix: {}", refusal.fix());
    }
    for note in &pre.notes {
        println!("  note: {note}");
    }
    let outcome = serde_json::to_value(report.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    println!(
        "roll {}: {outcome}{}",
        report.refresh_id.as_deref().unwrap_or("(not started)"),
        report
            .reason
            .as_deref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default()
    );
    println!(
        "  replaced {} instances in {:.0}s; the gate held {:.0}s over {} evaluations",
        report.replaced.len(),
        report.seconds,
        report.held_seconds,
        report.evaluations
    );
    for r in &report.retained {
        println!(
            "  retained {} (node {}): {} — release with: quiesce roll --release {}",
            r.instance,
            r.node.as_deref().unwrap_or("none"),
            r.reason.as_deref().unwrap_or("no reason recorded"),
            r.instance
        );
    }
    if let Some(resume) = &report.resume {
        println!("  resume with: {resume}");
    }
}
