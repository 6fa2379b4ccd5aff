//! What the node's workload needs for a drain to finish, read from the same snapshot the drain
//! engine plans from. The hook's deadline is derived from it instead of a fixed five minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use quiesce_aws::hook::DrainNeeds;
use quiesce_kube::cluster::Snapshot;

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;

/// The needs of draining `node`: its pods' largest grace period, `startup` per replacement, and
/// as many rounds as the tightest budget forces (pods of one budget on this node divided by
/// the disruptions it allows at a time, at least one).
pub fn of(snapshot: &Snapshot, node: &str, startup: Duration) -> DrainNeeds {
    let on_node: Vec<_> = snapshot
        .pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        // DaemonSet pods stay until the instance goes; they do not hold the drain up.
        .filter(|p| {
            !p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "DaemonSet")
        })
        .collect();
    let max_grace = on_node
        .iter()
        .map(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE)
        })
        .max()
        .unwrap_or(0)
        .max(0) as u64;
    let mut per_budget: BTreeMap<String, (u32, i32)> = BTreeMap::new();
    for pod in &on_node {
        for pdb in quiesce_core::pdb::covering(pod, &snapshot.pdbs) {
            let entry = per_budget
                .entry(quiesce_core::pdb::key(pdb))
                .or_insert((0, quiesce_core::pdb::allowed_now(pdb).max(1)));
            entry.0 += 1;
        }
    }
    let serial_rounds = per_budget
        .values()
        .map(|&(pods, allowed)| pods.div_ceil(allowed as u32))
        .max()
        .unwrap_or(1);
    DrainNeeds {
        max_grace: Duration::from_secs(max_grace),
        max_startup: startup,
        serial_rounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, grace: i64) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace, "containers": []},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn rounds_follow_the_tightest_budget_and_grace_the_longest_pod() {
        let pdb = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": 1, "expectedPods": 4, "currentHealthy": 4, "desiredHealthy": 3}
        }))
        .unwrap();
        let snapshot = Snapshot {
            pods: vec![
                pod("web-0", "n1", 20),
                pod("web-1", "n1", 21),
                pod("web-2", "n1", 22),
                pod("web-x", "n2", 600),
            ],
            pdbs: vec![pdb],
            ..Snapshot::default()
        };
        let needs = of(&snapshot, "n1", Duration::from_secs(45));
        assert_eq!(needs.max_grace, Duration::from_secs(22));
        assert_eq!(needs.serial_rounds, 3);
        assert_eq!(needs.max_startup, Duration::from_secs(45));
        assert_eq!(of(&snapshot, "empty", Duration::ZERO).serial_rounds, 1);
    }
}
