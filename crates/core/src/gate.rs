//! The replacement gate: is a workload whole again, away from the node?
//!
//! This is the check no drain tool makes (research section 10): "pods gone" is not "service
//! restored". A workload passes when enough of *its own* pods (by owner chain: a canary
//! Deployment sharing the `app` label is not the workload) are Available — Ready for the
//! controller's `minReadySeconds`, as `podutil.IsPodAvailable` defines it — not terminating,
//! and on a node other than the one being drained. "Enough" is what the workload had before
//! the drain, recorded before the first eviction, but never more than it wants now: an HPA
//! scale-down during the drain lowers the bar, and a replica crash-looping elsewhere before the
//! drain does not hold it forever.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::WorkloadRef;
use crate::classify::classify;
use crate::terminating::is_terminating;

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod last became Ready, if it is Ready (a Ready pod without a transition time
/// counts as Ready since forever, as upstream treats a zero time).
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => now.duration_since(since).as_secs() >= i64::from(min_ready_seconds),
    }
}

/// What the gate needs to know about a workload object; `None` from [`Workload::find`] means
/// the workload was deleted, which ends its gate (nothing will ever replace its pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// `spec.replicas` now.
    pub replicas: i32,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
}

/// Which workload kinds the gate knows how to count; pods of any other controller (an
/// operator's own pod sets, Argo Rollouts) are reported as ungated rather than passed.
pub fn is_known(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet" | "ReplicaSet")
}

impl Workload {
    /// Looks `workload` up among the objects read from the cluster.
    pub fn find(
        workload: &WorkloadRef,
        deployments: &[Deployment],
        stateful_sets: &[StatefulSet],
        replica_sets: &[ReplicaSet],
    ) -> Option<Workload> {
        fn named<
            'a,
            K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
        >(
            items: &'a [K],
            w: &WorkloadRef,
        ) -> Option<&'a K> {
            items.iter().find(|o| {
                o.metadata().name.as_deref() == Some(w.name.as_str())
                    && o.metadata().namespace.as_deref() == Some(w.namespace.as_str())
                    && o.metadata().deletion_timestamp.is_none()
            })
        }
        let (replicas, min_ready) = match workload.kind.as_str() {
            "Deployment" => {
                let s = named(deployments, workload)?.spec.as_ref()?;
                (s.replicas, s.min_ready_seconds)
            }
            "StatefulSet" => {
                let s = named(stateful_sets, workload)?.spec.as_ref()?;
                (s.replicas, s.min_ready_seconds)
            }
            "ReplicaSet" => {
                let s = named(replica_sets, workload)?.spec.as_ref()?;
                (s.replicas, s.min_ready_seconds)
            }
            _ => return None,
        };
        Some(Workload {
            replicas: replicas.unwrap_or(1),
            min_ready_seconds: min_ready.unwrap_or(0),
        })
    }
}

/// The workload's own pods among `pods`, by owner chain.
pub fn pods_of<'a>(
    workload: &'a WorkloadRef,
    pods: impl IntoIterator<Item = &'a Pod> + 'a,
    replica_sets: &'a [ReplicaSet],
) -> impl Iterator<Item = &'a Pod> + 'a {
    pods.into_iter()
        .filter(move |p| classify(p, replica_sets).workload.as_ref() == Some(workload))
}

/// How many of the workload's pods count towards its gate: Available, not terminating, not on
/// `draining`.
pub fn available_elsewhere(
    workload: &WorkloadRef,
    spec: Workload,
    pods: &[Pod],
    replica_sets: &[ReplicaSet],
    draining: &str,
    now: Timestamp,
) -> i32 {
    pods_of(workload, pods, replica_sets)
        .filter(|p| !is_terminating(p))
        .filter(|p| node_of(p).is_some_and(|n| n != draining))
        .filter(|p| is_available(p, spec.min_ready_seconds, now))
        .count() as i32
}

/// What the workload had before the drain touched it: its Available pods, plus its pods on
/// the draining node that are already terminating (a drain resumed without a record finds
/// them so, and they were serving until just now), never more than it wants.
pub fn available_before(
    workload: &WorkloadRef,
    spec: Workload,
    pods: &[Pod],
    replica_sets: &[ReplicaSet],
    draining: &str,
    now: Timestamp,
) -> i32 {
    let counted = pods_of(workload, pods, replica_sets)
        .filter(|p| {
            if is_terminating(p) {
                node_of(p) == Some(draining)
            } else {
                is_available(p, spec.min_ready_seconds, now)
            }
        })
        .count() as i32;
    counted.min(spec.replicas)
}

