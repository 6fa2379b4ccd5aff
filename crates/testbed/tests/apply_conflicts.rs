//! Server-side apply on the real v1.20 API server and on the sandbox: the same sequence of
//! applies and updates by different field managers must give the same answers — the 409's
//! Status (reason, message, every cause's field and manager), the 422 of an apply without a
//! manager — and leave the same object with the same `managedFields` (managers, operations,
//! FieldsV1; times aside).

use std::time::Duration;

use kube::api::ApiResource;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use quiesce_testbed::ControlPlane;
use serde_json::{Value, json};

/// What one step answered: code, and the Status body's reason, message and causes (or, for a
/// success, nothing).
async fn send(client: &kube::Client, method: &str, path: &str, kind: &str, body: &Value) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", kind)
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.send(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answered within 20s"))
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
    if code < 300 {
        return json!({"code": code});
    }
    // Upstream lists causes manager by manager in Go map order, which varies; the message
    // sorts them, the comparison does too.
    let mut causes = body["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    causes.sort_by_key(|c| c["field"].to_string());
    json!({"code": code, "reason": body["reason"], "message": body["message"], "causes": causes})
}

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";

fn config_map(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": data})
}

/// The object's data and its managedFields without times.
async fn outcome(client: &kube::Client) -> Value {
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let obj = serde_json::to_value(api.get("cfg").await.unwrap()).unwrap();
    let mut managed = obj["metadata"]["managedFields"].clone();
    for entry in managed.as_array_mut().into_iter().flatten() {
        entry.as_object_mut().unwrap().remove("time");
    }
    json!({"data": obj["data"], "managedFields": managed})
}

async fn sequence(client: &kube::Client) -> Vec<Value> {
    let path = "/api/v1/namespaces/default/configmaps/cfg";
    let as_manager = |m: &str| format!("{path}?fieldManager={m}");
    let mut out = Vec::new();
    let both = config_map(json!({"a": "1", "b": "1"}));
    out.push(send(client, "PATCH", &as_manager("team-a"), APPLY, &both).await);
    let other = config_map(json!({"a": "2", "b": "2"}));
    out.push(send(client, "PATCH", &as_manager("team-b"), APPLY, &other).await);
    let one = config_map(json!({"a": "2"}));
    out.push(send(client, "PATCH", &as_manager("team-b"), APPLY, &one).await);
    out.push(
        send(
            client,
            "PATCH",
            &format!("{}&force=true", as_manager("team-b")),
            APPLY,
            &one,
        )
        .await,
    );
    let edit = json!({"data": {"b": "3", "c": "3"}});
    out.push(send(client, "PATCH", &as_manager("editor"), MERGE, &edit).await);
    out.push(send(client, "PATCH", &as_manager("team-a"), APPLY, &both).await);
    let shared = config_map(json!({"c": "3"}));
    out.push(send(client, "PATCH", &as_manager("team-a"), APPLY, &shared).await);
    out.push(send(client, "PATCH", path, APPLY, &shared).await);
    out.push(outcome(client).await);
    out.extend(deployment_sequence(client).await);
    out
}

fn deployment(image: &str, port: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image, "ports": [port],
                "env": [{"name": "MODE", "value": "blue"}]}]}}}})
}

/// Lists merged by key: a conflict on one container's image, and the applier's FieldsV1 with
/// its `k:` keys (a port's protocol defaulted into its key).
async fn deployment_sequence(client: &kube::Client) -> Vec<Value> {
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let as_manager = |m: &str| format!("{path}?fieldManager={m}");
    let mut out = Vec::new();
    let first = deployment("web:1", json!({"containerPort": 80}));
    out.push(send(client, "PATCH", &as_manager("team-a"), APPLY, &first).await);
    let image = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}});
    out.push(send(client, "PATCH", &as_manager("team-b"), APPLY, &image).await);
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
    );
    let obj = serde_json::to_value(api.get("web").await.unwrap()).unwrap();
    let applied: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "Apply")
        .map(|e| json!({"manager": e["manager"], "fieldsV1": e["fieldsV1"]}))
        .collect();
    out.push(json!(applied));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_conflicts_and_managed_fields_match_the_real_server() {
    let plane = ControlPlane::start()
        .await
        .expect("the v1.20 control plane starts");
    let real = sequence(&plane.client().await.unwrap()).await;
    assert_eq!(
        real[1]["message"],
        json!("Apply failed with 2 conflicts: conflicts with \"team-a\":\n- .data.a\n- .data.b")
    );
    assert_eq!(
        real[10]["message"],
        json!(
            "Apply failed with 1 conflict: conflict with \"team-a\": .spec.template.spec.containers[name=\"app\"].image"
        )
    );
    let port = &real[11][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"app"}"#]
        ["f:ports"];
    assert!(
        port.get(r#"k:{"containerPort":80,"protocol":"TCP"}"#)
            .is_some(),
        "{port}"
    );
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let ours = sequence(&sandbox.client()).await;
    sandbox.shutdown().await;
    for (step, (want, got)) in real.iter().zip(&ours).enumerate() {
        assert_eq!(got, want, "step {step}");
    }
}
