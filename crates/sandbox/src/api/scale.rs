//! The `scale` subresource of Deployments, ReplicaSets and StatefulSets, so `kubectl scale`
//! works: an `autoscaling/v1 Scale` view of `spec.replicas` and `status.replicas`, as upstream's
//! `pkg/registry/apps/deployment/storage` ScaleREST presents it.

use serde_json::{Value, json};

use super::patch::{self, PatchType};
use super::resources::Resource;
use super::selector::LabelSelector;
use super::status::ApiError;
use super::store::{Part, Store};

/// Whether `r` has a scale subresource.
pub fn scalable(r: &Resource) -> bool {
    r.group == "apps" && matches!(r.plural, "deployments" | "replicasets" | "statefulsets")
}

/// The Scale view of a workload.
fn view(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"],
                     "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
                   "selector": LabelSelector::from_object(&obj["spec"]["selector"]).to_string()},
    })
}

/// GET `.../<name>/scale`.
pub fn get(store: &Store, r: &'static Resource, ns: &str, name: &str) -> Result<Value, ApiError> {
    Ok(view(&store.get(r, ns, name)?))
}

/// PUT (`patch` None, body the new Scale) or PATCH `.../<name>/scale`: only `spec.replicas`
/// reaches the workload; a stale resourceVersion in the Scale is a 409 like any update.
pub fn write(
    store: &Store,
    r: &'static Resource,
    ns: &str,
    name: &str,
    body: Value,
    patch: Option<(PatchType, &[u8])>,
) -> Result<Value, ApiError> {
    let updated = store.modify(r, ns, name, Part::Main, |current| {
        let mut scale = match patch {
            None => body,
            Some((kind, raw)) => {
                let mut scale = view(current);
                if let Some(m) = scale["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                patch::apply(&mut scale, kind, raw)?;
                scale
            }
        };
        let replicas = scale["spec"]["replicas"].as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "a Scale needs spec.replicas as an integer, got {}",
                scale["spec"]["replicas"]
            ))
        })?;
        let mut next = current.clone();
        next["spec"]["replicas"] = json!(replicas);
        next["metadata"]["resourceVersion"] = scale["metadata"]["resourceVersion"].take();
        if next["metadata"]["resourceVersion"].is_null() {
            next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        Ok(next)
    })?;
    Ok(view(&updated))
}
