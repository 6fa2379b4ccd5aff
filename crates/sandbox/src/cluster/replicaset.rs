//! The ReplicaSet controller: keeps `spec.replicas` active pods, deleting surplus in upstream's
//! order (unscheduled, then not Ready, then newest first — `controller.ActivePods`), and
//! reports replicas, ready and available counts.

use serde_json::{Value, json};

use super::objects::{self, active, controller_uid, deleting};
use super::{Pass, pod_from_template, pods};
use crate::api::eviction::is_ready;
use crate::api::resources::by_kind;
use crate::api::store::Part;

/// The pods a controller owns, by controller UID.
pub(super) fn owned<'a>(all: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let uid = objects::uid(owner);
    all.iter()
        .filter(|p| controller_uid(p) == Some(uid))
        .collect()
}

/// Upstream's deletion preference: lower rank goes first.
fn deletion_rank(pod: &Value) -> (u8, u8, std::cmp::Reverse<String>) {
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    (
        u8::from(!unscheduled),
        u8::from(is_ready(pod)),
        std::cmp::Reverse(
            pod["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
    )
}

/// Reconciles every ReplicaSet.
pub(super) fn reconcile(pass: &mut Pass<'_>) {
    let replicasets = by_kind("apps", "ReplicaSet");
    let all_pods = pass.all(pods());
    for rs in pass.all(replicasets) {
        if deleting(&rs) {
            continue;
        }
        let mine = owned(&all_pods, &rs);
        let mut live: Vec<&Value> = mine.iter().copied().filter(|p| active(p)).collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if live.len() < want {
            for _ in live.len()..want {
                pass.create(
                    pods(),
                    objects::namespace(&rs),
                    pod_from_template(&rs, None, &[]),
                );
            }
        } else if live.len() > want {
            live.sort_by_key(|p| deletion_rank(p));
            for pod in &live[..live.len() - want] {
                pass.delete(pods(), pod, None);
            }
        }
        let ready = mine.iter().filter(|p| active(p) && is_ready(p)).count();
        let replicas = mine.iter().filter(|p| active(p)).count();
        let observed = rs["metadata"]["generation"].clone();
        pass.update(replicasets, &rs, Part::Status, |r| {
            r["status"] = json!({"replicas": replicas, "fullyLabeledReplicas": replicas,
                "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": observed});
        });
    }
}
