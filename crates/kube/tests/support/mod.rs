//! Test cluster for the drain tests: the real v1.20 control plane (`quiesce-testbed`: API
//! server, scheduler, Deployment/ReplicaSet/disruption controllers) plus the one piece it lacks,
//! a kubelet stand-in that starts bound pods and finishes graceful deletions.
//!
//! The sandbox (issue 2) will provide its own simulated kubelets; until it lands, this keeps
//! every scheduling, PDB and eviction decision in the tests with the real Kubernetes code.

#![allow(dead_code)] // each test binary uses a different subset

pub mod late;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use quiesce_testbed::ControlPlane;
use serde_json::json;
use tokio::time::Instant;

/// A running control plane, its client and the kubelet stand-in.
pub struct Cluster {
    pub plane: ControlPlane,
    pub client: Client,
    kubelet: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

impl Cluster {
    /// Starts the control plane with `nodes` schedulable nodes `node-1` … `node-N` (4 CPU each).
    pub async fn start(nodes: usize) -> Cluster {
        let plane = ControlPlane::start()
            .await
            .expect("the v1.20 control plane starts");
        let client = plane.client().await.unwrap();
        for i in 1..=nodes {
            quiesce_testbed::kubelet::add_ready_node(&client, &format!("node-{i}"), "4")
                .await
                .unwrap();
        }
        let kubelet = quiesce_testbed::kubelet::spawn(client.clone());
        Cluster {
            plane,
            client,
            kubelet,
        }
    }

    /// Creates a Deployment of `replicas` pods labelled `app=NAME`, each requesting 100m CPU.
    pub async fn deployment(
        &self,
        name: &str,
        replicas: i32,
        annotations: serde_json::Value,
        pod_annotations: serde_json::Value,
    ) {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": pod_annotations.clone()},
                    "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": "100m"}}}]}
                }
            }
        });
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), "default");
        api.create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
        if pod_annotations
            .get(quiesce_testbed::kubelet::NEVER_READY_ANNOTATION)
            .is_none()
        {
            self.wait_ready(name, replicas as usize).await;
        } else {
            self.wait_bound(name, replicas as usize).await;
        }
    }

    /// Waits until `n` pods labelled `app=APP` are bound to nodes.
    pub async fn wait_bound(&self, app: &str, n: usize) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        wait_for(
            api,
            watcher::Config::default().labels(&format!("app={app}")),
            "pods bound",
            |pods: &[Pod]| {
                pods.iter()
                    .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
                    .count()
                    == n
            },
        )
        .await;
    }

    /// Creates a policy/v1beta1 PDB (the only version 1.20 serves) selecting `app=APP`.
    pub async fn pdb(&self, name: &str, app: &str, spec: serde_json::Value) {
        let gvk = GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), "default", &ApiResource::from_gvk(&gvk));
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": app}});
        let obj = json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
        api.create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap();
        // The disruption controller computes status asynchronously; wait for it.
        wait_for(
            api,
            watcher::Config::default(),
            "PDB status",
            |objs: &[DynamicObject]| {
                objs.iter().any(|o| {
                    o.name_any() == name
                        && o.data["status"]["observedGeneration"].as_i64().is_some()
                })
            },
        )
        .await;
    }

    /// Creates a bare pod (no controller) bound to `node`.
    pub async fn bare_pod(&self, name: &str, node: &str) {
        let pod = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]}
        });
        Api::<Pod>::namespaced(self.client.clone(), "default")
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Waits until `n` pods labelled `app=APP` are Ready.
    pub async fn wait_ready(&self, app: &str, n: usize) {
        ready(&self.client, "default", &format!("app={app}"), n).await;
    }

    /// The pods labelled `app=APP`.
    pub async fn pods(&self, app: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        api.list(&kube::api::ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items
    }

    /// Whether the node is cordoned.
    pub async fn unschedulable(&self, node: &str) -> bool {
        let n = Api::<Node>::all(self.client.clone())
            .get(node)
            .await
            .unwrap();
        n.spec.and_then(|s| s.unschedulable).unwrap_or(false)
    }
}

