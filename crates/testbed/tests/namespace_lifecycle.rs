//! Deleting a namespace, on the real v1.20 control plane and on the sandbox with its
//! simulated controllers: the namespace turns Terminating, its content is deleted, a create
//! in it is refused with the same 403, and it is gone once the last finalizer of its content
//! is removed.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::time::TimeScale;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use quiesce_testbed::ControlPlane;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it holds, within [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the sequence and returns the 403's (reason, message) and the namespace's phase while
/// it waits for the held ConfigMap.
async fn lifecycle(client: kube::Client) -> (String, String, String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let held = serde_json::from_value(json!({"metadata": {"name": "held",
        "finalizers": ["example.com/hold"]}, "data": {"a": "b"}}))
    .unwrap();
    configmaps
        .create(&PostParams::default(), &held)
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace controller deleted the ConfigMap", || async {
        configmaps
            .get("held")
            .await
            .is_ok_and(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    let phase = namespaces
        .get("doomed")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase)
        .unwrap_or_default();
    let late = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
    let refused = match configmaps.create(&PostParams::default(), &late).await {
        Err(kube::Error::Api(status)) => status,
        other => panic!("a create in a terminating namespace was refused, got {other:?}"),
    };
    assert_eq!(refused.code, 403);
    configmaps
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually("the namespace is gone", || async {
        namespaces.get_opt("doomed").await.unwrap().is_none()
    })
    .await;
    (refused.reason, refused.message, phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_terminates_as_on_the_real_server() {
    let plane = ControlPlane::start()
        .await
        .expect("the v1.20 control plane starts");
    let real = lifecycle(plane.client().await.unwrap()).await;
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: Scenario::nodes_only(1),
        time_scale: TimeScale::new(10.0).unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ours = lifecycle(sandbox.client()).await;
    assert_eq!(real.2, "Terminating");
    assert_eq!(ours, real);
    sandbox.shutdown().await;
}
