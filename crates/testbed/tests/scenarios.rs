//! One scenario suite, two back ends: every scenario runs against the sandbox and against the
//! real v1.20 control plane (with the kubelet stand-in), with the same assertions. Where 1.20
//! behaves differently from current Kubernetes, the scenario says so instead of skipping.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::discovery::Discovery;
use kube::runtime::wait::{Condition, await_condition};
use quiesce_core::DrainOptions;
use quiesce_kube::cluster::Cordon;
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::Outcome;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use quiesce_testbed::{ControlPlane, kubelet};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(90);

enum Backend {
    Sandbox {
        sandbox: Sandbox,
        kubeconfig: PathBuf,
        _dir: tempfile::TempDir,
    },
    Real {
        plane: Box<ControlPlane>,
        client: kube::Client,
        kubelet: tokio::task::JoinHandle<()>,
    },
}

impl Backend {
    async fn sandbox(nodes: usize) -> Backend {
        let sandbox = Sandbox::start(SandboxOptions {
            scenario: Scenario::nodes_only(nodes),
            time_scale: TimeScale::new(10.0).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sandbox.write_kubeconfig(&kubeconfig).unwrap();
        Backend::Sandbox {
            sandbox,
            kubeconfig,
            _dir: dir,
        }
    }

    async fn real(nodes: usize) -> Backend {
        let plane = ControlPlane::start()
            .await
            .expect("the v1.20 control plane starts");
        let client = plane.client().await.unwrap();
        for i in 1..=nodes {
            kubelet::add_ready_node(&client, &format!("node-{i}"), "4")
                .await
                .unwrap();
        }
        let kubelet = kubelet::spawn(client.clone());
        Backend::Real {
            plane: Box::new(plane),
            client,
            kubelet,
        }
    }

    fn client(&self) -> kube::Client {
        match self {
            Backend::Sandbox { sandbox, .. } => sandbox.client(),
            Backend::Real { client, .. } => client.clone(),
        }
    }

    fn kubeconfig(&self) -> &Path {
        match self {
            Backend::Sandbox { kubeconfig, .. } => kubeconfig,
            Backend::Real { plane, .. } => plane.kubeconfig_path(),
        }
    }

    async fn stop(self) {
        match self {
            Backend::Sandbox { sandbox, .. } => sandbox.shutdown().await,
            Backend::Real { kubelet, .. } => kubelet.abort(),
        }
    }

    async fn create(&self, obj: Value) {
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                obj["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let kind = obj["kind"].as_str().unwrap();
        let resource = if kind == "PodDisruptionBudget" {
            pdb_resource(&self.client()).await
        } else {
            ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(&group, &version, kind))
        };
        let mut obj = obj;
        obj["apiVersion"] = json!(resource.api_version);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client(), "default", &resource);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap();
    }

    async fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=20s")
            .args(args);
        tokio::time::timeout(DEADLINE, cmd.output())
            .await
            .expect("kubectl finished in time")
            .unwrap()
    }

    async fn wait<K, C>(&self, api: Api<K>, name: &str, cond: C)
    where
        K: kube::Resource
            + Clone
            + std::fmt::Debug
            + k8s_openapi::serde::de::DeserializeOwned
            + Send
            + 'static,
        C: Condition<K>,
    {
        tokio::time::timeout(DEADLINE, await_condition(api, name, cond))
            .await
            .unwrap_or_else(|_| panic!("{name}: condition not reached within {DEADLINE:?}"))
            .unwrap();
    }

    async fn pods_on(&self, node: &str) -> Vec<Pod> {
        let pods: Api<Pod> = Api::all(self.client());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        pods.list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }
}

/// PodDisruptionBudgets by discovery: policy/v1 on current servers, v1beta1 on 1.20.
async fn pdb_resource(client: &kube::Client) -> ApiResource {
    let discovery = Discovery::new(client.clone())
        .filter(&["policy"])
        .run()
        .await
        .unwrap();
    let group = discovery.get("policy").unwrap();
    group
        .resources_by_stability()
        .into_iter()
        .find(|(r, _)| r.plural == "poddisruptionbudgets")
        .unwrap()
        .0
}

fn template(app: &str, extra: Value) -> Value {
    json!({"metadata": {"labels": {"app": app}, "annotations": {"sandbox.quiesce.io/startup-delay": "500ms"}},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "app", "image": "app:1",
            "resources": {"requests": {"cpu": "100m"}}}], "tolerations": extra}})
}

fn deployment_ready(replicas: i32) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.ready_replicas == Some(replicas)
                && s.updated_replicas == Some(replicas)
                && s.replicas == Some(replicas)
        })
    }
}

