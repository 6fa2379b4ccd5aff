//! The DaemonSet controller: one pod on every node whose taints the pod tolerates (DaemonSet
//! pods tolerate `node.kubernetes.io/unschedulable`, as upstream adds that toleration, so a
//! cordon does not evict them), bound directly to its node.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::objects::{self, deleting, owned, tolerates};
use super::{Pass, pods};
use crate::api::eviction::is_ready;
use crate::api::resources::by_kind;
use crate::api::store::Part;

/// Reconciles every DaemonSet.
pub(super) fn reconcile(pass: &mut Pass<'_>) {
    let daemonsets = by_kind("apps", "DaemonSet");
    let sets = pass.all(daemonsets);
    if sets.is_empty() {
        return;
    }
    let uids: HashSet<&str> = sets.iter().map(objects::uid).collect();
    let all_pods = pass.matching(pods(), |p| {
        objects::controller_uid(p).is_some_and(|u| uids.contains(u))
    });
    let nodes = pass.all(by_kind("", "Node"));
    for ds in sets {
        if deleting(&ds) {
            continue;
        }
        let mine = owned(&all_pods, &ds);
        let mut tolerations = ds["spec"]["template"]["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        tolerations.push(json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}));
        let tolerations = json!(tolerations);
        let selector = ds["spec"]["template"]["spec"]["nodeSelector"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let eligible: Vec<&serde_json::Value> = nodes
            .iter()
            .filter(|n| {
                let taints_ok = n["spec"]["taints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
                    .all(|t| tolerates(&tolerations, t));
                let labels_ok = selector
                    .iter()
                    .all(|(k, v)| &n["metadata"]["labels"][k] == v);
                taints_ok && labels_ok
            })
            .collect();
        for node in &eligible {
            let node_name = objects::name(node);
            if !mine
                .iter()
                .any(|p| p["spec"]["nodeName"] == json!(node_name) && !deleting(p))
            {
                let mut pod = pod_from_template(&ds);
                pod["spec"]["nodeName"] = json!(node_name);
                pod["spec"]["tolerations"] = tolerations.clone();
                pass.create(pods(), objects::namespace(&ds), pod);
            }
        }
        for pod in mine.iter().filter(|p| !deleting(p)) {
            let on_eligible = eligible
                .iter()
                .any(|n| pod["spec"]["nodeName"] == json!(objects::name(n)));
            if !on_eligible {
                pass.delete(pods(), pod, None);
            }
        }
        let scheduled = mine.iter().filter(|p| objects::active(p)).count();
        let ready = mine
            .iter()
            .filter(|p| objects::active(p) && is_ready(p))
            .count();
        let observed = ds["metadata"]["generation"].clone();
        pass.update(daemonsets, &ds, Part::Status, |d| {
            d["status"] = json!({"observedGeneration": observed, "desiredNumberScheduled": eligible.len(),
                "currentNumberScheduled": scheduled, "updatedNumberScheduled": scheduled,
                "numberReady": ready, "numberAvailable": ready, "numberMisscheduled": 0,
                "numberUnavailable": eligible.len().saturating_sub(ready)});
        });
    }
}

/// A pod stamped from the DaemonSet's template, bound to no node yet.
fn pod_from_template(ds: &Value) -> Value {
    let template = &ds["spec"]["template"];
    let mut pod = json!({
        "metadata": {
            "generateName": format!("{}-", objects::name(ds)),
            "labels": template["metadata"]["labels"],
            "ownerReferences": objects::owner_ref(ds),
        },
        "spec": template["spec"],
    });
    if template["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
    }
    pod
}
