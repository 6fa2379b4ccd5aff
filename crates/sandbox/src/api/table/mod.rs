//! Server-side printing: `kubectl get` asks for `meta.k8s.io/v1 Table`, and the columns are the
//! ones upstream's `pkg/printers/internalversion/printers.go` defines for nodes, pods and
//! deployments here and for the other everyday kinds in [`everyday`] (a Name/Age table for the
//! rest).

mod everyday;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::eviction::is_ready;
use super::resources::Resource;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn columns(r: &Resource) -> Vec<Value> {
    match r.plural {
        "nodes" => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Roles", "string", 0),
            col("Age", "string", 0),
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        "pods" => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        "deployments" => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Age", "string", 0),
        ],
        plural => everyday::columns(plural)
            .unwrap_or_else(|| vec![col("Name", "string", 0), col("Age", "string", 0)]),
    }
}

/// kubectl's short age: `45s`, `12m`, `3h`, `5d`.
fn age(obj: &Value) -> String {
    let Some(created) = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = Timestamp::now()
        .as_second()
        .saturating_sub(created.as_second())
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn node_status(node: &Value) -> String {
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut status = match ready.map(|c| c["status"].as_str().unwrap_or_default()) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Upstream's `findNodeRoles`: `node-role.kubernetes.io/<role>` labels and the
/// `kubernetes.io/role` label, sorted, comma-joined; `<none>` without any.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(
            |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                Some(role) if !role.is_empty() => Some(role),
                _ if key == "kubernetes.io/role" => value.as_str().filter(|v| !v.is_empty()),
                _ => None,
            },
        )
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn pod_status(pod: &Value) -> String {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    let waiting = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c["state"]["waiting"]["reason"].as_str());
    waiting
        .or_else(|| pod["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string()
}

fn cells(r: &Resource, obj: &Value) -> Vec<Value> {
    let name = obj["metadata"]["name"].clone();
    match r.plural {
        "nodes" => {
            let address = |kind: &str| {
                obj["status"]["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == kind)
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            let info = &obj["status"]["nodeInfo"];
            vec![
                name,
                json!(node_status(obj)),
                json!(node_roles(obj)),
                json!(age(obj)),
                info["kubeletVersion"].clone(),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                info["osImage"].clone(),
                info["kernelVersion"].clone(),
                info["containerRuntimeVersion"].clone(),
            ]
        }
        "pods" => {
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = obj["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["ready"] == true)
                .count();
            let ready = if is_ready(obj) {
                ready.max(total)
            } else {
                ready
            };
            let restarts: i64 = obj["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            let or_none = |v: &Value| json!(v.as_str().unwrap_or("<none>"));
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts.to_string()),
                json!(age(obj)),
                or_none(&obj["status"]["podIP"]),
                or_none(&obj["spec"]["nodeName"]),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "deployments" => {
            let s = &obj["status"];
            let n = |v: &Value| v.as_i64().unwrap_or(0);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(&s["readyReplicas"]),
                    n(&obj["spec"]["replicas"])
                )),
                json!(n(&s["updatedReplicas"])),
                json!(n(&s["availableReplicas"])),
                json!(age(obj)),
            ]
        }
        plural => everyday::cells(plural, obj).unwrap_or_else(|| vec![name, json!(age(obj))]),
    }
}

/// A Table of `objects`, as a list or as one watch event's object.
pub fn table<'a>(
    r: &Resource,
    objects: impl IntoIterator<Item = &'a Value>,
    resource_version: u64,
) -> Value {
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| {
            json!({"cells": cells(r, o), "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns(r), "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_roles_come_from_labels() {
        let node = json!({"metadata": {"labels": {
            "node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "",
            "kubernetes.io/role": "worker", "zone": "a"}}});
        assert_eq!(node_roles(&node), "control-plane,worker");
        assert_eq!(node_roles(&json!({"metadata": {}})), "<none>");
    }
}