/// A node with a Deployment (under a PDB), a StatefulSet and a DaemonSet, drained by the real
/// kubectl: the Deployment and StatefulSet pods move, the DaemonSet pod stays.
async fn kubectl_drain_moves_workloads_and_leaves_the_daemonset(b: Backend) {
    b.kubectl(&["cordon", "node-2"]).await;
    b.kubectl(&["cordon", "node-3"]).await;
    b.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template("web", json!([]))}})).await;
    b.create(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}})).await;
    b.create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db", json!([]))}})).await;
    b.create(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template("agent", json!([]))}})).await;
    let deployments: Api<Deployment> = Api::namespaced(b.client(), "default");
    b.wait(deployments.clone(), "web", deployment_ready(2))
        .await;
    let sts: Api<StatefulSet> = Api::namespaced(b.client(), "default");
    b.wait(sts.clone(), "db", |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.ready_replicas == Some(1))
    })
    .await;
    let ds: Api<DaemonSet> = Api::namespaced(b.client(), "default");
    b.wait(ds, "agent", |d: Option<&DaemonSet>| {
        d.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.number_ready == 3)
    })
    .await;
    b.kubectl(&["uncordon", "node-2"]).await;
    b.kubectl(&["uncordon", "node-3"]).await;

    let out = b
        .kubectl(&[
            "drain",
            "node-1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=80s",
        ])
        .await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl drain failed:\n{log}");
    assert!(log.contains("node/node-1 drained"), "{log}");

    b.wait(deployments, "web", deployment_ready(2)).await;
    b.wait(sts, "db", |s: Option<&StatefulSet>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.ready_replicas == Some(1))
    })
    .await;
    let left: Vec<String> = b
        .pods_on("node-1")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(left.len(), 1, "only the DaemonSet pod stays: {left:?}");
    assert!(left[0].starts_with("agent-"), "{left:?}");
    let node: Node = Api::all(b.client()).get("node-1").await.unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true));
    b.stop().await;
}

/// quiesce's own drain of a 1-replica Deployment returns only once the replacement is Ready on
/// another node.
async fn quiesce_drain_waits_for_the_replacement(b: Backend) {
    b.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "solo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}}, "template": template("solo", json!([]))}})).await;
    let deployments: Api<Deployment> = Api::namespaced(b.client(), "default");
    b.wait(deployments, "solo", deployment_ready(1)).await;
    let pods: Api<Pod> = Api::namespaced(b.client(), "default");
    let before = pods
        .list(&ListParams::default().labels("app=solo"))
        .await
        .unwrap()
        .items;
    let node = before[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    let spec = DrainSpec {
        node: node.clone(),
        options: DrainOptions::default(),
        timeout: Duration::from_secs(60),
        dry_run: false,
        uncordon_on_failure: false,
        replacement_gate: true,
        cordon: Cordon::default(),
    };
    let report = drain(&KubeCluster::new(b.client()), &spec, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(report.phase("replacements-ready").is_some());
    let after = pods
        .list(&ListParams::default().labels("app=solo"))
        .await
        .unwrap()
        .items;
    let live: Vec<&Pod> = after
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 1);
    assert!(
        quiesce_core::gate::is_ready(live[0]),
        "the replacement is Ready when drain returns"
    );
    assert_ne!(
        live[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some(node.as_str())
    );
    b.stop().await;
}

/// Evicting a Pending pod ignores its budget (upstream `canIgnorePDB`) — on 1.20 and on current
/// Kubernetes alike, which is why drains treat unscheduled pods as safe to remove.
async fn a_pending_pod_bypasses_its_budget(b: Backend) {
    b.create(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "stuck"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "stuck"}}}})).await;
    let pods: Api<Pod> = Api::namespaced(b.client(), "default");
    let pod = json!({"metadata": {"name": "stuck", "labels": {"app": "stuck"}},
        "spec": {"nodeSelector": {"no-such-label": "x"}, "containers": [{"name": "a", "image": "a"}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let evicted = pods
        .create_subresource::<Value, Value>(
            "eviction",
            "stuck",
            &PostParams::default(),
            &json!({"metadata": {"name": "stuck"}}),
        )
        .await;
    assert!(
        evicted.is_ok(),
        "a Pending pod is evicted despite maxUnavailable 0: {evicted:?}"
    );
    b.stop().await;
}

macro_rules! on_both {
    ($scenario:ident, $nodes:expr) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sandbox() {
                super::$scenario(super::Backend::sandbox($nodes).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kube_v1_20() {
                super::$scenario(super::Backend::real($nodes).await).await;
            }
        }
    };
}

on_both!(kubectl_drain_moves_workloads_and_leaves_the_daemonset, 3);
on_both!(quiesce_drain_waits_for_the_replacement, 2);
on_both!(a_pending_pod_bypasses_its_budget, 1);
