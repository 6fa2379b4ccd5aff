//! A real Kubernetes control plane for the test suite.
//!
//! The sandbox is our own reimplementation of the API server; on its own it can only agree with
//! itself. This crate starts the real thing — etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler v1.20.2, built from Debian's source package by `scripts/control-plane-build` —
//! on loopback, so the same scenarios can run against both and expose where the sandbox lies.
//! There is no kubelet: [`kubelet`] is a stand-in, a client of the API like any other.

#[cfg(feature = "aws")]
pub mod aws;
mod certs;
pub mod chromium;
pub mod helm;
pub mod kubelet;
pub mod moto;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use process::ControlPlane;

/// Why the control plane could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are built by `scripts/control-plane-build` (run by `scripts/test`).
    #[error(
        "the v1.20 control-plane binaries are missing from {0}: run scripts/control-plane-build (scripts/test does)"
    )]
    MissingBinaries(PathBuf),
    /// A helper program (openssl, etcd) or a server process failed.
    #[error("{what}: {detail}")]
    Process {
        /// The step that failed.
        what: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// A server did not become ready in time; its log tail helps to see why.
    #[error("{server} was not ready within {waited:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// Which server.
        server: &'static str,
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// Filesystem trouble in the scratch directory.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The kubeconfig we wrote was not accepted by kube-rs.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// kube-rs could not build a client.
    #[error("client: {0}")]
    Client(#[from] kube::Error),
}

/// Where `scripts/control-plane-build` leaves the binaries (outside the work tree, so a fresh
/// clone on a reused machine does not rebuild them).
pub fn binaries_dir() -> PathBuf {
    let cache = std::env::var_os("QUIESCE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/quiesce")
        });
    cache.join("k8s-1.20/bin")
}

/// A kube-rs client from a kubeconfig we wrote ourselves.
///
/// kube 5 retries 429, 503 and 504 on its own by default (up to 15 times, honouring
/// `Retry-After`), which would hide exactly the answers these tests compare; it is switched off.
async fn client_for(kubeconfig: &Kubeconfig) -> Result<kube::Client, Error> {
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
            .await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}
