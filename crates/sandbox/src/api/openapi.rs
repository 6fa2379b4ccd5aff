//! Just enough OpenAPI v3 for kubectl's field-validation probe.
//!
//! kubectl 1.32 validates manifests (`create -f`, `apply`) with `--validate=strict`: it looks
//! in `/openapi/v3/<group-version>` for a PATCH operation of the object's kind that declares a
//! `fieldValidation` query parameter, and when it finds one leaves validation to the server
//! (`k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go`). Without it kubectl falls back
//! to the protobuf OpenAPI v2 document and fails. So each group-version document lists, per
//! resource, that one operation; schemas are not modelled.

use serde_json::{Map, Value, json};

use super::resources::RESOURCES;

/// The URL prefix of a group-version: `api/v1` or `apis/apps/v1`.
fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document lives.
pub fn root() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        let gv = prefix(r.group, r.version);
        let url = format!("/openapi/v3/{gv}?hash=sandbox");
        paths.insert(gv, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<group-version>`, or None for a group-version the server does not serve.
pub fn group_version(gv: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| prefix(r.group, r.version) == gv)
    {
        let scope = if r.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let patch = json!({"patch": {
            "operationId": format!("patch{}", r.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}},
        }});
        paths.insert(format!("/{gv}/{scope}{}/{{name}}", r.plural), patch);
    }
    (!paths.is_empty()).then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
               "paths": paths, "components": {"schemas": {}}})
    })
}
