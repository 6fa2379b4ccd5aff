//! [`Cluster`] over kube-rs: the only place that knows URLs, verbs and status codes.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use quiesce_core::gate::{self, GateState, Workload};
use quiesce_core::{PodFacts, WorkloadRef, terminating};
use serde_json::json;
use tokio::time::Instant;

use crate::cluster::{Cluster, Cordon, Eviction, GateTarget, Snapshot, Stuck};
use crate::error::{Error, Result};
use crate::events::Reason;
use crate::fence;
use crate::reads;
use crate::record::{self, DrainRecord};
use crate::watch_set::{Tracked, drive, wait_until, watch};

pub use crate::fence::{EXCLUDE_LB_LABEL, FENCE_TAINT, LABEL_VALUE};
/// How many times a conditional Node write re-reads after a resourceVersion conflict before giving up.
const RECORD_ATTEMPTS: usize = 5;

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

    /// The node's pods and the budgets over them: what the lifecycle hook's deadline needs,
    /// read before the node is cordoned, so cheaper than [`Cluster::snapshot`].
    pub async fn on_node(&self, node: &str) -> Result<Snapshot> {
        reads::on_node(&self.client, node).await
    }
}

impl Cluster for KubeCluster {
    async fn snapshot(&self, node: &str) -> Result<Snapshot> {
        reads::snapshot(&self.client, node).await
    }

