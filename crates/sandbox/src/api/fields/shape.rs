//! How server-side apply sees an object's structure: which lists are associative (merged item
//! by item on their key fields), which are sets, and which lists and maps are atomic (owned and
//! replaced whole). Upstream reads this from each type's OpenAPI schema
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`, the Go
//! markers `+listType=map`, `+listMapKey=`, `+mapType=atomic`); the sandbox keeps the markers of
//! the fields that kubectl, Helm and controllers apply — pod templates (containers, ports, env,
//! volumes, mounts), Service ports, conditions, owner references, finalizers — and treats every
//! other list as atomic, which is also upstream's default for a list without a marker
//! (structured-merge-diff `schema.List` defaults `ElementRelationship` to atomic).
//!
//! The same shape serves the field sets ([`paths`]), the comparison of two objects
//! ([`leaves`]), the merge of an applied configuration ([`merge`]) and the removal of fields a
//! manager stopped applying ([`remove`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::set::{FieldSet, Path};

/// How a list is merged and owned.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ListKind {
    /// `+listType=map`: items are identified by these key fields.
    Map(&'static [&'static str]),
    /// `+listType=set`: scalar items identified by their value.
    Set,
    /// `+listType=atomic`: the whole list is one value.
    Atomic,
}

/// Upstream's list markers for the fields the sandbox knows, by field name.
fn list_kind(field: &str, items: &[Value]) -> ListKind {
    let kind = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => ListKind::Map(&["name"]),
        // Container ports (`+listMapKey=containerPort`, `+listMapKey=protocol`) and Service
        // ports (`port`, `protocol`) share the field name; the items tell them apart.
        "ports" if items.iter().all(|i| i.get("containerPort").is_some()) => {
            ListKind::Map(&["containerPort", "protocol"])
        }
        "ports" => ListKind::Map(&["port", "protocol"]),
        "volumeMounts" => ListKind::Map(&["mountPath"]),
        "volumeDevices" => ListKind::Map(&["devicePath"]),
        "conditions" => ListKind::Map(&["type"]),
        "hostAliases" => ListKind::Map(&["ip"]),
        "topologySpreadConstraints" => ListKind::Map(&["topologyKey", "whenUnsatisfiable"]),
        "ownerReferences" => ListKind::Map(&["uid"]),
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    };
    match kind {
        ListKind::Map(keys) if items.iter().all(|i| key_of(i, keys).is_some()) => kind,
        ListKind::Set if items.iter().all(|i| !i.is_object() && !i.is_array()) => kind,
        _ => ListKind::Atomic,
    }
}

/// `+mapType=atomic` maps and `+structType=atomic` structs: a label selector and a Service's or
/// pod's selector are owned whole.
fn atomic_map(field: &str) -> bool {
    matches!(field, "selector" | "nodeSelector")
}

/// Key fields upstream defaults when an item leaves them out (`protocol` of a port is `TCP`,
/// which the schema's default declares and structured-merge-diff uses for the key).
fn key_default(field: &str) -> Option<Value> {
    (field == "protocol").then(|| Value::String("TCP".into()))
}

/// The key fields of an associative list's item, None when one is missing.
fn key_of(item: &Value, keys: &[&str]) -> Option<Map<String, Value>> {
    keys.iter()
        .map(|k| {
            let value = item.get(*k).cloned().or_else(|| key_default(k))?;
            Some((k.to_string(), value))
        })
        .collect()
}

/// A path element for an associative list's item: `k:{"name":"app"}` (keys sorted).
fn key_element(key: &Map<String, Value>) -> String {
    format!("k:{}", Value::Object(key.clone()))
}

/// A path element for a set's item: `v:"x"`.
fn value_element(item: &Value) -> String {
    format!("v:{item}")
}

/// What one path of an object holds, for comparisons.
#[derive(Debug, PartialEq)]
pub enum Leaf<'a> {
    /// A value owned as one: a scalar, a null, an empty map, an atomic list or map.
    Value(&'a Value),
    /// An item of an associative list, owned besides its fields.
    Item,
}

/// Every owned path of `obj` with what it holds, skipping what `skip` refuses (paths the server
/// owns, such as `metadata.uid`); structured-merge-diff's `ToFieldSet` walk
/// (`typed/tofieldset.go`).
pub fn leaves<'a>(obj: &'a Value, skip: &dyn Fn(&Path) -> bool) -> BTreeMap<Path, Leaf<'a>> {
    let mut out = BTreeMap::new();
    if let Some(map) = obj.as_object() {
        walk_map(map, &mut Vec::new(), skip, &mut out);
    }
    out
}

/// The owned paths of `obj` (see [`leaves`]).
pub fn paths(obj: &Value, skip: &dyn Fn(&Path) -> bool) -> FieldSet {
    let mut set = FieldSet::default();
    for path in leaves(obj, skip).into_keys() {
        set.insert(path);
    }
    set
}

fn walk_map<'a>(
    map: &'a Map<String, Value>,
    prefix: &mut Path,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut BTreeMap<Path, Leaf<'a>>,
) {
    for (field, value) in map {
        prefix.push(format!("f:{field}"));
        if !skip(prefix) {
            walk_value(field, value, prefix, skip, out);
        }
        prefix.pop();
    }
}

fn walk_value<'a>(
    field: &str,
    value: &'a Value,
    prefix: &mut Path,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut BTreeMap<Path, Leaf<'a>>,
) {
    match value {
        Value::Object(map) if !map.is_empty() && !atomic_map(field) => {
            walk_map(map, prefix, skip, out)
        }
        Value::Array(items) => match list_kind(field, items) {
            ListKind::Atomic => {
                out.insert(prefix.clone(), Leaf::Value(value));
            }
            ListKind::Set => {
                for item in items {
                    let mut path = prefix.clone();
                    path.push(value_element(item));
                    out.insert(path, Leaf::Value(item));
                }
            }
            ListKind::Map(keys) => {
                for item in items {
                    let key = key_of(item, keys).expect("list_kind checked every key");
                    prefix.push(key_element(&key));
                    out.insert(prefix.clone(), Leaf::Item);
                    if let Some(map) = item.as_object() {
                        walk_map(map, prefix, skip, out);
                    }
                    prefix.pop();
                }
            }
        },
        _ => {
            out.insert(prefix.clone(), Leaf::Value(value));
        }
    }
}

/// What [`leaves`] of `old` and of `new` differ in: the paths whose leaf was added or changed
/// go to `changed`, those only `old` has to `removed`. Walks only the fields whose values
/// differ (equal values have equal leaves), so a patch of one label does not walk the pod.
pub fn differences(
    old: &Value,
    new: &Value,
    skip: &dyn Fn(&Path) -> bool,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut diff = Diff {
        skip,
        changed,
        removed,
    };
    diff.maps(old, new, &mut Vec::new());
}

/// The walk of [`differences`] and where it puts what it finds.
struct Diff<'s, 'o> {
    skip: &'s dyn Fn(&Path) -> bool,
    changed: &'o mut FieldSet,
    removed: &'o mut FieldSet,
}

impl Diff<'_, '_> {
    fn maps(&mut self, old: &Map<String, Value>, new: &Map<String, Value>, prefix: &mut Path) {
        for (field, value) in new {
            match old.get(field) {
                Some(before) if before == value => {}
                before => self.field(field, before, Some(value), prefix),
            }
        }
        for (field, before) in old {
            if !new.contains_key(field) {
                self.field(field, Some(before), None, prefix);
            }
        }
    }

    fn field(&mut self, field: &str, old: Option<&Value>, new: Option<&Value>, prefix: &mut Path) {
        prefix.push(format!("f:{field}"));
        if !(self.skip)(prefix) {
            match (walked(field, old), walked(field, new)) {
                (Some(old), Some(new)) => self.maps(old, new, prefix),
                _ => {
                    let mut before = BTreeMap::new();
                    let mut after = BTreeMap::new();
                    if let Some(old) = old {
                        walk_value(field, old, prefix, self.skip, &mut before);
                    }
                    if let Some(new) = new {
                        walk_value(field, new, prefix, self.skip, &mut after);
                    }
                    for (path, leaf) in &after {
                        if before.get(path) != Some(leaf) {
                            self.changed.insert(path.clone());
                        }
                    }
                    for path in before.into_keys().filter(|p| !after.contains_key(p)) {
                        self.removed.insert(path);
                    }
                }
            }
        }
        prefix.pop();
    }
}

/// The map [`walk_value`] walks field by field, when `value` is one.
fn walked<'v>(field: &str, value: Option<&'v Value>) -> Option<&'v Map<String, Value>> {
    match value {
        Some(Value::Object(map)) if !map.is_empty() && !atomic_map(field) => Some(map),
        _ => None,
    }
}

/// Merges an applied configuration into the live object as structured-merge-diff's `Merge`
/// does: maps field by field, associative lists and sets item by item (new items appended),
/// atomic values replaced; a null in the configuration removes the field.
pub fn merge(live: &mut Value, config: &Value) {
    let (Some(live_map), Some(config_map)) = (live.as_object_mut(), config.as_object()) else {
        *live = config.clone();
        return;
    };
    for (field, value) in config_map {
        if value.is_null() {
            live_map.remove(field);
            continue;
        }
        let current = live_map.entry(field.clone()).or_insert(Value::Null);
        merge_field(field, current, value);
    }
}

fn merge_field(field: &str, current: &mut Value, value: &Value) {
    match (current, value) {
        (current @ Value::Object(_), Value::Object(_)) if !atomic_map(field) => {
            merge(current, value)
        }
        (Value::Array(current), Value::Array(items)) => {
            match (list_kind(field, current), list_kind(field, items)) {
                (ListKind::Map(a), ListKind::Map(b)) if a == b => {
                    for item in items {
                        let key = key_of(item, b);
                        match current.iter_mut().find(|c| key_of(c, b) == key) {
                            Some(existing) => merge(existing, item),
                            None => current.push(item.clone()),
                        }
                    }
                }
                (ListKind::Set, ListKind::Set) => {
                    for item in items {
                        if !current.contains(item) {
                            current.push(item.clone());
                        }
                    }
                }
                _ => *current = items.clone(),
            }
        }
        (current, value) => *current = value.clone(),
    }
}

/// Removes the field or list item at `path` from `obj`; nothing when it is not there.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = obj;
    let mut field = "";
    for element in parents {
        let Some(next) = step(current, field, element) else {
            return;
        };
        current = next;
        if let Some(name) = element.strip_prefix("f:") {
            field = name;
        }
    }
    match (current, last.strip_prefix("f:")) {
        (Value::Object(map), Some(name)) => {
            map.remove(name);
        }
        (Value::Array(items), None) => {
            if let Some(i) = position(items, field, last) {
                items.remove(i);
            }
        }
        _ => {}
    }
}

fn step<'a>(current: &'a mut Value, field: &str, element: &str) -> Option<&'a mut Value> {
    match element.strip_prefix("f:") {
        Some(name) => current.as_object_mut()?.get_mut(name),
        None => {
            let items = current.as_array_mut()?;
            let i = position(items, field, element)?;
            items.get_mut(i)
        }
    }
}

/// Where the item a `k:` or `v:` element names sits in the list `field`.
fn position(items: &[Value], field: &str, element: &str) -> Option<usize> {
    match list_kind(field, items) {
        ListKind::Map(keys) => items
            .iter()
            .position(|i| key_of(i, keys).is_some_and(|k| key_element(&k) == element)),
        ListKind::Set => items.iter().position(|i| value_element(i) == element),
        ListKind::Atomic => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nothing(_: &Path) -> bool {
        false
    }

    #[test]
    fn pod_templates_are_owned_by_container_name_and_port_key() {
        let obj = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "containers": [
            {"name": "app", "image": "a:1", "args": ["x"], "ports": [{"containerPort": 80}]}]}});
        let set = paths(&obj, &nothing);
        let fields: Vec<String> = set.iter().map(super::super::set::display).collect();
        assert_eq!(
            fields,
            vec![
                r#".spec.containers[name="app"]"#,
                r#".spec.containers[name="app"].args"#,
                r#".spec.containers[name="app"].image"#,
                r#".spec.containers[name="app"].name"#,
                r#".spec.containers[name="app"].ports[containerPort=80,protocol="TCP"]"#,
                r#".spec.containers[name="app"].ports[containerPort=80,protocol="TCP"].containerPort"#,
                ".spec.selector",
            ]
        );
    }

    #[test]
    fn merge_keeps_other_items_and_replaces_atomic_lists() {
        let mut live = json!({"spec": {"containers": [{"name": "a", "image": "1", "args": ["x"]},
            {"name": "b", "image": "1"}]}, "metadata": {"finalizers": ["f1"]}});
        let config = json!({"spec": {"containers": [{"name": "b", "image": "2"},
            {"name": "c", "image": "3"}]}, "metadata": {"finalizers": ["f2"]}});
        merge(&mut live, &config);
        assert_eq!(
            live,
            json!({"spec": {"containers": [{"name": "a", "image": "1", "args": ["x"]},
                {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]},
                "metadata": {"finalizers": ["f1", "f2"]}})
        );
        let mut with_args = json!({"args": ["x", "y"]});
        merge(&mut with_args, &json!({"args": ["z"]}));
        assert_eq!(with_args, json!({"args": ["z"]}));
    }

    /// The definition [`differences`] must keep: a comparison of every leaf of both objects.
    fn by_leaves(old: &Value, new: &Value, skip: &dyn Fn(&Path) -> bool) -> (FieldSet, FieldSet) {
        let (before, after) = (leaves(old, skip), leaves(new, skip));
        let mut changed = FieldSet::default();
        let mut removed = FieldSet::default();
        for (path, leaf) in &after {
            if before.get(path) != Some(leaf) {
                changed.insert(path.clone());
            }
        }
        for path in before.keys().filter(|p| !after.contains_key(*p)) {
            removed.insert(path.clone());
        }
        (changed, removed)
    }

    #[test]
    fn differences_walk_only_what_changed_and_find_what_every_leaf_would() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}, "finalizers": ["a"],
            "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet"}]},
            "spec": {"selector": {"app": "web"}, "nodeName": "n1", "containers": [
                {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let edits: Vec<fn(&mut Value)> = vec![
            |p| p["metadata"]["labels"]["bench"] = json!("1"),
            |p| p["metadata"]["labels"] = json!({}),
            |p| p["metadata"]["labels"] = json!("not a map"),
            |p| {
                p["metadata"].as_object_mut().unwrap().remove("labels");
            },
            |p| p["spec"]["containers"][0]["image"] = json!("a:2"),
            |p| p["spec"]["containers"][0]["ports"][0]["protocol"] = json!("UDP"),
            |p| p["spec"]["containers"] = json!([{"name": "other", "image": "b"}]),
            |p| p["spec"]["selector"]["tier"] = json!("x"),
            |p| p["metadata"]["finalizers"] = json!(["a", "b"]),
            |p| p["status"]["conditions"][0]["status"] = json!("False"),
            |p| p["spec"] = json!({}),
            |p| *p = json!({"kind": "Pod"}),
        ];
        let skip_status = |path: &Path| path[0] == "f:status" || path[0] == "f:kind";
        let skips: [&dyn Fn(&Path) -> bool; 2] = [&nothing, &skip_status];
        for edit in edits {
            let mut edited = pod.clone();
            edit(&mut edited);
            for skip in skips {
                for (old, new) in [(&pod, &edited), (&edited, &pod)] {
                    let mut changed = FieldSet::default();
                    let mut removed = FieldSet::default();
                    differences(old, new, skip, &mut changed, &mut removed);
                    assert_eq!(
                        (changed, removed),
                        by_leaves(old, new, skip),
                        "{old} -> {new}"
                    );
                }
            }
        }
    }

    #[test]
    fn remove_finds_items_by_key() {
        let mut obj = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        remove(
            &mut obj,
            &[
                "f:spec".into(),
                "f:ports".into(),
                r#"k:{"port":80,"protocol":"TCP"}"#.into(),
                "f:name".into(),
            ],
        );
        remove(
            &mut obj,
            &[
                "f:spec".into(),
                "f:ports".into(),
                r#"k:{"port":443,"protocol":"TCP"}"#.into(),
            ],
        );
        assert_eq!(obj, json!({"spec": {"ports": [{"port": 80}]}}));
    }
}
