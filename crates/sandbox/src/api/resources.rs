//! The resources the sandbox serves and their discovery documents.

use serde_json::{Value, json};

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for core.
    pub group: &'static str,
    /// Served version.
    pub version: &'static str,
    /// URL path segment.
    pub plural: &'static str,
    /// `kind` of its objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl's short names.
    pub short_names: &'static [&'static str],
    /// Whether `/status` is a separate subresource (the main resource then ignores status).
    pub has_status: bool,
    /// Whether spec changes bump `metadata.generation` (workloads, PDBs).
    pub tracks_generation: bool,
    /// Discovery categories: `all` is what `kubectl get all` lists.
    pub categories: &'static [&'static str],
    /// A review (`SelfSubjectAccessReview`, …): create-only, answered and never stored.
    pub review: bool,
}

impl Resource {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A namespaced resource with no subresources; the methods below add the rest.
    const fn new(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        kind: &'static str,
    ) -> Resource {
        Resource {
            group,
            version,
            plural,
            kind,
            namespaced: true,
            short_names: &[],
            has_status: false,
            tracks_generation: false,
            categories: &[],
            review: false,
        }
    }

    const fn cluster(mut self) -> Self {
        self.namespaced = false;
        self
    }

    const fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    const fn status(mut self) -> Self {
        self.has_status = true;
        self
    }

    /// A workload: `/status`, generation tracking, and in `kubectl get all`.
    const fn workload(mut self) -> Self {
        self.has_status = true;
        self.tracks_generation = true;
        self.categories = &["all"];
        self
    }

    const fn generation(mut self) -> Self {
        self.tracks_generation = true;
        self
    }

    const fn all(mut self) -> Self {
        self.categories = &["all"];
        self
    }

    const fn review(mut self) -> Self {
        self.review = true;
        self
    }

    /// The verbs discovery lists.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.review {
            &["create"]
        } else {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        }
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";
const NETWORKING: &str = "networking.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const APIEXTENSIONS: &str = super::custom::GROUP;

/// Every served resource; the index into this table identifies a resource in the store.
/// Within a group, the first version listed is the preferred one. Categories and short names
/// are upstream's (`kubectl api-resources` on a real cluster).
pub static RESOURCES: &[Resource] = &[
    Resource::new("", "v1", "namespaces", "Namespace")
        .cluster()
        .short(&["ns"])
        .status(),
    Resource::new("", "v1", "nodes", "Node")
        .cluster()
        .short(&["no"])
        .status(),
    Resource::new("", "v1", "pods", "Pod")
        .short(&["po"])
        .status()
        .all(),
    Resource::new("", "v1", "services", "Service")
        .short(&["svc"])
        .status()
        .all(),
    Resource::new("", "v1", "events", "Event").short(&["ev"]),
    Resource::new("", "v1", "configmaps", "ConfigMap").short(&["cm"]),
    Resource::new("", "v1", "secrets", "Secret"),
    Resource::new("", "v1", "serviceaccounts", "ServiceAccount").short(&["sa"]),
    Resource::new("", "v1", "endpoints", "Endpoints").short(&["ep"]),
    Resource::new("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
        .short(&["pvc"])
        .status(),
    Resource::new("", "v1", "persistentvolumes", "PersistentVolume")
        .cluster()
        .short(&["pv"])
        .status(),
    Resource::new("", "v1", "resourcequotas", "ResourceQuota")
        .short(&["quota"])
        .status(),
    Resource::new("", "v1", "limitranges", "LimitRange").short(&["limits"]),
    Resource::new("apps", "v1", "deployments", "Deployment")
        .short(&["deploy"])
        .workload(),
    Resource::new("apps", "v1", "replicasets", "ReplicaSet")
        .short(&["rs"])
        .workload(),
    Resource::new("apps", "v1", "statefulsets", "StatefulSet")
        .short(&["sts"])
        .workload(),
    Resource::new("apps", "v1", "daemonsets", "DaemonSet")
        .short(&["ds"])
        .workload(),
    Resource::new("apps", "v1", "controllerrevisions", "ControllerRevision"),
    Resource::new("batch", "v1", "jobs", "Job").workload(),
    Resource::new("batch", "v1", "cronjobs", "CronJob")
        .short(&["cj"])
        .workload(),
    Resource::new(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
    )
    .short(&["hpa"])
    .status()
    .all(),
    Resource::new(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
    )
    .short(&["pdb"])
    .status()
    .generation(),
    Resource::new("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Resource::new("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource::new(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
    )
    .cluster()
    .status(),
    Resource::new("storage.k8s.io", "v1", "storageclasses", "StorageClass")
        .cluster()
        .short(&["sc"]),
    Resource::new("storage.k8s.io", "v1", "csidrivers", "CSIDriver").cluster(),
    Resource::new("events.k8s.io", "v1", "events", "Event").short(&["ev"]),
    Resource::new(NETWORKING, "v1", "ingresses", "Ingress")
        .short(&["ing"])
        .status(),
    Resource::new(NETWORKING, "v1", "ingressclasses", "IngressClass").cluster(),
    Resource::new(NETWORKING, "v1", "networkpolicies", "NetworkPolicy").short(&["netpol"]),
    Resource::new(RBAC, "v1", "roles", "Role"),
    Resource::new(RBAC, "v1", "rolebindings", "RoleBinding"),
    Resource::new(RBAC, "v1", "clusterroles", "ClusterRole").cluster(),
    Resource::new(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding").cluster(),
    Resource::new(
        ADMISSION,
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
    )
    .cluster(),
    Resource::new(
        ADMISSION,
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
    )
    .cluster(),
    Resource::new(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
    )
    .cluster()
    .short(&["pc"]),
    Resource::new(
        APIEXTENSIONS,
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
    )
    .cluster()
    .short(&["crd", "crds"])
    .status(),
    Resource::new(
        AUTHORIZATION,
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    )
    .cluster()
    .review(),
    Resource::new(
        AUTHORIZATION,
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
    )
    .cluster()
    .review(),
];

/// Finds a served resource by group, version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource by kind within a group, for the controllers' own writes.
pub fn by_kind(group: &str, kind: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .expect("the sandbox serves every kind its controllers write")
}

/// `/version`: what kubectl and kube-rs print as the server version.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-quiesce-sandbox",
        "gitCommit": "sandbox", "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z",
        "goVersion": "none", "compiler": "rustc", "platform": "linux/amd64"
    })
}

