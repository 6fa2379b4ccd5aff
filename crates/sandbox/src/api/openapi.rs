//! The OpenAPI v3 documents, generated from the served types (k8s-openapi's schemas of the
//! Kubernetes types, which carry upstream's descriptions).
//!
//! Two clients read them. `kubectl explain` looks up a kind's schema by its
//! `x-kubernetes-group-version-kind` in `/openapi/v3/<group-version>`. `kubectl create -f` and
//! `apply` (with the default `--validate=strict`) look there for a PATCH operation of the
//! object's kind that declares a `fieldValidation` query parameter, and when they find one
//! leave validation to the server (`k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go`);
//! without it kubectl falls back to the protobuf OpenAPI v2 document and fails. So each
//! group-version document has that operation per resource and the schemas of its kinds.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use k8s_openapi::api;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::resources::{RESOURCES, Resource};

/// The URL prefix of a group-version: `api/v1` or `apis/apps/v1`.
fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Adds the schema of `r`'s kind to the generator and returns its name, or None for a kind
/// without a Rust type.
fn add_schema(generator: &mut SchemaGenerator, r: &Resource) -> Option<String> {
    macro_rules! kinds {
        ($($kind:literal $group:literal => $ty:ty,)*) => {
            match (r.kind, r.group) {
                $(($kind, $group) => {
                    generator.subschema_for::<$ty>();
                    Some(<$ty as JsonSchema>::schema_name().into_owned())
                })*
                _ => None,
            }
        };
    }
    kinds! {
        "Namespace" "" => api::core::v1::Namespace,
        "Node" "" => api::core::v1::Node,
        "Pod" "" => api::core::v1::Pod,
        "Service" "" => api::core::v1::Service,
        "Event" "" => api::core::v1::Event,
        "ConfigMap" "" => api::core::v1::ConfigMap,
        "Secret" "" => api::core::v1::Secret,
        "ServiceAccount" "" => api::core::v1::ServiceAccount,
        "Endpoints" "" => api::core::v1::Endpoints,
        "PersistentVolumeClaim" "" => api::core::v1::PersistentVolumeClaim,
        "PersistentVolume" "" => api::core::v1::PersistentVolume,
        "ResourceQuota" "" => api::core::v1::ResourceQuota,
        "LimitRange" "" => api::core::v1::LimitRange,
        "Deployment" "apps" => api::apps::v1::Deployment,
        "ReplicaSet" "apps" => api::apps::v1::ReplicaSet,
        "StatefulSet" "apps" => api::apps::v1::StatefulSet,
        "DaemonSet" "apps" => api::apps::v1::DaemonSet,
        "ControllerRevision" "apps" => api::apps::v1::ControllerRevision,
        "Job" "batch" => api::batch::v1::Job,
        "CronJob" "batch" => api::batch::v1::CronJob,
        "HorizontalPodAutoscaler" "autoscaling" => api::autoscaling::v2::HorizontalPodAutoscaler,
        "PodDisruptionBudget" "policy" => api::policy::v1::PodDisruptionBudget,
        "EndpointSlice" "discovery.k8s.io" => api::discovery::v1::EndpointSlice,
        "Lease" "coordination.k8s.io" => api::coordination::v1::Lease,
        "VolumeAttachment" "storage.k8s.io" => api::storage::v1::VolumeAttachment,
        "StorageClass" "storage.k8s.io" => api::storage::v1::StorageClass,
        "CSIDriver" "storage.k8s.io" => api::storage::v1::CSIDriver,
        "Event" "events.k8s.io" => api::events::v1::Event,
        "Ingress" "networking.k8s.io" => api::networking::v1::Ingress,
        "IngressClass" "networking.k8s.io" => api::networking::v1::IngressClass,
        "NetworkPolicy" "networking.k8s.io" => api::networking::v1::NetworkPolicy,
        "Role" "rbac.authorization.k8s.io" => api::rbac::v1::Role,
        "RoleBinding" "rbac.authorization.k8s.io" => api::rbac::v1::RoleBinding,
        "ClusterRole" "rbac.authorization.k8s.io" => api::rbac::v1::ClusterRole,
        "ClusterRoleBinding" "rbac.authorization.k8s.io" => api::rbac::v1::ClusterRoleBinding,
        "ValidatingWebhookConfiguration" "admissionregistration.k8s.io" =>
            api::admissionregistration::v1::ValidatingWebhookConfiguration,
        "MutatingWebhookConfiguration" "admissionregistration.k8s.io" =>
            api::admissionregistration::v1::MutatingWebhookConfiguration,
        "PriorityClass" "scheduling.k8s.io" => api::scheduling::v1::PriorityClass,
        "SelfSubjectAccessReview" "authorization.k8s.io" =>
            api::authorization::v1::SelfSubjectAccessReview,
        "SelfSubjectRulesReview" "authorization.k8s.io" =>
            api::authorization::v1::SelfSubjectRulesReview,
    }
}

