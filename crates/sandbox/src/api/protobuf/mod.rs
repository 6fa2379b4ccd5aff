//! Protobuf request bodies, as kubectl's typed clients send them for built-in kinds.
//!
//! The wire format is upstream's protobuf serializer
//! (`k8s.io/apimachinery/pkg/runtime/serializer/protobuf`): the 4-byte magic `k8s\0`, then a
//! `runtime.Unknown` whose `typeMeta` names the object's apiVersion and kind and whose `raw` is
//! the object as its own protobuf message. The sandbox decodes `raw` by descriptor, from the
//! `.proto` files Kubernetes publishes (vendored in `crates/sandbox/proto`, compiled by
//! `build.rs`), and maps it to the same JSON the JSON path stores ([`json`]).
//!
//! Why descriptors rather than generated types (`k8s-pb`): generated prost structs have no
//! JSON form, so every kind would need a hand-written conversion; one descriptor walk covers
//! every built-in kind, and a new kind is a new `.proto` file.

mod json;

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::Value;

/// The compiled descriptors of the vendored Kubernetes protos.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/k8s.fds"))[..])
        .expect("build.rs writes a valid descriptor set")
});

/// The media type of protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The prefix of every protobuf-encoded object (upstream's `protoEncodingPrefix`).
const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body does not start with `k8s\0`.
    #[error(
        "provided object is not protobuf: the body does not start with the \"k8s\\x00\" prefix"
    )]
    NoPrefix,
    /// The envelope or the object is not valid protobuf for its message.
    #[error("decoding {message}: {source}")]
    Wire {
        /// The message being decoded.
        message: String,
        /// Why.
        source: prost_reflect::prost::DecodeError,
    },
    /// The envelope names an apiVersion/kind the vendored protos do not define.
    #[error("no protobuf message for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind {
        /// `typeMeta.apiVersion`.
        api_version: String,
        /// `typeMeta.kind`.
        kind: String,
    },
}

fn message(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(name)
        .unwrap_or_else(|| panic!("the vendored protos define {name}"))
}

