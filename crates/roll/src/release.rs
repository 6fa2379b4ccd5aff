//! `quiesce roll --release INSTANCE`: lets a retained instance go once a person fixed what
//! kept the drainer from draining it. The drainer uncordoned the node when it ABANDONed, so
//! pods may run there again: the node is drained first with the same engine (replacements
//! Ready elsewhere), and only a drained node's instance is terminated
//! (`TerminateInstanceInAutoScalingGroup` without decrement: the group replaced it already).

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use quiesce_core::DrainOptions;
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::Outcome;
use serde::Serialize;

use crate::aws::AwsRefresh;
use crate::refresh::{RETAINED, RefreshError};

/// Why a release did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Auto Scaling does not know the instance.
    #[error("instance {0} is in no Auto Scaling group (already terminated?)")]
    Unknown(String),
    /// The instance is not retained: nothing to release.
    #[error("instance {instance} is {state}, not {RETAINED}: only a retained instance is released")]
    NotRetained {
        /// The instance.
        instance: String,
        /// Its LifecycleState.
        state: String,
    },
    /// The node still cannot be drained.
    #[error("node {node} of {instance} still cannot be drained ({why}); the instance is kept")]
    Undrained {
        /// The instance.
        instance: String,
        /// Its node.
        node: String,
        /// The drain's blockers or error.
        why: String,
    },
    /// A Kubernetes call failed.
    #[error("draining the node of {instance}: {source}")]
    Kube {
        /// The instance.
        instance: String,
        /// The engine's error.
        source: quiesce_kube::Error,
    },
    /// An Auto Scaling call failed.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    /// The instance.
    pub instance: String,
    /// Its group.
    pub group: String,
    /// The node drained, if the cluster had it.
    pub node: Option<String>,
}

/// Drains the retained `instance`'s node (within `timeout`) and terminates the instance.
pub async fn release(
    aws: &AwsRefresh,
    client: kube::Client,
    instance: &str,
    timeout: Duration,
    options: DrainOptions,
) -> Result<Released, ReleaseError> {
    let (group, state) = aws
        .instance(instance)
        .await?
        .ok_or_else(|| ReleaseError::Unknown(instance.to_string()))?;
    if state != RETAINED {
        return Err(ReleaseError::NotRetained {
            instance: instance.to_string(),
            state,
        });
    }
    let nodes = quiesce_kube::reads::list(Api::<Node>::all(client.clone()), Default::default())
        .await
        .map_err(|source| ReleaseError::Kube {
            instance: instance.to_string(),
            source,
        })?;
    let cluster = KubeCluster::new(client);
    let node = nodes
        .iter()
        .find(|n| crate::instance_of(n) == Some(instance))
        .and_then(|n| n.metadata.name.clone());
    if let Some(node) = &node {
        let spec = DrainSpec {
            node: node.clone(),
            options,
            timeout,
            dry_run: false,
            uncordon_on_failure: true,
            cordon: Default::default(),
            replacement_gate: true,
        };
        let report =
            drain(&cluster, &spec, &|_, _| {})
                .await
                .map_err(|source| ReleaseError::Kube {
                    instance: instance.to_string(),
                    source,
                })?;
        if report.outcome != Outcome::Drained {
            let mut why: Vec<String> = report.blockers.iter().map(|b| b.to_string()).collect();
            why.extend(report.error);
            return Err(ReleaseError::Undrained {
                instance: instance.to_string(),
                node: node.clone(),
                why: why.join("; "),
            });
        }
    }
    aws.terminate(instance).await?;
    tracing::info!(%instance, %group, ?node, "released the retained instance");
    Ok(Released {
        instance: instance.to_string(),
        group,
        node,
    })
}
