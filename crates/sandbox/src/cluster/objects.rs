//! Small readers over Kubernetes JSON that every simulated component needs.

use std::time::Duration;

use serde_json::Value;

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

/// Whether a deletion has started.
pub fn deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// The UID of the controller owner, if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// The objects a controller owns, by controller UID.
pub fn owned<'a>(all: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let owner_uid = uid(owner);
    all.iter()
        .filter(|o| controller_uid(o) == Some(owner_uid))
        .collect()
}

/// The owner reference a controller puts on what it creates.
pub fn owner_ref(owner: &Value) -> Value {
    serde_json::json!([{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true
    }])
}

/// Whether the pod has finished (it no longer counts as a replica).
pub fn terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// A pod that counts towards its controller's replicas: not finished, not being deleted.
pub fn active(pod: &Value) -> bool {
    !terminal(pod) && !deleting(pod)
}

/// A duration annotation (`5s`, `1m30s`) on the object, if set and valid.
pub fn duration_annotation(obj: &Value, key: &str) -> Option<Duration> {
    obj["metadata"]["annotations"][key]
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
}

/// CPU in millicores from a quantity (`500m`, `2`, `0.5`).
pub fn cpu_millis(q: &Value) -> i64 {
    let s = q
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| q.to_string());
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().unwrap_or(0);
    }
    s.parse::<f64>().map(|c| (c * 1000.0) as i64).unwrap_or(0)
}

/// Memory in bytes from a quantity (`128Mi`, `1Gi`, `500M`, `1024`).
pub fn memory_bytes(q: &Value) -> i64 {
    let s = q
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| q.to_string());
    let units: [(&str, i64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n
                .parse::<f64>()
                .map(|v| (v * factor as f64) as i64)
                .unwrap_or(0);
        }
    }
    s.parse::<f64>().map(|v| v as i64).unwrap_or(0)
}

/// Summed container requests of a pod: (millicores, bytes).
pub fn pod_requests(pod: &Value) -> (i64, i64) {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .fold((0, 0), |(cpu, mem), c| {
            let r = &c["resources"]["requests"];
            (
                cpu + if r["cpu"].is_null() {
                    0
                } else {
                    cpu_millis(&r["cpu"])
                },
                mem + if r["memory"].is_null() {
                    0
                } else {
                    memory_bytes(&r["memory"])
                },
            )
        })
}

/// Whether `tolerations` tolerate a taint (upstream `v1helper.TolerationsTolerateTaint`).
pub fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let effect_ok = t["effect"].is_null() || t["effect"] == taint["effect"];
        let key_ok = t["key"].is_null() && t["operator"] == "Exists" || t["key"] == taint["key"];
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or_default()
                == taint["value"].as_str().unwrap_or_default();
        effect_ok && key_ok && value_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis(&json!("250m")), 250);
        assert_eq!(cpu_millis(&json!("1.5")), 1500);
        assert_eq!(memory_bytes(&json!("1Gi")), 1 << 30);
    }

    #[test]
    fn toleration_matching() {
        let taint = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
        assert!(tolerates(
            &json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
            &taint
        ));
        assert!(tolerates(&json!([{"operator": "Exists"}]), &taint));
        assert!(!tolerates(
            &json!([{"key": "other", "operator": "Exists"}]),
            &taint
        ));
    }
}
