//! The replacement gate: has a workload got all its replicas Ready again, away from the node?
//!
//! This is the check no drain tool makes (research section 10): "pods gone" is not "service
//! restored". A workload passes when at least `desired` of its pods are Ready, not terminating,
//! and bound to a node other than the one being drained.

use k8s_openapi::api::core::v1::Pod;

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How many of `pods` are Ready replacements (not terminating, not on `draining`).
pub fn ready_elsewhere<'a>(pods: impl IntoIterator<Item = &'a Pod>, draining: &str) -> i32 {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| n != draining)
        })
        .filter(|p| is_ready(p))
        .count() as i32
}

/// The gate itself.
pub fn replaced<'a>(desired: i32, pods: impl IntoIterator<Item = &'a Pod>, draining: &str) -> bool {
    ready_elsewhere(pods, draining) >= desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    fn ready_on(name: &str, node: &str, ready: bool) -> Pod {
        let mut p = pod(name, Some(("ReplicaSet", "r")), &[]);
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }))
            .unwrap(),
        );
        p
    }

    #[test]
    fn counts_only_ready_pods_on_other_nodes() {
        let pods = [
            ready_on("a", "node-1", true),
            ready_on("b", "node-2", false),
        ];
        assert!(!replaced(1, &pods, "node-1"));
        let pods = [ready_on("a", "node-1", true), ready_on("b", "node-2", true)];
        assert!(replaced(1, &pods, "node-1"));
        assert!(!replaced(2, &pods, "node-1"));
    }
}
