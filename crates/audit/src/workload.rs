//! Grouping objects into workloads with the Services and PDBs that select their pods.

use std::collections::HashMap;

use serde_json::Value;

use crate::load::Object;

/// Something that runs pods, with what routes traffic to them and what protects them.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// The controller object (or the bare Pod).
    pub object: &'a Object,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet` or `Pod`.
    pub kind: String,
    /// `namespace/name`, for reports.
    pub name: String,
    /// The pod spec (the template's for controllers).
    pub pod_spec: &'a Value,
    /// Where the pod spec sits, for field paths in findings.
    pub pod_spec_path: &'static str,
    /// Services whose selector matches the pod labels.
    pub services: Vec<&'a Object>,
    /// PodDisruptionBudgets whose selector matches the pod labels.
    pub pdbs: Vec<&'a Object>,
    /// The `minReplicas` of a HorizontalPodAutoscaler scaling this workload (default 1).
    pub hpa_min_replicas: Option<i64>,
}

fn namespace(doc: &Value) -> &str {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

fn matches_labels(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(Value::Object(sel)) = selector else {
        return false;
    };
    if sel.is_empty() {
        return false;
    }
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Groups `objects` into workloads; objects of other kinds only matter as selectors.
pub fn group(objects: &[Object]) -> Vec<Workload<'_>> {
    // Selectors only match within a namespace, so index by it: a 10,000-object stream would
    // otherwise compare every workload with every object.
    let mut by_namespace: HashMap<(&str, &str), Vec<&Object>> = HashMap::new();
    for o in objects {
        if let Some(kind @ ("Service" | "PodDisruptionBudget" | "HorizontalPodAutoscaler")) =
            o.doc.get("kind").and_then(Value::as_str)
        {
            by_namespace
                .entry((namespace(&o.doc), kind))
                .or_default()
                .push(o);
        }
    }
    let selecting =
        |ns: &str, kind: &str, selector: &str, labels: Option<&Value>| -> Vec<&Object> {
            by_namespace
                .get(&(ns, kind))
                .into_iter()
                .flatten()
                .copied()
                .filter(|o| matches_labels(o.doc.pointer(selector), labels))
                .collect()
        };
    let mut out = Vec::new();
    for object in objects {
        let doc = &object.doc;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let (pod_spec_path, labels_path) = match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                ("/spec/template/spec", "/spec/template/metadata/labels")
            }
            "Pod" => ("/spec", "/metadata/labels"),
            _ => continue,
        };
        let Some(pod_spec) = doc.pointer(pod_spec_path) else {
            continue;
        };
        let labels = doc.pointer(labels_path);
        let ns = namespace(doc);
        let services = selecting(ns, "Service", "/spec/selector", labels);
        let pdbs = selecting(
            ns,
            "PodDisruptionBudget",
            "/spec/selector/matchLabels",
            labels,
        );
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        let hpa_min_replicas = by_namespace
            .get(&(ns, "HorizontalPodAutoscaler"))
            .into_iter()
            .flatten()
            .find(|h| {
                h.doc
                    .pointer("/spec/scaleTargetRef/kind")
                    .and_then(Value::as_str)
                    == Some(kind)
                    && h.doc
                        .pointer("/spec/scaleTargetRef/name")
                        .and_then(Value::as_str)
                        == Some(name)
            })
            .map(|h| {
                h.doc
                    .pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            });
        out.push(Workload {
            object,
            kind: kind.to_string(),
            name: format!("{ns}/{name}"),
            pod_spec,
            pod_spec_path,
            services,
            pdbs,
            hpa_min_replicas,
        });
    }
    out
}
