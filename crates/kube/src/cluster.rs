//! "The cluster" as the drain engine sees it: a handful of verbs, so the engine can run
//! against any API server (and any client library) that implements them.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use quiesce_core::capacity::Usage;
use quiesce_core::gate::GateState;
use quiesce_core::{ClusterView, PodFacts, WorkloadRef};
use tokio::time::Instant;

use crate::error::Result;
use crate::events::Reason;
use crate::record::DrainRecord;

/// What the planner reads about one node, fetched in one go just before planning: the
/// node's neighbourhood, not the cluster (see [`crate::reads`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every node.
    pub nodes: Vec<Node>,
    /// What every node's pods request.
    pub usage: Usage,
    /// The node's pods and the pods of their workloads.
    pub pods: Vec<Pod>,
    /// The PodDisruptionBudgets of the namespaces of the node's pods.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// The ReplicaSets of the node's pods and of their Deployments.
    pub replica_sets: Vec<ReplicaSet>,
    /// The Deployments of the node's pods.
    pub deployments: Vec<Deployment>,
    /// The StatefulSets of the node's pods.
    pub stateful_sets: Vec<StatefulSet>,
}

impl Snapshot {
    /// Borrows the snapshot as the planner's input for `node`, with the Deployments an earlier
    /// run already surged and the time of the read.
    pub fn view<'a>(
        &'a self,
        node: &'a str,
        surged: &'a [WorkloadRef],
        now: Timestamp,
    ) -> ClusterView<'a> {
        ClusterView {
            node,
            nodes: &self.nodes,
            pods: &self.pods,
            usage: &self.usage,
            pdbs: &self.pdbs,
            replica_sets: &self.replica_sets,
            deployments: &self.deployments,
            stateful_sets: &self.stateful_sets,
            surged,
            now,
        }
    }

    /// The node called `name`, if the cluster has it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    }
}

/// How the node is fenced off before anything is evicted.
#[derive(Debug, Clone, Default)]
pub struct Cordon {
    /// A taint to add as well (e.g. `quiesce.io/draining=true:NoSchedule`), as Karpenter does.
    pub taint: Option<String>,
    /// Add `node.kubernetes.io/exclude-from-external-load-balancers` so cloud load balancers
    /// stop sending new connections before the pods go (NTH issue #316, cited by Karpenter).
    pub exclude_from_load_balancers: bool,
    /// With [`Cordon::exclude_from_load_balancers`], also taint the node
    /// `ToBeDeletedByClusterAutoscaler:NoSchedule`: the AWS Load Balancer Controller
    /// deregisters a node on that taint (not on a cordon), and kube-proxy fails its `/healthz`
    /// for it (KEP-3836), which takes the node out of load balancers probing kube-proxy. Off
    /// where Cluster Autoscaler's own use of the taint must not be imitated.
    pub fence_taint: bool,
}

impl Cordon {
    /// Whether the drain taints the node with [`crate::fence::FENCE_TAINT`].
    pub fn fences(&self) -> bool {
        self.exclude_from_load_balancers && self.fence_taint
    }
}

/// What the API server said to one eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// 201: the pod is being deleted.
    Accepted,
    /// 404 (already gone) or 409 (UID precondition failed: a new pod took the name).
    Gone,
    /// 429: a PDB allows no disruption now; retry after the given time.
    Refused {
        /// The server's `retryAfterSeconds`, if any.
        retry_after: Option<Duration>,
        /// The server's message (names the budget).
        message: String,
    },
    /// 500 "more than one PodDisruptionBudget": needs a person, but may be fixed meanwhile.
    MultipleBudgets(String),
}

/// One workload the gate waits for: its own pods must be Available off the node, at least
/// `available_before` of them (fewer if it is scaled down meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateTarget {
    /// The workload.
    pub workload: WorkloadRef,
    /// Its recorded pre-drain Available count.
    pub available_before: i32,
}

/// A pod the engine waits for that is not going by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// `namespace/name`.
    pub pod: String,
    /// Why, from [`quiesce_core::terminating::stuck`].
    pub reason: String,
}

/// The verbs the drain engine needs. Waits are watches and end at `deadline`.
pub trait Cluster: Sync {
    /// Reads what planning `node`'s drain needs: nodes, what their pods request, and the
    /// node's pods with their budgets, workloads and those workloads' pods.
    fn snapshot(&self, node: &str) -> impl Future<Output = Result<Snapshot>> + Send;
    /// Marks the node unschedulable (plus `cordon`'s extras).
    fn cordon(&self, node: &str, cordon: &Cordon) -> impl Future<Output = Result<()>> + Send;
    /// Undoes [`Cluster::cordon`]: the load-balancer label goes only if the drain set it.
    fn uncordon(&self, node: &str, cordon: &Cordon) -> impl Future<Output = Result<()>> + Send;
    /// Keeps the fence taint on the cordoned node, applying it again whenever it disappears
    /// (Cluster Autoscaler clears `ToBeDeletedByClusterAutoscaler` taints at its start; the
    /// load balancer controller would then register the node again). Runs until dropped.
    fn keep_fenced(
        &self,
        node: &str,
        cordon: &Cordon,
    ) -> impl Future<Output = std::convert::Infallible> + Send;
    /// Posts one Eviction with the pod's UID as precondition.
    fn evict(&self, pod: &PodFacts) -> impl Future<Output = Result<Eviction>> + Send;
    /// Starts a rolling restart of a Deployment (what `kubectl rollout restart` does).
    fn restart(&self, workload: &WorkloadRef) -> impl Future<Output = Result<()>> + Send;
    /// Writes the drain's record on the Node (`None` removes it): `mine` is merged into the
    /// record as read fresh ([`DrainRecord::merge`]) and written with that read's
    /// resourceVersion as precondition, re-read on a conflict.
    fn write_record(
        &self,
        node: &str,
        mine: Option<&DrainRecord>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Watches the node's pods until none of `uids` is left, calling `on_gone` for each.
    /// Returns early with the pods that are stuck terminating (past their deletion deadline
    /// by [`quiesce_core::terminating::STUCK_AFTER`]), which will not go by themselves.
    fn wait_gone(
        &self,
        node: &str,
        uids: &[String],
        on_gone: &mut (dyn FnMut(&str) + Send),
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Stuck>>> + Send;
    /// Watches the pods and workloads of one namespace until each target (all in `namespace`)
    /// is whole off `node` or deleted ([`quiesce_core::gate::judge`], re-judged on every change
    /// and every few seconds, as minReadySeconds pass without events), calling `on_end` for
    /// each as it ends. One watch per kind per namespace keeps the request count low.
    fn wait_replaced(
        &self,
        namespace: &str,
        targets: &[GateTarget],
        node: &str,
        on_end: &mut (dyn FnMut(&WorkloadRef, GateState) + Send),
        deadline: Instant,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Watches VolumeAttachments until none is left for `node`.
    fn wait_volumes_detached(
        &self,
        node: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records a Kubernetes Event on the Node (blockers, progress people should see).
    fn event(
        &self,
        node: &str,
        reason: Reason,
        message: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}
