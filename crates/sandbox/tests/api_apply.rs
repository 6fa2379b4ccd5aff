//! Server-side apply with the real kubectl: two field managers applying the same Deployment,
//! Service and ConfigMap conflict (409 naming the field and its manager), `--force-conflicts`
//! moves the field, `managedFields` says who owns what, a field its sole manager stops applying
//! is removed, and kubectl's own writes are recorded as `Update`s.

mod api_support;

use std::path::{Path, PathBuf};

use api_support::kubectl::Kubectl;
use api_support::{send, server};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const TEAM_A: &str = r#"apiVersion: apps/v1
kind: Deployment
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
        ports:
        - containerPort: 80
        env:
        - {name: MODE, value: blue}
        - {name: DEBUG, value: "1"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80}
  - {name: metrics, port: 9090}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data: {greeting: hello, farewell: bye}
"#;

/// Team A again, having dropped `replicas` (now team B's), the `DEBUG` variable, the metrics
/// port and the `farewell` key.
fn team_a_later() -> String {
    let later = TEAM_A
        .replace("  replicas: 2\n", "")
        .replace("        - {name: DEBUG, value: \"1\"}\n", "")
        .replace("  - {name: metrics, port: 9090}\n", "")
        .replace(
            "data: {greeting: hello, farewell: bye}",
            "data: {greeting: hello}",
        );
    assert_eq!(later.lines().count(), TEAM_A.lines().count() - 3);
    later
}

const TEAM_B: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 5
"#;

/// `(manager, operation)` of every managedFields entry.
fn managers(obj: &impl kube::Resource) -> Vec<(String, String)> {
    obj.meta()
        .managed_fields
        .iter()
        .flatten()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// The FieldsV1 of one manager's entry.
fn fields_of(obj: &impl kube::Resource, manager: &str) -> Value {
    let entry = obj
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some(manager))
        .unwrap_or_else(|| panic!("{manager} manages the object"));
    serde_json::to_value(&entry.fields_v1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_conflict_force_and_drop_fields() {
    let server = server().await;
    let k = Kubectl::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", TEAM_A);
    let b = write(dir.path(), "b.yaml", TEAM_B);
    let a_later = write(dir.path(), "a-later.yaml", &team_a_later());
    let apply = |file: &PathBuf, manager: &str| {
        let file = file.to_str().unwrap().to_string();
        let manager = format!("--field-manager={manager}");
        (file, manager)
    };

    let (file, manager) = apply(&a, "team-a");
    let out = k
        .ok(&["apply", "--server-side", &manager, "-f", &file])
        .await;
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let deployments: Api<Deployment> = Api::default_namespaced(server.client());
    let services: Api<Service> = Api::default_namespaced(server.client());
    let config_maps: Api<ConfigMap> = Api::default_namespaced(server.client());
    let web = deployments.get("web").await.unwrap();
    assert_eq!(managers(&web), vec![("team-a".into(), "Apply".into())]);
    let owned = fields_of(&web, "team-a");
    assert_eq!(owned["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        owned["f:spec"]["f:selector"],
        json!({}),
        "a selector is atomic"
    );
    let container = &owned["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"app"}"#];
    assert_eq!(container["."], json!({}));
    assert_eq!(
        container["f:ports"][r#"k:{"containerPort":80,"protocol":"TCP"}"#]["f:containerPort"],
        json!({})
    );
    assert_eq!(
        container["f:env"][r#"k:{"name":"DEBUG"}"#]["f:value"],
        json!({})
    );

    // Team B wants other replicas: a conflict with team A, and nothing changes.
    let (file, manager) = apply(&b, "team-b");
    let out = k
        .run(&["apply", "--server-side", &manager, "-f", &file])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(r#"Apply failed with 1 conflict: conflict with "team-a": .spec.replicas"#),
        "{stderr}"
    );
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );

    // The Status body of the conflict, as clients read it.
    let body = serde_json::to_vec(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 7}}))
    .unwrap();
    let answer = send(
        &server,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=team-b",
        "application/apply-patch+yaml",
        &body,
    )
    .await;
    assert_eq!(answer.code, 409);
    assert_eq!(answer.body["reason"], json!("Conflict"));
    assert_eq!(
        answer.body["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"team-a\"",
            "field": ".spec.replicas"}])
    );

    // Forced, the field moves to team B.
    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager,
            "-f",
            &file,
        ])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.as_ref().unwrap().replicas, Some(5));
    assert_eq!(
        fields_of(&web, "team-b"),
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(
        fields_of(&web, "team-a")["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    // Team A stops applying fields only it owned: they go; replicas (team B's) stays.
    let (file, manager) = apply(&a_later, "team-a");
    k.ok(&["apply", "--server-side", &manager, "-f", &file])
        .await;
    let web = deployments.get("web").await.unwrap();
    let spec = web.spec.unwrap();
    assert_eq!(spec.replicas, Some(5));
    let env: Vec<String> = spec.template.spec.unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(env, vec!["MODE".to_string()]);
    let ports: Vec<i32> = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![80]);
    let data = config_maps.get("web").await.unwrap().data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["greeting"]);

    // kubectl's own writes are Updates under its manager names.
    k.ok(&["label", "configmap", "web", "tier=frontend"]).await;
    let cm = config_maps.get("web").await.unwrap();
    assert!(
        managers(&cm).contains(&("kubectl-label".into(), "Update".into())),
        "{:?}",
        managers(&cm)
    );
    assert_eq!(
        fields_of(&cm, "kubectl-label")["f:metadata"]["f:labels"]["f:tier"],
        json!({})
    );
    let shown = k
        .ok(&[
            "get",
            "configmap",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .await;
    assert!(shown.contains("fieldsType: FieldsV1"), "{shown}");
}
