//! `quiesce drain` as a user runs it: the real binary against the sandbox through a kubeconfig.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::{Value, json};

struct Setup {
    sandbox: Sandbox,
    client: Client,
    kubeconfig: tempfile::NamedTempFile,
}

/// The default scenario on 3 nodes, with every Deployment rolled out.
async fn setup() -> Setup {
    let setup = sandbox(Scenario::default_for(3), 20.0).await;
    for name in ["api", "web"] {
        rolled_out(&setup.client, name).await;
    }
    setup
}

/// A sandbox running `scenario` `speed` times faster than real time, and a kubeconfig for it.
async fn sandbox(scenario: Scenario, speed: f64) -> Setup {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario,
        time_scale: TimeScale::new(speed).unwrap(),
        ..Default::default()
    })
    .await
    .expect("the sandbox starts");
    let client = sandbox.client();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    sandbox.write_kubeconfig(kubeconfig.path()).unwrap();
    Setup {
        sandbox,
        client,
        kubeconfig,
    }
}

async fn rolled_out(client: &Client, deployment: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api, deployment, conditions::is_deployment_completed()),
    )
    .await
    .unwrap_or_else(|_| panic!("deployment {deployment} rolled out within 60s"))
    .unwrap();
}

async fn api_pods(client: &Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items
}

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap()
}

