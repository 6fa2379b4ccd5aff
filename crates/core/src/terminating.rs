//! Pods already on their way out. A drain that skipped them would call a node drained while a
//! pod still shuts down on it and its replacement is not Ready (issue 12): every resumed drain
//! meets the pods the previous run evicted. So a terminating pod is waited for and its workload
//! gated, and one that is not going is named instead of waited for in silence.
//!
//! The API server sets `deletionTimestamp` to the moment of the delete plus the grace period,
//! the point by which the kubelet kills the containers and removes the pod. Karpenter calls a
//! pod stuck once a minute has passed after that (`IsStuckTerminating` in
//! `pkg/utils/pod/scheduling.go`); we use the same margin.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// How long past its deletion deadline a pod may stay before the drain calls it stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// Whether the pod has a deletion in progress.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Why the pod is stuck terminating at `now`, or `None` while it may still go by itself.
pub fn stuck(pod: &Pod, now: Timestamp) -> Option<String> {
    let deadline = pod.metadata.deletion_timestamp.as_ref()?.0;
    let late = now.duration_since(deadline);
    if late.as_secs() < STUCK_AFTER.as_secs() as i64 {
        return None;
    }
    let late = humantime::format_duration(Duration::from_secs(late.as_secs().max(0) as u64));
    let finalizers = pod.metadata.finalizers.as_deref().unwrap_or_default();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("its node");
    Some(if finalizers.is_empty() {
        format!(
            "stuck terminating: still present {late} after its deletion deadline {deadline}; \
             the kubelet on {node} is not finishing it (is it down?). Once the node is known \
             dead, `kubectl delete pod --force --grace-period=0` removes the object"
        )
    } else {
        format!(
            "stuck terminating: still present {late} after its deletion deadline {deadline}, \
             held by finalizers {}; the controller owning them must finish, or remove them",
            finalizers.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_pod_is_stuck_only_a_minute_past_its_deadline_and_the_reason_names_the_cause() {
        let deadline: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut p = pod("a", Some(("ReplicaSet", "r")), &[]);
        assert!(!is_terminating(&p));
        p.metadata.deletion_timestamp = Some(Time(deadline));
        assert!(is_terminating(&p));
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(stuck(&p, at("2026-01-01T00:00:59Z")), None);
        let dead_kubelet = stuck(&p, at("2026-01-01T00:02:00Z")).unwrap();
        assert!(dead_kubelet.contains("kubelet on node-1"), "{dead_kubelet}");
        assert!(dead_kubelet.contains("2m"), "{dead_kubelet}");
        p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        let held = stuck(&p, at("2026-01-01T00:02:00Z")).unwrap();
        assert!(held.contains("finalizers example.com/hold"), "{held}");
    }
}
