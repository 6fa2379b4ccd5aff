//! The simulated scheduler: binds each unscheduled pod to a Ready, schedulable node whose
//! taints it tolerates, whose labels satisfy its nodeSelector, and with room left for its
//! cpu/memory requests and pod count — the least loaded one, so replicas spread. A pod that
//! fits nowhere gets `PodScheduled=False/Unschedulable` with a message in the style of
//! upstream's ("0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.").

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::objects::{self, deleting, pod_requests, tolerates};
use super::{Pass, pods};
use crate::api::resources::by_kind;
use crate::api::store::{Part, now};

struct NodeRoom {
    name: String,
    cpu: i64,
    memory: i64,
    pods: i64,
    node: Value,
}

/// Why a node was rejected, for the Unschedulable message.
fn rejection(pod: &Value, room: &NodeRoom) -> Option<&'static str> {
    let node = &room.node;
    if node["spec"]["unschedulable"] == true {
        let tolerated = tolerates(
            &pod["spec"]["tolerations"],
            &json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        );
        if !tolerated {
            return Some("node(s) were unschedulable");
        }
    }
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return Some("node(s) were not ready");
    }
    let untolerated = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
        .any(|t| !tolerates(&pod["spec"]["tolerations"], t));
    if untolerated {
        return Some("node(s) had untolerated taint");
    }
    if let Some(selector) = pod["spec"]["nodeSelector"].as_object() {
        let labels = &node["metadata"]["labels"];
        if selector.iter().any(|(k, v)| &labels[k] != v) {
            return Some("node(s) didn't match Pod's node affinity/selector");
        }
    }
    let (cpu, memory) = pod_requests(pod);
    if room.pods < 1 {
        return Some("Too many pods");
    }
    if cpu > room.cpu {
        return Some("Insufficient cpu");
    }
    if memory > room.memory {
        return Some("Insufficient memory");
    }
    None
}

/// Binds what fits; marks what does not.
pub(super) fn schedule(pass: &mut Pass<'_>) {
    let pending = pass.matching(pods(), |p| {
        p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && !deleting(p)
    });
    if pending.is_empty() {
        return;
    }
    let mut rooms: Vec<NodeRoom> = pass
        .all(by_kind("", "Node"))
        .into_iter()
        .map(|node| {
            let alloc = &node["status"]["allocatable"];
            NodeRoom {
                name: objects::name(&node).to_string(),
                cpu: if alloc["cpu"].is_null() {
                    0
                } else {
                    objects::cpu_millis(&alloc["cpu"])
                },
                memory: if alloc["memory"].is_null() {
                    0
                } else {
                    objects::memory_bytes(&alloc["memory"])
                },
                pods: alloc["pods"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(110),
                node,
            }
        })
        .collect();
    let index: HashMap<String, usize> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.clone(), i))
        .collect();
    pass.store.for_each(pods(), |pod| {
        if objects::terminal(pod) {
            return;
        }
        if let Some(i) = pod["spec"]["nodeName"].as_str().and_then(|n| index.get(n)) {
            let (cpu, memory) = pod_requests(pod);
            let room = &mut rooms[*i];
            room.cpu -= cpu;
            room.memory -= memory;
            room.pods -= 1;
        }
    });
    for pod in &pending {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        let mut best: Option<usize> = None;
        for (i, room) in rooms.iter().enumerate() {
            match rejection(pod, room) {
                Some(reason) => *reasons.entry(reason).or_default() += 1,
                None => {
                    if best.is_none_or(|b| rooms[b].pods < room.pods) {
                        best = Some(i);
                    }
                }
            }
        }
        match best {
            Some(i) => {
                let (cpu, memory) = pod_requests(pod);
                let room = &mut rooms[i];
                room.cpu -= cpu;
                room.memory -= memory;
                room.pods -= 1;
                let node = room.name.clone();
                pass.update(pods(), pod, Part::Main, |p| {
                    p["spec"]["nodeName"] = json!(node)
                });
            }
            None => {
                let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                let message = format!(
                    "0/{} nodes are available: {}.",
                    rooms.len(),
                    detail.join(", ")
                );
                let already = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["message"] == json!(message));
                if !already {
                    pass.update(pods(), pod, Part::Status, |p| {
                        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
                            "reason": "Unschedulable", "message": message, "lastTransitionTime": now()}]);
                    });
                }
            }
        }
    }
}
