//! The drain reads the node again once it is fenced (issue 12): a pod bound after the first,
//! unfenced read, or one that arrives on the cordoned node later (it tolerates
//! `node.kubernetes.io/unschedulable`, or is bound by name), is evicted too before the node is
//! called drained. A wrapper around the real `KubeCluster` creates the pod on the sandbox at
//! the chosen moment; every request still goes to the API server.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use quiesce_core::gate::GateState;
use quiesce_core::{DrainOptions, PodFacts, WorkloadRef};
use quiesce_kube::Error;
use quiesce_kube::cluster::{Cluster, Cordon, Eviction, GateTarget, Snapshot, Stuck};
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::events::Reason;
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::record::DrainRecord;
use quiesce_kube::report::{DrainReport, Outcome, Stage};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;
use tokio::time::Instant;

type Result<T> = std::result::Result<T, Error>;

/// When the late pod appears.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Right after the first (unfenced) read, before the cordon.
    AfterFirstRead,
    /// While the drain waits for replacements: after the fenced read.
    DuringGate,
}

struct Late {
    inner: KubeCluster,
    client: Client,
    moment: Moment,
    pod: serde_json::Value,
    fired: AtomicBool,
}

impl Late {
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
    async fn snapshot(&self) -> Result<Snapshot> {
        let snapshot = self.inner.snapshot().await;
        self.fire(Moment::AfterFirstRead).await;
        snapshot
    }
    async fn cordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.inner.cordon(node, cordon).await
    }
    async fn uncordon(&self, node: &str, cordon: &Cordon) -> Result<()> {
        self.inner.uncordon(node, cordon).await
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

/// Drains the node of a `web` pod of the default scenario; `pod` (a function of that node)
/// appears at `moment`.
async fn drain_with_late_pod(
    moment: Moment,
    pod: impl FnOnce(&str) -> serde_json::Value,
) -> (Sandbox, DrainReport) {
    let sb = Sandbox::start(SandboxOptions {
        scenario: Scenario::default_for(3),
        time_scale: TimeScale::new(20.0).unwrap(),
        ..Default::default()
    })
    .await
    .expect("the sandbox starts");
    let client = sb.client();
    support::wait_for(
        Api::<Pod>::namespaced(client.clone(), "default"),
        kube::runtime::watcher::Config::default().labels("app=web"),
        "web Ready",
        |pods: &[Pod]| {
            pods.iter()
                .filter(|p| quiesce_core::gate::is_ready(p))
                .count()
                == 3
        },
    )
    .await;
    let web: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    let node = web[0]
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap();
    let late = Late {
        inner: KubeCluster::new(client.clone()),
        client: client.clone(),
        moment,
        pod: pod(&node),
        fired: AtomicBool::new(false),
    };
    let spec = DrainSpec {
        node,
        options: DrainOptions {
            force: true,
            ..Default::default()
        },
        timeout: Duration::from_secs(60),
        dry_run: false,
        uncordon_on_failure: false,
        replacement_gate: true,
        cordon: Cordon::default(),
    };
    let report = drain(&late, &spec, &|_, _| {}).await.unwrap();
    assert!(
        late.fired.load(Ordering::SeqCst),
        "the late pod was created"
    );
    (sb, report)
}

async fn still_there(client: &Client, name: &str) -> bool {
    Api::<Pod>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

fn late_pod(name: &str, tolerates_cordon: bool, node: &str) -> serde_json::Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_after_the_first_read_is_evicted_from_the_fenced_read() {
    let (sb, report) =
        drain_with_late_pod(Moment::AfterFirstRead, |n| late_pod("late", false, n)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    let late = report
        .pods
        .iter()
        .find(|p| p.pod == "default/late")
        .unwrap_or_else(|| panic!("the late pod is in the report: {report:#?}"));
    assert_eq!(late.stage, Stage::Gone, "{report:#?}");
    assert!(!still_there(&sb.client(), "late").await);
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_tolerating_the_cordon_that_arrives_later_is_caught_by_the_last_read() {
    let (sb, report) =
        drain_with_late_pod(Moment::DuringGate, |n| late_pod("tolerant", true, n)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(
        report
            .pods
            .iter()
            .any(|p| p.pod == "default/tolerant" && p.stage == Stage::Gone),
        "{report:#?}"
    );
    assert!(!still_there(&sb.client(), "tolerant").await);
    sb.shutdown().await;
}
