//! [`Cluster`] over kube-rs: the only place that knows URLs, verbs and status codes.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use kube::{Api, Client};
use quiesce_core::{PodFacts, WorkloadRef, gate};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, Cordon, Eviction, Snapshot};
use crate::error::{Error, Result};
use crate::watch_set::wait_until;

/// The label that takes a node out of cloud load balancers' target sets.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// How long [`KubeCluster::snapshot`] keeps retrying a read the server failed.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// A [`Cluster`] backed by a kube-rs [`Client`].
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl KubeCluster {
    /// Wraps a client. Give it one with kube's own retry switched off
    /// (`Config::default_retry = false`): the engine retries with its own backoff and counts
    /// refusals, which kube's silent retries would hide.
    pub fn new(client: Client) -> Self {
        KubeCluster { client }
    }

    async fn list<K>(&self, api: Api<K>) -> Result<Vec<K>>
    where
        K: Clone + DeserializeOwned + std::fmt::Debug,
    {
        let deadline = Instant::now() + READ_PATIENCE;
        let mut backoff = Backoff::default();
        loop {
            match api.list(&ListParams::default()).await {
                Ok(list) => return Ok(list.items),
                Err(err) if transient(&err) && backoff.wait(None, deadline).await => {
                    tracing::warn!(%err, "list failed; retrying");
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// PDBs through policy/v1, or policy/v1beta1 on servers older than 1.21 (the fields the
    /// planner reads are the same in both versions).
    async fn pdbs(&self) -> Result<Vec<PodDisruptionBudget>> {
        match self
            .list(Api::<PodDisruptionBudget>::all(self.client.clone()))
            .await
        {
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {
                let gvk = GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget");
                let resource = ApiResource::from_gvk(&gvk);
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                let items = self.list(api).await?;
                items
                    .into_iter()
                    .map(|obj| {
                        let value = serde_json::to_value(obj).map_err(kube::Error::SerdeError)?;
                        Ok(serde_json::from_value(value).map_err(kube::Error::SerdeError)?)
                    })
                    .collect()
            }
            other => other,
        }
    }

    async fn patch_node(&self, node: &str, patch: serde_json::Value) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn desired_and_selector(
        &self,
        workload: &WorkloadRef,
    ) -> Result<(i32, Option<LabelSelector>)> {
        let client = self.client.clone();
        let ns = workload.namespace.as_str();
        let missing = || Error::NotFound(workload.to_string());
        Ok(match workload.kind.as_str() {
            "Deployment" => {
                let d = Api::<Deployment>::namespaced(client, ns)
                    .get_opt(&workload.name)
                    .await?
                    .ok_or_else(missing)?;
                let spec = d.spec.unwrap_or_default();
                (spec.replicas.unwrap_or(1), Some(spec.selector))
            }
            "StatefulSet" => {
                let s = Api::<StatefulSet>::namespaced(client, ns)
                    .get_opt(&workload.name)
                    .await?
                    .ok_or_else(missing)?;
                let spec = s.spec.unwrap_or_default();
                (spec.replicas.unwrap_or(1), Some(spec.selector))
            }
            "ReplicaSet" => {
                let r = Api::<ReplicaSet>::namespaced(client, ns)
                    .get_opt(&workload.name)
                    .await?
                    .ok_or_else(missing)?;
                let spec = r.spec.unwrap_or_default();
                (spec.replicas.unwrap_or(1), Some(spec.selector))
            }
            _ => (0, None),
        })
    }
}

/// Errors worth retrying: the server was overloaded or failed, or the connection did.
pub fn transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl Cluster for KubeCluster {
    async fn snapshot(&self) -> Result<Snapshot> {
        let c = &self.client;
        let (nodes, pods, pdbs, replica_sets, deployments) = futures::try_join!(
            self.list(Api::<Node>::all(c.clone())),
            self.list(Api::<Pod>::all(c.clone())),
            self.pdbs(),
            self.list(Api::<ReplicaSet>::all(c.clone())),
            self.list(Api::<Deployment>::all(c.clone())),
        )?;
        Ok(Snapshot {
            nodes,
            pods,
            pdbs,
            replica_sets,
            deployments,
        })
    }

    async fn cordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        let mut patch = json!({"spec": {"unschedulable": true}});
        if cordon.exclude_from_load_balancers {
            patch["metadata"] = json!({"labels": {EXCLUDE_LB_LABEL: "quiesce"}});
        }
        if let Some(taint) = &cordon.taint {
            let (taints, version) = self.taints_without(node, taint).await?;
            let mut taints = taints;
            taints.push(parse_taint(taint));
            patch["spec"]["taints"] = json!(taints);
            patch["metadata"]["resourceVersion"] = json!(version);
        }
        self.patch_node(node, patch).await
    }

    async fn uncordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        let mut patch = json!({"spec": {"unschedulable": null}});
        if cordon.exclude_from_load_balancers {
            patch["metadata"] = json!({"labels": {EXCLUDE_LB_LABEL: null}});
        }
        if let Some(taint) = &cordon.taint {
            let (taints, version) = self.taints_without(node, taint).await?;
            patch["spec"]["taints"] = json!(taints);
            patch["metadata"]["resourceVersion"] = json!(version);
        }
        self.patch_node(node, patch).await
    }

    async fn evict(&self, pod: &PodFacts) -> Result<Eviction> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        // No apiVersion/kind: policy/v1 and v1beta1 servers both accept the bare body
        // (research/test-infrastructure.md), and kube 5's `Api::evict` drops deleteOptions.
        let body = json!({
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "deleteOptions": {"preconditions": {"uid": pod.uid}},
        });
        match pods
            .create_subresource::<_, serde_json::Value>(
                "eviction",
                &pod.name,
                &PostParams::default(),
                &body,
            )
            .await
        {
            Ok(_) => Ok(Eviction::Accepted),
            Err(kube::Error::Api(status)) => match status.code {
                404 | 409 => Ok(Eviction::Gone),
                429 => Ok(Eviction::Refused {
                    retry_after: status
                        .details
                        .as_ref()
                        .map(|d| Duration::from_secs(d.retry_after_seconds.into()))
                        .filter(|d| !d.is_zero()),
                    message: status.message.clone(),
                }),
                500 if status.message.contains("more than one PodDisruptionBudget") => {
                    Ok(Eviction::MultipleBudgets(status.message.clone()))
                }
                _ => Err(kube::Error::Api(status).into()),
            },
            Err(err) => Err(err.into()),
        }
    }

    async fn restart(&self, workload: &WorkloadRef) -> Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &workload.namespace);
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        // The same annotation `kubectl rollout restart` sets, so tools recognise it.
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
        api.patch(
            &workload.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn wait_gone(
        &self,
        node: &str,
        uids: &[String],
        on_gone: &mut (dyn FnMut(&str) + Send),
        deadline: Instant,
    ) -> Result<()> {
        let mut remaining: BTreeSet<String> = uids.iter().cloned().collect();
        if remaining.is_empty() {
            return Ok(());
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        wait_until(
            api,
            config,
            deadline,
            "waiting for the evicted pods to go",
            |pods| {
                remaining.retain(|uid| {
                    let present = pods.contains_key(uid);
                    if !present {
                        on_gone(uid);
                    }
                    present
                });
                remaining.is_empty()
            },
        )
        .await
    }

    async fn wait_replaced(
        &self,
        namespace: &str,
        workloads: &[WorkloadRef],
        node: &str,
        on_replaced: &mut (dyn FnMut(&WorkloadRef) + Send),
        deadline: Instant,
    ) -> Result<()> {
        let found =
            futures::future::try_join_all(workloads.iter().map(|w| self.desired_and_selector(w)))
                .await?;
        let mut targets = Vec::new();
        for (workload, (desired, selector)) in workloads.iter().zip(found) {
            match selector {
                Some(selector) => targets.push((workload, desired, selector)),
                None => on_replaced(workload),
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("waiting for the workloads in {namespace} to be Ready off {node}");
        wait_until(api, watcher::Config::default(), deadline, &what, |pods| {
            targets.retain(|(workload, desired, selector)| {
                let theirs = pods.values().filter(|p| {
                    quiesce_core::selector::matches(Some(selector), p.metadata.labels.as_ref())
                });
                let done = gate::replaced(*desired, theirs, node);
                if done {
                    on_replaced(workload);
                }
                !done
            });
            targets.is_empty()
        })
        .await
    }

    async fn wait_volumes_detached(&self, node: &str, deadline: Instant) -> Result<()> {
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        let attached = |va: &VolumeAttachment| va.spec.node_name == node;
        match api.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::info!("this API server has no VolumeAttachments; nothing to wait for");
                return Ok(());
            }
            // Most drains have nothing attached: one list, no watch.
            Ok(list) if !list.items.iter().any(attached) => return Ok(()),
            Ok(_) => {}
            Err(err) if transient(&err) => {
                tracing::warn!(%err, "listing VolumeAttachments failed; watching instead")
            }
            Err(err) => return Err(err.into()),
        }
        wait_until(
            api,
            watcher::Config::default(),
            deadline,
            "waiting for volumes to detach",
            |vas| !vas.values().any(attached),
        )
        .await
    }

    async fn event(&self, node: &str, reason: &str, message: &str) -> Result<()> {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let event: Event = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{node}.quiesce-"), "namespace": "default"},
            "involvedObject": {"kind": "Node", "apiVersion": "v1", "name": node},
            "reason": reason,
            "message": message,
            "type": if reason.starts_with("Drained") { "Normal" } else { "Warning" },
            "source": {"component": "quiesce"},
            "reportingComponent": "quiesce",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }))
        .map_err(kube::Error::SerdeError)?;
        Api::<Event>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }
}

