//! The merge patches that cordon and fence a node, and that lift the fence again, built from
//! the Node as read. They are pure so that a caller holding a Node it watched can put the cordon
//! into the same conditional write as something else (the drainer claims a node's lifecycle
//! action and cordons it in one write, see `quiesce_drainer::claim`).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use crate::cluster::Cordon;

/// The label that takes a node out of cloud load balancers' target sets.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The value the drain gives [`EXCLUDE_LB_LABEL`]: an uncordon removes the label only with
/// this value, since users set it for their own reasons.
pub const LABEL_VALUE: &str = "quiesce";
/// The taint that fences a node from the AWS Load Balancer Controller's instance targets and
/// kube-proxy's health check (see [`Cordon::fence_taint`]).
pub const FENCE_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// The merge patch that cordons `current` with `cordon`'s fence: unschedulable, the
/// load-balancer label (unless the user set one: theirs is left as it is, and not removed
/// later), the extra taint and the fence taint; `None` when `current` has all of them already.
/// Taints are a list a merge patch replaces whole, so the patch carries every taint `current`
/// has: send it with `current`'s resourceVersion as precondition, or a taint added meanwhile
/// is lost.
pub fn cordon_patch(current: &Node, cordon: &Cordon) -> Option<Value> {
    let mut patch = json!({});
    if !quiesce_core::capacity::is_cordoned(current) {
        patch["spec"]["unschedulable"] = json!(true);
    }
    if cordon.exclude_from_load_balancers && label_of(current).is_none() {
        patch["metadata"]["labels"] = json!({EXCLUDE_LB_LABEL: LABEL_VALUE});
    }
    let mut wanted = Vec::new();
    wanted.extend(
        cordon
            .taint
            .as_deref()
            .map(parse_taint)
            .filter(|t| !has_taint(current, t)),
    );
    if cordon.fences() && !has_fence_taint(current) {
        wanted.push(fence_taint());
    }
    if !wanted.is_empty() {
        let mut taints = taints_without(current, &wanted);
        taints.extend(wanted);
        patch["spec"]["taints"] = json!(taints);
    }
    (patch != json!({})).then_some(patch)
}

/// The merge patch that removes the fence from `current` (the label only if its value is
/// ours), and the cordon too if `uncordon`; `None` when there is nothing to change. The same
/// precondition as [`cordon_patch`] applies.
pub fn lift_patch(current: &Node, cordon: &Cordon, uncordon: bool) -> Option<Value> {
    let mut patch = if uncordon {
        json!({"spec": {"unschedulable": null}})
    } else {
        json!({})
    };
    if cordon.exclude_from_load_balancers && label_of(current) == Some(LABEL_VALUE) {
        patch["metadata"]["labels"] = json!({EXCLUDE_LB_LABEL: null});
    }
    let mut gone = Vec::new();
    gone.extend(cordon.taint.as_deref().map(parse_taint));
    if cordon.fences() {
        gone.push(fence_taint());
    }
    if !gone.is_empty() {
        patch["spec"]["taints"] = json!(taints_without(current, &gone));
    }
    (patch != json!({})).then_some(patch)
}

/// The merge patch that puts the fence taint back on `current` (Cluster Autoscaler clears it
/// at its start), keeping its other taints.
pub fn refence_patch(current: &Node) -> Value {
    let mut taints = taints_without(current, &[]);
    taints.push(fence_taint());
    json!({"spec": {"taints": taints}})
}

/// Whether `node` carries [`FENCE_TAINT`] with effect NoSchedule (anyone's).
pub fn has_fence_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == FENCE_TAINT && t.effect == "NoSchedule")
        })
}

/// Whether `node` carries `taint` as it is (key, value and effect).
fn has_taint(node: &Node, taint: &Value) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                t.key == taint["key"]
                    && t.effect == taint["effect"]
                    && t.value.as_deref() == taint["value"].as_str()
            })
        })
}

/// The load-balancer label's value on `node`, if it has the label.
fn label_of(node: &Node) -> Option<&str> {
    node.metadata
        .labels
        .as_ref()?
        .get(EXCLUDE_LB_LABEL)
        .map(String::as_str)
}

/// The fence taint, valued as Cluster Autoscaler values its own (the Unix time it was set), so
/// that Cluster Autoscaler reads it without complaint.
fn fence_taint() -> Value {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    json!({"key": FENCE_TAINT, "value": now.to_string(), "effect": "NoSchedule"})
}

/// The node's taints without those matching one of `unwanted` by key and effect.
fn taints_without(node: &Node, unwanted: &[Value]) -> Vec<Value> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| {
            !unwanted
                .iter()
                .any(|w| t.key == w["key"] && t.effect == w["effect"])
        })
        .map(|t| json!(t))
        .collect()
}

/// `key=value:Effect` (or `key:Effect`) as a taint object; the effect defaults to NoSchedule.
fn parse_taint(spec: &str) -> Value {
    let (kv, effect) = spec.rsplit_once(':').unwrap_or((spec, "NoSchedule"));
    match kv.split_once('=') {
        Some((key, value)) => json!({"key": key, "value": value, "effect": effect}),
        None => json!({"key": kv, "effect": effect}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_cordoned_and_fenced_needs_no_patch() {
        let cordon = Cordon {
            taint: Some("quiesce.io/draining=true:NoSchedule".into()),
            exclude_from_load_balancers: true,
            fence_taint: true,
        };
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": {"team": "a"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}
        }))
        .unwrap();
        let patch = cordon_patch(&node, &cordon).expect("an uncordoned node is patched");
        assert_eq!(patch["spec"]["unschedulable"], json!(true));
        assert_eq!(patch["metadata"]["labels"][EXCLUDE_LB_LABEL], LABEL_VALUE);
        let taints = patch["spec"]["taints"].as_array().unwrap();
        assert_eq!(taints.len(), 3, "the user's taint is kept: {taints:?}");
        // Applied, the node needs nothing more: the engine's cordon after the claim's is free.
        let mut value = serde_json::to_value(&node).unwrap();
        value["spec"]["unschedulable"] = json!(true);
        value["spec"]["taints"] = patch["spec"]["taints"].clone();
        value["metadata"]["labels"][EXCLUDE_LB_LABEL] = json!(LABEL_VALUE);
        node = serde_json::from_value(value).unwrap();
        assert_eq!(cordon_patch(&node, &cordon), None);
    }

    #[test]
    fn taints_render_like_kubectl() {
        assert_eq!(
            parse_taint("quiesce.io/draining=true:NoExecute"),
            json!({"key": "quiesce.io/draining", "value": "true", "effect": "NoExecute"})
        );
        assert_eq!(
            parse_taint("dedicated"),
            json!({"key": "dedicated", "effect": "NoSchedule"})
        );
    }
}
