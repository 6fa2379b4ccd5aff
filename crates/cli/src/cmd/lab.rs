//! `quiesce lab`: replace every node of a sandbox node group under live HTTP traffic, with
//! quiesce or the naive baseline, and count every failed request.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quiesce_lab::chaos::conductor::ChaosReport;
use quiesce_lab::chaos::invariants::Invariants;
use quiesce_lab::chaos::schedule::Classes;
use quiesce_lab::chaos::{ChaosOptions, Face};
use quiesce_lab::pods::process::Isolation;
use quiesce_lab::roll::{GateOptions, MaxFailed};
use quiesce_lab::run::{Dataplane, LabOptions, LabReport, Mode};
use quiesce_roll::report::Outcome;
use quiesce_roll::run::OnBreach;

use super::roll::Breach;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Per-node and per-phase timings, then the request count.
    Text,
    /// `dataplane`, `nodes_replaced`, `requests` (sent, connections, client retries, failed,
    /// by cause and Service), `phases` (seconds), `kernel` (KUBE-SEP packet counters,
    /// conntrack-kept), `pod_isolation` and `pods` (each pod's process: pids, start, Ready,
    /// preStop, SIGTERM, SIGKILL, exit status).
    Json,
}

/// The two worlds the lab compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The drainer with its replacement gate and surge; apps under quiesce-init.
    Quiesce,
    /// kubectl-drain semantics; apps that stop at SIGTERM.
    Naive,
}

/// What carries the lab's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataplaneArg {
    /// Service virtual IPs and kube-proxy's iptables rules in a private network namespace
    /// (root, iptables, conntrack and iproute2 needed).
    Kernel,
    /// The in-process balancer that models kube-proxy.
    Userspace,
}

/// Arguments of `quiesce lab`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes in the group; every one is replaced.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub nodes: u16,
    /// quiesce, or the naive baseline most clusters run today.
    #[arg(long, value_enum, default_value_t = ModeArg::Quiesce)]
    pub mode: ModeArg,
    /// Requests per second over the Services web and api.
    #[arg(long, default_value_t = 300.0)]
    pub rps: f64,
    /// How late clients apply an endpoint change (kube-proxy's lag).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub propagation_delay: Duration,
    /// quiesce-init's drain delay in quiesce mode.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
    /// The data plane [default: kernel when running as root with iptables and conntrack
    /// installed, else userspace, and the first line says why].
    #[arg(long, value_enum)]
    pub dataplane: Option<DataplaneArg>,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also write a self-contained HTML timeline here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Inject API, AWS and drainer faults from a seeded schedule while the roll runs, and
    /// check the guarantees (I1–I5) from the sandbox's and the group's own record.
    #[arg(long)]
    pub chaos: bool,
    /// The chaos schedule's seed: the same seed, the same schedule.
    #[arg(long, default_value_t = 1, requires = "chaos")]
    pub seed: u64,
    /// The fault classes to inject: a comma-separated list of api, aws, delivery, restart,
    /// handover, race, or all.
    #[arg(long, default_value = "all", requires = "chaos")]
    pub faults: Classes,
    /// Roll through `quiesce roll`'s code (pre-flight, the refresh followed, the gate) with
    /// this objective on the lab's live count of failed requests: `max-failed=N`.
    #[arg(long)]
    pub slo: Option<MaxFailed>,
    /// How often the gate is evaluated: a breach is seen at most this late, so failures at
    /// the breach stay within N + rps × this.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration, requires = "slo")]
    pub evaluate_every: Duration,
    /// What a breach does (as `quiesce roll --on-breach`).
    #[arg(long, value_enum, default_value_t = Breach::Rollback, requires = "slo")]
    pub on_breach: Breach,
    /// The longest the gate holds the roll with `--on-breach hold` (the count never goes
    /// down: then the refresh is cancelled, outcome `held`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, requires = "slo")]
    pub hold_max: Duration,
    /// The face of quiesce that handles the lifecycle events: `drainer` (two replicas under
    /// the Lease, stopped and restarted) or `lambda` (quiesce-lambda's handler in invocations
    /// that end at their deadline, side by side on duplicates; restart, handover and race do
    /// not apply).
    #[arg(long, default_value = "drainer", requires = "chaos")]
    pub face: Face,
}

