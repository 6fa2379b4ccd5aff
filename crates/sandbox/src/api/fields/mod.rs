//! Field management: server-side apply and the `metadata.managedFields` every write records.
//!
//! The model is upstream's (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>,
//! implemented by structured-merge-diff's `merge.Updater` behind
//! `k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager`):
//!
//! - every write names a field manager (`?fieldManager=`, else the client's User-Agent up to its
//!   first `/`); creates, updates and non-apply patches record it with operation `Update`, owning
//!   the fields the write added or changed, which leave every other manager;
//! - an apply (`application/apply-patch+yaml`) merges the configuration into the object; the
//!   applier owns exactly the fields it applied (operation `Apply`); changing a field another
//!   manager owns is a 409 conflict naming each field and manager, unless `force=true` moves
//!   the fields to the applier; applying a field with the value it already has shares it;
//! - a field the applier owned before and no longer applies is removed from the object when no
//!   other manager owns it.
//!
//! Writes of the simulated cluster that go to the store in-process (kubelets, the scheduler)
//! record no managers: they are the kubelet's status, which nobody applies.

mod conflict;
pub mod set;
mod shape;

use serde_json::{Value, json};

use super::resources::Resource;
use super::status::ApiError;
use super::store::{Part, now};
use set::{FieldSet, Path};

/// `metadata` fields the server owns, never part of a manager's set (upstream's
/// `fieldmanager.NewStripMetaManager`).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Who writes, as the request names them.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// Which part of the object the request writes: status writes are recorded with
    /// `subresource: status`.
    pub part: Part,
}

impl Writer<'_> {
    fn subresource(&self) -> Option<&'static str> {
        (self.part == Part::Status).then_some("status")
    }
}

/// The field manager of a request: its `fieldManager` parameter, else the prefix of its
/// User-Agent before the first `/` (upstream `prefixFromUserAgent`), at most 128 characters.
pub fn manager_of(field_manager: Option<&str>, user_agent: &str) -> String {
    match field_manager {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => user_agent
            .split('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect(),
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn decode(v: &Value) -> Option<Entry> {
        if v["fieldsType"].as_str().is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        Some(Entry {
            manager: v["manager"].as_str().unwrap_or_default().to_string(),
            operation: v["operation"].as_str()?.to_string(),
            api_version: v["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: v["time"].as_str().map(str::to_string),
            subresource: v["subresource"].as_str().map(str::to_string),
            fields: match &v["fieldsV1"] {
                Value::Null => FieldSet::default(),
                f => FieldSet::from_fields_v1(f)?,
            },
        })
    }

    fn encode(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(time) = &self.time {
            v["time"] = json!(time);
        }
        if let Some(sub) = &self.subresource {
            v["subresource"] = json!(sub);
        }
        v
    }

    /// Whether this entry is the one `writer` records with `operation`: an applier is one
    /// manager whatever apiVersion it applies (upstream `BuildManagerIdentifier`), an updater
    /// one per apiVersion.
    fn is(&self, writer: &Writer, operation: &str, api_version: &str) -> bool {
        self.manager == writer.manager
            && self.operation == operation
            && self.subresource.as_deref() == writer.subresource()
            && (operation == "Apply" || self.api_version == api_version)
    }
}

/// The managers recorded on an object; an unreadable list counts as none, as upstream resets
/// managed fields it cannot decode.
fn entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(Entry::decode)
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// Writes the entries back in upstream's order (operation, then time, then manager), leaving
/// out managers that own nothing.
fn store_entries(obj: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.fields.is_empty());
    list.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.api_version).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
        ))
    });
    let encoded: Vec<Value> = list.iter().map(Entry::encode).collect();
    if encoded.is_empty() {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(encoded);
    }
}

/// Which paths a write by `part` may own: never the server's metadata, and status only through
/// the status subresource of a resource that has one (upstream's reset fields).
fn skipper(r: &Resource, part: Part) -> impl Fn(&Path) -> bool {
    let has_status = r.has_status;
    move |path: &Path| {
        let top = path[0].as_str();
        if path.len() == 1 && matches!(top, "f:apiVersion" | "f:kind") {
            return true;
        }
        if path.len() == 2
            && top == "f:metadata"
            && path[1]
                .strip_prefix("f:")
                .is_some_and(|field| SERVER_METADATA.contains(&field))
        {
            return true;
        }
        match part {
            Part::Status => top != "f:status",
            Part::Main => has_status && top == "f:status",
        }
    }
}

/// What changed between two objects: the paths added or changed, and those removed
/// (structured-merge-diff's `Compare`).
struct Comparison {
    changed: FieldSet,
    removed: FieldSet,
}

fn compare(old: &Value, new: &Value, skip: &dyn Fn(&Path) -> bool) -> Comparison {
    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    shape::differences(old, new, skip, &mut changed, &mut removed);
    Comparison { changed, removed }
}

/// Records a create, update or non-apply patch by `writer` that turns `old` (None for a create)
/// into `new`: the fields it added or changed become the writer's (operation `Update`) and
/// leave every other manager. A write that changes nothing leaves `managedFields` as they were.
///
/// A body that carries `managedFields` different from the object's replaces them first, as
/// upstream lets a client reset them.
pub fn record_update(r: &Resource, old: Option<&Value>, new: &mut Value, writer: &Writer) {
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let skip = skipper(r, writer.part);
    let given = &new["metadata"]["managedFields"];
    let mut list = if given.as_array().is_some_and(|l| !l.is_empty()) {
        entries(new)
    } else {
        entries(old)
    };
    let diff = compare(old, new, &skip);
    if diff.changed.is_empty() && diff.removed.is_empty() {
        store_entries(new, list);
        return;
    }
    let api_version = r.api_version();
    for entry in list.iter_mut() {
        entry.fields.remove_all(&diff.changed);
    }
    let mut owned = list
        .iter()
        .position(|e| e.is(writer, "Update", &api_version))
        .map(|i| list.remove(i).fields)
        .unwrap_or_default();
    owned.extend(&diff.changed);
    owned.remove_all(&diff.removed);
    list.push(Entry {
        manager: writer.manager.to_string(),
        operation: "Update".into(),
        api_version,
        time: Some(now()),
        subresource: writer.subresource().map(str::to_string),
        fields: owned,
    });
    store_entries(new, list);
}

