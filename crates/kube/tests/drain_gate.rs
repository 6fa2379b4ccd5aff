//! The replacement gate counts the right pods (issue 12): the workload's own (a canary sharing
//! its `app` label does not count), held to what it had before the drain but re-read while
//! waiting (a scale-down lowers the bar, a deletion ends the gate); and budgets are judged as
//! the API server applies them (a Pending pod is evicted whatever its budget says).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use quiesce_kube::report::{DrainReport, GateEnd, Outcome};
use quiesce_sandbox::Sandbox;
use serde_json::json;

async fn sandbox(nodes: usize) -> (Sandbox, Client) {
    support::sandbox_of(nodes, 4.0).await
}

use support::run;

async fn create_deployment(
    client: &Client,
    name: &str,
    replicas: i32,
    cpu: &str,
    pod_annotations: serde_json::Value,
) {
    let d = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}, "annotations": pod_annotations},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": name, "image": "app:1",
                "resources": {"requests": {"cpu": cpu}}}]}}}
    });
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
}

async fn wait_pods(client: &Client, app: &str, what: &str, done: impl FnMut(&[Pod]) -> bool) {
    support::wait_for(
        Api::<Pod>::namespaced(client.clone(), "default"),
        watcher::Config::default().labels(&format!("app={app}")),
        what,
        done,
    )
    .await;
}

use support::live_ready;

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

async fn pods(client: &Client, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_sharing_the_app_label_does_not_pass_the_gate() {
    let (sb, client) = sandbox(3).await;
    // web's replacement takes 8 s (2 s of wall time) to be Ready.
    create_deployment(
        &client,
        "web",
        1,
        "100m",
        json!({"sandbox.quiesce.io/startup-delay": "8s"}),
    )
    .await;
    wait_pods(&client, "web", "web Ready", |p| {
        p.iter().filter(|p| live_ready(p)).count() == 1
    })
    .await;
    let node = node_of(&pods(&client, "web").await[0]).to_string();
    let elsewhere = if node == "node-1" { "node-2" } else { "node-1" };
    // A canary: same `app=web` label, another owner, Ready on another node.
    let canary = json!({
        "metadata": {"name": "web-canary", "namespace": "default", "labels": {"app": "web", "track": "canary"}},
        "spec": {"nodeName": elsewhere, "containers": [{"name": "web", "image": "app:2"}]}
    });
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(canary).unwrap(),
        )
        .await
        .unwrap();
    wait_pods(&client, "web", "canary Ready", |p| {
        p.iter()
            .any(|p| p.metadata.name.as_deref() == Some("web-canary") && live_ready(p))
    })
    .await;

    let report = run(&client, &node, Duration::from_secs(60)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    let own_ready = pods(&client, "web")
        .await
        .into_iter()
        .filter(|p| p.metadata.name.as_deref() != Some("web-canary"))
        .filter(|p| live_ready(p) && node_of(p) != node)
        .count();
    assert_eq!(
        own_ready, 1,
        "web's own replacement is Ready, not only the canary: {report:#?}"
    );
    sb.shutdown().await;
}

/// Two 3-CPU replicas on two 4-CPU nodes and a third node cordoned (as if drained at the same
/// time): draining one node leaves its replacement Pending, so the gate waits — until the
/// test changes the workload under it.
async fn gate_held_by_a_pending_replacement(client: &Client) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let cordon = |on: bool| Patch::Merge(json!({"spec": {"unschedulable": on}}));
    nodes
        .patch("node-3", &PatchParams::default(), &cordon(true))
        .await
        .unwrap();
    create_deployment(client, "big", 2, "3", json!({})).await;
    wait_pods(client, "big", "big Ready", |p| {
        p.iter().filter(|p| live_ready(p)).count() == 2
    })
    .await;
    node_of(&pods(client, "big").await[0]).to_string()
}

