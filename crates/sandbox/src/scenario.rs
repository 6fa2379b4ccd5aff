//! The YAML scenario format that seeds the sandbox: nodes (capacity, labels, taints, zone,
//! providerID) and any Kubernetes objects to create at start.
//!
//! ```yaml
//! nodes:
//!   - namePrefix: worker-      # or name: one-node
//!     count: 3
//!     zones: [us-east-1a, us-east-1b]
//!     capacity: {cpu: "4", memory: 16Gi, pods: "110"}
//!     labels: {node.kubernetes.io/instance-type: m5.large}
//!     taints: [{key: dedicated, value: batch, effect: NoSchedule}]
//! objects:
//!   - {apiVersion: apps/v1, kind: Deployment, metadata: {name: web}, spec: {...}}
//! ```

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::resources::RESOURCES;
use crate::api::status::ApiError;
use crate::api::store::Store;

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The YAML does not parse or has the wrong shape; the message names line and field.
    #[error("scenario {source_name}: {message}")]
    Parse {
        /// The file (or `<embedded>`).
        source_name: String,
        /// serde-saphyr's message, with the location.
        message: String,
    },
    /// An object could not be created.
    #[error("scenario object {index} ({kind} {name}): {message}")]
    Object {
        /// Position in `objects`.
        index: usize,
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// What the API server said.
        message: String,
    },
}

/// One group of nodes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// A single node's name (with `count` 1).
    pub name: Option<String>,
    /// Names are `<namePrefix><index>`, from 1.
    pub name_prefix: Option<String>,
    /// How many nodes; default 1.
    pub count: Option<usize>,
    /// Zones the nodes are spread over, round robin (`topology.kubernetes.io/zone`).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Capacity (and allocatable): cpu, memory, pods.
    pub capacity: Option<Value>,
    /// Extra labels.
    #[serde(default)]
    pub labels: serde_json::Map<String, Value>,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<Value>,
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Node groups.
    #[serde(default)]
    pub nodes: Vec<NodeGroup>,
    /// Objects created once the nodes exist.
    #[serde(default)]
    pub objects: Vec<Value>,
}

const DEFAULT_OBJECTS: &str = include_str!("../scenarios/default.yaml");
const DEFAULT_ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

