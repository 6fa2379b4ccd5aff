//! Server-side field validation (`?fieldValidation=Strict|Warn|Ignore`), which kubectl asks
//! for on every create and apply (`--validate=strict`, its default): fields the kind's schema
//! does not define are refused (Strict), or dropped and reported in `Warning` headers (Warn,
//! the server's default), or dropped silently (Ignore), as upstream's decoder does
//! (`k8s.io/apiserver/pkg/endpoints/handlers`, "strict decoding error"): a Go struct has
//! nowhere to keep an unknown field, so a real server never stores one.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::openapi;
use super::resources::Resource;
use super::status::ApiError;

/// What the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields fail the request.
    Strict,
    /// Unknown fields are reported as warnings.
    Warn,
    /// Unknown fields are not looked for.
    Ignore,
}

impl FieldValidation {
    /// The `fieldValidation` query parameter; absent is `Warn`, upstream's default.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("" | "Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Strict, Warn or Ignore, got {other:?}"
            ))),
        }
    }
}

/// Checks `obj` against `r`'s schema: Err for Strict with unknown fields; otherwise drops
/// them and returns the warnings to send (none for Ignore).
pub fn check(
    r: &Resource,
    obj: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    checked(r, obj, mode, Walk::Object)
}

/// Checks a JSON merge patch (RFC 7386) before it is applied, with the same answers as
/// [`check`] of the patched object, at the cost of the patch's fields instead of the whole
/// object's.
///
/// Upstream's patcher (`k8s.io/apiserver/pkg/endpoints/handlers/patch.go`,
/// `jsonPatcher.applyPatchToCurrentObject`) encodes the current object, merges the patch into
/// it and strict-decodes the result. The current object is a Go struct, which cannot hold an
/// unknown field, so every unknown field of the result came from the patch; the store keeps
/// the same invariant (`Store::create`). A field the patch sets to null is removed
/// by the merge, not stored, so it is not looked at; a list replaces the stored one whole, so
/// its items' paths (`[i]`) are the patched object's. Unknown fields are dropped from the
/// patch, which leaves them out of the patched object.
pub fn check_merge_patch(
    r: &Resource,
    patch: &mut Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    checked(r, patch, mode, Walk::MergePatch)
}

/// Drops the fields `r`'s schema does not define from an object an in-process writer stores,
/// returning their paths (the store logs them).
pub fn drop_unknown(r: &Resource, obj: &mut Value) -> Vec<String> {
    unknown_fields(r, obj, Walk::Object)
}

/// Whether `obj` has no field `r`'s schema does not define: what the store may hold.
pub fn is_clean(r: &Resource, obj: &Value) -> bool {
    drop_unknown(r, &mut obj.clone()).is_empty()
}

/// What a walk reads: a whole object, or a merge patch (whose nulls delete).
#[derive(Clone, Copy, PartialEq)]
enum Walk {
    Object,
    MergePatch,
}

/// The answer of a walk of `value` for `mode`.
fn checked(
    r: &Resource,
    value: &mut Value,
    mode: FieldValidation,
    what: Walk,
) -> Result<Vec<String>, ApiError> {
    let unknown = unknown_fields(r, value, what);
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let reports: Vec<String> = unknown
        .iter()
        .map(|path| format!("unknown field \"{path}\""))
        .collect();
    if mode == FieldValidation::Strict && !reports.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            reports.join(", "),
            kind = r.kind,
            version = r.version,
        )));
    }
    Ok(reports)
}

/// Removes, and names, the fields of `value` that `r`'s schema does not define (none for a
/// kind without a schema: custom resources).
fn unknown_fields(r: &Resource, value: &mut Value, what: Walk) -> Vec<String> {
    let Some((schema, schemas)) = openapi::kind_schema(r) else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    walk(
        value,
        schema,
        schemas,
        what,
        &mut String::new(),
        &mut unknown,
    );
    unknown
}

/// The schema a `$ref` (possibly under `allOf`, where siblings moved it) points at.
fn resolve<'a>(schema: &'a Value, schemas: &'a Map<String, Value>) -> &'a Value {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference.and_then(|r| r.rsplit('/').next()) {
        Some(name) => schemas.get(name).unwrap_or(schema),
        None => schema,
    }
}

