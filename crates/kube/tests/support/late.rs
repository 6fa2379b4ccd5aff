//! A [`Cluster`] around the real `KubeCluster` that creates one pod on the API server at a
//! chosen moment of a drain (after the first read, or while the gate waits), for the tests of
//! the engine's re-reads. Every request still goes to the server under test.

use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use quiesce_core::gate::GateState;
use quiesce_core::{PodFacts, WorkloadRef};
use quiesce_kube::Error;
use quiesce_kube::cluster::{Cluster, Cordon, Eviction, GateTarget, Snapshot, Stuck};
use quiesce_kube::events::Reason;
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::record::DrainRecord;
use serde_json::json;
use tokio::time::Instant;

type Result<T> = std::result::Result<T, Error>;

/// When the late pod appears.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Right after the first (unfenced) read, before the cordon.
    AfterFirstRead,
    /// While the drain waits for replacements: after the fenced read.
    DuringGate,
}

pub struct Late {
    inner: KubeCluster,
    client: Client,
    moment: Moment,
    pod: serde_json::Value,
    fired: AtomicBool,
}

impl Late {
    /// Wraps a `KubeCluster` over `client`; `pod` is created at `moment`.
    pub fn new(client: Client, moment: Moment, pod: serde_json::Value) -> Late {
        Late {
            inner: KubeCluster::new(client.clone()),
            client,
            moment,
            pod,
            fired: AtomicBool::new(false),
        }
    }

    /// Whether the pod was created.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    async fn fire(&self, now: Moment) {
        if now == self.moment && !self.fired.swap(true, Ordering::SeqCst) {
            Api::<Pod>::namespaced(self.client.clone(), "default")
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(self.pod.clone()).unwrap(),
                )
                .await
                .expect("the late pod is created");
        }
    }
}

impl Cluster for Late {
    async fn snapshot(&self, node: &str) -> Result<Snapshot> {
        let snapshot = self.inner.snapshot(node).await;
        self.fire(Moment::AfterFirstRead).await;
        snapshot
    }
    async fn cordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.inner.cordon(node, cordon).await
    }
    async fn uncordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.inner.uncordon(node, cordon).await
    }
    async fn keep_fenced(&self, node: &str, cordon: &Cordon) -> std::convert::Infallible {
        self.inner.keep_fenced(node, cordon).await
    }
    async fn evict(&self, pod: &PodFacts) -> Result<Eviction> {
        self.inner.evict(pod).await
    }
    async fn restart(&self, workload: &WorkloadRef) -> Result<()> {
        self.inner.restart(workload).await
    }
    async fn write_record(&self, node: &str, mine: Option<&DrainRecord>) -> Result<()> {
        self.inner.write_record(node, mine).await
    }
    async fn wait_gone(
        &self,
        node: &str,
        uids: &[String],
        on_gone: &mut (dyn FnMut(&str) + Send),
        deadline: Instant,
    ) -> Result<Vec<Stuck>> {
        self.inner.wait_gone(node, uids, on_gone, deadline).await
    }
    async fn wait_replaced(
        &self,
        namespace: &str,
        targets: &[GateTarget],
        node: &str,
        on_end: &mut (dyn FnMut(&WorkloadRef, GateState) + Send),
        deadline: Instant,
    ) -> Result<()> {
        self.fire(Moment::DuringGate).await;
        self.inner
            .wait_replaced(namespace, targets, node, on_end, deadline)
            .await
    }
    async fn wait_volumes_detached(&self, node: &str, deadline: Instant) -> Result<()> {
        self.inner.wait_volumes_detached(node, deadline).await
    }
    async fn event(&self, node: &str, reason: Reason, message: &str) -> Result<()> {
        self.inner.event(node, reason, message).await
    }
}

/// A bare pod bound to `node` by name, optionally tolerating the cordon.
pub fn late_pod(name: &str, tolerates_cordon: bool, node: &str) -> serde_json::Value {
    let tolerations = if tolerates_cordon {
        json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "tolerations": tolerations, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "app:1"}]}
    })
}
