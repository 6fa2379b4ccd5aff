//! `quiesce sandbox`: serve the local Kubernetes API until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `quiesce sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of worker nodes in the default scenario.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,

    /// Where to write a kubeconfig for kubectl and kube-rs clients.
    #[arg(long)]
    pub kubeconfig: PathBuf,
}

/// Runs the sandbox (filled in by the sandbox issue).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "the sandbox is not built yet (nodes={}, kubeconfig={})",
        args.nodes,
        args.kubeconfig.display()
    )
}
