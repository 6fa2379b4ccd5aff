//! What a whole batch out at once does to the cluster, which the per-node drain plan cannot
//! see: Instance Refresh takes `size − ⌈size × MinHealthyPercentage⌉` instances out together,
//! so their drains run at the same time. A PodDisruptionBudget that lets `k` pods go at once
//! and has more than `k` pods on the batch's nodes makes those drains wait on each other
//! (each is held to its own deadline, so one of them may run out and be ABANDONed); the pods
//! of the whole batch need room on the nodes that stay. Both are judged for the worst batch:
//! the nodes holding the most of a budget's pods, and the nodes holding the most pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use quiesce_core::classify::classify;
use quiesce_core::{PodKind, capacity, pdb};
use quiesce_kube::cluster::Snapshot;
use serde::Serialize;

/// A budget the batch would hold more pods of than it lets go at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetOverrun {
    /// `namespace/name` of the PodDisruptionBudget.
    pub pdb: String,
    /// How many of its pods the worst batch holds.
    pub in_batch: usize,
    /// How many it lets be disrupted at once (`expectedPods − desiredHealthy`).
    pub allowed: usize,
    /// The largest batch that stays within it.
    pub largest_batch: usize,
}

fn on_node<'a>(pods: &'a [Pod], node: &str) -> impl Iterator<Item = &'a Pod> {
    pods.iter().filter(move |p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            && p.metadata.deletion_timestamp.is_none()
    })
}

/// The pods a drain moves: managed ones (DaemonSet and mirror pods stay, finished ones need
/// no room).
fn moved<'a>(snapshot: &'a Snapshot, node: &str) -> Vec<&'a Pod> {
    on_node(&snapshot.pods, node)
        .filter(|p| classify(p, &snapshot.replica_sets).kind == PodKind::Managed)
        .collect()
}

/// Budgets that `batch` of the group's `nodes` out at once would overrun.
pub fn budgets(snapshot: &Snapshot, nodes: &[String], batch: usize) -> Vec<BudgetOverrun> {
    let mut out = Vec::new();
    for budget in &snapshot.pdbs {
        let Some(status) = &budget.status else {
            continue;
        };
        let allowed = (status.expected_pods - status.desired_healthy).max(0) as usize;
        let mut per_node: Vec<usize> = nodes
            .iter()
            .map(|n| {
                moved(snapshot, n)
                    .into_iter()
                    .filter(|p| !pdb::covering(p, std::slice::from_ref(budget)).is_empty())
                    .count()
            })
            .collect();
        per_node.sort_unstable_by(|a, b| b.cmp(a));
        let worst = |b: usize| per_node.iter().take(b).sum::<usize>();
        if worst(batch) <= allowed {
            continue;
        }
        let largest_batch = (0..=batch)
            .rev()
            .find(|b| worst(*b) <= allowed)
            .unwrap_or(0);
        out.push(BudgetOverrun {
            pdb: pdb::key(budget),
            in_batch: worst(batch),
            allowed,
            largest_batch,
        });
    }
    out
}

/// Pods of the worst batch (the `batch` nodes moving the most pods) that the nodes staying
/// cannot take, as the drain engine's capacity check judges room.
pub fn room(snapshot: &Snapshot, nodes: &[String], batch: usize) -> Vec<capacity::Shortage> {
    let mut by_load: Vec<(&String, usize)> = nodes
        .iter()
        .map(|n| (n, moved(snapshot, n).len()))
        .collect();
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let out: Vec<&String> = by_load.iter().take(batch).map(|(n, _)| *n).collect();
    let Some(first) = out.first() else {
        return Vec::new();
    };
    // The batch's nodes cordoned: the capacity check counts only schedulable nodes as room.
    let cordoned: Vec<Node> = snapshot
        .nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            if n.metadata
                .name
                .as_ref()
                .is_some_and(|name| out.contains(&name))
            {
                n.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
            }
            n
        })
        .collect();
    let evicted: Vec<&Pod> = out.iter().flat_map(|n| moved(snapshot, n)).collect();
    capacity::check(first, &evicted, &cordoned, &snapshot.usage, false)
}

/// The smallest MinHealthyPercentage whose batch of `size` is at most `batch`.
pub fn min_healthy_for(size: usize, batch: usize) -> u8 {
    if size == 0 {
        return 0;
    }
    let keep = size.saturating_sub(batch.max(1));
    ((100 * keep).div_ceil(size)).min(100) as u8
}

/// How many pods of each node the drains move, for the report.
pub fn moved_counts(snapshot: &Snapshot, nodes: &[String]) -> BTreeMap<String, usize> {
    nodes
        .iter()
        .map(|n| (n.clone(), moved(snapshot, n).len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh::Preferences;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, app: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-1"), "uid": "u", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn snapshot() -> Snapshot {
        let pods = vec![
            pod("web-1", "a", "web", "500m"),
            pod("web-2", "b", "web", "500m"),
            pod("web-3", "c", "web", "500m"),
        ];
        Snapshot {
            nodes: vec![node("a", "2"), node("b", "2"), node("c", "2")],
            // What the pods request, as reads::whole_cluster sums it.
            usage: quiesce_core::capacity::Usage::of(&pods),
            pods,
            pdbs: vec![serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
                "status": {"expectedPods": 3, "desiredHealthy": 2, "currentHealthy": 3, "disruptionsAllowed": 1, "observedGeneration": 1}
            }))
            .unwrap()],
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_batch_of_two_overruns_a_budget_of_one() {
        let s = snapshot();
        let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!(budgets(&s, &nodes, 1).is_empty());
        let over = budgets(&s, &nodes, 2);
        assert_eq!(
            over,
            vec![BudgetOverrun {
                pdb: "default/web".into(),
                in_batch: 2,
                allowed: 1,
                largest_batch: 1
            }]
        );
        let fix = min_healthy_for(3, over[0].largest_batch);
        let batch = Preferences {
            min_healthy: fix,
            ..Preferences::default()
        }
        .batch(3);
        assert_eq!(
            (fix, batch),
            (67, 1),
            "the suggested --min-healthy gives a batch of 1"
        );
    }

    #[test]
    fn room_for_the_whole_batch_on_the_nodes_that_stay() {
        let mut s = snapshot();
        let nodes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!(room(&s, &nodes, 2).is_empty(), "c takes two half-cpu pods");
        s.nodes[2] = node("c", "1200m");
        let short = room(&s, &nodes, 2);
        assert_eq!(short.len(), 1, "c fits one more beside its own: {short:?}");
    }
}
