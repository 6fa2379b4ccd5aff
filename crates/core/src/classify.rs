//! What kind of pod is this, as far as a drain is concerned.
//!
//! The filters are those of `k8s.io/kubectl/pkg/drain/filters.go` (DaemonSet, mirror, finished,
//! unmanaged, emptyDir) plus Karpenter's opt-out annotation and its "critical" tier
//! (`system-cluster-critical` / `system-node-critical`, from `terminator/terminator.go`).

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// Annotations that keep a pod from being evicted voluntarily (ours and Karpenter's).
pub const DO_NOT_DISRUPT: [&str; 2] = ["quiesce.io/do-not-disrupt", "karpenter.sh/do-not-disrupt"];
/// kubelet marks the API copy of a static pod with this annotation; evicting it does nothing.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How a drain must treat a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodKind {
    /// Recreated on the same node by its DaemonSet at once; never evicted.
    DaemonSet,
    /// Static pod owned by the kubelet; the API object is only a mirror.
    Mirror,
    /// Succeeded or Failed: nothing runs, deleting it loses nothing.
    Finished,
    /// Has a controller that will recreate it elsewhere.
    Managed,
    /// No controller: evicting it loses it for good.
    Unmanaged,
}

/// The controller whose replicas must be Ready again before the node may go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet`, `ReplicaSet` (without a Deployment) or another owner kind.
    pub kind: String,
    /// Namespace of the workload (always the pod's).
    pub namespace: String,
    /// Name of the workload.
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Everything the planner needs to know about one pod on the draining node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodFacts {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, sent as the eviction precondition so a same-named successor is never evicted.
    pub uid: String,
    /// How the drain must treat it.
    pub kind: PodKind,
    /// Uses an emptyDir volume, whose data dies with the pod.
    pub uses_empty_dir: bool,
    /// Carries a do-not-disrupt annotation.
    pub do_not_disrupt: bool,
    /// In a system-critical priority class, so evicted in the last tier.
    pub critical: bool,
    /// The controller to wait for after eviction (Deployment rather than its ReplicaSet).
    pub workload: Option<WorkloadRef>,
}

impl PodFacts {
    /// `namespace/name`, the way people and kubectl name pods.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Classifies `pod`, resolving a ReplicaSet owner to its Deployment through `replica_sets`.
pub fn classify(pod: &Pod, replica_sets: &[ReplicaSet]) -> PodFacts {
    let meta = &pod.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let annotations = meta.annotations.as_ref();
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let kind = if annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        PodKind::Mirror
    } else if matches!(phase, Some("Succeeded" | "Failed")) {
        PodKind::Finished
    } else if controller.is_some_and(|c| c.kind == "DaemonSet") {
        PodKind::DaemonSet
    } else if controller.is_some() {
        PodKind::Managed
    } else {
        PodKind::Unmanaged
    };
    let spec = pod.spec.as_ref();
    let workload = controller.map(|owner| {
        let deployment = (owner.kind == "ReplicaSet")
            .then(|| deployment_of(&namespace, &owner.name, replica_sets))
            .flatten();
        match deployment {
            Some(name) => WorkloadRef {
                kind: "Deployment".into(),
                namespace: namespace.clone(),
                name,
            },
            None => WorkloadRef {
                kind: owner.kind.clone(),
                namespace: namespace.clone(),
                name: owner.name.clone(),
            },
        }
    });
    PodFacts {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        kind,
        uses_empty_dir: spec
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|vol| vol.empty_dir.is_some())),
        do_not_disrupt: annotations.is_some_and(|a| {
            DO_NOT_DISRUPT
                .iter()
                .any(|key| a.get(*key).is_some_and(|v| v != "false"))
        }),
        critical: spec
            .and_then(|s| s.priority_class_name.as_deref())
            .is_some_and(|p| p == "system-cluster-critical" || p == "system-node-critical"),
        workload,
        namespace,
    }
}

/// Whether a do-not-disrupt annotation protects the pod at `now`. Karpenter lets the value be
/// a duration (`"30m"`) after the pod's start time at which the protection ends
/// (karpenter.sh/docs/reference/annotations, `karpenter.sh/do-not-disrupt`); `"false"` is
/// no protection and any other value protects for good.
pub fn protected(pod: &Pod, now: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return false;
    };
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    DO_NOT_DISRUPT
        .iter()
        .filter_map(|key| annotations.get(*key))
        .any(|value| match humantime::parse_duration(value) {
            _ if value == "false" => false,
            Ok(lasts) => started
                .is_none_or(|since| now.duration_since(since).as_secs() < lasts.as_secs() as i64),
            Err(_) => true,
        })
}

fn deployment_of(
    namespace: &str,
    replica_set: &str,
    replica_sets: &[ReplicaSet],
) -> Option<String> {
    replica_sets
        .iter()
        .find(|rs| {
            rs.metadata.name.as_deref() == Some(replica_set)
                && rs.metadata.namespace.as_deref() == Some(namespace)
        })?
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true) && owner.kind == "Deployment")
        .map(|owner| owner.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pod, replica_set};

    #[test]
    fn kinds_follow_kubectl_filters() {
        assert_eq!(
            classify(&pod("a", Some(("DaemonSet", "ds")), &[]), &[]).kind,
            PodKind::DaemonSet
        );
        assert_eq!(classify(&pod("b", None, &[]), &[]).kind, PodKind::Unmanaged);
        let mut mirror = pod("c", None, &[]);
        mirror.metadata.annotations =
            Some([(MIRROR_ANNOTATION.to_string(), "x".to_string())].into());
        assert_eq!(classify(&mirror, &[]).kind, PodKind::Mirror);
        let mut done = pod("d", None, &[]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(classify(&done, &[]).kind, PodKind::Finished);
    }

    #[test]
    fn replica_set_owner_resolves_to_its_deployment() {
        let p = pod("web-1", Some(("ReplicaSet", "web-abc")), &[]);
        let facts = classify(&p, &[replica_set("web-abc", "web")]);
        assert_eq!(facts.kind, PodKind::Managed);
        assert_eq!(
            facts.workload.unwrap().to_string(),
            "Deployment/default/web"
        );
        let orphan_rs = classify(&p, &[]);
        assert_eq!(orphan_rs.workload.unwrap().kind, "ReplicaSet");
    }

    #[test]
    fn opt_out_and_critical_flags() {
        let mut p = pod("x", Some(("StatefulSet", "db")), &[]);
        p.metadata.annotations = Some(
            [(
                "karpenter.sh/do-not-disrupt".to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        p.spec.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
        let facts = classify(&p, &[]);
        assert!(facts.do_not_disrupt);
        assert!(facts.critical);
    }

    #[test]
    fn a_do_not_disrupt_duration_protects_only_that_long_after_the_start() {
        let mut p = pod("x", Some(("ReplicaSet", "r")), &[]);
        let at = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().unwrap();
        p.status.as_mut().unwrap().start_time = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-01-01T00:00:00Z")),
        );
        assert!(!protected(&p, at("2026-01-01T00:10:00Z")));
        for (value, at_ten_minutes, at_an_hour) in [
            ("30m", true, false),
            ("true", true, true),
            ("false", false, false),
        ] {
            p.metadata.annotations =
                Some([("karpenter.sh/do-not-disrupt".to_string(), value.to_string())].into());
            assert_eq!(
                protected(&p, at("2026-01-01T00:10:00Z")),
                at_ten_minutes,
                "{value}"
            );
            assert_eq!(
                protected(&p, at("2026-01-01T01:00:00Z")),
                at_an_hour,
                "{value}"
            );
        }
    }
}
