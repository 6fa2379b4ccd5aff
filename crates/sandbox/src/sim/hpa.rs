//! The HorizontalPodAutoscaler controller, without metrics: the sandbox runs no metrics
//! server, so an HPA keeps its target's replicas within `minReplicas..=maxReplicas` through
//! the target's `scale` subresource and reports that it cannot compute a metric-based count
//! (upstream `pkg/controller/podautoscaler`, which syncs every 15 s).

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::watches::Watches;
use super::writes;
use crate::api::resources::RESOURCES;
use crate::time::TimeScale;

/// Upstream's `--horizontal-pod-autoscaler-sync-period`.
const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// Runs the controller until the task is dropped; the sync period is simulated time.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let hpas = watches.store::<HorizontalPodAutoscaler>();
    watches.ready().await;
    loop {
        for hpa in hpas.state() {
            if hpa.metadata.deletion_timestamp.is_none() {
                sync(&client, &hpa).await;
            }
        }
        watches.changed(Some(scale.real(SYNC_PERIOD))).await;
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(Timestamp::now())),
    }
}

async fn sync(client: &Client, hpa: &HorizontalPodAutoscaler) {
    let namespace = hpa.namespace().unwrap_or_default();
    let Some(spec) = hpa.spec.as_ref() else {
        return;
    };
    let target = &spec.scale_target_ref;
    let group = target
        .api_version
        .as_deref()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    let Some(r) = RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == target.kind)
    else {
        tracing::debug!(hpa = %hpa.name_any(), kind = %target.kind, "target kind not served");
        return;
    };
    let resource = ApiResource {
        group: r.group.into(),
        version: r.version.into(),
        api_version: r.api_version(),
        kind: r.kind.into(),
        plural: r.plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let scale = match api.get_scale(&target.name).await {
        Ok(scale) => scale,
        Err(error) => {
            tracing::debug!(hpa = %hpa.name_any(), %error, "reading the target's scale");
            return;
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let desired = current.clamp(spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let mut status = hpa.status.clone().unwrap_or_default();
    if desired != current {
        let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
        if let Err(error) = api
            .patch_scale(&target.name, &PatchParams::default(), &patch)
            .await
        {
            tracing::debug!(hpa = %hpa.name_any(), %error, "scaling the target");
            return;
        }
        status.last_scale_time = Some(Time(Timestamp::now()));
    }
    let conditions = if status.conditions.is_none() {
        Some(vec![
            condition(
                "AbleToScale",
                "True",
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale",
            ),
            condition(
                "ScalingActive",
                "False",
                "NoMetrics",
                "the quiesce sandbox has no metrics server: replicas are only kept within minReplicas and maxReplicas",
            ),
        ])
    } else {
        status.conditions.clone()
    };
    let next = HorizontalPodAutoscalerStatus {
        current_replicas: Some(scale.status.as_ref().map_or(0, |s| s.replicas)),
        desired_replicas: desired,
        observed_generation: hpa.metadata.generation,
        conditions,
        ..status
    };
    if hpa.status.as_ref() != Some(&next) {
        let mut updated = hpa.clone();
        updated.status = Some(next);
        writes::write_status(
            &Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &namespace),
            &updated,
        )
        .await;
    }
}
