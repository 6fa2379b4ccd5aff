//! Grouping objects into workloads with the Services and PDBs that select their pods.

use serde_json::Value;

use crate::index::{self, Index};
use crate::load::Object;

/// Something that runs pods, with what routes traffic to them and what protects them.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// The controller object (or the bare Pod).
    pub object: &'a Object,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet` or `Pod`.
    pub kind: String,
    /// The namespace, for looking up what lives beside it.
    pub namespace: &'a str,
    /// `namespace/name`, for reports.
    pub name: String,
    /// The pod spec (the template's for controllers).
    pub pod_spec: &'a Value,
    /// Where the pod spec sits, for field paths in findings.
    pub pod_spec_path: &'static str,
    /// The pod's metadata (the template's for controllers): injection labels and annotations
    /// sit there.
    pub pod_metadata: Option<&'a Value>,
    /// Services whose selector matches the pod labels.
    pub services: Vec<&'a Object>,
    /// PodDisruptionBudgets whose selector matches the pod labels.
    pub pdbs: Vec<&'a Object>,
    /// The `minReplicas` of a HorizontalPodAutoscaler scaling this workload (default 1).
    pub hpa_min_replicas: Option<i64>,
}

impl<'a> Workload<'a> {
    /// A pod annotation, looked up on the pod template first and then on the controller, since
    /// people put `quiesce.io/*` annotations on either.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        [
            self.pod_metadata.and_then(|m| m.get("annotations")),
            self.object.doc.pointer("/metadata/annotations"),
        ]
        .into_iter()
        .flatten()
        .find_map(|a| a.get(key)?.as_str())
    }

    /// A pod label or annotation (some injectors accept either), pod template only.
    pub fn pod_label_or_annotation(&self, key: &str) -> Option<&'a str> {
        let meta = self.pod_metadata?;
        ["labels", "annotations"]
            .iter()
            .find_map(|k| meta.get(*k)?.get(key)?.as_str())
    }
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
pub fn group<'a>(objects: &'a [Object], index: &Index<'a>) -> Vec<Workload<'a>> {
    let selecting = |ns: &str, kind: &str, selector: &str, labels: Option<&Value>| {
        index
            .of(ns, kind)
            .iter()
            .copied()
            .filter(|o| matches_labels(o.doc.pointer(selector), labels))
            .collect::<Vec<&Object>>()
    };
    let mut out = Vec::new();
    for object in objects {
        let doc = &object.doc;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let (pod_spec_path, metadata_path) = match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                ("/spec/template/spec", "/spec/template/metadata")
            }
            "Pod" => ("/spec", "/metadata"),
            _ => continue,
        };
        let Some(pod_spec) = doc.pointer(pod_spec_path) else {
            continue;
        };
        let pod_metadata = doc.pointer(metadata_path);
        let labels = pod_metadata.and_then(|m| m.get("labels"));
        let ns = index::namespace(doc);
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
        let hpa_min_replicas = index
            .of(ns, "HorizontalPodAutoscaler")
            .iter()
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
            namespace: ns,
            name: format!("{ns}/{name}"),
            pod_spec,
            pod_spec_path,
            pod_metadata,
            services,
            pdbs,
            hpa_min_replicas,
        });
    }
    out
}
