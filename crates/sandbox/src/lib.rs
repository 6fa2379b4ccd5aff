//! `quiesce sandbox`: a local Kubernetes API server with a simulated cluster.
//!
//! - [`api`]: an in-memory API server over real HTTP (discovery, list/watch, patch, eviction
//!   with PodDisruptionBudget semantics, `Status` errors), so kubectl and kube-rs work unchanged;
//! - [`cluster`]: the simulated scheduler, kubelets and DaemonSet controller, in-process on the
//!   same store so every watch sees their changes;
//! - [`sim`]: the workload controllers (ReplicaSet, Deployment, StatefulSet, PDB status,
//!   EndpointSlice, garbage collector) as kube-rs clients of the API;
//! - [`scenario`]: the YAML that seeds nodes and workloads.
//!
//! [`Sandbox`] puts them together: the handle tests and `quiesce sandbox` use.

pub mod api;
pub mod cluster;
pub mod scenario;
pub mod sim;
pub mod time;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use api::{ApiServer, FaultInjector};
use cluster::{Cluster, ClusterOptions};
use scenario::{Scenario, ScenarioError};
use sim::workloads::WorkloadControllers;
use time::TimeScale;

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not start.
    #[error(transparent)]
    Api(#[from] api::Error),
    /// The scenario was refused.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The kubeconfig could not be written.
    #[error("writing kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How much faster than real time simulated waits run.
    pub time_scale: TimeScale,
    /// Nodes and objects to create at start.
    pub scenario: Scenario,
    /// Simulated time from a pod's start to Ready when the pod does not say.
    pub startup_delay: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            time_scale: TimeScale::REAL,
            scenario: Scenario::default(),
            startup_delay: ClusterOptions::default().startup_delay,
        }
    }
}

/// A running sandbox: the API server with the simulated cluster behind it.
pub struct Sandbox {
    api: ApiServer,
    cluster: Cluster,
    workloads: WorkloadControllers,
}

impl Sandbox {
    /// Starts the API, applies the scenario and starts the simulation.
    pub async fn start(opts: SandboxOptions) -> Result<Sandbox, Error> {
        let api = ApiServer::start(opts.listen).await?;
        opts.scenario.apply(&api.store())?;
        let cluster = Cluster::spawn(
            api.store(),
            ClusterOptions {
                time_scale: opts.time_scale,
                startup_delay: opts.startup_delay,
            },
        );
        let workloads = WorkloadControllers::spawn(api.client(), opts.time_scale);
        Ok(Sandbox {
            api,
            cluster,
            workloads,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.api.url()
    }

    /// A kube-rs client (kube's automatic 429 retry off, see [`ApiServer::client`]).
    pub fn client(&self) -> kube::Client {
        self.api.client()
    }

    /// Writes a kubeconfig that kubectl and kube-rs accept.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let fail = |message: String| Error::Kubeconfig {
            path: path.display().to_string(),
            message,
        };
        let yaml =
            serde_saphyr::to_string(&self.api.kubeconfig()).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, yaml).map_err(|e| fail(e.to_string()))
    }

    /// The API server's store: its watch history is the record an outside check (the chaos
    /// lab's invariants) reads the cluster's past from.
    pub fn store(&self) -> std::sync::Arc<api::Store> {
        self.api.store()
    }

    /// Arms injected API failures.
    pub fn faults(&self) -> FaultInjector {
        self.api.faults()
    }

    /// API requests served so far.
    pub fn request_count(&self) -> u64 {
        self.api.request_count()
    }

    /// Requests that carried [`api::AUDIT_HEADER`] (see there).
    pub fn audited(&self) -> Vec<api::Audited> {
        self.api.audited()
    }

    /// A handle on the audit log for a task that follows it (see [`api::ApiServer::audit_log`]).
    pub fn audit_log(&self) -> api::AuditLog {
        self.api.audit_log()
    }

    /// Stops the simulation, then the API.
    pub async fn shutdown(self) {
        self.workloads.stop().await;
        self.cluster.stop().await;
        self.api.shutdown().await;
    }
}