/// Where one workload's gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum GateState {
    /// Fewer than `want` of its pods are Available elsewhere.
    Waiting {
        /// Available elsewhere now.
        have: i32,
        /// What the gate needs.
        want: i32,
    },
    /// Whole again elsewhere.
    Whole,
    /// The workload object is gone; nothing will replace its pods, so nothing is waited for.
    Deleted,
}

/// Judges one workload's gate: `before` is the recorded pre-drain count, `spec` the workload
/// as read now (`None`: deleted).
pub fn judge(
    workload: &WorkloadRef,
    before: i32,
    spec: Option<Workload>,
    pods: &[Pod],
    replica_sets: &[ReplicaSet],
    draining: &str,
    now: Timestamp,
) -> GateState {
    let Some(spec) = spec else {
        return GateState::Deleted;
    };
    let want = before.min(spec.replicas).max(0);
    let have = available_elsewhere(workload, spec, pods, replica_sets, draining, now);
    if have >= want {
        GateState::Whole
    } else {
        GateState::Waiting { have, want }
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, replica_set};

    fn web() -> WorkloadRef {
        WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    fn ready_on(name: &str, rs: &str, node: &str, ready: bool, since: &str) -> Pod {
        let mut p = pod(name, Some(("ReplicaSet", rs)), &[("app", "web")]);
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": since}]
            }))
            .unwrap(),
        );
        p
    }

    const T0: &str = "2026-01-01T00:00:00Z";

    fn now() -> Timestamp {
        "2026-01-01T00:00:30Z".parse().unwrap()
    }

    fn spec(replicas: i32, min_ready_seconds: i32) -> Option<Workload> {
        Some(Workload {
            replicas,
            min_ready_seconds,
        })
    }

    #[test]
    fn counts_only_its_own_available_pods_on_other_nodes() {
        let rs = [
            replica_set("web-1", "web"),
            replica_set("canary-1", "canary"),
        ];
        let pods = [
            ready_on("a", "web-1", "node-1", true, T0),
            ready_on("b", "web-1", "node-2", false, T0),
            // Same `app` label, another Deployment: must not count.
            ready_on("c", "canary-1", "node-2", true, T0),
        ];
        let judge = |before, spec| judge(&web(), before, spec, &pods, &rs, "node-1", now());
        assert_eq!(
            judge(1, spec(1, 0)),
            GateState::Waiting { have: 0, want: 1 }
        );
        let mut pods = pods.clone();
        pods[1] = ready_on("b", "web-1", "node-2", true, "2026-01-01T00:00:20Z");
        let judge = |before, spec| super::judge(&web(), before, spec, &pods, &rs, "node-1", now());
        assert_eq!(judge(1, spec(1, 0)), GateState::Whole);
        // Ready 10 s ago is not Available under minReadySeconds 15.
        assert_eq!(
            judge(1, spec(1, 15)),
            GateState::Waiting { have: 0, want: 1 }
        );
        assert_eq!(
            judge(2, spec(2, 0)),
            GateState::Waiting { have: 1, want: 2 }
        );
        // Scaled down to 1 while waiting: the bar drops.
        assert_eq!(judge(2, spec(1, 0)), GateState::Whole);
        assert_eq!(judge(2, None), GateState::Deleted);
    }

    #[test]
    fn the_count_before_includes_terminating_pods_on_the_node_and_not_crash_loops() {
        let rs = [replica_set("web-1", "web")];
        let mut leaving = ready_on("a", "web-1", "node-1", false, T0);
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let pods = [
            leaving,
            ready_on("b", "web-1", "node-2", true, T0),
            ready_on("crashing", "web-1", "node-3", false, T0),
        ];
        assert_eq!(
            available_before(&web(), spec(3, 0).unwrap(), &pods, &rs, "node-1", now()),
            2
        );
        assert_eq!(
            available_before(&web(), spec(1, 0).unwrap(), &pods, &rs, "node-1", now()),
            1
        );
    }
}
