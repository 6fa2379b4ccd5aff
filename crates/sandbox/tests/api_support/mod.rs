//! Helpers shared by the API server's integration tests: a server on a free loopback port,
//! object builders, and raw HTTP for the answers kube-rs would hide (headers, bad bodies).

#![allow(
    dead_code,
    reason = "each test binary uses its own subset of the helpers"
)]

pub mod kubectl;

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use quiesce_sandbox::api::ApiServer;
use serde_json::{Value, json};

/// A server on a free loopback port.
pub async fn server() -> ApiServer {
    ApiServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A pod with labels, bound to `node` when given.
pub fn pod(name: &str, node: Option<&str>, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]}
    }))
    .unwrap()
}

/// The (code, reason, message) of a `Status` error.
pub fn api_error(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected a Status error, got {other:?}"),
    }
}

/// Plays the kubelet for one pod: Running, and Ready or not.
pub async fn set_running(pods: &Api<Pod>, name: &str, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": ready}, {"type": "PodScheduled", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// What the server answered to a raw request.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub code: u16,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    /// The `Warning` headers, in order.
    pub warnings: Vec<String>,
    /// The body as JSON (`null` when it was not JSON).
    pub body: Value,
}

/// Sends `body` as-is with `content_type`, bounded by a deadline.
pub async fn send(
    server: &ApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.to_vec()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), server.client().send(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answered within 10s"))
        .unwrap();
    let code = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        code,
        retry_after,
        warnings,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Sends a JSON body.
pub async fn send_json(server: &ApiServer, method: &str, path: &str, body: Value) -> Answer {
    send(
        server,
        method,
        path,
        "application/json",
        body.to_string().as_bytes(),
    )
    .await
}
