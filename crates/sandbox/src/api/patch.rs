//! The four patch types of the API server.
//!
//! Strategic merge patch is modelled for what kubectl and controllers send: a JSON merge patch
//! in which lists of objects with a merge key (`name` for containers, ports, volumes; `type` for
//! conditions; `key` for taints) are merged element by element, `$patch: delete` removes an
//! element, and `$setElementOrder/...` / `$retainKeys` directives are dropped. Server-side apply
//! with its field ownership is `super::fields`; here it is only parsed (and merged, for the
//! scale subresource, which records no managers).

use serde_json::Value;

use super::status::ApiError;

/// Which patch a request carries, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes strategic merge.
    Strategic,
    /// Server-side apply (`super::fields`).
    Apply,
}

impl PatchType {
    /// Maps a Content-Type header to a patch type.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies `patch` (raw body) to `target`.
pub fn apply(target: &mut Value, kind: PatchType, body: &[u8]) -> Result<(), ApiError> {
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(target, &ops)
                .map_err(|e| ApiError::invalid("patch", "", "patch", &e.to_string()))
        }
        PatchType::Merge | PatchType::Apply => {
            let patch = parse(body, kind)?;
            merge(target, &patch);
            Ok(())
        }
        PatchType::Strategic => {
            let patch = parse(body, kind)?;
            strategic_merge(target, &patch);
            Ok(())
        }
    }
}

/// The document of a JSON merge patch, for the caller to check
/// (`validation::check_merge_patch`) before [`merge`] applies it.
pub fn merge_document(body: &[u8]) -> Result<Value, ApiError> {
    parse(body, PatchType::Merge)
}

/// Applies a JSON merge patch document (RFC 7386): nulls delete, objects merge, anything
/// else replaces.
pub fn merge(target: &mut Value, document: &Value) {
    json_patch::merge(target, document);
}

/// The object a server-side apply body describes, for an apply that creates it.
pub fn applied_object(body: &[u8]) -> Result<Value, ApiError> {
    parse(body, PatchType::Apply)
}

fn parse(body: &[u8], kind: PatchType) -> Result<Value, ApiError> {
    let parsed = if kind == PatchType::Apply {
        serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    let value = parsed.map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "error decoding patch: the patch must be a JSON object",
        ))
    }
}

fn merge_key(items: &[Value]) -> Option<&'static str> {
    [
        "name",
        "type",
        "key",
        "containerPort",
        "port",
        "devicePath",
        "mountPath",
    ]
    .into_iter()
    .find(|k| items.iter().all(|i| i.get(*k).is_some()) && !items.is_empty())
}

fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target_map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch_map {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => {
                strategic_merge(target_map.entry(key.clone()).or_insert(Value::Null), value)
            }
            Value::Array(items) => {
                let existing = target_map.get_mut(key).and_then(Value::as_array_mut);
                match (existing, merge_key(items)) {
                    (Some(current), Some(mk)) if merge_key(current).is_none_or(|k| k == mk) => {
                        merge_list(current, items, mk)
                    }
                    _ => {
                        target_map.insert(key.clone(), value.clone());
                    }
                }
            }
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn merge_list(current: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let position = current.iter().position(|c| c.get(key) == item.get(key));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                current.remove(i);
            }
            (Some(i), false) => strategic_merge(&mut current[i], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                current.push(fresh);
            }
            (None, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "2"}], "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}});
        apply(&mut pod, PatchType::Strategic, patch.to_string().as_bytes()).unwrap();
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}])
        );
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"l": [1, 2]}});
        apply(
            &mut obj,
            PatchType::Merge,
            br#"{"metadata": {"labels": {"a": null}}, "spec": {"l": [3]}}"#,
        )
        .unwrap();
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"l": [3]}})
        );
    }

    #[test]
    fn json_patch_and_unknown_types() {
        let mut obj = json!({"spec": {"unschedulable": false}});
        apply(
            &mut obj,
            PatchType::Json,
            br#"[{"op": "replace", "path": "/spec/unschedulable", "value": true}]"#,
        )
        .unwrap();
        assert_eq!(obj["spec"]["unschedulable"], json!(true));
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
        assert_eq!(
            apply(&mut obj, PatchType::Merge, b"{oops")
                .unwrap_err()
                .code,
            400
        );
    }
}
