//! The namespace controller: empties a namespace being deleted, then finalizes it (upstream
//! `pkg/controller/namespace/deletion`): every namespaced object in it is deleted (pods
//! gracefully, through their kubelets), and once nothing is left the `kubernetes` finalizer is
//! removed through `namespaces/<name>/finalize`, which completes the deletion. Custom
//! resources count as content too: upstream finds them by discovery, we by listing the
//! CustomResourceDefinitions (the namespaced ones, at a served version).

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};

use super::watches::Watches;
use crate::api::resources::{RESOURCES, Resource};
use crate::time::TimeScale;

/// How soon a namespace still being emptied is looked at again. Its pods leave after their
/// grace period, not at once; upstream requeues the same way rather than watching every
/// resource, and so do we: a watch of every pod would cost a large cluster a second copy of
/// each pod event.
const RECHECK: Duration = Duration::from_millis(200);

/// Runs the controller until the task is dropped (nothing it waits on is simulated time).
pub async fn run(client: Client, _scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let namespaces = watches.store::<Namespace>();
    watches.ready().await;
    loop {
        let mut terminating = false;
        for ns in namespaces.state() {
            if ns.metadata.deletion_timestamp.is_some() {
                terminating = true;
                empty_and_finalize(&client, &ns).await;
            }
        }
        watches.changed(terminating.then_some(RECHECK)).await;
    }
}

fn api_resource(r: &Resource) -> ApiResource {
    ApiResource {
        group: r.group.to_string(),
        version: r.version.to_string(),
        api_version: r.api_version(),
        kind: r.kind.to_string(),
        plural: r.plural.to_string(),
    }
}

/// The namespaced custom resources the server serves, one served version each (the storage
/// version where it is served).
async fn custom_resources(client: &Client) -> Result<Vec<ApiResource>, kube::Error> {
    let definitions = Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(definitions
        .items
        .into_iter()
        .filter(|d| d.spec.scope == "Namespaced")
        .filter_map(|d| {
            let mut served: Vec<_> = d.spec.versions.iter().filter(|v| v.served).collect();
            served.sort_by_key(|v| !v.storage);
            let version = served.first()?.name.clone();
            Some(ApiResource {
                api_version: format!("{}/{version}", d.spec.group),
                group: d.spec.group.clone(),
                version,
                kind: d.spec.names.kind.clone(),
                plural: d.spec.names.plural.clone(),
            })
        })
        .collect())
}

/// Deletes what is left in `ns`; finalizes it when nothing was.
async fn empty_and_finalize(client: &Client, ns: &Namespace) {
    let name = ns.name_any();
    let mut remaining = 0;
    let mut resources: Vec<ApiResource> = RESOURCES
        .iter()
        .filter(|r| r.namespaced && !r.review)
        .map(api_resource)
        .collect();
    match custom_resources(client).await {
        Ok(custom) => resources.extend(custom),
        // A server without the CRD API has no custom resources.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => {
            tracing::warn!(namespace = %name, %error, "listing CustomResourceDefinitions failed");
            return;
        }
    }
    for r in &resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, r);
        let objects = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            // A resource this server does not serve holds nothing.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => {
                tracing::warn!(namespace = %name, resource = %r.plural, %error, "listing a terminating namespace's content failed");
                remaining += 1;
                continue;
            }
        };
        for object in objects {
            remaining += 1;
            if object.metadata.deletion_timestamp.is_none()
                && let Err(error) = api
                    .delete(&object.name_any(), &DeleteParams::background())
                    .await
            {
                tracing::debug!(namespace = %name, %error, "deleting namespace content");
            }
        }
    }
    if remaining > 0 {
        return;
    }
    let mut finalized = ns.clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(Vec::new());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    if let Err(error) = api
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        tracing::debug!(namespace = %name, %error, "finalizing the namespace");
    }
}