    async fn cordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.patch_conditionally(node, |current| Ok(fence::cordon_patch(current, cordon)))
            .await
    }

    async fn uncordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.lift(node, cordon, true).await
    }

    async fn keep_fenced(&self, node: &str, cordon: &Cordon) -> Infallible {
        if cordon.fences() {
            let api: Api<Node> = Api::all(self.client.clone());
            let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
            let mut nodes = watch(api, config);
            while let Some(event) = nodes.next().await {
                let current = match event {
                    Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(node, %err, "watching the fenced node failed; the watcher relists");
                        continue;
                    }
                };
                if !quiesce_core::capacity::is_cordoned(&current)
                    || fence::has_fence_taint(&current)
                {
                    continue;
                }
                tracing::warn!(
                    node,
                    taint = FENCE_TAINT,
                    "the fence taint was removed while the node is drained (Cluster Autoscaler \
                     clears it at its start); applying it again"
                );
                let put_back = self
                    .patch_conditionally(node, |current| {
                        Ok((quiesce_core::capacity::is_cordoned(current)
                            && !fence::has_fence_taint(current))
                        .then(|| fence::refence_patch(current)))
                    })
                    .await;
                if let Err(err) = put_back {
                    tracing::warn!(node, %err, "could not apply the fence taint again; the next change of the node tries again");
                }
            }
        }
        std::future::pending().await
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

    async fn write_record(&self, node: &str, mine: Option<&DrainRecord>) -> Result<()> {
        self.patch_conditionally(node, |current| {
            let value = match mine {
                None => serde_json::Value::Null,
                Some(mine) => {
                    let mut merged = DrainRecord::of(current)?.unwrap_or_else(DrainRecord::new);
                    merged.merge(mine);
                    json!(serde_json::to_string(&merged).map_err(kube::Error::SerdeError)?)
                }
            };
            Ok(Some(
                json!({"metadata": {"annotations": {record::ANNOTATION: value}}}),
            ))
        })
        .await
        .map_err(|err| match err {
            Error::Contended { node, why } => Error::Record { node, why },
            other => other,
        })
    }

    async fn wait_gone(
        &self,
        node: &str,
        uids: &[String],
        on_gone: &mut (dyn FnMut(&str) + Send),
        deadline: Instant,
    ) -> Result<Vec<Stuck>> {
        let mut remaining: BTreeSet<String> = uids.iter().cloned().collect();
        if remaining.is_empty() {
            return Ok(Vec::new());
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut stuck = Vec::new();
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
                let now = Timestamp::now();
                stuck = remaining
                    .iter()
                    .filter_map(|uid| pods.get(uid))
                    .filter_map(|pod| {
                        Some(Stuck {
                            pod: format!(
                                "{}/{}",
                                pod.metadata.namespace.as_deref().unwrap_or_default(),
                                pod.metadata.name.as_deref().unwrap_or_default()
                            ),
                            reason: terminating::stuck(pod, now)?,
                        })
                    })
                    .collect();
                if remaining.is_empty() || !stuck.is_empty() {
                    ControlFlow::Break(Ok(()))
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .await?;
        Ok(stuck)
    }

    async fn wait_replaced(
        &self,
        namespace: &str,
        targets: &[GateTarget],
        node: &str,
        on_end: &mut (dyn FnMut(&WorkloadRef, GateState) + Send),
        deadline: Instant,
    ) -> Result<()> {
        enum Change {
            Pod(watcher::Event<Pod>),
            ReplicaSet(watcher::Event<ReplicaSet>),
            Deployment(watcher::Event<Deployment>),
            StatefulSet(watcher::Event<StatefulSet>),
        }
        let mut targets: Vec<&GateTarget> = targets.iter().collect();
        if targets.is_empty() {
            return Ok(());
        }
        let c = &self.client;
        let config = watcher::Config::default;
        let stream = futures::stream::select_all([
            watch(Api::<Pod>::namespaced(c.clone(), namespace), config())
                .map(|e| e.map(Change::Pod))
                .boxed(),
            watch(
                Api::<ReplicaSet>::namespaced(c.clone(), namespace),
                config(),
            )
            .map(|e| e.map(Change::ReplicaSet))
            .boxed(),
            watch(
                Api::<Deployment>::namespaced(c.clone(), namespace),
                config(),
            )
            .map(|e| e.map(Change::Deployment))
            .boxed(),
            watch(
                Api::<StatefulSet>::namespaced(c.clone(), namespace),
                config(),
            )
            .map(|e| e.map(Change::StatefulSet))
            .boxed(),
        ])
        .boxed();
        let (mut pods, mut rs, mut deployments, mut sts) = (
            Tracked::default(),
            Tracked::default(),
            Tracked::default(),
            Tracked::default(),
        );
        let what = format!("waiting for the workloads in {namespace} to be whole off {node}");
        drive(stream, deadline, &what, |change| {
            match change {
                Some(Change::Pod(e)) => pods.apply(e),
                Some(Change::ReplicaSet(e)) => rs.apply(e),
                Some(Change::Deployment(e)) => deployments.apply(e),
                Some(Change::StatefulSet(e)) => sts.apply(e),
                None => {}
            }
            if !(pods.listed() && rs.listed() && deployments.listed() && sts.listed()) {
                return ControlFlow::Continue(());
            }
            let (pods, rs, deployments, sts) = (
                pods.to_vec(),
                rs.to_vec(),
                deployments.to_vec(),
                sts.to_vec(),
            );
            let now = Timestamp::now();
            targets.retain(|target| {
                let spec = Workload::find(&target.workload, &deployments, &sts, &rs);
                let state = gate::judge(
                    &target.workload,
                    target.available_before,
                    spec,
                    &pods,
                    &rs,
                    node,
                    now,
                );
                let ended = !matches!(state, GateState::Waiting { .. });
                if ended {
                    on_end(&target.workload, state);
                }
                !ended
            });
            if targets.is_empty() {
                ControlFlow::Break(Ok(()))
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
    }

    async fn wait_volumes_detached(&self, node: &str, deadline: Instant) -> Result<()> {
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        let attached = |va: &VolumeAttachment| va.spec.node_name == node;
        // VolumeAttachments have no field selector for their node: paged, counted as read.
        let count = reads::fold(
            api.clone(),
            ListParams::default(),
            || 0usize,
            |n, va| *n += usize::from(attached(&va)),
        );
        match count.await {
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {
                tracing::info!("this API server has no VolumeAttachments; nothing to wait for");
                return Ok(());
            }
            // Most drains have nothing attached: one list, no watch.
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(err) if err.is_transient() => {
                tracing::warn!(%err, "listing VolumeAttachments failed; watching instead")
            }
            Err(err) => return Err(err),
        }
        wait_until(
            api,
            watcher::Config::default(),
            deadline,
            "waiting for volumes to detach",
            |vas| {
                if vas.values().any(attached) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(Ok(()))
                }
            },
        )
        .await
    }

    async fn event(&self, node: &str, reason: Reason, message: &str) -> Result<()> {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let event: Event = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{node}.quiesce-"), "namespace": "default"},
            "involvedObject": {"kind": "Node", "apiVersion": "v1", "name": node},
            "reason": reason.as_str(),
            "message": message,
            "type": reason.kind(),
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
    /// The Node and the resourceVersion to send as a write's precondition.
    async fn node_and_version(&self, node: &str) -> Result<(Node, String)> {
        let current = Api::<Node>::all(self.client.clone()).get(node).await?;
        let version = current
            .metadata
            .resource_version
            .clone()
            .ok_or(Error::Incomplete {
                what: format!("node {node}"),
                field: "metadata.resourceVersion",
            })?;
        Ok((current, version))
    }

    /// Takes the drain's fence off the node (its load-balancer label if ours, the fence taint,
    /// the extra taint) and leaves it cordoned: for a node an operator had cordoned before the
    /// drain, which stays cordoned when the drain gives up but must not stay out of its load
    /// balancers for it.
    pub async fn unfence(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.lift(node, cordon, false).await
    }

    /// Removes the fence, and the cordon too if `uncordon`.
    async fn lift(&self, node: &str, cordon: &Cordon, uncordon: bool) -> Result<()> {
        self.patch_conditionally(node, |current| {
            Ok(fence::lift_patch(current, cordon, uncordon))
        })
        .await
    }

    /// Merge-patches the node with what `build` makes of its current state (`None`: nothing to
    /// change), with the read's resourceVersion as precondition (apimachinery's optimistic
    /// concurrency for patches: 409 if the Node changed since the read). Taints are a list a
    /// merge patch replaces whole, and the record is merged from what was read: neither may
    /// drop what another writer added meanwhile. Re-read and rebuilt on a conflict.
    async fn patch_conditionally(
        &self,
        node: &str,
        build: impl Fn(&Node) -> Result<Option<serde_json::Value>>,
    ) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for _ in 0..RECORD_ATTEMPTS {
            let (current, version) = self.node_and_version(node).await?;
            let Some(mut patch) = build(&current)? else {
                return Ok(());
            };
            patch["metadata"]["resourceVersion"] = json!(version);
            match nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(node, "node changed meanwhile; re-reading");
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::Contended {
            node: node.to_string(),
            why: format!("the Node kept changing; {RECORD_ATTEMPTS} writes met a conflict"),
        })
    }
}
