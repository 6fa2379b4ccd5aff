//! The real kubectl (v1.32, on every machine) against the sandbox: what an operator types
//! must behave as on a real cluster.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

struct Cluster {
    sandbox: Sandbox,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

async fn cluster(scenario: Scenario) -> Cluster {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario,
        time_scale: TimeScale::new(10.0).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        sandbox,
        kubeconfig,
        _dir: dir,
    }
}

impl Cluster {
    /// Runs kubectl to completion (its own `--request-timeout` bounds each call).
    async fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s")
            .args(args);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .expect("kubectl finished within 90s")
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    async fn wait<K, C>(&self, api: Api<K>, name: &str, cond: C)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        C: Condition<K>,
    {
        tokio::time::timeout(DEADLINE, await_condition(api, name, cond))
            .await
            .unwrap_or_else(|_| panic!("{name} reached the condition within {DEADLINE:?}"))
            .unwrap();
    }

    async fn deployment_ready(&self, name: &str, replicas: i32) {
        let api: Api<Deployment> = Api::namespaced(self.sandbox.client(), "default");
        self.wait(api, name, move |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                s.ready_replicas == Some(replicas)
                    && s.updated_replicas == Some(replicas)
                    && s.replicas == Some(replicas)
            })
        })
        .await;
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_and_pods() {
    let c = cluster(Scenario::default_for(3)).await;
    c.deployment_ready("web", 3).await;
    let nodes = stdout(&c.kubectl(&["get", "nodes"]).await);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{nodes}"
    );
    let pods = stdout(&c.kubectl(&["get", "pods", "-o", "wide"]).await);
    assert!(pods.lines().next().unwrap().contains("NODE"), "{pods}");
    let web_running = pods
        .lines()
        .filter(|l| l.starts_with("web-") && l.contains("1/1") && l.contains("Running"))
        .count();
    assert_eq!(web_running, 3, "{pods}");
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon() {
    let c = cluster(Scenario::nodes_only(2)).await;
    let nodes: Api<Node> = Api::all(c.sandbox.client());
    c.kubectl(&["cordon", "node-1"]).await;
    assert_eq!(
        nodes
            .get("node-1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
    let listing = stdout(&c.kubectl(&["get", "nodes"]).await);
    assert!(listing.contains("Ready,SchedulingDisabled"), "{listing}");
    c.kubectl(&["uncordon", "node-1"]).await;
    assert_ne!(
        nodes
            .get("node-1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_pods_to_other_nodes() {
    let c = cluster(Scenario::default_for(3)).await;
    c.deployment_ready("web", 3).await;
    c.deployment_ready("api", 1).await;
    c.kubectl(&[
        "drain",
        "node-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ])
    .await;
    c.deployment_ready("web", 3).await;
    c.deployment_ready("api", 1).await;
    let pods: Api<Pod> = Api::all(c.sandbox.client());
    let left = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    let names: Vec<String> = left
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("log-agent-")),
        "only the DaemonSet pod stays: {names:?}"
    );
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_holds_the_drain_until_the_replacement_is_ready() {
    let c = cluster(Scenario::nodes_only(3)).await;
    c.kubectl(&["cordon", "node-2"]).await;
    c.kubectl(&["cordon", "node-3"]).await;
    let client = c.sandbox.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "pair"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pair"}},
            "template": {"metadata": {"labels": {"app": "pair"}, "annotations": {"sandbox.quiesce.io/startup-delay": "10s"}},
                "spec": {"containers": [{"name": "a", "image": "a"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    let pdb = serde_json::from_value(json!({"metadata": {"name": "pair"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pair"}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    c.deployment_ready("pair", 2).await;
    c.kubectl(&["uncordon", "node-2"]).await;
    c.kubectl(&["uncordon", "node-3"]).await;
    let out = c
        .kubectl(&["drain", "node-1", "--ignore-daemonsets", "--timeout=60s"])
        .await;
    let log = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        log.contains("would violate the pod's disruption budget"),
        "the PDB blocked one eviction first:\n{log}"
    );
    assert!(log.contains("node/node-1 drained"), "{log}");
    c.deployment_ready("pair", 2).await;
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_and_status() {
    let c = cluster(Scenario::default_for(3)).await;
    c.deployment_ready("web", 3).await;
    let before: Api<Deployment> = Api::namespaced(c.sandbox.client(), "default");
    let generation = before.get("web").await.unwrap().metadata.generation;
    c.kubectl(&["rollout", "restart", "deployment/web"]).await;
    let out = c
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(
        stdout(&out).contains("successfully rolled out"),
        "{}",
        stdout(&out)
    );
    let after = before.get("web").await.unwrap();
    assert!(after.metadata.generation > generation);
    let rs = stdout(&c.kubectl(&["get", "replicasets", "-o", "name"]).await);
    assert_eq!(
        rs.lines().filter(|l| l.contains("web-")).count(),
        2,
        "old and new ReplicaSets: {rs}"
    );
    c.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_watch_streams_changes() {
    let c = cluster(Scenario::nodes_only(1)).await;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let pods: Api<Pod> = Api::namespaced(c.sandbox.client(), "default");
    let pod = serde_json::from_value(json!({"metadata": {"name": "watched"},
        "spec": {"containers": [{"name": "a", "image": "a"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("watched") && l.contains("Running"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                panic!("kubectl get pods -w never showed the pod Running; it printed {seen:?}")
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    c.sandbox.shutdown().await;
}
