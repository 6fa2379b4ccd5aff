//! A drain run again after it stopped part-way (issue 12): the second run meets the pods the
//! first one evicted still terminating, and must wait for them and gate their workloads
//! against the pre-drain count the first run recorded on the Node, not recount what is left.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use quiesce_core::{Action, DrainOptions};
use quiesce_kube::engine::drain;
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::record;
use quiesce_kube::report::{DrainReport, GateEnd, Outcome};
use quiesce_sandbox::Sandbox;
use serde_json::json;

/// Scenario seconds run at half speed: an 8 s shutdown takes 4 s, long enough that a drain
/// which does not wait for it is caught with the pod still there.
async fn sandbox(nodes: usize) -> (Sandbox, Client) {
    support::sandbox_of(nodes, 2.0).await
}

use support::run;

/// Like the issue's `solo`: pods take `startup` to become Ready and 8 s to stop, grace 30 s.
async fn slow_deployment(client: &Client, name: &str, replicas: i32, startup: &str) {
    let d = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}, "annotations": {
                "sandbox.quiesce.io/startup-delay": startup, "sandbox.quiesce.io/shutdown-delay": "8s"}},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": name, "image": "app:1",
                "resources": {"requests": {"cpu": "100m"}}}]}}}
    });
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
    ready(client, name, replicas as usize).await;
}

async fn ready(client: &Client, app: &str, n: usize) {
    support::ready(client, "default", &format!("app={app}"), n).await;
}

async fn pods(client: &Client, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap()
}

async fn drain_record(client: &Client, node: &str) -> Option<String> {
    let n = Api::<Node>::all(client.clone()).get(node).await.unwrap();
    n.metadata
        .annotations
        .and_then(|a| a.get(record::ANNOTATION).cloned())
}

