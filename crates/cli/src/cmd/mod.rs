//! One module per subcommand: argument definitions next to the code that runs them, and the
//! two things several share (finding the cluster, waiting for a stop signal).

pub mod audit;
pub mod drain;
pub mod drainer;
pub mod lab;
pub mod roll;
pub mod sandbox;

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::signal::unix::{SignalKind, signal};

/// The cluster config from `--kubeconfig`, else $KUBECONFIG, ~/.kube/config or in-cluster.
/// kube's own retries of 429/503/504 are off: our callers retry with their own backoff and
/// count refusals, which hidden retries would swallow.
pub async fn kube_config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig (give --kubeconfig)")?,
    };
    config.default_retry = false;
    Ok(config)
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(%e, "cannot install signal handlers; stopping");
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM"),
        _ = interrupt.recv() => tracing::info!("SIGINT"),
    }
}
