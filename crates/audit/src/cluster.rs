//! `--cluster`: the live objects instead of files, read through kube-rs. Each kind is listed at
//! the version the server serves (PodDisruptionBudgets: policy/v1, or v1beta1 on old servers;
//! HorizontalPodAutoscalers and the kinds only stack detection reads are optional), so the same
//! audit runs on any cluster.

use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::oneshot::pinned_kind;
use serde_json::json;

use crate::Error;
use crate::load::Object;

/// The kinds the audit reads, each with the versions to try in order; `optional` kinds may be
/// missing from the server.
const KINDS: &[(&str, &[&str], &str, bool)] = &[
    ("apps", &["v1"], "Deployment", false),
    ("apps", &["v1"], "StatefulSet", false),
    ("apps", &["v1"], "DaemonSet", false),
    ("", &["v1"], "Service", false),
    ("policy", &["v1", "v1beta1"], "PodDisruptionBudget", false),
    (
        "autoscaling",
        &["v2", "v1"],
        "HorizontalPodAutoscaler",
        true,
    ),
    // What stack detection reads: namespace labels (mesh injection, readiness gates), Spring
    // settings in ConfigMaps, ALB Ingresses and bound target groups. The sandbox serves only
    // Namespaces of these, and a cluster without the AWS Load Balancer Controller has no
    // TargetGroupBinding kind, hence optional.
    ("", &["v1"], "Namespace", false),
    ("", &["v1"], "ConfigMap", true),
    ("networking.k8s.io", &["v1", "v1beta1"], "Ingress", true),
    (
        "networking.k8s.io",
        &["v1", "v1beta1"],
        "IngressClass",
        true,
    ),
    ("elbv2.k8s.aws", &["v1beta1"], "TargetGroupBinding", true),
];

async fn resolve(
    client: &kube::Client,
    group: &str,
    versions: &[&str],
    kind: &str,
) -> Option<ApiResource> {
    for version in versions {
        if let Ok((resource, _)) =
            pinned_kind(client, &GroupVersionKind::gvk(group, version, kind)).await
        {
            return Some(resource);
        }
    }
    None
}

/// Lists every audited kind in every namespace; findings point at `cluster/<ns>/<kind>/<name>`.
pub async fn load(client: &kube::Client) -> Result<Vec<Object>, Error> {
    let mut out = Vec::new();
    for (group, versions, kind, optional) in KINDS {
        let Some(resource) = resolve(client, group, versions, kind).await else {
            if *optional {
                continue;
            }
            return Err(Error::NotServed {
                kind: kind.to_string(),
                versions: versions.join(", "),
            });
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Cluster {
                what: format!("{}/{}", resource.api_version, resource.plural),
                source,
            })?;
        for item in list.items {
            let mut doc = serde_json::to_value(&item).expect("a listed object serialises");
            doc["kind"] = json!(kind);
            doc["apiVersion"] = json!(resource.api_version);
            let name = item.metadata.name.clone().unwrap_or_default();
            // Cluster-scoped kinds (Namespace, IngressClass) have no namespace segment.
            let source = match &item.metadata.namespace {
                Some(ns) => format!("cluster/{ns}/{kind}/{name}"),
                None => format!("cluster/{kind}/{name}"),
            };
            out.push(Object {
                source: PathBuf::from(source),
                doc,
            });
        }
    }
    Ok(out)
}