/// Watches until `done` holds for the listed objects; panics after 60 s.
pub async fn wait_for<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    mut done: impl FnMut(&[K]) -> bool,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut stream = watcher(api, config).default_backoff().boxed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut objects, mut pending) = (BTreeMap::new(), BTreeMap::new());
    let mut listed = false;
    loop {
        let event = match tokio::time::timeout_at(deadline, stream.try_next()).await {
            Ok(Ok(Some(event))) => event,
            other => panic!("{what}: not reached within 60s ({other:?})"),
        };
        match event {
            watcher::Event::Init => pending.clear(),
            watcher::Event::InitApply(o) => {
                pending.insert(o.uid().unwrap_or_default(), o);
            }
            watcher::Event::InitDone => {
                objects = std::mem::take(&mut pending);
                listed = true;
            }
            watcher::Event::Apply(o) => {
                objects.insert(o.uid().unwrap_or_default(), o);
            }
            watcher::Event::Delete(o) => {
                objects.remove(&o.uid().unwrap_or_default());
            }
        }
        let items: Vec<K> = objects.values().cloned().collect();
        if listed && done(&items) {
            return;
        }
    }
}

/// A sandbox running `scenario` `speed` times faster than real time.
pub async fn sandbox(
    scenario: quiesce_sandbox::scenario::Scenario,
    speed: f64,
) -> quiesce_sandbox::Sandbox {
    quiesce_sandbox::Sandbox::start(quiesce_sandbox::SandboxOptions {
        scenario,
        time_scale: quiesce_sandbox::time::TimeScale::new(speed).unwrap(),
        ..Default::default()
    })
    .await
    .expect("the sandbox starts")
}

/// A sandbox of `nodes` empty nodes at `speed`, and its client.
pub async fn sandbox_of(nodes: usize, speed: f64) -> (quiesce_sandbox::Sandbox, Client) {
    let sb = sandbox(
        quiesce_sandbox::scenario::Scenario::nodes_only(nodes),
        speed,
    )
    .await;
    let client = sb.client();
    (sb, client)
}

/// A gated drain of `node` with the default options, failing at `timeout`.
pub async fn run(
    client: &Client,
    node: &str,
    timeout: Duration,
) -> quiesce_kube::report::DrainReport {
    drain_with(
        client,
        &spec(node, quiesce_core::DrainOptions::default(), timeout),
    )
    .await
}

/// A gated drain of `node` with `options`, failing at `timeout`, changing nothing else.
pub fn spec(
    node: &str,
    options: quiesce_core::DrainOptions,
    timeout: Duration,
) -> quiesce_kube::engine::DrainSpec {
    quiesce_kube::engine::DrainSpec {
        node: node.into(),
        options,
        timeout,
        dry_run: false,
        uncordon_on_failure: false,
        replacement_gate: true,
        cordon: quiesce_kube::cluster::Cordon::default(),
    }
}

/// Runs `spec` through `KubeCluster` over `client`.
pub async fn drain_with(
    client: &Client,
    spec: &quiesce_kube::engine::DrainSpec,
) -> quiesce_kube::report::DrainReport {
    let cluster = quiesce_kube::kube_cluster::KubeCluster::new(client.clone());
    quiesce_kube::engine::drain(&cluster, spec, &|_, _| {})
        .await
        .expect("the cluster can be read")
}

/// Waits until `n` pods of `namespace` matching `selector` are Ready and not terminating.
pub async fn ready(client: &Client, namespace: &str, selector: &str, n: usize) {
    wait_for(
        Api::<Pod>::namespaced(client.clone(), namespace),
        watcher::Config::default().labels(selector),
        selector,
        |pods: &[Pod]| pods.iter().filter(|p| live_ready(p)).count() == n,
    )
    .await;
}

/// Ready and not terminating: what the gate (and a user) counts as serving.
pub fn live_ready(pod: &Pod) -> bool {
    quiesce_core::gate::is_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}