/// `/api`: the core group's versions.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

/// The built-in resources, then the custom ones a server serves.
fn served<'a>(custom: &'a [&'static Resource]) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES.iter().chain(custom.iter().copied())
}

/// The named groups in table order, each with its versions (preferred first).
fn groups(custom: &[&'static Resource]) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in served(custom).filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => groups.push((r.group, vec![r.version])),
        }
    }
    groups
}

fn group_doc(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": gvs.clone(), "preferredVersion": gvs[0]})
}

/// `/apis`: every named group with its served versions, custom ones included.
pub fn group_list(custom: &[&'static Resource]) -> Value {
    let groups: Vec<Value> = groups(custom)
        .iter()
        .map(|(g, versions)| group_doc(g, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one group.
pub fn group(group: &str, custom: &[&'static Resource]) -> Option<Value> {
    groups(custom)
        .iter()
        .find(|(g, _)| *g == group)
        .map(|(g, versions)| {
            let mut doc = group_doc(g, versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/<group>/<version>`: resources with verbs and subresources.
pub fn resource_list(group: &str, version: &str, custom: &[&'static Resource]) -> Option<Value> {
    let mut resources = Vec::new();
    for r in served(custom).filter(|r| r.group == group && r.version == version) {
        resources.push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": r.verbs(), "shortNames": r.short_names,
            "categories": r.categories,
        }));
        if r.has_status {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if super::scale::scalable(r) {
            resources.push(
                json!({"name": format!("{}/scale", r.plural), "singularName": "",
                "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale",
                "verbs": ["get", "patch", "update"]}),
            );
        }
        if r.kind == "Namespace" {
            resources.push(
                json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false,
                "kind": "Namespace", "verbs": ["update"]}),
            );
        }
        if r.plural == "pods" {
            resources.push(
                json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
            );
            resources.push(
                json!({"name": "pods/binding", "singularName": "", "namespaced": true,
                "kind": "Binding", "verbs": ["create"]}),
            );
            resources.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"]}),
            );
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
