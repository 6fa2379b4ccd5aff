//! CustomResourceDefinitions and the resources they define, served generically as upstream's
//! apiextensions-apiserver serves them (`k8s.io/apiextensions-apiserver/pkg/apiserver`): every
//! served version of a definition becomes a resource of the API — in discovery, with CRUD,
//! watch, label and field selectors, and `/status` when the version declares the status
//! subresource — all versions sharing one storage, as the `None` conversion strategy does.
//!
//! Custom objects are stored as sent: no schema validation, pruning or defaulting, no
//! conversion webhooks, no `/scale` subresource.

use serde_json::{Value, json};

use super::resources::Resource;

/// The resource of CustomResourceDefinitions themselves.
pub const GROUP: &str = "apiextensions.k8s.io";

/// One served version of one definition.
struct Entry {
    resource: &'static Resource,
    /// The definition's name (`rollouts.argoproj.io`).
    definition: String,
    /// Index of the objects in the store; shared by every version of a definition.
    storage: usize,
    /// The version's `openAPIV3Schema`, for the OpenAPI documents.
    schema: Value,
    served: bool,
}

/// The custom resources one server serves.
#[derive(Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

/// A string that lives as long as the process. Resources are `'static` so that the tables of
/// built-in ones need no allocation; a definition's names are leaked once per distinct
/// resource (re-creating a definition reuses its entry), so the leak is bounded by the number
/// of definitions a process ever sees.
fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

fn leak_list(value: &Value) -> &'static [&'static str] {
    let names: Vec<&'static str> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    Box::leak(names.into_boxed_slice())
}

/// What a definition serves, one resource (with its schema) per served version.
fn resources_of(definition: &Value) -> Vec<(Resource, Value)> {
    let spec = &definition["spec"];
    let names = &spec["names"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        names["plural"].as_str(),
        names["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() != Some(false))
        .filter_map(|v| {
            let resource = Resource {
                group: leak(group),
                version: leak(v["name"].as_str()?),
                plural: leak(plural),
                kind: leak(kind),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: leak_list(&names["shortNames"]),
                has_status: v["subresources"]["status"].is_object(),
                tracks_generation: true,
                categories: leak_list(&names["categories"]),
                review: false,
            };
            Some((resource, v["schema"]["openAPIV3Schema"].clone()))
        })
        .collect()
}

impl Registry {
    /// The store index of a custom resource, or None for a built-in one.
    pub fn index(&self, r: &Resource) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| std::ptr::eq(e.resource, r))
            .map(|e| e.storage)
    }

    /// The served custom resource at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        self.entries
            .iter()
            .find(|e| {
                e.served
                    && e.resource.group == group
                    && e.resource.version == version
                    && e.resource.plural == plural
            })
            .map(|e| e.resource)
    }

    /// Every served custom resource, in the order the definitions came.
    pub fn served(&self) -> Vec<&'static Resource> {
        self.entries
            .iter()
            .filter(|e| e.served)
            .map(|e| e.resource)
            .collect()
    }

    /// Every served custom resource with its version's schema.
    pub fn schemas(&self) -> Vec<(&'static Resource, Value)> {
        self.entries
            .iter()
            .filter(|e| e.served)
            .map(|e| (e.resource, e.schema.clone()))
            .collect()
    }

    /// Serves what `definition` defines (after a create or an update), returning the store
    /// index of its objects; `next_storage` is the index a new definition's objects get.
    /// Versions no longer served stop being served; their objects stay.
    pub fn define(&mut self, definition: &Value, next_storage: usize) -> usize {
        let name = definition["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let storage = self
            .entries
            .iter()
            .find(|e| e.definition == name)
            .map_or(next_storage, |e| e.storage);
        for entry in self.entries.iter_mut().filter(|e| e.definition == name) {
            entry.served = false;
        }
        for (resource, schema) in resources_of(definition) {
            let existing = self
                .entries
                .iter_mut()
                .find(|e| e.definition == name && *e.resource == resource);
            match existing {
                Some(entry) => {
                    entry.served = true;
                    entry.schema = schema;
                }
                None => self.entries.push(Entry {
                    resource: Box::leak(Box::new(resource)),
                    definition: name.clone(),
                    storage,
                    schema,
                    served: true,
                }),
            }
        }
        storage
    }

    /// Stops serving a deleted definition's resources; returns the store index of its
    /// objects, which the caller deletes.
    pub fn forget(&mut self, definition: &str) -> Option<usize> {
        let mut storage = None;
        for entry in self
            .entries
            .iter_mut()
            .filter(|e| e.definition == definition)
        {
            entry.served = false;
            storage = Some(entry.storage);
        }
        storage
    }
}

/// Whether `r` is the resource of CustomResourceDefinitions.
pub fn is_definition(r: &Resource) -> bool {
    r.group == GROUP && r.kind == "CustomResourceDefinition"
}

/// The status a definition gets on create: its names accepted and established at once (there
/// is no controller to wait for), its storage version recorded.
pub fn initial_status(definition: &Value) -> Value {
    let now = super::store::now();
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "lastTransitionTime": now, "reason": reason,
            "message": message})
    };
    let stored: Vec<&Value> = definition["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| &v["name"])
        .collect();
    json!({
        "acceptedNames": definition["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollouts(versions: Value) -> Value {
        json!({"metadata": {"name": "rollouts.argoproj.io"}, "spec": {"group": "argoproj.io",
            "scope": "Namespaced", "names": {"plural": "rollouts", "kind": "Rollout",
            "shortNames": ["ro"]}, "versions": versions}})
    }

    #[test]
    fn every_served_version_is_a_resource_sharing_one_storage() {
        let mut registry = Registry::default();
        let crd = rollouts(json!([
            {"name": "v1alpha1", "served": true, "storage": true,
             "subresources": {"status": {}}},
            {"name": "v1alpha0", "served": false, "storage": false}
        ]));
        let storage = registry.define(&crd, 50);
        assert_eq!(storage, 50);
        let r = registry
            .lookup("argoproj.io", "v1alpha1", "rollouts")
            .unwrap();
        assert!(r.namespaced && r.has_status);
        assert_eq!(r.short_names, &["ro"]);
        assert_eq!(registry.index(r), Some(50));
        assert!(
            registry
                .lookup("argoproj.io", "v1alpha0", "rollouts")
                .is_none()
        );
        assert_eq!(initial_status(&crd)["storedVersions"], json!(["v1alpha1"]));
        // Redefining reuses the entry; forgetting stops serving it.
        assert_eq!(registry.define(&crd, 51), 50);
        assert_eq!(registry.served().len(), 1);
        assert_eq!(registry.forget("rollouts.argoproj.io"), Some(50));
        assert!(registry.served().is_empty());
    }
}
