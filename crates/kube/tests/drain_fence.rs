//! The drain reads the node again once it is fenced (issue 12): a pod bound after the first,
//! unfenced read, or one that arrives on the cordoned node later (it tolerates
//! `node.kubernetes.io/unschedulable`, or is bound by name), is evicted too before the node is
//! called drained. A wrapper around the real `KubeCluster` creates the pod on the sandbox at
//! the chosen moment; every request still goes to the API server.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use quiesce_core::DrainOptions;
use quiesce_kube::engine::drain;
use quiesce_kube::report::{DrainReport, Outcome, Stage};
use quiesce_sandbox::Sandbox;
use quiesce_sandbox::scenario::Scenario;
use support::late::{Late, Moment, late_pod};

/// Drains the node of a `web` pod of the default scenario; `pod` (a function of that node)
/// appears at `moment`.
async fn drain_with_late_pod(
    moment: Moment,
    pod: impl FnOnce(&str) -> serde_json::Value,
) -> (Sandbox, DrainReport) {
    let sb = support::sandbox(Scenario::default_for(3), 20.0).await;
    let client = sb.client();
    support::ready(&client, "default", "app=web", 3).await;
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
    let late = Late::new(client.clone(), moment, pod(&node));
    let spec = support::spec(
        &node,
        DrainOptions {
            force: true,
            ..Default::default()
        },
        Duration::from_secs(60),
    );
    let report = drain(&late, &spec, &|_, _| {}).await.unwrap();
    assert!(late.fired(), "the late pod was created");
    (sb, report)
}

async fn still_there(client: &Client, name: &str) -> bool {
    Api::<Pod>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
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
