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