/// Runs the lab. Exit 0 when the run completed (in quiesce mode: every node replaced, no
/// request failed, every invariant held and, with `--slo`, the roll complete), 1 otherwise.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.rps > 0.0 && args.rps <= 5000.0,
        "--rps {}: expected a rate above 0 and at most 5000",
        args.rps
    );
    // Before the async runtime starts: its threads inherit the namespace (see
    // enter_private_netns), and the kernel removes it when this process ends, however it ends.
    let dataplane = match args.dataplane {
        Some(DataplaneArg::Userspace) => {
            eprintln!("dataplane: userspace (--dataplane userspace)");
            Dataplane::Userspace
        }
        Some(DataplaneArg::Kernel) => {
            let netns = quiesce_lab::kernel::enter_private_netns()
                .context("--dataplane kernel: the kernel data plane is not available")?;
            eprintln!("dataplane: kernel (private network namespace, iptables as kube-proxy)");
            Dataplane::Kernel(netns)
        }
        None => match quiesce_lab::kernel::enter_private_netns() {
            Ok(netns) => {
                eprintln!("dataplane: kernel (private network namespace, iptables as kube-proxy)");
                Dataplane::Kernel(netns)
            }
            Err(why) => {
                eprintln!(
                    "dataplane: userspace, because the kernel data plane is not available: {why}"
                );
                Dataplane::Userspace
            }
        },
    };
    let opts = LabOptions {
        nodes: args.nodes.into(),
        mode: match args.mode {
            ModeArg::Quiesce => Mode::Quiesce,
            ModeArg::Naive => Mode::Naive,
        },
        rps: args.rps,
        propagation_delay: args.propagation_delay,
        drain_delay: args.drain_delay,
        dataplane,
        chaos: args.chaos.then(|| ChaosOptions {
            seed: args.seed,
            classes: args.faults.clone(),
            face: args.face,
        }),
        gate: args.slo.map(|max_failed| GateOptions {
            max_failed,
            evaluate_every: args.evaluate_every,
            on_breach: match args.on_breach {
                Breach::Hold => OnBreach::Hold,
                Breach::Cancel => OnBreach::Cancel,
                Breach::Rollback => OnBreach::Rollback,
            },
            hold_max: args.hold_max,
        }),
        ..LabOptions::default()
    };
    if opts.mode == Mode::Quiesce && opts.drain_delay <= opts.propagation_delay {
        eprintln!(
            "note: --drain-delay {} is not longer than --propagation-delay {}: pods will stop \
             while clients still route to them, and requests will fail",
            humantime::format_duration(opts.drain_delay),
            humantime::format_duration(opts.propagation_delay)
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = std::time::Instant::now();
    let progress = |line: &str| {
        eprintln!("[{:5.1}s] {line}", started.elapsed().as_secs_f64());
    };
    eprintln!(
        "quiesce lab: replacing {} nodes in {:?} mode under {} rps",
        opts.nodes, args.mode, opts.rps
    );
    let (report, timeline) = runtime.block_on(quiesce_lab::run::run(&opts, &progress))?;
    if let Some(path) = &args.report {
        let summary = serde_json::to_value(&report)?;
        let html = quiesce_lab::report::render(&timeline.to_json(), &summary);
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => print_text(&mut out, &report)?,
    }
    let ok = report.mode == Mode::Naive
        || (report.nodes_replaced == report.nodes
            && report.requests.failed == 0
            && report.invariants.all_held()
            && report
                .roll
                .as_ref()
                .is_none_or(|r| r.report.outcome == Outcome::Complete));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(out: &mut impl Write, report: &LabReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<10} {:<10} {:>9} {:>9}  result",
        "old node", "new node", "launch", "drain"
    )?;
    for r in &report.replacements {
        writeln!(
            out,
            "{:<10} {:<10} {:>8.1}s {:>8.1}s  {}",
            r.old_node, r.new_node, r.launch_seconds, r.drain_seconds, r.result
        )?;
    }
    writeln!(out)?;
    for phase in &report.phases {
        writeln!(out, "{:<18} {:>7.1}s", phase.name, phase.seconds)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "nodes replaced: {} of {}",
        report.nodes_replaced, report.nodes
    )?;
    for (cause, n) in &report.requests.by_cause {
        writeln!(out, "failed by cause: {cause} {n}")?;
    }
    writeln!(
        out,
        "client retries (what Go's net/http retries by itself): {}",
        report.requests.retries
    )?;
    let mut exits: std::collections::BTreeMap<String, usize> = Default::default();
    for pod in &report.pods {
        let exit = pod.exit.as_deref().unwrap_or("running");
        let by = pod.stopped_by.as_deref().unwrap_or("-");
        *exits.entry(format!("{exit} ({by})")).or_default() += 1;
    }
    writeln!(
        out,
        "pod processes: {} ({}); exits: {}",
        report.pods.len(),
        match &report.pod_isolation {
            Isolation::PidNamespace => "each PID 1 of its own PID namespace".to_string(),
            Isolation::Subreaper(why) => format!("no PID namespaces: {why}"),
        },
        exits
            .iter()
            .map(|(e, n)| format!("{n}× {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(out, "dataplane: {}", report.dataplane)?;
    if let Some(chaos) = &report.chaos {
        print_chaos(out, chaos)?;
    }
    print_invariants(out, &report.invariants)?;
    if let Some(roll) = &report.roll {
        print_roll(out, roll)?;
    }
    if let Some(kernel) = &report.kernel {
        writeln!(
            out,
            "KUBE-SEP rules took {} connection attempts ({} connections opened); conntrack \
             kept {} on pods whose rule was removed",
            kernel.sep_packets, report.requests.connections, kernel.conntrack_kept
        )?;
    }
    writeln!(
        out,
        "requests: {} sent, {} failed",
        report.requests.sent, report.requests.failed
    )
}

/// How the gated roll ended, and what its gate saw.
fn print_roll(out: &mut impl Write, roll: &quiesce_lab::roll::LabRoll) -> std::io::Result<()> {
    let r = &roll.report;
    let outcome = serde_json::to_value(r.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    writeln!(
        out,
        "roll: {outcome}{}",
        r.reason
            .as_deref()
            .map(|w| format!(" — {w}"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "roll: {} old instances replaced; the gate was evaluated {} times, every {:.1}s, at {} rps",
        r.replaced.len(),
        r.evaluations,
        r.evaluate_every_seconds.unwrap_or_default(),
        roll.rps
    )
}

/// One line per invariant: held, or violated with the first violation.
fn print_invariants(out: &mut impl Write, invariants: &Invariants) -> std::io::Result<()> {
    for (name, verdict) in invariants.each() {
        match verdict.violations.as_slice() {
            [] => writeln!(out, "{name} held ({} checked)", verdict.checked)?,
            [first, rest @ ..] => {
                let more = if rest.is_empty() {
                    String::new()
                } else {
                    format!(" (and {} more)", rest.len())
                };
                writeln!(out, "{name} violated: {first}{more}")?
            }
        }
    }
    Ok(())
}

/// The faults that hit, by kind, and the drainer's stops.
fn print_chaos(out: &mut impl Write, chaos: &ChaosReport) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "chaos seed {}", chaos.seed)?;
    writeln!(out, "{:<32} {:>6}", "fault", "hits")?;
    for (kind, n) in &chaos.faults.injected {
        writeln!(out, "{kind:<32} {n:>6}")?;
    }
    writeln!(out, "{:<32} {:>6}", "total", chaos.faults.total)?;
    for r in &chaos.drainer.restarts {
        writeln!(
            out,
            "drainer {} stopped while {} {}{}",
            r.drainer,
            r.phase.name(),
            r.node,
            if r.handover {
                " (the standby took the Lease over)"
            } else {
                ""
            }
        )?;
    }
    writeln!(out)
}
