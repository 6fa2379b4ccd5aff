//! One pass over the loaded objects that files the ones the rules look up by namespace, so
//! that grouping workloads and detecting their discovery stacks stay linear in a
//! 10,000-object stream instead of comparing every workload with every object.

use std::collections::HashMap;

use serde_json::Value;

use crate::load::Object;

/// The namespace of a namespaced object (`default` where the manifest leaves it out, as
/// `kubectl apply` does without `-n`).
pub fn namespace(doc: &Value) -> &str {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// The object's `metadata.name`, or an empty string.
pub fn name(doc: &Value) -> &str {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The kinds that are looked up per namespace.
const INDEXED: &[&str] = &[
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Ingress",
    "TargetGroupBinding",
    "ConfigMap",
];

/// The objects that select, route to or configure workloads.
#[derive(Debug, Default)]
pub struct Index<'a> {
    by_namespace: HashMap<&'a str, HashMap<&'a str, Vec<&'a Object>>>,
    namespaces: HashMap<&'a str, &'a Object>,
    ingress_classes: HashMap<&'a str, &'a Object>,
}

impl<'a> Index<'a> {
    /// Files every object of an indexed kind; everything else is ignored here.
    pub fn new(objects: &'a [Object]) -> Self {
        let mut index = Self::default();
        for o in objects {
            let Some(kind) = o.doc.get("kind").and_then(Value::as_str) else {
                continue;
            };
            match kind {
                "Namespace" => {
                    index.namespaces.insert(name(&o.doc), o);
                }
                "IngressClass" => {
                    index.ingress_classes.insert(name(&o.doc), o);
                }
                k if INDEXED.contains(&k) => index
                    .by_namespace
                    .entry(namespace(&o.doc))
                    .or_default()
                    .entry(k)
                    .or_default()
                    .push(o),
                _ => {}
            }
        }
        index
    }

    /// Every object of `kind` in namespace `ns`.
    pub fn of(&self, ns: &str, kind: &str) -> &[&'a Object] {
        self.by_namespace
            .get(ns)
            .and_then(|kinds| kinds.get(kind))
            .map_or(&[], Vec::as_slice)
    }

    /// The object of `kind` named `name` in `ns`, if it is in the input.
    pub fn get(&self, ns: &str, kind: &str, wanted: &str) -> Option<&'a Object> {
        self.of(ns, kind)
            .iter()
            .copied()
            .find(|o| name(&o.doc) == wanted)
    }

    /// The Namespace object, when the input has it (labels on it switch on mesh injection
    /// and the load balancer's readiness gate).
    pub fn namespace(&self, ns: &str) -> Option<&'a Object> {
        self.namespaces.get(ns).copied()
    }

    /// The IngressClass object of that name, when the input has it.
    pub fn ingress_class(&self, class: &str) -> Option<&'a Object> {
        self.ingress_classes.get(class).copied()
    }
}
