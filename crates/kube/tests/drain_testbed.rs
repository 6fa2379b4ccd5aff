//! The drain engine end to end against the real v1.20 control plane (scheduler, Deployment,
//! ReplicaSet and disruption controllers, the real eviction endpoint) plus a kubelet stand-in.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use quiesce_core::{DrainOptions, Verdict};
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::{DrainReport, Outcome};
use quiesce_testbed::kubelet::{NEVER_READY_ANNOTATION, STARTUP_DELAY_ANNOTATION};
use serde_json::json;
use support::Cluster;

use support::spec;

async fn run(cluster: &Cluster, spec: &DrainSpec) -> DrainReport {
    drain(&KubeCluster::new(cluster.client.clone()), spec, &|_, _| {})
        .await
        .expect("the cluster can be read")
}

fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_deployment_is_held_until_its_replacement_is_ready_elsewhere() {
    let cluster = Cluster::start(2).await;
    cluster
        .deployment("web", 1, json!({}), json!({STARTUP_DELAY_ANNOTATION: "1s"}))
        .await;
    let node = node_of(&cluster.pods("web").await[0]);

    let report = run(
        &cluster,
        &spec(&node, DrainOptions::default(), Duration::from_secs(60)),
    )
    .await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    let names: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
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
    let ready = report.phase("replacements-ready").unwrap() - report.phase("pods-gone").unwrap();
    assert!(
        ready >= 0.9,
        "the replacement took its 1s startup delay after the old pod went, gate passed after {ready}s"
    );
    let pods = cluster.pods("web").await;
    assert_eq!(pods.len(), 1, "{pods:#?}");
    assert!(quiesce_core::gate::is_ready(&pods[0]));
    assert_ne!(node_of(&pods[0]), node);
    assert!(cluster.unschedulable(&node).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_keeps_a_single_replica_ready_throughout() {
    let cluster = Cluster::start(2).await;
    cluster
        .deployment(
            "api",
            1,
            json!({"quiesce.io/drain-strategy": "surge"}),
            json!({STARTUP_DELAY_ANNOTATION: "500ms"}),
        )
        .await;
    let node = node_of(&cluster.pods("api").await[0]);
    let min_ready = Arc::new(AtomicUsize::new(usize::MAX));
    let watch = {
        let min_ready = min_ready.clone();
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
        let mut store = kube::runtime::reflector::store::<Pod>();
        let reader = store.0.clone();
        tokio::spawn(async move {
            let mut events = kube::runtime::reflector(
                std::mem::take(&mut store.1),
                watcher(api, watcher::Config::default().labels("app=api")),
            )
            .default_backoff()
            .boxed();
            let mut listed = false;
            while let Some(event) = events.next().await {
                listed |= matches!(event, Ok(watcher::Event::InitDone));
                if !listed {
                    continue;
                }
                let ready = reader
                    .state()
                    .iter()
                    .filter(|p| {
                        quiesce_core::gate::is_ready(p) && p.metadata.deletion_timestamp.is_none()
                    })
                    .count();
                min_ready.fetch_min(ready, Ordering::SeqCst);
            }
        })
    };

    let report = run(
        &cluster,
        &spec(&node, DrainOptions::default(), Duration::from_secs(60)),
    )
    .await;
    watch.abort();

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(report.phase("surged").is_some());
    assert_eq!(
        min_ready.load(Ordering::SeqCst),
        1,
        "the Ready count of a surged Deployment never drops to zero"
    );
    assert!(cluster.pods("api").await.iter().all(|p| node_of(p) != node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_blocks_then_unblocks_and_refusals_are_counted() {
    let cluster = Cluster::start(2).await;
    cluster.deployment("db", 2, json!({}), json!({})).await;
    cluster.pdb("db", "db", json!({"minAvailable": 2})).await;
    let node = node_of(&cluster.pods("db").await[0]);

    // minAvailable 2 of 2 replicas never allows a disruption: refused before anything changes.
    let report = run(
        &cluster,
        &spec(&node, DrainOptions::default(), Duration::from_secs(30)),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Blocked);
    assert_eq!(report.verdict, Verdict::Impossible);
    assert_eq!(report.blockers[0].pdb.as_deref(), Some("default/db"));
    assert!(
        !cluster.unschedulable(&node).await,
        "a blocked plan changes nothing"
    );

    // Scale to 3: the budget now allows one disruption, and the drain completes.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(cluster.client.clone(), "default");
    deployments
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    cluster.wait_ready("db", 3).await;
    let report = run(
        &cluster,
        &spec(&node, DrainOptions::default(), Duration::from_secs(60)),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(cluster.pods("db").await.iter().all(|p| node_of(p) != node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_pods_need_force_and_a_deadline_uncordons() {
    let cluster = Cluster::start(2).await;
    cluster.bare_pod("lonely", "node-1").await;
    let report = run(
        &cluster,
        &spec("node-1", DrainOptions::default(), Duration::from_secs(30)),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Blocked);
    assert!(
        report.blockers[0].to_string().contains("--force"),
        "{:?}",
        report.blockers
    );
    assert!(!cluster.unschedulable("node-1").await);

    // An app that never became Ready had nothing Available before the drain, so the gate's
    // target is 0: a crash-looping workload does not hold every drain (issue 12).
    cluster
        .deployment(
            "stuck",
            1,
            json!({}),
            json!({NEVER_READY_ANNOTATION: "true"}),
        )
        .await;
    let stuck_node = node_of(&cluster.pods("stuck").await[0]);
    let report = run(
        &cluster,
        &spec(
            &stuck_node,
            DrainOptions {
                force: true,
                ..Default::default()
            },
            Duration::from_secs(30),
        ),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert_eq!(report.gates[0].available_before, 0, "{report:#?}");
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes
        .patch(
            &stuck_node,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"unschedulable": null}})),
        )
        .await
        .unwrap();

    // A Ready app whose replacement has nowhere to go (the only other node is cordoned, as if
    // drained at the same time: a wait, not impossible): the gate holds until the deadline,
    // then gives up and uncordons.
    cluster.deployment("held", 1, json!({}), json!({})).await;
    let held_node = node_of(&cluster.pods("held").await[0]);
    let other = if held_node == "node-1" {
        "node-2"
    } else {
        "node-1"
    };
    nodes
        .patch(
            other,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let mut drain_spec = spec(
        &held_node,
        DrainOptions {
            force: true,
            ..Default::default()
        },
        Duration::from_secs(3),
    );
    drain_spec.uncordon_on_failure = true;
    let report = run(&cluster, &drain_spec).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("deadline"),
        "{:?}",
        report.error
    );
    assert!(report.uncordoned);
    assert!(!cluster.unschedulable(&held_node).await);
}

/// On the real v1.20 API server: a pod already terminating when the drain starts (held here
/// by a finalizer, as a slow kubelet or a controller would hold it) is waited for. The drain is
/// still running once the replacement is Ready elsewhere, and finishes only after the old pod
/// object is gone. (The control plane runs no kubelet, so shutdown timing itself is the
/// sandbox's to show; what this pins is the API server's deletion semantics.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_already_terminating_is_waited_for_on_the_real_api_server() {
    let cluster = Cluster::start(2).await;
    cluster.deployment("solo", 1, json!({}), json!({})).await;
    let old = cluster.pods("solo").await.remove(0);
    let name = old.metadata.name.clone().unwrap();
    let node = node_of(&old);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let finalizer =
        |f: serde_json::Value| kube::api::Patch::Merge(json!({"metadata": {"finalizers": f}}));
    let params = kube::api::PatchParams::default();
    pods.patch(&name, &params, &finalizer(json!(["test.quiesce.io/hold"])))
        .await
        .unwrap();
    pods.delete(&name, &kube::api::DeleteParams::default())
        .await
        .unwrap();

    let client = cluster.client.clone();
    let drain_spec = spec(&node, DrainOptions::default(), Duration::from_secs(60));
    let drained = tokio::spawn(async move {
        drain(&KubeCluster::new(client), &drain_spec, &|_, _| {})
            .await
            .expect("the cluster can be read")
    });
    // The drain has planned from its fenced read once it records solo's count on the Node.
    support::wait_for(
        Api::<Node>::all(cluster.client.clone()),
        watcher::Config::default(),
        "the drain record names solo",
        |nodes: &[Node]| {
            nodes.iter().any(|n| {
                n.metadata.name.as_deref() == Some(node.as_str())
                    && n.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(quiesce_kube::record::ANNOTATION))
                        .is_some_and(|r| r.contains("Deployment/default/solo"))
            })
        },
    )
    .await;
    cluster.wait_ready("solo", 1).await;
    let replacement = cluster
        .pods("solo")
        .await
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .unwrap();
    assert_ne!(node_of(&replacement), node);
    assert!(
        pods.get_opt(&name).await.unwrap().is_some() && !drained.is_finished(),
        "the drain still waits for the terminating pod"
    );
    pods.patch(&name, &params, &finalizer(json!(null)))
        .await
        .unwrap();

    let report = tokio::time::timeout(Duration::from_secs(60), drained)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(
        report
            .pods
            .iter()
            .any(|p| p.pod == format!("default/{name}") && p.action == quiesce_core::Action::Wait),
        "{report:#?}"
    );
    assert!(pods.get_opt(&name).await.unwrap().is_none());
}

/// On the real v1.20 API server and scheduler: a pod bound to the node after the drain's first
/// read (before its cordon) is in the fenced re-read and evicted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_bound_after_the_first_read_is_evicted_on_the_real_api_server() {
    use support::late::{Late, Moment, late_pod};
    let cluster = Cluster::start(2).await;
    cluster.deployment("web", 1, json!({}), json!({})).await;
    let node = node_of(&cluster.pods("web").await[0]);
    let late = Late::new(
        cluster.client.clone(),
        Moment::AfterFirstRead,
        late_pod("late", false, &node),
    );
    let drain_spec = spec(
        &node,
        DrainOptions {
            force: true,
            ..Default::default()
        },
        Duration::from_secs(60),
    );

    let report = drain(&late, &drain_spec, &|_, _| {}).await.unwrap();

    assert!(late.fired());
    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert!(
        report.pods.iter().any(|p| p.pod == "default/late"),
        "{report:#?}"
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    assert!(pods.get_opt("late").await.unwrap().is_none());
}

/// On the real v1.20 controllers: the gate counts the Deployment's own pods (by owner chain),
/// so a Ready canary sharing its `app` label on another node does not let the drain pass
/// before the Deployment's own replacement is Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_sharing_the_label_does_not_pass_the_gate_on_the_real_api_server() {
    let cluster = Cluster::start(2).await;
    cluster
        .deployment("web", 1, json!({}), json!({STARTUP_DELAY_ANNOTATION: "2s"}))
        .await;
    let node = node_of(&cluster.pods("web").await[0]);
    let other = if node == "node-1" { "node-2" } else { "node-1" };
    let canary = json!({
        "metadata": {"name": "web-canary", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": other, "containers": [{"name": "app", "image": "app:2"}]}
    });
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    pods.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(canary).unwrap(),
    )
    .await
    .unwrap();
    cluster.wait_ready("web", 2).await;

    let report = run(
        &cluster,
        &spec(&node, DrainOptions::default(), Duration::from_secs(60)),
    )
    .await;

    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    let own: Vec<Pod> = cluster
        .pods("web")
        .await
        .into_iter()
        .filter(|p| p.metadata.name.as_deref() != Some("web-canary"))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert!(
        own.len() == 1 && quiesce_core::gate::is_ready(&own[0]) && node_of(&own[0]) != node,
        "drained only once web's own replacement was Ready: {own:#?}"
    );
}
