//! The drain engine against the sandbox: its default workloads (a DaemonSet, a StatefulSet,
//! Deployments with and without a PDB), plan-time blockers, and injected API failures.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use quiesce_core::{DrainOptions, Verdict};
use quiesce_kube::report::{DrainReport, Outcome, Stage};
use quiesce_sandbox::Sandbox;
use quiesce_sandbox::api::FaultKind;
use quiesce_sandbox::scenario::Scenario;
use serde_json::json;
use support::ready;

async fn sandbox(scenario: Scenario) -> Sandbox {
    support::sandbox(scenario, 20.0).await
}

async fn run(client: Client, node: &str, timeout: Duration) -> DrainReport {
    support::drain_with(
        &client,
        &support::spec(node, DrainOptions::default(), timeout),
    )
    .await
}

/// Creates a Deployment `app=NAME` of `replicas` pods requesting `cpu` each, and waits until
/// they are Ready.
async fn deployment(client: &Client, name: &str, replicas: i32, cpu: &str) {
    let deployment = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": name, "image": "app:1", "resources": {"requests": {"cpu": cpu}}}]}}}
    });
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap();
    ready(client, "default", &format!("app={name}"), replicas as usize).await;
}

async fn pods_on(client: &Client, node: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::all(client.clone());
    api.list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap()
        .items
}

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap()
}

async fn default_cluster_ready() -> (Sandbox, Client) {
    let sb = sandbox(Scenario::default_for(3)).await;
    let client = sb.client();
    ready(&client, "default", "app=web", 3).await;
    ready(&client, "default", "app=api", 1).await;
    ready(&client, "default", "app=db", 2).await;
    ready(&client, "kube-system", "app=log-agent", 3).await;
    (sb, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_and_deployments_are_replaced_and_the_daemonset_stays() {
    let (sb, client) = default_cluster_ready().await;
    let db: Api<Pod> = Api::namespaced(client.clone(), "default");
    let node = node_of(&db.get("db-0").await.unwrap());

    let report = run(client.clone(), &node, Duration::from_secs(60)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    let agent = report
        .pods
        .iter()
        .find(|p| p.pod.starts_with("kube-system/log-agent"))
        .expect("the DaemonSet pod is in the report");
    assert_eq!(agent.stage, Stage::Skipped);
    let left: Vec<String> = pods_on(&client, &node)
        .await
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert!(
        left.len() == 1 && left[0].starts_with("log-agent"),
        "only the DaemonSet pod stays: {left:?}"
    );
    assert!(
        report
            .pods
            .iter()
            .filter(|p| p.stage != Stage::Skipped)
            .all(|p| p.stage == Stage::Replaced),
        "{report:#?}"
    );
    ready(&client, "default", "app=db", 2).await;
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_without_losing_track_of_a_pod() {
    let (sb, client) = default_cluster_ready().await;
    let web: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    let node = node_of(&web[0]);
    // Evictions are POSTs to pods: the first three fail with 500, one more times out with 504;
    // a watch of pods is cut by a 500 as well.
    sb.faults()
        .inject(Some("POST"), Some("pods"), 3, FaultKind::InternalError);
    sb.faults().inject(
        Some("POST"),
        Some("pods"),
        1,
        FaultKind::Timeout(Duration::from_millis(200)),
    );
    sb.faults()
        .inject(Some("GET"), Some("pods"), 2, FaultKind::InternalError);

    let report = run(client.clone(), &node, Duration::from_secs(90)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(
        report.pods.iter().map(|p| p.refusals).sum::<u32>() >= 1,
        "the failures were seen and retried: {report:#?}"
    );
    assert!(
        report
            .pods
            .iter()
            .filter(|p| p.stage != Stage::Skipped)
            .all(|p| p.stage == Stage::Replaced),
        "{report:#?}"
    );
    assert_eq!(
        pods_on(&client, &node).await.len(),
        1,
        "only the DaemonSet pod stays"
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_budgets_and_a_capacity_shortage_are_reported_before_anything_changes() {
    let sb = sandbox(Scenario::nodes_only(2)).await;
    let client = sb.client();
    // 2 replicas of 3 CPU on 4-CPU nodes: one per node, and no room for a second anywhere.
    deployment(&client, "big", 2, "3").await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    for name in ["big-a", "big-b"] {
        let pdb = json!({"metadata": {"name": name}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "big"}}}});
        pdbs.create(
            &PostParams::default(),
            &serde_json::from_value(pdb).unwrap(),
        )
        .await
        .unwrap();
    }
    let before: Vec<Pod> = pods_on(&client, "node-1").await;

    let report = run(client.clone(), "node-1", Duration::from_secs(30)).await;

    assert_eq!(report.outcome, Outcome::Blocked);
    assert_eq!(report.verdict, Verdict::Impossible);
    let text: Vec<String> = report.blockers.iter().map(|b| b.to_string()).collect();
    assert!(
        text.iter()
            .any(|b| b.contains("default/big-a, default/big-b")
                && b.contains("2 PodDisruptionBudgets")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|b| b.contains("no other node has room")),
        "{text:?}"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let on_node: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Node")
                && e.reason.as_deref() == Some("DrainBlocked")
        })
        .filter_map(|e| e.message)
        .collect();
    assert!(
        on_node.iter().any(|m| m.contains("default/big-a")),
        "the Node's events name the PDBs: {on_node:?}"
    );
    let node = Api::<Node>::all(client.clone())
        .get("node-1")
        .await
        .unwrap();
    assert_ne!(
        node.spec.and_then(|s| s.unschedulable),
        Some(true),
        "nothing was cordoned"
    );
    let after: Vec<Pod> = pods_on(&client, "node-1").await;
    assert_eq!(
        before.iter().map(|p| &p.metadata.uid).collect::<Vec<_>>(),
        after.iter().map(|p| &p.metadata.uid).collect::<Vec<_>>()
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_at_zero_refuses_with_429_until_a_replacement_is_ready() {
    let sb = sandbox(Scenario::nodes_only(2)).await;
    let client = sb.client();
    let nodes: Api<Node> = Api::all(client.clone());
    let cordon = |on: bool| json!({"spec": {"unschedulable": on}});
    let params = kube::api::PatchParams::default();
    // Both replicas land on node-1 while node-2 is cordoned.
    nodes
        .patch("node-2", &params, &kube::api::Patch::Merge(cordon(true)))
        .await
        .unwrap();
    deployment(&client, "pair", 2, "100m").await;
    nodes
        .patch("node-2", &params, &kube::api::Patch::Merge(cordon(false)))
        .await
        .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    let pdb = json!({"metadata": {"name": "pair"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pair"}}}});
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
        |b: &[k8s_openapi::api::policy::v1::PodDisruptionBudget]| {
            b.iter().any(|b| {
                b.status
                    .as_ref()
                    .is_some_and(|s| s.disruptions_allowed == 1)
            })
        },
    )
    .await;

    let report = run(client.clone(), "node-1", Duration::from_secs(60)).await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    let refusals: Vec<u32> = report.pods.iter().map(|p| p.refusals).collect();
    assert_eq!(
        refusals.iter().filter(|r| **r > 0).count(),
        1,
        "one eviction waited for the budget: {report:#?}"
    );
    ready(&client, "default", "app=pair", 2).await;
    assert!(pods_on(&client, "node-1").await.is_empty());
    sb.shutdown().await;
}
