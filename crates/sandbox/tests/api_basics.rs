//! The API server through kube-rs: CRUD, conflicts, preconditions, status isolation, graceful
//! pod deletion, selectors, watches and `Status` errors.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use quiesce_sandbox::api::ApiServer;
use serde_json::json;

async fn server() -> ApiServer {
    ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn pod(name: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap()
}

fn api_error(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected a Status error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflicts_and_errors() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("a", None))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));

    let (code, reason, message) = api_error(
        pods.create(&PostParams::default(), &pod("a", None))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (409, "AlreadyExists", r#"pods "a" already exists"#)
    );

    let (code, reason, _) = api_error(pods.get("missing").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
    )
    .await
    .unwrap();
    let mut stale = pod("a", None);
    stale.metadata.resource_version = created.metadata.resource_version.clone();
    let (code, reason, _) = api_error(
        pods.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let bad = ListParams::default().labels("a in (b");
    let (code, reason, _) = api_error(pods.list(&bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    let bad = ListParams::default().fields("spec.bogus=1");
    assert_eq!(api_error(pods.list(&bad).await.unwrap_err()).0, 400);
    server.shutdown().await;
}

#[tokio::test]
async fn status_is_a_separate_subresource_and_generation_tracks_spec() {
    let server = server().await;
    let deployments: Api<Deployment> = Api::namespaced(server.client(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}}
    }))
    .unwrap();
    let d = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let status_patch =
        Patch::Merge(json!({"status": {"readyReplicas": 2}, "spec": {"replicas": 5}}));
    let after = deployments
        .patch_status("web", &PatchParams::default(), &status_patch)
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().ready_replicas, Some(2));
    assert_eq!(
        after.spec.unwrap().replicas,
        Some(2),
        "the status subresource leaves spec alone"
    );
    let after = deployments
        .patch("web", &PatchParams::default(), &status_patch)
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(5));
    assert_eq!(
        after.status.unwrap().ready_replicas,
        Some(2),
        "the main resource leaves status alone"
    );
    assert_eq!(after.metadata.generation, Some(2));
    server.shutdown().await;
}

#[tokio::test]
async fn bound_pods_terminate_gracefully_and_preconditions_hold() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("bound", Some("n1")))
        .await
        .unwrap();
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let (code, _, message) = api_error(pods.delete("bound", &wrong).await.unwrap_err());
    assert_eq!(code, 409);
    assert!(
        message.contains("the UID in the precondition (nope)"),
        "{message}"
    );
    pods.delete("bound", &DeleteParams::default().grace_period(10))
        .await
        .unwrap();
    let terminating = pods.get("bound").await.unwrap();
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(10));
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("bound").await.unwrap_err()).0, 404);
    assert!(p.metadata.uid.is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn watches_resume_and_expire() {
    let server = ApiServer::start_with_history("127.0.0.1:0".parse().unwrap(), 3)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    pods.create(&PostParams::default(), &pod("w1", None))
        .await
        .unwrap();
    let mut events = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Added(p)) => assert_eq!(p.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected ADDED w1, got {other:?}"),
    }
    for name in ["w2", "w3", "w4", "w5"] {
        pods.create(&PostParams::default(), &pod(name, None))
            .await
            .unwrap();
    }
    let mut expired = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), expired.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    server.shutdown().await;
}

/// Name → resourceVersion of every node, the view a reflector must converge to.
type Versions = std::collections::BTreeMap<String, Option<String>>;

fn versions<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Versions {
    nodes
        .into_iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap(),
                n.metadata.resource_version.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_stays_consistent_through_a_storm() {
    let server = server().await;
    let nodes: Api<Node> = Api::all(server.client());
    let (reader, writer) = reflector::store();
    // Touched, not applied: a deletion must wake the loop below too.
    let mut stream = reflector(writer, watcher(nodes.clone(), watcher::Config::default()))
        .touched_objects()
        .boxed();
    // Three writers at once: creates, patches and deletes interleave on the server.
    let storm = (0..3).map(|w| {
        let nodes = nodes.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let name = format!("n{w}-{i}");
                let node: Node =
                    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
                nodes.create(&PostParams::default(), &node).await.unwrap();
                if i % 3 == 0 {
                    let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
                    nodes
                        .patch(&name, &PatchParams::default(), &cordon)
                        .await
                        .unwrap();
                }
                if i % 5 == 0 {
                    nodes.delete(&name, &DeleteParams::default()).await.unwrap();
                }
            }
        })
    });
    let storm: Vec<_> = storm.collect();
    // Drive the reflector while the storm runs, so it sees the changes as they happen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for writer in storm {
        let mut writer = std::pin::pin!(writer);
        loop {
            tokio::select! {
                done = &mut writer => { done.unwrap(); break; }
                event = tokio::time::timeout_at(deadline, stream.next()) => {
                    event.expect("the storm finished within 30s").unwrap().unwrap();
                }
            }
        }
    }
    let want = versions(&nodes.list(&ListParams::default()).await.unwrap().items);
    assert_eq!(
        want.len(),
        3 * (40 - 8),
        "the storm left the nodes it should"
    );
    while versions(reader.state().iter().map(|n| n.as_ref())) != want {
        tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the reflector converged within 30s")
            .expect("the watcher stream is still open")
            .unwrap();
    }
    server.shutdown().await;
}
