//! Is there room elsewhere for the pods the drain will evict?
//!
//! A simplified scheduler pre-check, after the predicates kube-scheduler applies first
//! (`NodeUnschedulable`, `TaintToleration`, `NodeAffinity` for nodeSelector, `NodeResourcesFit`):
//! a pod fits a node that is schedulable, whose NoSchedule/NoExecute taints it tolerates, whose
//! labels satisfy its nodeSelector, and whose allocatable CPU, memory and pod count minus what
//! already runs there cover its requests. Pods are placed largest first, first fit, so a
//! shortage reported here is a shortage the scheduler would hit too (affinity and topology
//! spread are not modelled, so the check can pass where the scheduler later refuses).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use serde::Serialize;

use crate::quantity;

/// A pod the remaining nodes cannot take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortage {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// Why no node fits, in words.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Amount {
    cpu: i128,
    memory: i128,
    pods: i128,
}

/// What the pods bound to each node request: the room the check counts as used. Kept as sums
/// so that a drain can read every pod of a large cluster a page at a time and keep only these
/// (30,000 pods are hundreds of MiB as objects, a few KiB as sums per node).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    by_node: HashMap<String, Amount>,
}

impl Usage {
    /// The usage of `pods`.
    pub fn of<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Usage {
        let mut usage = Usage::default();
        for pod in pods {
            usage.add(pod);
        }
        usage
    }

    /// Counts `pod` on its node, unless it is unbound or finished (a finished pod holds no
    /// room, as the scheduler's NodeInfo does not count it).
    pub fn add(&mut self, pod: &Pod) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return;
        };
        if matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            return;
        }
        let used = self.by_node.entry(node.to_string()).or_default();
        *used = add(*used, requests(pod));
    }

    fn on(&self, node: Option<&str>) -> Amount {
        node.and_then(|n| self.by_node.get(n))
            .copied()
            .unwrap_or_default()
    }
}

/// Places `evicted` on `nodes` (excluding `draining`), counting the room `used` there.
/// With `count_cordoned` the other cordoned nodes count as room too: a shortage that only
/// they cause is one that other drains in progress cause, and clears when those finish.
pub fn check(
    draining: &str,
    evicted: &[&Pod],
    nodes: &[Node],
    used: &Usage,
    count_cordoned: bool,
) -> Vec<Shortage> {
    let mut free: Vec<(&Node, Amount)> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(draining))
        .filter(|n| count_cordoned || !is_cordoned(n))
        .map(|n| {
            let used = used.on(n.metadata.name.as_deref());
            let alloc = allocatable(n);
            (
                n,
                Amount {
                    cpu: alloc.cpu - used.cpu,
                    memory: alloc.memory - used.memory,
                    pods: alloc.pods - used.pods,
                },
            )
        })
        .collect();
    let mut order: Vec<&Pod> = evicted.to_vec();
    order.sort_by_key(|p| std::cmp::Reverse((requests(p).cpu, requests(p).memory)));
    let mut shortages = Vec::new();
    for pod in order {
        let need = requests(pod);
        let eligible: Vec<usize> = (0..free.len())
            .filter(|&i| eligible(pod, free[i].0))
            .collect();
        match eligible.iter().find(|&&i| fits(need, free[i].1)) {
            Some(&i) => free[i].1 = sub(free[i].1, need),
            None => shortages.push(Shortage {
                pod: format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
                reason: if eligible.is_empty() {
                    "no other schedulable node matches its nodeSelector and tolerations".into()
                } else {
                    format!(
                        "no other node has room for its requests (cpu {}m, memory {} MiB)",
                        need.cpu,
                        need.memory / 1000 / (1 << 20)
                    )
                },
            }),
        }
    }
    shortages
}

/// Whether the node is marked unschedulable.
pub fn is_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn eligible(pod: &Pod, node: &Node) -> bool {
    let spec = pod.spec.as_ref();
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
    let tolerations = spec
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let taints_ok = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)));
    selector_ok && taints_ok
}

/// `Toleration.ToleratesTaint` from `k8s.io/api/core/v1/toleration.go`.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = toleration
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == taint.key);
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    };
    effect_ok
        && key_ok
        && value_ok
        && (toleration.key.is_some() || toleration.operator.as_deref() == Some("Exists"))
}

fn requests(pod: &Pod) -> Amount {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers.iter().fold(
        Amount {
            pods: 1,
            ..Amount::default()
        },
        |acc, c| {
            let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let get = |name: &str| {
                req.and_then(|r| r.get(name))
                    .and_then(|q| quantity::milli(&q.0))
                    .unwrap_or(0)
            };
            Amount {
                cpu: acc.cpu + get("cpu"),
                memory: acc.memory + get("memory"),
                pods: acc.pods,
            }
        },
    )
}

fn allocatable(node: &Node) -> Amount {
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |name: &str| {
        alloc
            .and_then(|a| a.get(name))
            .and_then(|q| quantity::milli(&q.0))
    };
    Amount {
        cpu: get("cpu").unwrap_or(i128::MAX / 4),
        memory: get("memory").unwrap_or(i128::MAX / 4),
        pods: get("pods").map(|p| p / 1000).unwrap_or(110),
    }
}

fn add(a: Amount, b: Amount) -> Amount {
    Amount {
        cpu: a.cpu + b.cpu,
        memory: a.memory + b.memory,
        pods: a.pods + b.pods,
    }
}

fn sub(a: Amount, b: Amount) -> Amount {
    Amount {
        cpu: a.cpu - b.cpu,
        memory: a.memory - b.memory,
        pods: a.pods - b.pods,
    }
}

fn fits(need: Amount, free: Amount) -> bool {
    need.cpu <= free.cpu && need.memory <= free.memory && need.pods <= free.pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn reports_pods_that_do_not_fit() {
        let nodes = [node("node-1", "4", "8Gi"), node("node-2", "1", "8Gi")];
        let a = pod("a", Some(("ReplicaSet", "r")), &[]);
        let b = pod("b", Some(("ReplicaSet", "r")), &[]);
        let c = pod("c", Some(("ReplicaSet", "r")), &[]);
        assert!(check("node-1", &[&a, &b], &nodes, &Usage::default(), false).is_empty());
        let short = check("node-1", &[&a, &b, &c], &nodes, &Usage::default(), false);
        assert_eq!(short.len(), 1);
        assert!(short[0].reason.contains("cpu 500m"), "{short:?}");
    }

    #[test]
    fn respects_taints_node_selector_and_cordons() {
        let mut tainted = node("node-2", "4", "8Gi");
        tainted.spec = Some(
            serde_json::from_value(serde_json::json!({
                "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
            }))
            .unwrap(),
        );
        let a = pod("a", Some(("ReplicaSet", "r")), &[]);
        let short = check(
            "node-1",
            &[&a],
            &[node("node-1", "4", "8Gi"), tainted.clone()],
            &Usage::default(),
            false,
        );
        assert!(short[0].reason.contains("nodeSelector and tolerations"));

        let mut tolerant = a.clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }]);
        assert!(
            check(
                "node-1",
                &[&tolerant],
                std::slice::from_ref(&tainted),
                &Usage::default(),
                false
            )
            .is_empty()
        );

        tolerant.spec.as_mut().unwrap().node_selector =
            Some([("zone".to_string(), "b".to_string())].into());
        assert_eq!(
            check("node-1", &[&tolerant], &[tainted], &Usage::default(), false).len(),
            1
        );
    }
}