/// Records, and removes, every field of `value` that `schema` does not define. `path` is
/// where `value` is (`spec.containers[0]`), grown and cut back in place: it is copied only
/// for an unknown field, so a walk of a known object allocates nothing per field. In a merge
/// patch a null field is a deletion, neither known nor unknown; a list in it is stored as it
/// is, nulls and all, so its items are read as objects.
fn walk(
    value: &mut Value,
    schema: &Value,
    schemas: &Map<String, Value>,
    what: Walk,
    path: &mut String,
    unknown: &mut Vec<String>,
) {
    let schema = resolve(schema, schemas);
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    let at = path.len();
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                map.retain(|key, v| {
                    if what == Walk::MergePatch && v.is_null() {
                        return true;
                    }
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    let known = match properties.get(key) {
                        Some(s) => {
                            walk(v, s, schemas, what, path, unknown);
                            true
                        }
                        None => {
                            unknown.push(path.clone());
                            false
                        }
                    };
                    path.truncate(at);
                    known
                });
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, v) in map.iter_mut() {
                    path.push('[');
                    path.push_str(key);
                    path.push(']');
                    walk(v, values, schemas, what, path, unknown);
                    path.truncate(at);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    let _ = write!(path, "[{i}]");
                    walk(v, item, schemas, Walk::Object, path, unknown);
                    path.truncate(at);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{FieldValidation, check, check_merge_patch, drop_unknown};
    use crate::api::patch;
    use crate::api::resources::lookup;

    /// The shortcut against its definition: for a stored object free of unknown fields,
    /// checking a merge patch and then applying it answers and stores what applying it and
    /// then checking the whole patched object does, in every mode.
    #[test]
    fn a_merge_patch_is_checked_as_the_patched_object_would_be() {
        let pods = lookup("", "v1", "pods").unwrap();
        let mut stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "1"}},
            "spec": {"nodeName": "n1", "securityContext": {"runAsUser": 1},
                "containers": [{"name": "app", "image": "app:1",
                    "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": "Running"}});
        assert!(
            drop_unknown(pods, &mut stored).is_empty(),
            "the stored pod is clean"
        );
        let patches = [
            json!({"metadata": {"labels": {"bench": "1"}}}),
            json!({"spec": {"securityContext": {"runAsUsr": 2, "runAsGroup": 3}}}),
            json!({"spec": {"securityContext": {"seLinuxOptions": {"levle": "s0"}}}}),
            json!({"spec": {"containers": [{"name": "app", "image": "app:2", "portz": []}]}}),
            json!({"spec": {"containers": [{"name": "app", "imagePullPolicyy": null}]}}),
            json!({"spec": {"dnsPolicyy": null, "nodeName": null}, "metadata": {"x": null}}),
            json!({"spec": {"nodeSelector": {"disk": "ssd", "bad": null}}}),
            json!({"spec": {"securityContext": "not an object", "affinity": {"nodeAffinityy": {}}}}),
            json!({"status": {"phase": "Failed", "reasonn": "x"}, "kindd": "Pod"}),
            json!({"metadata": {"annotations": null, "lables": {"y": "2"}}}),
        ];
        for document in patches {
            for mode in [
                FieldValidation::Strict,
                FieldValidation::Warn,
                FieldValidation::Ignore,
            ] {
                let mut whole = stored.clone();
                patch::merge(&mut whole, &document);
                let expected = check(pods, &mut whole, mode);
                let mut shortcut = document.clone();
                let answer = check_merge_patch(pods, &mut shortcut, mode);
                let mut patched = stored.clone();
                patch::merge(&mut patched, &shortcut);
                match (expected, answer) {
                    (Ok(expected), Ok(answer)) => {
                        assert_eq!(answer, expected, "{document} {mode:?}");
                        assert_eq!(patched, whole, "{document} {mode:?}");
                    }
                    (Err(expected), Err(answer)) => {
                        assert_eq!(answer.message, expected.message, "{document}")
                    }
                    (expected, answer) => {
                        panic!("{document} {mode:?}: {expected:?} but {answer:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_fields_are_named_by_path_and_never_stored() {
        let deployments = lookup("apps", "v1", "deployments").unwrap();
        let typo = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "pdb", "labels": {"any": "label"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pdb"}},
                "template": {"metadata": {"labels": {"app": "pdb"}}, "spec": {"containers": [
                    {"name": "pdb", "image": "pause", "resources": {"requests": {"cpu": "1"}},
                     "securityContext": {"allowPrivilegedEscalation": false}}]}}},
            "status": {}});
        let field = "spec.template.spec.containers[0].securityContext.allowPrivilegedEscalation";
        let err = check(deployments, &mut typo.clone(), FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            format!(
                r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "{field}""#
            )
        );
        let mut warned = typo.clone();
        assert_eq!(
            check(deployments, &mut warned, FieldValidation::Warn).unwrap(),
            [format!(r#"unknown field "{field}""#)]
        );
        let context = &warned["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(*context, json!({}), "the unknown field is dropped");
        let mut ignored = typo.clone();
        let warnings = check(deployments, &mut ignored, FieldValidation::Ignore).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(ignored, warned);
        let mut fixed = typo.clone();
        fixed["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
            json!({"allowPrivilegeEscalation": false});
        let unchanged = fixed.clone();
        let warnings = check(deployments, &mut fixed, FieldValidation::Strict).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(fixed, unchanged);
    }
}