impl KubeCluster {
    async fn taints_without(
        &self,
        node: &str,
        taint: &str,
    ) -> Result<(Vec<serde_json::Value>, String)> {
        let wanted = parse_taint(taint);
        let current = Api::<Node>::all(self.client.clone()).get(node).await?;
        let version = current
            .metadata
            .resource_version
            .clone()
            .ok_or(Error::Incomplete {
                what: format!("node {node}"),
                field: "metadata.resourceVersion",
            })?;
        let taints = current
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !(t.key == wanted["key"] && t.effect == wanted["effect"]))
            .map(|t| json!(t))
            .collect();
        Ok((taints, version))
    }
}

/// `key=value:Effect` (or `key:Effect`) as a taint object; the effect defaults to NoSchedule.
fn parse_taint(spec: &str) -> serde_json::Value {
    let (kv, effect) = spec.rsplit_once(':').unwrap_or((spec, "NoSchedule"));
    match kv.split_once('=') {
        Some((key, value)) => json!({"key": key, "value": value, "effect": effect}),
        None => json!({"key": kv, "effect": effect}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_render_like_kubectl() {
        assert_eq!(
            parse_taint("quiesce.io/draining=true:NoExecute"),
            json!({"key": "quiesce.io/draining", "value": "true", "effect": "NoExecute"})
        );
        assert_eq!(
            parse_taint("dedicated"),
            json!({"key": "dedicated", "effect": "NoSchedule"})
        );
    }
}
