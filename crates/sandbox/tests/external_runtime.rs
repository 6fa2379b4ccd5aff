//! A pod annotated `sandbox.quiesce.io/external-runtime: "true"` is bound and given an IP by
//! the simulated kubelet, but Ready and the final delete are left to the runtime that runs its
//! containers (the lab's process runtime): no timer makes it Ready, and once deleted it stays
//! terminating — unready — until that runtime deletes it with grace 0.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Polls `check` until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(name: &str, external: bool) -> serde_json::Value {
    let mut annotations = json!({"sandbox.quiesce.io/startup-delay": "100ms"});
    if external {
        annotations[quiesce_sandbox::cluster::EXTERNAL_RUNTIME] = json!("true");
    }
    json!({"metadata": {"name": name, "annotations": annotations},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "app:1"}]}})
}

#[tokio::test]
async fn an_externally_run_pod_is_ready_and_gone_only_when_its_runtime_says_so() {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: Scenario::nodes_only(1),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(sandbox.client(), "default");
    for (name, external) in [("simulated", false), ("external", true)] {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod(name, external)).unwrap(),
        )
        .await
        .unwrap();
    }
    // The simulated pod's startup delay passes: it is Ready; the external one, Running with an
    // IP all along, is still not.
    eventually("the simulated pod Ready", || async {
        pods.get("simulated").await.is_ok_and(|p| ready(&p))
    })
    .await;
    let external = pods.get("external").await.unwrap();
    let status = external.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.pod_ip.is_some());
    assert!(!ready(&external), "no timer made it Ready");

    // Its runtime's probe passed: the runtime reports it Ready, and it stays so.
    let mut conditions = status.conditions.unwrap();
    for c in &mut conditions {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            c.status = "True".into();
        }
    }
    pods.patch_status(
        "external",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": conditions}})),
    )
    .await
    .unwrap();
    assert!(ready(&pods.get("external").await.unwrap()));

    // Deleted: unready at once, but kept until its runtime's final delete.
    pods.delete("external", &DeleteParams::default())
        .await
        .unwrap();
    pods.delete("simulated", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the simulated pod gone", || async {
        pods.get_opt("simulated").await.unwrap().is_none()
    })
    .await;
    let terminating = pods.get("external").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(!ready(&terminating), "a deleted pod is unready at once");
    pods.delete("external", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get_opt("external").await.unwrap().is_none());
    sandbox.shutdown().await;
}
