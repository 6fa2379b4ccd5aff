//! ReplicaSet, StatefulSet, EndpointSlice and garbage collection controllers against the
//! real sandbox API server, with a kubelet stand-in playing the node side.

mod workload_support;

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use workload_support::{Cluster, HOLD, active_pods, create, eventually, ready};

fn template(app: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app:1",
                    "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

#[tokio::test]
async fn replicaset_scales_and_replaces_deleted_pods() {
    let c = Cluster::start().await;
    let sets: Api<ReplicaSet> = c.api();
    let pods: Api<Pod> = c.api();
    create(
        &sets,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
        "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await;
    let first = eventually("3 ready replicas", || async {
        let rs = sets.get("web").await.ok()?;
        let status = rs.status?;
        (status.ready_replicas == Some(3)
            && status.available_replicas == Some(3)
            && status.observed_generation == Some(1))
        .then_some(())?;
        Some(active_pods(&pods, "web-").await)
    })
    .await;
    assert_eq!(first.len(), 3);
    for pod in &first {
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
    }

    let victim = first[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually("a replacement for the deleted pod", || async {
        let now = active_pods(&pods, "web-").await;
        (now.len() == 3 && now.iter().all(ready) && now.iter().all(|p| p.name_any() != victim))
            .then_some(())
    })
    .await;

    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("scaled down to 1", || async {
        let rs = sets.get("web").await.ok()?;
        let now = active_pods(&pods, "web-").await;
        (now.len() == 1 && rs.status?.replicas == 1).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn statefulset_creates_in_order_and_recreates_under_the_same_name() {
    let c = Cluster::start().await;
    let sets: Api<StatefulSet> = c.api();
    let pods: Api<Pod> = c.api();
    let order = tokio::spawn({
        let pods = pods.clone();
        async move {
            let mut seen = Vec::new();
            let stream = watcher(pods, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(pod)) = stream.next().await {
                if !seen.contains(&pod.name_any()) {
                    seen.push(pod.name_any());
                }
                if seen.len() == 3 {
                    break;
                }
            }
            seen
        }
    });
    create(
        &sets,
        json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}}),
    )
    .await;
    let order = tokio::time::timeout(std::time::Duration::from_secs(30), order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order, ["db-0", "db-1", "db-2"]);
    eventually("3 ready replicas", || async {
        (sets.get("db").await.ok()?.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let pod = pods.get("db-1").await.unwrap();
    assert_eq!(
        pod.labels()
            .get("statefulset.kubernetes.io/pod-name")
            .map(String::as_str),
        Some("db-1")
    );
    assert_eq!(pod.spec.as_ref().unwrap().hostname.as_deref(), Some("db-1"));

    let old_uid = pod.uid();
    pods.delete("db-1", &DeleteParams::default()).await.unwrap();
    eventually("db-1 recreated with a new uid", || async {
        let pod = pods.get("db-1").await.ok()?;
        (pod.uid() != old_uid && ready(&pod) && pod.metadata.deletion_timestamp.is_none())
            .then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn endpointslice_follows_a_pod_through_termination() {
    let c = Cluster::start().await;
    let sets: Api<ReplicaSet> = c.api();
    let services: Api<Service> = c.api();
    let slices: Api<EndpointSlice> = c.api();
    let pods: Api<Pod> = c.api();
    create(
        &services,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    let mut held = template("web");
    held["metadata"]["annotations"] = json!({HOLD: "true"});
    create(
        &sets,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web"}}, "template": held}}),
    )
    .await;
    let slice_of = || async {
        let list = slices.list(&Default::default()).await.ok()?;
        list.items.into_iter().find(|s| {
            s.labels()
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                == Some("web")
        })
    };
    let slice = eventually("a slice with 2 ready endpoints", || async {
        let slice = slice_of().await?;
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        (ready == 2).then_some(slice)
    })
    .await;
    assert_eq!(slice.address_type, "IPv4");
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        endpoint.target_ref.as_ref().unwrap().kind.as_deref(),
        Some("Pod")
    );

    let victim = endpoint.target_ref.as_ref().unwrap().name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the terminating pod's endpoint: ready=false serving=true terminating=true",
        || async {
            let slice = slice_of().await?;
            let e = slice.endpoints.iter().find(|e| {
                e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(victim.as_str())
            })?;
            let cond = e.conditions.clone()?;
            (cond.ready == Some(false)
                && cond.serving == Some(true)
                && cond.terminating == Some(true))
            .then_some(())
        },
    )
    .await;
    pods.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {HOLD: null}}})),
    )
    .await
    .unwrap();
    eventually(
        "the pod gone from the slice, its replacement in",
        || async {
            let slice = slice_of().await?;
            let names: BTreeSet<_> = slice
                .endpoints
                .iter()
                .filter_map(|e| e.target_ref.as_ref()?.name.clone())
                .collect();
            (names.len() == 2 && !names.contains(&victim)).then_some(())
        },
    )
    .await;
    c.stop().await;
}

#[tokio::test]
async fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let c = Cluster::start().await;
    let deployments: Api<Deployment> = c.api();
    let sets: Api<ReplicaSet> = c.api();
    let pods: Api<Pod> = c.api();
    create(
        &deployments,
        json!({"metadata": {"name": "api"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "api"}}, "template": template("api")}}),
    )
    .await;
    eventually("2 pods", || async {
        (active_pods(&pods, "api-").await.len() == 2).then_some(())
    })
    .await;
    deployments
        .delete("api", &DeleteParams::background())
        .await
        .unwrap();
    eventually("no ReplicaSets and no pods left", || async {
        let sets = sets.list(&Default::default()).await.ok()?.items.len();
        let pods = pods.list(&Default::default()).await.ok()?.items.len();
        (sets == 0 && pods == 0).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn statefulset_scales_down_from_the_highest_ordinal() {
    let c = Cluster::start().await;
    let sets: Api<StatefulSet> = c.api();
    let pods: Api<Pod> = c.api();
    create(
        &sets,
        json!({"metadata": {"name": "db"}, "spec": {"replicas": 3, "serviceName": "db",
        "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}}),
    )
    .await;
    eventually("3 ready replicas", || async {
        (sets.get("db").await.ok()?.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let order = tokio::spawn({
        let pods = pods.clone();
        async move {
            let mut deleted = Vec::new();
            let stream = watcher(pods, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let watcher::Event::Delete(pod) = event {
                    deleted.push(pod.name_any());
                }
                if deleted.len() == 2 {
                    break;
                }
            }
            deleted
        }
    });
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    let order = tokio::time::timeout(std::time::Duration::from_secs(30), order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order, ["db-2", "db-1"]);
    c.stop().await;
}
