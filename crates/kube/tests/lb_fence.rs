//! The fence from load balancers (issue 17): the drain labels the node
//! `node.kubernetes.io/exclude-from-external-load-balancers=quiesce` and taints it
//! `ToBeDeletedByClusterAutoscaler:NoSchedule`; the uncordon takes off the taint and the label
//! only if the label's value is ours; a taint removed while the node is fenced is put back.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use quiesce_kube::cluster::{Cluster, Cordon};
use quiesce_kube::kube_cluster::{EXCLUDE_LB_LABEL, FENCE_TAINT, KubeCluster};
use quiesce_kube::report::Outcome;
use serde_json::json;

fn fence() -> Cordon {
    Cordon {
        taint: None,
        exclude_from_load_balancers: true,
        fence_taint: true,
    }
}

async fn node(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone()).get(name).await.unwrap()
}

fn label(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()?
        .get(EXCLUDE_LB_LABEL)
        .cloned()
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

async fn patch(client: &Client, name: &str, patch: serde_json::Value) {
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn drain_fenced(client: &Client, name: &str, cordon: Cordon) {
    let mut spec = support::spec(
        name,
        quiesce_core::DrainOptions::default(),
        Duration::from_secs(30),
    );
    spec.cordon = cordon;
    let report = support::drain_with(client, &spec).await;
    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_labels_and_taints_and_the_uncordon_removes_only_what_is_ours() {
    let (sb, client) = support::sandbox_of(3, 20.0).await;
    let cluster = KubeCluster::new(client.clone());
    let fenced_taint = format!("{FENCE_TAINT}:NoSchedule");
    // A taint of the user's own is kept through fence and uncordon.
    patch(
        &client,
        "node-1",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    )
    .await;

    drain_fenced(&client, "node-1", fence()).await;
    let n = node(&client, "node-1").await;
    assert_eq!(label(&n).as_deref(), Some("quiesce"));
    let taints = taint_keys(&n);
    assert!(taints.contains(&fenced_taint), "{taints:?}");
    assert!(
        taints.contains(&"dedicated:NoSchedule".to_string()),
        "{taints:?}"
    );

    cluster.uncordon("node-1", &fence()).await.unwrap();
    let n = node(&client, "node-1").await;
    assert_eq!(label(&n), None, "our label is removed");
    assert_eq!(taint_keys(&n), vec!["dedicated:NoSchedule".to_string()]);
    assert!(!quiesce_core::capacity::is_cordoned(&n));

    // A label the user set, with their own value, is neither overwritten nor removed.
    patch(
        &client,
        "node-2",
        json!({"metadata": {"labels": {EXCLUDE_LB_LABEL: "maintenance"}}}),
    )
    .await;
    drain_fenced(&client, "node-2", fence()).await;
    let n = node(&client, "node-2").await;
    assert_eq!(label(&n).as_deref(), Some("maintenance"));
    assert!(taint_keys(&n).contains(&fenced_taint));
    cluster.uncordon("node-2", &fence()).await.unwrap();
    let n = node(&client, "node-2").await;
    assert_eq!(label(&n).as_deref(), Some("maintenance"));
    assert!(taint_keys(&n).is_empty(), "{:?}", taint_keys(&n));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fence_taint_only_the_label_is_set() {
    let (sb, client) = support::sandbox_of(2, 20.0).await;
    drain_fenced(
        &client,
        "node-1",
        Cordon {
            fence_taint: false,
            ..fence()
        },
    )
    .await;
    let n = node(&client, "node-1").await;
    assert_eq!(label(&n).as_deref(), Some("quiesce"));
    assert!(taint_keys(&n).is_empty(), "{:?}", taint_keys(&n));
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_taint_removed_while_the_node_is_fenced_is_put_back() {
    let (sb, client) = support::sandbox_of(2, 20.0).await;
    let cluster = KubeCluster::new(client.clone());
    cluster.cordon("node-1", &fence()).await.unwrap();
    let cordon = fence();
    let keeper = cluster.keep_fenced("node-1", &cordon);
    let remover = async {
        // What Cluster Autoscaler does at its start to every ToBeDeletedByClusterAutoscaler.
        patch(&client, "node-1", json!({"spec": {"taints": null}})).await;
        let api: Api<Node> = Api::all(client.clone());
        support::wait_for(
            api,
            kube::runtime::watcher::Config::default().fields("metadata.name=node-1"),
            "the fence taint back on node-1",
            |nodes| {
                nodes
                    .iter()
                    .any(|n| taint_keys(n).contains(&format!("{FENCE_TAINT}:NoSchedule")))
            },
        )
        .await;
    };
    tokio::select! {
        never = keeper => match never {},
        () = remover => {}
    }
    // Once uncordoned, nothing is put back.
    cluster.uncordon("node-1", &fence()).await.unwrap();
    assert!(taint_keys(&node(&client, "node-1").await).is_empty());
    sb.shutdown().await;
}
