//! What the workload controllers need to know about a pod, with upstream's definitions
//! (`k8s.io/kubernetes/pkg/api/v1/pod`: IsPodReady, IsPodAvailable; `controller_utils.go`:
//! IsPodActive and the ActivePods deletion order).

use std::cmp::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::time::TimeScale;

/// The Ready condition is True.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the Ready condition last became True, if it is True now.
pub(crate) fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// The pod has been asked to go (deletionTimestamp set) but still exists.
pub(crate) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's phase.
pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Counts toward a controller's replicas: not finished and not being deleted (IsPodActive).
pub(crate) fn is_active(pod: &Pod) -> bool {
    !is_terminating(pod) && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Running and Ready, the bar OrderedReady StatefulSets wait for.
pub(crate) fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

/// Whether a Ready pod has been Ready for `min_ready_seconds` (simulated), and if it is Ready
/// but not yet available, how long until it will be — the wake-up a controller schedules.
pub(crate) fn availability(
    pod: &Pod,
    min_ready_seconds: i32,
    scale: TimeScale,
) -> (bool, Option<Duration>) {
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    let needed = scale.real(Duration::from_secs(
        u64::try_from(min_ready_seconds).unwrap_or(0),
    ));
    let elapsed = Timestamp::now().duration_since(since).unsigned_abs();
    match needed.checked_sub(elapsed) {
        Some(left) if !left.is_zero() => (false, Some(left)),
        _ => (true, None),
    }
}

/// Upstream's ActivePods order: the pod to delete first sorts first — unscheduled before
/// scheduled, Pending before Running, not Ready before Ready, Ready for less time first,
/// then newest first.
pub(crate) fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then(ready_since(b).cmp(&ready_since(a)))
        .then(created(b).cmp(&created(a)))
}
