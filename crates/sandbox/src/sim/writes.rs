//! The controllers' writes, tolerant the way upstream controllers are: a 409 Conflict means
//! our cached copy was stale, and the watch is already bringing the fresh object that
//! triggers the next pass — so a conflict is logged and dropped, never retried blindly.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Who the API records as the writer of our patches.
const FIELD_MANAGER: &str = "quiesce-sandbox-controllers";

fn report(error: &kube::Error, action: &str, name: &str) {
    match error {
        kube::Error::Api(status) if status.code == 409 => {
            tracing::debug!(
                action,
                name,
                "conflict; the next pass works from the fresh object"
            );
        }
        kube::Error::Api(status) if status.code == 404 => {
            tracing::debug!(action, name, "already gone")
        }
        error => tracing::warn!(action, name, %error, "write failed; retried on the next change"),
    }
}

/// Replaces `obj`'s status, guarded by its resourceVersion so that a status computed from a
/// stale cache never overwrites a newer one (the eviction API's PDB decrement, say).
pub(crate) async fn write_status<K>(api: &Api<K>, obj: &K)
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    if let Err(error) = api.replace_status(&name, &PostParams::default(), obj).await {
        report(&error, "update status", &name);
    }
}

/// Creates `obj`, returning what the API stored (with its generated name).
pub(crate) async fn create<K>(api: &Api<K>, obj: &K) -> Option<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => Some(created),
        Err(error) => {
            let name = obj
                .meta()
                .name
                .clone()
                .or_else(|| obj.meta().generate_name.clone())
                .unwrap_or_default();
            report(&error, "create", &name);
            None
        }
    }
}

/// Deletes `obj` in the background, only if it is still the same object (uid precondition),
/// returning whether the API accepted the deletion.
pub(crate) async fn delete<K>(api: &Api<K>, obj: &K) -> bool
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => true,
        Err(error) => {
            report(&error, "delete", &name);
            false
        }
    }
}

/// Merge-patches `patch` into the object called `name`: for spec fields only controllers
/// write (a ReplicaSet's replicas, say), where last-writer-wins is the intended semantics.
pub(crate) async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> bool
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => true,
        Err(error) => {
            report(&error, "patch", name);
            false
        }
    }
}

/// Replaces `obj` whole, guarded by its resourceVersion (a stale copy loses with a 409).
pub(crate) async fn replace<K>(api: &Api<K>, obj: &K)
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    if let Err(error) = api.replace(&name, &PostParams::default(), obj).await {
        report(&error, "replace", &name);
    }
}