/// The PATCH operation of `r` that tells kubectl the server validates fields, at its path.
fn patch_operation(gv: &str, r: &Resource) -> (String, Value) {
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
    (format!("/{gv}/{scope}{}/{{name}}", r.plural), patch)
}

fn document(paths: Map<String, Value>, schemas: Map<String, Value>) -> Value {
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
           "paths": paths, "components": {"schemas": schemas}})
}

fn hashed(text: String) -> (String, u64) {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    (text, hasher.finish())
}

/// A document's paths and schemas.
type Parts = (Map<String, Value>, Map<String, Value>);

/// The documents of custom resources by group-version, each resource's schema the
/// definition's `openAPIV3Schema` under upstream's name (`io.argoproj.v1alpha1.Rollout`).
/// Built on each request: definitions change at run time, and kubectl asks once per command.
fn custom_documents(custom: &[(&'static Resource, Value)]) -> HashMap<String, (String, u64)> {
    let mut parts: HashMap<String, Parts> = HashMap::new();
    for (r, schema) in custom {
        let gv = prefix(r.group, r.version);
        let (paths, schemas) = parts.entry(gv.clone()).or_default();
        let (path, patch) = patch_operation(&gv, r);
        paths.insert(path, patch);
        let reversed: Vec<&str> = r.group.split('.').rev().collect();
        let name = format!("{}.{}.{}", reversed.join("."), r.version, r.kind);
        let mut schema = if schema.is_object() {
            schema.clone()
        } else {
            json!({"type": "object"})
        };
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        schemas.insert(name, schema);
    }
    parts
        .into_iter()
        .map(|(gv, (paths, schemas))| (gv, hashed(document(paths, schemas).to_string())))
        .collect()
}

/// One group-version's document.
fn build(gv: &str) -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| prefix(r.group, r.version) == gv)
    {
        if let Some(name) = add_schema(&mut generator, r) {
            kinds.push((r, name));
        }
        let (path, patch) = patch_operation(gv, r);
        paths.insert(path, patch);
    }
    let mut schemas = generator.take_definitions(true);
    for (r, name) in kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
            );
        }
    }
    document(paths, schemas)
}

/// Schemas by name, and each served kind's (group, kind) → schema name.
type Schemas = (
    Map<String, Value>,
    HashMap<(&'static str, &'static str), String>,
);

/// Every schema the served kinds reach, by name (`io.k8s.api.core.v1.Probe`), and each served
/// kind's schema name. The protobuf decoder reads the property names (a Go struct embedded
/// inline — `Probe`'s `ProbeHandler`, `Volume`'s `VolumeSource` — is a field of its own in
/// protobuf but not in JSON, and a field missing from the JSON schema tells it apart); field
/// validation walks the schemas.
static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let mut kinds = HashMap::new();
    for r in RESOURCES {
        if let Some(name) = add_schema(&mut generator, r) {
            kinds.insert((r.group, r.kind), name);
        }
    }
    (generator.take_definitions(true), kinds)
});

/// The JSON properties of the schema `name`, if a served kind reaches it.
pub fn properties(name: &str) -> Option<&'static Map<String, Value>> {
    SCHEMAS.0.get(name)?["properties"].as_object()
}

/// The schema of a served kind, and the lookup for the `$ref`s inside it.
pub fn kind_schema(r: &Resource) -> Option<(&'static Value, &'static Map<String, Value>)> {
    let name = SCHEMAS.1.get(&(r.group, r.kind))?;
    Some((SCHEMAS.0.get(name)?, &SCHEMAS.0))
}

/// Every group-version's document, serialised once, with the hash the root lists (kubectl
/// caches documents by that URL, so a changed document must get a new one).
static DOCUMENTS: LazyLock<HashMap<String, (String, u64)>> = LazyLock::new(|| {
    let mut docs = HashMap::new();
    for r in RESOURCES {
        let gv = prefix(r.group, r.version);
        docs.entry(gv)
            .or_insert_with_key(|gv| hashed(build(gv).to_string()));
    }
    docs
});

/// `/openapi/v3`: where each group-version's document lives, custom ones included.
pub fn root(custom: &[(&'static Resource, Value)]) -> Value {
    let custom = custom_documents(custom);
    let paths: Map<String, Value> = DOCUMENTS
        .iter()
        .chain(custom.iter())
        .map(|(gv, (_, hash))| {
            let url = format!("/openapi/v3/{gv}?hash={hash:016X}");
            (gv.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/<group-version>` as JSON text, or None for one the server does not serve.
pub fn group_version(gv: &str, custom: &[(&'static Resource, Value)]) -> Option<Cow<'static, str>> {
    match DOCUMENTS.get(gv) {
        Some((text, _)) => Some(Cow::Borrowed(text.as_str())),
        None => custom_documents(custom)
            .remove(gv)
            .map(|(text, _)| Cow::Owned(text)),
    }
}
