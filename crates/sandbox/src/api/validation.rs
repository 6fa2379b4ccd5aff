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
    let Some((schema, schemas)) = openapi::kind_schema(r) else {
        return Ok(Vec::new());
    };
    let mut unknown = Vec::new();
    walk(obj, schema, schemas, &mut String::new(), &mut unknown);
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
/// for an unknown field, so a walk of a known object allocates nothing per field.
fn walk(
    value: &mut Value,
    schema: &Value,
    schemas: &Map<String, Value>,
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
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    let known = match properties.get(key) {
                        Some(s) => {
                            walk(v, s, schemas, path, unknown);
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
                    walk(v, values, schemas, path, unknown);
                    path.truncate(at);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    let _ = write!(path, "[{i}]");
                    walk(v, item, schemas, path, unknown);
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

    use super::{FieldValidation, check};
    use crate::api::resources::lookup;

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