/// Runs the binary with a deadline; returns exit code and stdout.
async fn quiesce(setup: &Setup, args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_quiesce"));
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(setup.kubeconfig.path())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("quiesce drain finished within 120s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_zero_only_once_the_single_replica_is_ready_elsewhere() {
    let setup = setup().await;
    let node = node_of(&api_pods(&setup.client).await[0]);

    let (code, stdout) = quiesce(
        &setup,
        &[
            "drain",
            &node,
            "--timeout",
            "60s",
            "--output",
            "json",
            "--taint",
            "quiesce.io/draining=true:NoSchedule",
            "--exclude-from-load-balancers",
        ],
    )
    .await;

    assert_eq!(code, 0, "{stdout}");
    let pods = api_pods(&setup.client).await;
    assert!(
        pods.len() == 1 && quiesce_core::gate::is_ready(&pods[0]) && node_of(&pods[0]) != node,
        "{pods:#?}"
    );
    let fenced = Api::<Node>::all(setup.client.clone())
        .get(&node)
        .await
        .unwrap();
    let labels = fenced.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("node.kubernetes.io/exclude-from-external-load-balancers"),
        Some(&"quiesce".to_string())
    );
    let taints = fenced.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "quiesce.io/draining" && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outcome"], "drained");
    let phases: Vec<(&str, f64)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["seconds"].as_f64().unwrap()))
        .collect();
    let names: Vec<&str> = phases.iter().map(|p| p.0).collect();
    assert_eq!(
        names,
        [
            "cordoned",
            "evictions-accepted",
            "pods-gone",
            "replacements-ready",
            "volumes-detached"
        ]
    );
    assert!(phases.windows(2).all(|w| w[0].1 <= w[1].1), "{phases:?}");
    assert!(report["pods"].as_array().unwrap().iter().any(|p| {
        p["pod"].as_str().unwrap().starts_with("default/api-") && p["stage"] == "replaced"
    }));
    setup.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_names_a_max_unavailable_zero_budget_and_changes_nothing() {
    let setup = setup().await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(setup.client.clone(), "default");
    let pdb = json!({"metadata": {"name": "api-frozen"}, "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "api"}}}});
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(pdb).unwrap(),
    )
    .await
    .unwrap();
    let before = api_pods(&setup.client).await;
    let node = node_of(&before[0]);

    let (code, stdout) = quiesce(&setup, &["drain", &node, "--dry-run"]).await;

    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("PDB default/api-frozen: maxUnavailable is 0"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run, nothing changed"), "{stdout}");
    let after = api_pods(&setup.client).await;
    assert_eq!(before[0].metadata.uid, after[0].metadata.uid);
    let n = Api::<Node>::all(setup.client.clone())
        .get(&node)
        .await
        .unwrap();
    assert_ne!(n.spec.and_then(|s| s.unschedulable), Some(true));
    setup.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_two() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiesce"))
        .args(["drain", "node-1", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout"));
}

/// Issue 12's scenario as a user ran it: a drain stopped by its timeout while `solo`'s pod was
/// still shutting down, then run again. The second run must wait for that pod and for `solo`
/// to be Ready elsewhere, and its report must show the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_run_again_waits_for_the_pod_the_first_run_left_terminating() {
    // Half speed: solo's 8 s shutdown takes 4 s of wall time, its 6 s startup 3 s.
    let setup = sandbox(Scenario::nodes_only(3), 2.0).await;
    let solo = json!({
        "metadata": {"name": "solo", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}}, "template": {
            "metadata": {"labels": {"app": "solo"}, "annotations": {
                "sandbox.quiesce.io/startup-delay": "6s", "sandbox.quiesce.io/shutdown-delay": "8s"}},
            "spec": {"terminationGracePeriodSeconds": 30,
                "containers": [{"name": "solo", "image": "solo:1"}]}}}
    });
    Api::<Deployment>::namespaced(setup.client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(solo).unwrap(),
        )
        .await
        .unwrap();
    rolled_out(&setup.client, "solo").await;
    let solo_pods = || async {
        Api::<Pod>::namespaced(setup.client.clone(), "default")
            .list(&ListParams::default().labels("app=solo"))
            .await
            .unwrap()
            .items
    };
    let node = node_of(&solo_pods().await[0]);

    let (code, stdout) = quiesce(&setup, &["drain", &node, "--timeout", "2s"]).await;
    assert_eq!(code, 1, "{stdout}");
    let old = solo_pods().await;
    assert!(
        old.iter()
            .any(|p| node_of(p) == node && p.metadata.deletion_timestamp.is_some()),
        "the first drain left solo's pod terminating: {old:#?}"
    );

    let (code, stdout) = quiesce(
        &setup,
        &["drain", &node, "--timeout", "90s", "--output", "json"],
    )
    .await;

    assert_eq!(code, 0, "{stdout}");
    let now = solo_pods().await;
    assert!(
        now.len() == 1
            && node_of(&now[0]) != node
            && quiesce_core::gate::is_ready(&now[0])
            && now[0].metadata.deletion_timestamp.is_none(),
        "exit 0 only once the old pod is gone and solo is Ready elsewhere: {now:#?}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let waited = report["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"].as_str().unwrap().starts_with("default/solo-"))
        .expect("the terminating pod is in the report");
    assert_eq!(waited["action"], "wait", "{stdout}");
    let gone = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pods-gone")
        .and_then(|p| p["seconds"].as_f64())
        .unwrap();
    assert!(
        gone > 1.0,
        "the report shows the wait for the old pod: {stdout}"
    );
    assert_eq!(report["gates"][0]["workload"]["name"], "solo", "{stdout}");
    assert_eq!(report["gates"][0]["state"], "whole", "{stdout}");
    setup.sandbox.shutdown().await;
}

/// A surge that cannot bring a pod up before the old one goes (strategy Recreate) is a blocker
/// with its fix, found by the plan before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_under_recreate_is_blocked_with_the_fix_and_changes_nothing() {
    let setup = setup().await;
    let deployments: Api<Deployment> = Api::namespaced(setup.client.clone(), "default");
    deployments
        .patch(
            "api",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}}),
            ),
        )
        .await
        .unwrap();
    rolled_out(&setup.client, "api").await;
    let before = api_pods(&setup.client).await;
    let node = node_of(&before[0]);

    let (code, stdout) = quiesce(&setup, &["drain", &node, "--surge"]).await;

    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("strategy Recreate") && stdout.contains("maxSurge >= 1"),
        "{stdout}"
    );
    assert!(stdout.contains("blocked, nothing changed"), "{stdout}");
    let after = api_pods(&setup.client).await;
    assert_eq!(before[0].metadata.uid, after[0].metadata.uid);
    let n = Api::<Node>::all(setup.client.clone())
        .get(&node)
        .await
        .unwrap();
    assert_ne!(n.spec.and_then(|s| s.unschedulable), Some(true));
    setup.sandbox.shutdown().await;
}
