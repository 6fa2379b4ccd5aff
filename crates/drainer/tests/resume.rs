//! A drainer stopped right after the API server accepted its evictions, with the pods still
//! shutting down (grace 20 s), and a new drainer resuming the action (issue 12). At the moment
//! the action moves to CONTINUE no evicted pod object may remain and every workload must have
//! its replicas Ready elsewhere — all of them: a 3-replica Deployment with one replica on the
//! drained node passes only with 3 Available off it. Checked from the sandbox's watch history
//! (pods and Nodes, ordered by the store's global resourceVersion), not from the drainer's
//! report.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use quiesce_aws::record::{ANNOTATION, InFlight, Phase};
use serde_json::json;
use support::bed;

/// What the sandbox's watches delivered, each change with its resourceVersion.
#[derive(Clone, Debug)]
enum Seen {
    Pod(Box<Pod>, bool),
    Node(Box<Node>),
}

type History = Arc<Mutex<Vec<(u64, Seen)>>>;

fn rv<K: kube::Resource>(obj: &K) -> u64 {
    obj.resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// Records every pod and Node change until the test ends.
fn record_history(client: Client) -> (History, Vec<tokio::task::JoinHandle<()>>) {
    let history: History = Arc::default();
    let pods = {
        let history = history.clone();
        let api: Api<Pod> = Api::all(client.clone());
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let mut h = history.lock().unwrap();
                match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        h.push((rv(&p), Seen::Pod(Box::new(p), true)))
                    }
                    Ok(Event::Delete(p)) => h.push((rv(&p), Seen::Pod(Box::new(p), false))),
                    _ => {}
                }
            }
        })
    };
    let nodes = {
        let history = history.clone();
        let api: Api<Node> = Api::all(client);
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                if let Ok(Event::Apply(n) | Event::InitApply(n)) = event {
                    history
                        .lock()
                        .unwrap()
                        .push((rv(&n), Seen::Node(Box::new(n))));
                }
            }
        })
    };
    (history, vec![pods, nodes])
}

/// The pods as they stood when `node`'s lifecycle record first said the drain was done
/// (Completing is written after the drain returns and before CONTINUE is sent).
fn pods_at_continue(history: &History, node: &str) -> BTreeMap<String, Pod> {
    let mut events = history.lock().unwrap().clone();
    events.sort_by_key(|(rv, _)| *rv);
    let cut = events
        .iter()
        .find_map(|(rv, seen)| match seen {
            Seen::Node(n) if n.name_any() == node => {
                let record = n.annotations().get(ANNOTATION)?;
                let phase = InFlight::from_annotation(record).ok()?.phase;
                matches!(phase, Phase::Completing | Phase::Continued).then_some(*rv)
            }
            _ => None,
        })
        .expect("the watch saw the record reach Completing");
    let mut pods = BTreeMap::new();
    for (rv, seen) in events {
        if rv > cut {
            break;
        }
        if let Seen::Pod(p, present) = seen {
            let uid = p.uid().unwrap_or_default();
            if present {
                pods.insert(uid, *p);
            } else {
                pods.remove(&uid);
            }
        }
    }
    pods
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn app(pod: &Pod) -> &str {
    pod.labels()
        .get("app")
        .map(String::as_str)
        .unwrap_or_default()
}

/// A Deployment whose pods stop in 8 s of their 20 s grace and start in 2 s.
fn slow(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}, "annotations": {
                "sandbox.quiesce.io/startup-delay": "2s", "sandbox.quiesce.io/shutdown-delay": "8s"}},
            "spec": {"terminationGracePeriodSeconds": 20, "containers": [{"name": name, "image": "app:1",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    }))
    .unwrap()
}

async fn set_unschedulable(client: &Client, node: &str, on: bool) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": on}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_drainer_continues_only_once_every_workload_is_whole_elsewhere() {
    let bed = bed(3, 0, 30, "").await;
    let client = bed.sandbox.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    // solo on node-1; trio with one replica on node-1 and two elsewhere.
    set_unschedulable(&client, "node-2", true).await;
    set_unschedulable(&client, "node-3", true).await;
    for (name, replicas) in [("solo", 1), ("trio", 1)] {
        deployments
            .create(&PostParams::default(), &slow(name, replicas))
            .await
            .unwrap();
    }
    bed.wait_for(
        "solo and trio's first replica Ready",
        Duration::from_secs(30),
        || async {
            support::ready_pods(&bed.sandbox, "app=trio").await == 1
                && support::ready_pods(&bed.sandbox, "app=solo").await == 1
        },
    )
    .await;
    set_unschedulable(&client, "node-2", false).await;
    set_unschedulable(&client, "node-3", false).await;
    set_unschedulable(&client, "node-1", true).await;
    deployments
        .patch(
            "trio",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    bed.wait_for("trio Ready", Duration::from_secs(30), || async {
        support::ready_pods(&bed.sandbox, "app=trio").await == 3
            && support::ready_pods(&bed.sandbox, "app=solo").await == 1
    })
    .await;
    set_unschedulable(&client, "node-1", false).await;
    // trio has one replica on node-1 and solo landed with the first replicas there too.
    let node = "node-1";
    let on_node: Vec<Pod> = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| app(p) != "log-agent")
        .collect();
    assert_eq!(
        on_node.iter().filter(|p| app(p) == "trio").count(),
        1,
        "{on_node:#?}"
    );
    assert!(on_node.iter().any(|p| app(p) == "solo"), "{on_node:#?}");
    let (history, watchers) = record_history(client.clone());

    let first = bed.handler(bed.settings());
    let (_stop, task) = bed.run_worker(first, Duration::from_secs(3));
    bed.terminate(&bed.instances[0]).await;
    let evicted = |pods: Vec<Pod>| {
        on_node.iter().all(|old| {
            pods.iter()
                .find(|p| p.uid() == old.uid())
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        })
    };
    bed.wait_for(
        "every eviction accepted",
        Duration::from_secs(30),
        || async {
            evicted(
                Api::<Pod>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items,
            )
        },
    )
    .await;
    // The drainer dies with the pods still shutting down (8 s of their 20 s grace).
    task.abort();
    let _ = task.await;
    let still_terminating = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count();
    assert!(
        still_terminating > 0,
        "stopped while evicted pods were still terminating"
    );

    let second = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(second, Duration::from_secs(3));
    bed.wait_result(&bed.instances[0], "CONTINUE", Duration::from_secs(90))
        .await;

    let pods = pods_at_continue(&history, node);
    let left: Vec<&Pod> = on_node
        .iter()
        .filter(|old| pods.contains_key(&old.uid().unwrap_or_default()))
        .collect();
    assert!(
        left.is_empty(),
        "evicted pods still present at CONTINUE: {left:#?}"
    );
    let whole = |name: &str| {
        pods.values()
            .filter(|p| app(p) == name && node_of(p) != node && !node_of(p).is_empty())
            .filter(|p| p.metadata.deletion_timestamp.is_none() && quiesce_core::gate::is_ready(p))
            .count()
    };
    assert_eq!(
        whole("trio"),
        3,
        "trio had 3 Available elsewhere at CONTINUE"
    );
    assert_eq!(whole("web"), 3, "web had 3 Ready elsewhere at CONTINUE");
    assert_eq!(
        whole("solo"),
        1,
        "solo had its replica Ready elsewhere at CONTINUE"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
    for w in watchers {
        w.abort();
    }
}
