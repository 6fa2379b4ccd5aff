//! CustomResourceDefinitions with the real kubectl: Argo Rollouts' own CRD (the public
//! manifest, `tests/fixtures/argo-rollouts-crd.yaml`) applies server-side and is Established,
//! and a Rollout then applies, lists by short name and label selector, streams to a watch,
//! keeps status to its subresource, and goes with its definition.

mod api_support;

use std::time::Duration;

use api_support::kubectl::Kubectl;
use api_support::{send, server};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, WatchEvent, WatchParams};
use serde_json::json;

const ROLLOUT: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.invalid/web:1
  strategy:
    canary:
      steps:
      - setWeight: 20
      - pause: {duration: 10}
"#;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_rollouts_crd_and_a_rollout_apply_and_are_served() {
    let server = server().await;
    let k = Kubectl::new(&server);
    let crd = fixture("argo-rollouts-crd.yaml");
    let out = k.ok(&["apply", "--server-side", "-f", &crd]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/rollouts.argoproj.io serverside-applied"
        ),
        "{out}"
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=20s",
        "crd/rollouts.argoproj.io",
    ])
    .await;

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("rollout.yaml");
    std::fs::write(&manifest, ROLLOUT).unwrap();
    let out = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(out.contains("rollout.argoproj.io/web created"), "{out}");
    let listed = k.ok(&["get", "ro", "-o", "name"]).await;
    assert_eq!(listed.trim(), "rollout.argoproj.io/web");
    let selected = k
        .ok(&["get", "rollouts", "-l", "app=web", "-o", "name"])
        .await;
    assert_eq!(selected.trim(), "rollout.argoproj.io/web");
    let none = k
        .run(&["get", "rollouts", "-l", "app=other", "-o", "name"])
        .await;
    assert!(none.status.success() && none.stdout.is_empty());

    // A watch sees a change made by kubectl.
    let resource = ApiResource {
        group: "argoproj.io".into(),
        version: "v1alpha1".into(),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Rollout".into(),
        plural: "rollouts".into(),
    };
    let rollouts: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &resource);
    let current = rollouts.get("web").await.unwrap();
    let rv = current.metadata.resource_version.clone().unwrap();
    let mut events = rollouts
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    k.ok(&["label", "rollout", "web", "tier=frontend"]).await;
    let modified = tokio::time::timeout(Duration::from_secs(20), async {
        // Bookmarks may come first; a bounded number of events is enough to reach it.
        for _ in 0..10 {
            match events.try_next().await.unwrap() {
                Some(WatchEvent::Modified(obj)) => return obj,
                Some(WatchEvent::Bookmark(_)) => continue,
                other => panic!("expected MODIFIED, got {other:?}"),
            }
        }
        panic!("no MODIFIED within ten events");
    })
    .await
    .expect("a watch event within 20s");
    assert_eq!(modified.metadata.labels.unwrap()["tier"], "frontend");

    // Status belongs to its subresource, which the CRD declares.
    k.ok(&[
        "patch",
        "rollout",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Healthy"}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "rollout",
        "web",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Degraded"},"spec":{"replicas":3}}"#,
    ])
    .await;
    let obj = rollouts.get("web").await.unwrap();
    assert_eq!(obj.data["status"]["phase"], json!("Healthy"));
    assert_eq!(obj.data["spec"]["replicas"], json!(3));
    assert_eq!(obj.metadata.generation, Some(2));

    // Deleting the definition deletes its objects and stops serving the resource.
    k.ok(&["delete", "crd", "rollouts.argoproj.io"]).await;
    let groups = server.client().list_api_groups().await.unwrap();
    assert!(groups.groups.iter().all(|g| g.name != "argoproj.io"));
    let gone = k.run(&["get", "rollouts"]).await;
    assert!(!gone.status.success(), "rollouts are no longer served");
    let answer = send(
        &server,
        "GET",
        "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web",
        "application/json",
        b"",
    )
    .await;
    assert_eq!(answer.code, 404);
}
