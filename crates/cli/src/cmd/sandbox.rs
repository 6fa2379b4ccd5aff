//! `quiesce sandbox`: serve the local Kubernetes API with a simulated cluster until SIGINT or
//! SIGTERM. Prints exactly one line on stdout, `sandbox ready: <url>`, once the API answers
//! and the kubeconfig is written, so scripts can wait for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};

/// Arguments of `quiesce sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of worker nodes (in the default scenario; ignored with --scenario).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=5000))]
    pub nodes: u16,

    /// Where to write a kubeconfig for kubectl and kube-rs clients.
    #[arg(long)]
    pub kubeconfig: PathBuf,

    /// Address to serve the API on (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// A YAML scenario with nodes and objects, instead of the default workloads.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// Run simulated waits (pod startup, preStop, grace periods) this many times faster.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,

    /// Simulated time from a pod's start to Ready, when the pod does not say (e.g. `2s`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub startup_delay: std::time::Duration,
}

/// Runs the sandbox until a stop signal.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let time_scale = TimeScale::new(args.time_scale)
        .map_err(anyhow::Error::msg)
        .context("--time-scale")?;
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading scenario {}", path.display()))?;
            Scenario::from_yaml(&text, &path.display().to_string())?
        }
        None => Scenario::default_for(args.nodes.into()),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let sandbox = Sandbox::start(SandboxOptions {
            listen: args.listen,
            time_scale,
            scenario,
            startup_delay: args.startup_delay,
        })
        .await?;
        sandbox.write_kubeconfig(&args.kubeconfig)?;
        sandbox
            .client()
            .apiserver_version()
            .await
            .context("the sandbox API did not answer")?;
        println!("sandbox ready: {}", sandbox.url());
        super::shutdown_signal().await;
        tracing::info!("stopping the sandbox");
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
