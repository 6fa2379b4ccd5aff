//! Holding the roll: the gate the drainer honours ([`quiesce_aws::roll_gate`]), written on
//! the Nodes of the group's instances. Red: a terminate hook that arrives is heartbeated and
//! not drained, so the refresh cannot take the next instance; green: the annotation is
//! removed.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams};
use quiesce_aws::roll_gate::{ANNOTATION, RollGate};
use serde_json::json;

/// Every Kubernetes call of the gate takes at most this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Tries of one node's write when other writers (the drainer, the kubelet) got in between.
const CONFLICT_RETRIES: usize = 8;

/// A Kubernetes call of the gate that failed.
#[derive(Debug, thiserror::Error)]
#[error("roll gate: {doing}: {message}")]
pub struct GateError {
    /// What it was doing.
    pub doing: String,
    /// Why it failed.
    pub message: String,
}

/// Writes the gate of one roll.
#[derive(Clone)]
pub struct Gate {
    api: Api<Node>,
    roll: String,
}

async fn bounded<T>(
    doing: String,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, GateError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(GateError {
            doing,
            message: e.to_string(),
        }),
        Err(_) => Err(GateError {
            doing,
            message: format!("no answer within {CALL_TIMEOUT:?}"),
        }),
    }
}

impl Gate {
    /// The gate of the roll of group `roll` in the cluster of `client`.
    pub fn new(client: kube::Client, roll: &str) -> Gate {
        Gate {
            api: Api::all(client),
            roll: roll.to_string(),
        }
    }

    /// The nodes of `instances` (by providerID).
    async fn nodes_of(&self, instances: &[String]) -> Result<Vec<Node>, GateError> {
        let nodes = bounded(
            "listing nodes".into(),
            self.api.list(&ListParams::default()),
        )
        .await?;
        Ok(nodes
            .items
            .into_iter()
            .filter(|n| crate::instance_of(n).is_some_and(|id| instances.iter().any(|i| i == id)))
            .collect())
    }

    /// Turns the gate red on the nodes of `instances` until `hold_max` from now, saying why.
    pub async fn hold(
        &self,
        instances: &[String],
        reason: &str,
        hold_max: Duration,
    ) -> Result<(), GateError> {
        let until = Timestamp::now()
            .checked_add(SignedDuration::try_from(hold_max).unwrap_or(SignedDuration::MAX))
            .unwrap_or_else(|_| Timestamp::now());
        let gate = RollGate {
            hold: true,
            reason: reason.to_string(),
            until: until.to_string(),
            roll: self.roll.clone(),
        };
        self.write(instances, Some(gate.to_annotation())).await
    }

    /// Opens the gate on the nodes of `instances`.
    pub async fn open(&self, instances: &[String]) -> Result<(), GateError> {
        self.write(instances, None).await
    }

    async fn write(&self, instances: &[String], value: Option<String>) -> Result<(), GateError> {
        for mut node in self.nodes_of(instances).await? {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            for attempt in 1..=CONFLICT_RETRIES {
                let present = node
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ANNOTATION));
                if value.is_none() && !present {
                    break;
                }
                // Conditional on the resourceVersion read, as every writer of the Node's
                // annotations (the drainer's record) is: a conflict re-reads and tries again.
                let patch = json!({"metadata": {
                    "resourceVersion": node.metadata.resource_version,
                    "annotations": {ANNOTATION: value},
                }});
                let doing = format!("writing the gate on {name}");
                match tokio::time::timeout(
                    CALL_TIMEOUT,
                    self.api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await
                {
                    Ok(Ok(_)) => break,
                    Ok(Err(kube::Error::Api(e))) if e.code == 409 && attempt < CONFLICT_RETRIES => {
                        node = bounded(doing, self.api.get(&name)).await?;
                    }
                    Ok(Err(e)) => {
                        return Err(GateError {
                            doing,
                            message: e.to_string(),
                        });
                    }
                    Err(_) => {
                        return Err(GateError {
                            doing,
                            message: format!("no answer within {CALL_TIMEOUT:?}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