fn decode_message(desc: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, DecodeError> {
    DynamicMessage::decode(desc.clone(), bytes).map_err(|source| DecodeError::Wire {
        message: desc.full_name().to_string(),
        source,
    })
}

/// The message of a kind: `apps/v1` `Deployment` is `api.apps.v1.Deployment` (the vendored
/// protos drop upstream's `k8s.io.` package prefix), the core group is `api.core.v1`, and the
/// option kinds every group shares (`DeleteOptions`, …) come from `meta/v1`.
fn descriptor_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version
        .rsplit_once('/')
        .unwrap_or(("core", api_version));
    let package = group.split('.').next().unwrap_or(group);
    POOL.get_message_by_name(&format!("api.{package}.{version}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

/// Decodes a `k8s\0`-prefixed body into the object's JSON form, `apiVersion` and `kind`
/// included.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(DecodeError::NoPrefix)?;
    let unknown = decode_message(&message("apimachinery.pkg.runtime.Unknown"), envelope)?;
    let type_meta = unknown.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_ref().and_then(|t| t.as_message());
    let text = |field: &str| {
        type_meta
            .and_then(|t| t.get_field_by_name(field))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let desc = descriptor_for(&api_version, &kind).ok_or_else(|| DecodeError::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let object = decode_message(&desc, &raw)?;
    let mut out = json::message(&object);
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prost_reflect::prost::Message;
    use prost_reflect::{DynamicMessage, Value as Pb};
    use serde_json::json;

    use super::{MAGIC, decode, message};

    fn set(msg: &mut DynamicMessage, field: &str, value: Pb) {
        msg.set_field_by_name(field, value);
    }

    fn sub(name: &str, fields: &[(&str, Pb)]) -> Pb {
        let mut msg = DynamicMessage::new(message(name));
        for (field, value) in fields {
            set(&mut msg, field, value.clone());
        }
        Pb::Message(msg)
    }

    /// `k8s\0` + runtime.Unknown around `object`, as upstream's protobuf serializer writes it.
    fn envelope(api_version: &str, kind: &str, object: &DynamicMessage) -> Vec<u8> {
        let type_meta = sub(
            "apimachinery.pkg.runtime.TypeMeta",
            &[
                ("apiVersion", Pb::String(api_version.into())),
                ("kind", Pb::String(kind.into())),
            ],
        );
        let mut unknown = DynamicMessage::new(message("apimachinery.pkg.runtime.Unknown"));
        set(&mut unknown, "typeMeta", type_meta);
        set(
            &mut unknown,
            "raw",
            Pb::Bytes(object.encode_to_vec().into()),
        );
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    #[test]
    fn special_types_take_their_json_form() {
        let meta = sub(
            "apimachinery.pkg.apis.meta.v1.ObjectMeta",
            &[
                ("name", Pb::String("budget".into())),
                // Go's zero value of a non-pointer string and an unset time: left out.
                ("generateName", Pb::String(String::new())),
                (
                    "creationTimestamp",
                    sub("apimachinery.pkg.apis.meta.v1.Time", &[]),
                ),
                (
                    "deletionTimestamp",
                    sub(
                        "apimachinery.pkg.apis.meta.v1.Time",
                        &[("seconds", Pb::I64(1_764_547_200))],
                    ),
                ),
            ],
        );
        let spec = sub(
            "api.policy.v1.PodDisruptionBudgetSpec",
            &[
                (
                    "minAvailable",
                    sub(
                        "apimachinery.pkg.util.intstr.IntOrString",
                        &[("type", Pb::I64(1)), ("strVal", Pb::String("80%".into()))],
                    ),
                ),
                (
                    "maxUnavailable",
                    sub(
                        "apimachinery.pkg.util.intstr.IntOrString",
                        &[("intVal", Pb::I32(2))],
                    ),
                ),
            ],
        );
        let mut pdb = DynamicMessage::new(message("api.policy.v1.PodDisruptionBudget"));
        set(&mut pdb, "metadata", meta);
        set(&mut pdb, "spec", spec);
        let decoded = decode(&envelope("policy/v1", "PodDisruptionBudget", &pdb)).unwrap();
        assert_eq!(
            decoded,
            json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "budget", "deletionTimestamp": "2025-12-01T00:00:00Z"},
                "spec": {"minAvailable": "80%", "maxUnavailable": 2},
            })
        );
    }

    #[test]
    fn quantities_bytes_and_raw_json() {
        let mut secret = DynamicMessage::new(message("api.core.v1.Secret"));
        let data = [(
            prost_reflect::MapKey::String("key".into()),
            Pb::Bytes(b"\x00\xffbinary".to_vec().into()),
        )];
        set(&mut secret, "data", Pb::Map(data.into_iter().collect()));
        let decoded = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(decoded["data"]["key"], "AP9iaW5hcnk=");

        let mut revision = DynamicMessage::new(message("api.apps.v1.ControllerRevision"));
        let raw = sub(
            "apimachinery.pkg.runtime.RawExtension",
            &[(
                "raw",
                Pb::Bytes(br#"{"spec":{"replicas":3}}"#.to_vec().into()),
            )],
        );
        set(&mut revision, "data", raw);
        set(&mut revision, "revision", Pb::I64(4));
        let decoded = decode(&envelope("apps/v1", "ControllerRevision", &revision)).unwrap();
        assert_eq!(decoded["data"], json!({"spec": {"replicas": 3}}));
        assert_eq!(decoded["revision"], 4);

        let mut quota = DynamicMessage::new(message("api.core.v1.ResourceQuotaSpec"));
        let hard = [(
            prost_reflect::MapKey::String("cpu".into()),
            sub(
                "apimachinery.pkg.api.resource.Quantity",
                &[("string", Pb::String("1500m".into()))],
            ),
        )];
        set(&mut quota, "hard", Pb::Map(hard.into_iter().collect()));
        assert_eq!(
            super::json::message(&quota),
            json!({"hard": {"cpu": "1500m"}})
        );
    }

    #[test]
    fn embedded_structs_are_inlined_as_in_go_json() {
        let http_get = sub(
            "api.core.v1.HTTPGetAction",
            &[("path", Pb::String("/ready".into()))],
        );
        let handler = sub("api.core.v1.ProbeHandler", &[("httpGet", http_get)]);
        let probe = sub(
            "api.core.v1.Probe",
            &[("handler", handler), ("periodSeconds", Pb::I32(5))],
        );
        let config_map = sub(
            "api.core.v1.ConfigMapVolumeSource",
            &[("defaultMode", Pb::I32(420))],
        );
        let source = sub("api.core.v1.VolumeSource", &[("configMap", config_map)]);
        let volume = sub(
            "api.core.v1.Volume",
            &[("name", Pb::String("cfg".into())), ("volumeSource", source)],
        );
        let selector = sub("apimachinery.pkg.apis.meta.v1.LabelSelector", &[]);
        let spread = sub(
            "api.core.v1.TopologySpreadConstraint",
            &[("labelSelector", selector), ("maxSkew", Pb::I32(1))],
        );
        let as_json = |v: Pb| super::json::message(v.as_message().unwrap());
        assert_eq!(
            as_json(probe),
            json!({"httpGet": {"path": "/ready"}, "periodSeconds": 5})
        );
        assert_eq!(
            as_json(volume),
            json!({"name": "cfg", "configMap": {"defaultMode": 420}})
        );
        assert_eq!(
            as_json(spread),
            json!({"labelSelector": {}, "maxSkew": 1}),
            "a field named like its type is not embedded"
        );
    }

    #[test]
    fn bad_bodies_are_named() {
        assert!(matches!(decode(b"{}"), Err(super::DecodeError::NoPrefix)));
        assert!(matches!(
            decode(&[MAGIC, b"\xff\xff"].concat()),
            Err(super::DecodeError::Wire { .. })
        ));
        let empty = DynamicMessage::new(message("api.core.v1.Pod"));
        let err = decode(&envelope("example.com/v1", "Widget", &empty)).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"no protobuf message for apiVersion "example.com/v1", kind "Widget""#
        );
    }
}