/// Runs a drain whose deadline ends while the evicted pods are still shutting down, and
/// checks it got that far.
async fn interrupted(client: &Client, node: &str, app: &str) {
    let first = run(client, node, Duration::from_millis(1500)).await;
    assert_eq!(first.outcome, Outcome::Failed, "{first:#?}");
    assert!(first.phase("evictions-accepted").is_some(), "{first:#?}");
    let on_node: Vec<Pod> = pods(client, app)
        .await
        .into_iter()
        .filter(|p| node_of(p) == node)
        .collect();
    assert!(
        !on_node.is_empty()
            && on_node
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some()),
        "the first drain stopped with the evicted pod still terminating: {on_node:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_drain_waits_for_the_pod_the_first_one_left_terminating() {
    let (sb, client) = sandbox(3).await;
    slow_deployment(&client, "solo", 1, "6s").await;
    let node = node_of(&pods(&client, "solo").await[0]).to_string();
    interrupted(&client, &node, "solo").await;
    let recorded = drain_record(&client, &node)
        .await
        .expect("the first run left its record");
    assert!(recorded.contains("\"availableBefore\":1"), "{recorded}");

    let second = run(&client, &node, Duration::from_secs(90)).await;

    assert_eq!(second.outcome, Outcome::Drained, "{second:#?}");
    let now = pods(&client, "solo").await;
    assert!(
        now.len() == 1
            && node_of(&now[0]) != node
            && quiesce_core::gate::is_ready(&now[0])
            && now[0].metadata.deletion_timestamp.is_none(),
        "drained only once the old pod is gone and solo is Ready elsewhere: {now:#?}"
    );
    let solo = second
        .pods
        .iter()
        .find(|p| p.pod.starts_with("default/solo-"))
        .expect("the terminating pod is in the plan");
    assert_eq!(solo.action, Action::Wait, "{second:#?}");
    assert_eq!(second.gates[0].state, GateEnd::Whole, "{second:#?}");
    // The old pod had most of its 4 s shutdown left; the report shows the wait.
    assert!(second.phase("pods-gone").unwrap() > 1.0, "{second:#?}");
    assert_eq!(
        drain_record(&client, &node).await,
        None,
        "a finished drain removes its record"
    );
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_drain_holds_the_gate_to_the_count_recorded_before_the_first_eviction() {
    let (sb, client) = sandbox(3).await;
    // Replacements start slower than the evicted pod stops, so the old one is gone first.
    slow_deployment(&client, "web", 3, "16s").await;
    let node = node_of(&pods(&client, "web").await[0]).to_string();
    let before = pods(&client, "web")
        .await
        .iter()
        .filter(|p| node_of(p) == node)
        .count();
    interrupted(&client, &node, "web").await;
    // Let the evicted pod go entirely: a run that recounted now would find 3 - `before`
    // Available and accept that.
    support::wait_for(
        Api::<Pod>::all(client.clone()),
        kube::runtime::watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        "the evicted pods gone",
        |on_node: &[Pod]| on_node.is_empty(),
    )
    .await;
    let elsewhere_ready = pods(&client, "web")
        .await
        .iter()
        .filter(|p| quiesce_core::gate::is_ready(p))
        .count();
    assert!(
        elsewhere_ready < 3,
        "the replacement is still starting ({before} evicted)"
    );
    let mut dry_run = support::spec(&node, DrainOptions::default(), Duration::from_secs(10));
    dry_run.dry_run = true;
    let planned = support::drain_with(&client, &dry_run).await;
    assert_eq!(planned.outcome, Outcome::Planned, "{planned:#?}");
    assert_eq!(
        planned.gates[0].available_before, 3,
        "the plan shows the recorded count it will wait for: {planned:#?}"
    );

    let second = run(&client, &node, Duration::from_secs(90)).await;

    assert_eq!(second.outcome, Outcome::Drained, "{second:#?}");
    assert_eq!(second.gates[0].available_before, 3, "{second:#?}");
    let now = pods(&client, "web").await;
    let available = now
        .iter()
        .filter(|p| node_of(p) != node)
        .filter(|p| quiesce_core::gate::is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(
        available, 3,
        "passed only with 3 Available elsewhere: {now:#?}"
    );
    sb.shutdown().await;
}

/// A pod held by a finalizer never goes: the drain waiting for it names it once it is a
/// minute past its deletion deadline (instead of waiting out its timeout), and a drain run
/// again names it from the plan and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stuck_terminating_is_a_named_blocker() {
    let (sb, client) = sandbox(2).await;
    let held = json!({
        "metadata": {"name": "held", "namespace": "default", "finalizers": ["example.com/hold"]},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "app:1"}]}
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(held).unwrap(),
    )
    .await
    .unwrap();
    let spec = support::spec(
        "node-1",
        DrainOptions {
            force: true,
            ..Default::default()
        },
        Duration::from_secs(150),
    );
    let cluster = KubeCluster::new(client.clone());

    let first = drain(&cluster, &spec, &|_, _| {}).await.unwrap();

    assert_eq!(first.outcome, Outcome::Failed, "{first:#?}");
    let named = |report: &DrainReport| {
        report.blockers.iter().any(|b| {
            b.pod.as_deref() == Some("default/held")
                && b.reason.contains("stuck terminating")
                && b.reason.contains("example.com/hold")
        })
    };
    assert!(named(&first), "{first:#?}");
    assert!(
        first
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("stuck terminating"),
        "ended by the stuck pod, not by the deadline: {first:#?}"
    );
    let version = |n: Node| n.metadata.resource_version;
    let nodes: Api<Node> = Api::all(client.clone());
    let before = version(nodes.get("node-1").await.unwrap());

    let second = drain(&cluster, &spec, &|_, _| {}).await.unwrap();

    assert_eq!(second.outcome, Outcome::Blocked, "{second:#?}");
    assert!(named(&second), "{second:#?}");
    assert_eq!(
        version(nodes.get("node-1").await.unwrap()),
        before,
        "a blocked drain changes nothing on the node"
    );
    sb.shutdown().await;
}

/// A surge is a rolling restart of every replica: a drain resumed after it surged must not
/// restart the Deployment a second time (the record on the Node says it was done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_surge_restarts_the_deployment_once() {
    let (sb, client) = sandbox(3).await;
    slow_deployment(&client, "solo", 1, "6s").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .patch(
            "solo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"quiesce.io/drain-strategy": "surge"}}}),
            ),
        )
        .await
        .unwrap();
    let node = node_of(&pods(&client, "solo").await[0]).to_string();
    let generation = || async { deployments.get("solo").await.unwrap().metadata.generation };
    let before = generation().await;

    // The new pod needs 3 s to be Ready: this run restarts, then stops while waiting.
    let first = run(&client, &node, Duration::from_millis(1500)).await;
    assert_eq!(first.outcome, Outcome::Failed, "{first:#?}");
    let restarted = generation().await;
    assert_eq!(
        restarted,
        before.map(|g| g + 1),
        "the first run restarted solo once"
    );
    let recorded = drain_record(&client, &node).await.unwrap();
    assert!(recorded.contains("\"surged\":true"), "{recorded}");

    let second = run(&client, &node, Duration::from_secs(90)).await;

    assert_eq!(second.outcome, Outcome::Drained, "{second:#?}");
    assert_eq!(
        generation().await,
        restarted,
        "the resumed run did not restart solo again"
    );
    let now = pods(&client, "solo").await;
    assert!(
        now.len() == 1 && node_of(&now[0]) != node && quiesce_core::gate::is_ready(&now[0]),
        "{now:#?}"
    );
    sb.shutdown().await;
}
