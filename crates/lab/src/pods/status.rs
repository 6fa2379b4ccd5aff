//! What the lab's runtime writes to the API server, as a kubelet does: a pod's Ready status when
//! its probe passed, and the final delete once its container is gone. Each write is bounded.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The status a kubelet posts when a pod's readiness probe passes: Ready and ContainersReady
/// True, the container ready.
pub(super) async fn set_ready(api: &Api<Pod>, pod: &Pod) -> kube::Result<()> {
    let status = pod.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.unwrap_or_default();
    for c in &mut conditions {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            c.status = "True".into();
        }
    }
    let mut containers = status.container_statuses.unwrap_or_default();
    for c in &mut containers {
        c.ready = true;
        c.started = Some(true);
    }
    let patch = json!({"status": {"conditions": conditions, "containerStatuses": containers}});
    let (name, params, patch) = (pod.name_any(), PatchParams::default(), Patch::Merge(patch));
    let write = api.patch_status(&name, &params, &patch);
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {WRITE_TIMEOUT:?}").into(),
        )),
    }
}

/// How long the runtime waits for one of its writes to the API (a bound, as every network
/// call has).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The kubelet's last word on a pod whose containers have all exited: delete it with grace 0,
/// only if it is still the same object (its UID).
pub(super) async fn delete_final(api: &Api<Pod>, pod: &Pod) -> kube::Result<()> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = pod.name_any();
    match tokio::time::timeout(WRITE_TIMEOUT, api.delete(&name, &dp)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {WRITE_TIMEOUT:?}").into(),
        )),
    }
}