/// A server-side apply of `config` by `writer` to `live` (an empty object when the apply
/// creates it): the object to store, with its `managedFields`, or the 409 of a conflict.
pub fn apply(
    r: &Resource,
    live: &Value,
    config: &Value,
    writer: &Writer,
    force: bool,
) -> Result<Value, ApiError> {
    let skip = skipper(r, writer.part);
    let mut config = config.clone();
    // `get_mut`, not `config["metadata"]`, which would add a null `metadata` to own.
    if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let applied = shape::paths(&config, &skip);
    let mut merged = live.clone();
    shape::merge(&mut merged, &config);
    let diff = compare(live, &merged, &skip);
    let mut list = entries(live);
    let mine = list.iter().position(|e| e.is(writer, "Apply", ""));
    let previous = mine.map(|i| list.remove(i).fields).unwrap_or_default();
    let conflicts: Vec<(Entry, FieldSet)> = list
        .iter()
        .map(|e| (e.clone(), e.fields.intersection(&diff.changed)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(conflict::error(&conflicts));
    }
    for entry in list.iter_mut() {
        entry.fields.remove_all(&diff.changed);
    }
    // Fields this manager applied before and no longer applies go, unless someone else owns
    // them (upstream `Updater.prune`).
    let others: FieldSet = list.iter().fold(FieldSet::default(), |mut all, e| {
        all.extend(&e.fields);
        all
    });
    // In sorted order an item comes before its fields: once it is gone they are not found,
    // and a field of an item that stays is found by the item's key.
    for path in previous
        .iter()
        .filter(|p| !applied.contains(p) && !others.contains(p))
    {
        shape::remove(&mut merged, path);
    }
    let unchanged = merged == *live && previous == applied;
    let time = match mine {
        Some(_) if unchanged => entries(live)
            .into_iter()
            .find(|e| e.is(writer, "Apply", ""))
            .and_then(|e| e.time),
        _ => Some(now()),
    };
    list.push(Entry {
        manager: writer.manager.to_string(),
        operation: "Apply".into(),
        api_version: r.api_version(),
        time,
        subresource: writer.subresource().map(str::to_string),
        fields: applied,
    });
    store_entries(&mut merged, list);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::lookup;

    fn deployments() -> &'static Resource {
        lookup("apps", "v1", "deployments").unwrap()
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            part: Part::Main,
        }
    }

    fn managers(obj: &Value) -> Vec<(String, String)> {
        entries(obj)
            .into_iter()
            .map(|e| (e.manager, e.operation))
            .collect()
    }

    #[test]
    fn two_appliers_share_equal_values_and_conflict_on_different_ones() {
        let r = deployments();
        let a = json!({"spec": {"replicas": 2, "paused": false}});
        let live = apply(r, &json!({}), &a, &writer("a"), false).unwrap();
        let same = json!({"spec": {"replicas": 2}});
        let shared = apply(r, &live, &same, &writer("b"), false).unwrap();
        assert_eq!(
            managers(&shared),
            vec![("a".into(), "Apply".into()), ("b".into(), "Apply".into())]
        );
        let other = json!({"spec": {"replicas": 3}});
        let err = apply(r, &shared, &other, &writer("b"), false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            r#"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#
        );
        let forced = apply(r, &shared, &other, &writer("b"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], json!(3));
        let a_fields = &entries(&forced)[0].fields;
        assert!(!a_fields.contains(&vec!["f:spec".into(), "f:replicas".into()]));
    }

    #[test]
    fn a_field_no_longer_applied_goes_unless_another_manager_owns_it() {
        let r = deployments();
        let first = json!({"metadata": {"labels": {"x": "1", "y": "1"}}});
        let live = apply(r, &json!({}), &first, &writer("a"), false).unwrap();
        let mut updated = live.clone();
        updated["metadata"]["labels"]["y"] = json!("2");
        record_update(r, Some(&live), &mut updated, &writer("editor"));
        let again = json!({"metadata": {"labels": {}}});
        let pruned = apply(r, &updated, &again, &writer("a"), false).unwrap();
        assert_eq!(pruned["metadata"]["labels"], json!({"y": "2"}));
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let r = deployments();
        let live = apply(
            r,
            &json!({}),
            &json!({"spec": {"replicas": 1}}),
            &writer("a"),
            false,
        )
        .unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(r, Some(&live), &mut scaled, &writer("kubectl-scale"));
        assert_eq!(
            managers(&scaled),
            vec![("kubectl-scale".into(), "Update".into())]
        );
        let err = apply(
            r,
            &scaled,
            &json!({"spec": {"replicas": 1}}),
            &writer("a"),
            false,
        )
        .unwrap_err();
        assert!(
            err.message.starts_with(
                r#"Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1"#
            ),
            "{}",
            err.message
        );
        let mut again = scaled.clone();
        record_update(r, Some(&scaled), &mut again, &writer("kubectl-scale"));
        assert_eq!(
            again, scaled,
            "a write that changes nothing records nothing"
        );
    }
}