impl Scenario {
    /// Parses a scenario; `source_name` goes into error messages.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Scenario, ScenarioError> {
        serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })
    }

    /// `count` plain nodes `node-1 …` spread over three zones, no workloads.
    pub fn nodes_only(count: usize) -> Scenario {
        Scenario {
            nodes: vec![NodeGroup {
                name_prefix: Some("node-".into()),
                count: Some(count),
                zones: DEFAULT_ZONES.iter().map(|z| z.to_string()).collect(),
                ..Default::default()
            }],
            objects: Vec::new(),
        }
    }

    /// The default for `--nodes N`: N nodes over three zones, a 3-replica web Deployment with
    /// a PDB and a Service, a 1-replica api Deployment without a PDB, a 2-replica StatefulSet
    /// behind a headless Service, and a DaemonSet.
    pub fn default_for(count: usize) -> Scenario {
        let workloads = Scenario::from_yaml(DEFAULT_OBJECTS, "<embedded default>")
            .expect("the embedded default scenario parses");
        Scenario {
            objects: workloads.objects,
            ..Scenario::nodes_only(count)
        }
    }

    /// The Node objects this scenario describes.
    pub fn node_objects(&self) -> Vec<Value> {
        let mut nodes = Vec::new();
        for group in &self.nodes {
            let count = group.count.unwrap_or(1);
            for i in 1..=count {
                let name = match (&group.name, &group.name_prefix) {
                    (Some(n), _) if count == 1 => n.clone(),
                    (_, Some(prefix)) => format!("{prefix}{i}"),
                    (Some(n), None) => format!("{n}-{i}"),
                    (None, None) => format!("node-{}", nodes.len() + 1),
                };
                let zone = (!group.zones.is_empty())
                    .then(|| group.zones[(i - 1) % group.zones.len()].clone());
                // The labels every kubelet sets on its node; manifests select on them.
                let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64"});
                if let Some(z) = &zone {
                    labels["topology.kubernetes.io/zone"] = json!(z);
                }
                for (k, v) in &group.labels {
                    labels[k] = v.clone();
                }
                let instance = format!("i-{:017x}", 0x0a11ce00u64 + nodes.len() as u64);
                let provider = format!(
                    "aws:///{}/{instance}",
                    zone.as_deref().unwrap_or("us-east-1a")
                );
                let capacity = group
                    .capacity
                    .clone()
                    .unwrap_or_else(|| json!({"cpu": "4", "memory": "16Gi", "pods": "110"}));
                nodes.push(json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"providerID": provider, "taints": group.taints},
                    "status": {"capacity": capacity, "allocatable": capacity},
                }));
            }
        }
        nodes
    }

    /// Creates the nodes, then the objects, in order.
    pub fn apply(&self, store: &Store) -> Result<(), ScenarioError> {
        let nodes = crate::api::resources::by_kind("", "Node");
        for (index, node) in self.node_objects().into_iter().enumerate() {
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            store
                .create(nodes, "", node, false)
                .map_err(|e| object_error(index, "Node", &name, e))?;
        }
        for (index, obj) in self.objects.iter().enumerate() {
            let kind = obj["kind"].as_str().unwrap_or_default();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let (group, _) = obj["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .rsplit_once('/')
                .unwrap_or(("", ""));
            let resource = RESOURCES
                .iter()
                .find(|r| r.kind == kind && r.group == group)
                .ok_or_else(|| ScenarioError::Object {
                    index,
                    kind: kind.to_string(),
                    name: name.to_string(),
                    message: format!("the sandbox does not serve {} {kind}", obj["apiVersion"]),
                })?;
            // Cluster-scoped kinds live outside every namespace (a Node stored under `default`
            // would be listed but not found by name); namespaced ones default to `default`, as
            // kubectl apply does.
            let ns = if resource.namespaced {
                obj["metadata"]["namespace"].as_str().unwrap_or("default")
            } else {
                ""
            };
            store
                .create(resource, ns, obj.clone(), false)
                .map_err(|e| object_error(index, kind, name, e))?;
        }
        Ok(())
    }
}

fn object_error(index: usize, kind: &str, name: &str, e: ApiError) -> ScenarioError {
    ScenarioError::Object {
        index,
        kind: kind.to_string(),
        name: name.to_string(),
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_parses() {
        let s = Scenario::default_for(3);
        assert_eq!(s.node_objects().len(), 3);
        assert!(s.objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
        assert!(
            s.node_objects()[1]["spec"]["providerID"]
                .as_str()
                .unwrap()
                .starts_with("aws:///us-east-1b/i-")
        );
    }

    /// A cluster-scoped object listed under `objects:` (a Node, a PersistentVolume) lives
    /// outside every namespace, as the API server stores it: a GET by name finds it.
    #[test]
    fn cluster_scoped_objects_are_stored_without_a_namespace() {
        let s = Scenario::from_yaml(
            "objects:\n  - {apiVersion: v1, kind: Node, metadata: {name: extra}}\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}\n",
            "scoped.yaml",
        )
        .unwrap();
        let store = Store::new(100);
        s.apply(&store).unwrap();
        let nodes = crate::api::resources::by_kind("", "Node");
        let config_maps = crate::api::resources::by_kind("", "ConfigMap");
        let node = store
            .get(nodes, "", "extra")
            .expect("the node is cluster-scoped");
        assert!(node["metadata"]["namespace"].is_null(), "{node}");
        store
            .get(config_maps, "default", "settings")
            .expect("a namespaced object without a namespace goes to default");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Scenario::from_yaml("nodes:\n  - nmae: x\n", "bad.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.yaml") && err.contains("nmae"), "{err}");
    }
}