/// Drains the node of `big` while its replacement is Pending, makes `change` once the evicted
/// pod is gone (the gate is waiting then), and returns the drain's report.
async fn drain_while_the_gate_waits<F: std::future::Future<Output = ()>>(
    change: impl FnOnce(Api<Deployment>) -> F,
) -> (Sandbox, DrainReport) {
    let (sb, client) = sandbox(3).await;
    let node = gate_held_by_a_pending_replacement(&client).await;
    let drain_client = client.clone();
    let drained = {
        let node = node.clone();
        tokio::spawn(async move { run(&drain_client, &node, Duration::from_secs(60)).await })
    };
    wait_pods(
        &client,
        "big",
        "the evicted pod gone and its replacement Pending",
        |p| !p.iter().any(|p| node_of(p) == node) && p.iter().any(|p| node_of(p).is_empty()),
    )
    .await;
    change(Api::namespaced(client.clone(), "default")).await;
    let report = tokio::time::timeout(Duration::from_secs(60), drained)
        .await
        .unwrap()
        .unwrap();
    (sb, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_during_the_gate_lowers_the_bar() {
    // An HPA's scale-down: 2 → 1. The one Available replica is now enough.
    let (sb, report) = drain_while_the_gate_waits(|big| async move {
        big.patch(
            "big",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    })
    .await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert_eq!(report.gates[0].available_before, 2, "{report:#?}");
    assert_eq!(report.gates[0].state, GateEnd::Whole, "{report:#?}");
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_deleted_during_the_gate_ends_its_gate() {
    let (sb, report) = drain_while_the_gate_waits(|big| async move {
        big.delete("big", &DeleteParams::default()).await.unwrap();
    })
    .await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert_eq!(report.gates[0].state, GateEnd::Deleted, "{report:#?}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("deleted during the drain")),
        "{report:#?}"
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_image_pull_back_off_under_min_available_one_is_not_impossible() {
    let (sb, client) = sandbox(2).await;
    create_deployment(
        &client,
        "broken",
        1,
        "100m",
        json!({"sandbox.quiesce.io/image-pull-fails": "true"}),
    )
    .await;
    wait_pods(&client, "broken", "ImagePullBackOff", |p| {
        p.iter().any(|p| {
            !node_of(p).is_empty()
                && p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some()
        })
    })
    .await;
    let pdb = json!({"metadata": {"name": "broken"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "broken"}}}});
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(pdb).unwrap(),
    )
    .await
    .unwrap();
    support::wait_for(
        pdbs,
        watcher::Config::default(),
        "PDB status",
        |b: &[PodDisruptionBudget]| {
            b.iter()
                .any(|b| b.status.as_ref().is_some_and(|s| s.expected_pods == 1))
        },
    )
    .await;
    let old = pods(&client, "broken").await;
    let node = node_of(&old[0]).to_string();

    let report = run(&client, &node, Duration::from_secs(30)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(
        !pods(&client, "broken")
            .await
            .iter()
            .any(|p| p.metadata.uid == old[0].metadata.uid),
        "the Pending pod was evicted past its budget, as the API server allows"
    );
    sb.shutdown().await;
}

/// A pod whose controller quiesce does not know (here an Argo Rollout's) is evicted but
/// reported as ungated, in the report and as a Warning Event on the Node, not passed silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_an_unknown_controller_are_reported_as_ungated() {
    let (sb, client) = sandbox(2).await;
    let pod = json!({
        "metadata": {"name": "canary-0", "namespace": "default", "ownerReferences": [{
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "canary",
            "uid": "6a3c1f1e-0000-4000-8000-000000000001", "controller": true}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}
    });
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap();

    let report = run(&client, "node-1", Duration::from_secs(30)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert_eq!(report.ungated.len(), 1, "{report:#?}");
    assert_eq!(report.ungated[0].workload.kind, "Rollout");
    assert!(report.gates.is_empty(), "{report:#?}");
    let events: Vec<String> =
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Ungated") && e.type_.as_deref() == Some("Warning")
            })
            .filter_map(|e| e.message)
            .collect();
    assert!(
        events.iter().any(|m| m.contains("Rollout/default/canary")),
        "{events:?}"
    );
    sb.shutdown().await;
}
