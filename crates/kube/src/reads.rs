//! What a drain reads, and no more: the node's pods by field selector (`spec.nodeName=`), the
//! budgets of their namespaces, their workloads by name and those workloads' pods and
//! ReplicaSets by label selector, every list a page at a time (`limit`/`continue`). The room
//! check needs what every pod requests: that one cluster-wide read is paged too and folded
//! into per-node sums as it goes ([`Usage`]), so no more than a page of pods is held at once.
//!
//! Before, each read listed every pod, budget, ReplicaSet, Deployment and StatefulSet of the
//! cluster in one response each: at 30,000 pods a handful of concurrent actions held hundreds
//! of MiB (#20 item 7).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::core::Selector;
use kube::{Api, Client, ResourceExt};
use quiesce_core::capacity::Usage;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::cluster::Snapshot;
use crate::error::{Error, Result};

/// Items per page: kube-runtime's watcher and kubectl's `--chunk-size` use the same.
pub const PAGE: u32 = 500;
/// How long one read keeps retrying a page the server failed.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// Folds every object `params` selects into `init()`, a page at a time. A transient failure
/// retries the same page; a continue token that expired (410, the server compacted its
/// version) starts the list over, with a fresh fold.
pub async fn fold<K, T>(
    api: Api<K>,
    params: ListParams,
    init: impl Fn() -> T,
    mut add: impl FnMut(&mut T, K),
) -> Result<T>
where
    K: Clone + DeserializeOwned + Debug,
{
    let deadline = Instant::now() + READ_PATIENCE;
    let mut backoff = Backoff::default();
    let mut acc = init();
    let mut token: Option<String> = None;
    loop {
        let mut page = params.clone().limit(PAGE);
        if let Some(token) = &token {
            page = page.continue_token(token);
        }
        match api.list(&page).await.map_err(Error::from) {
            Ok(list) => {
                token = list.metadata.continue_.filter(|t| !t.is_empty());
                for item in list.items {
                    add(&mut acc, item);
                }
                if token.is_none() {
                    return Ok(acc);
                }
            }
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 410 && token.is_some() => {
                tracing::info!("list continue token expired; listing again from the start");
                acc = init();
                token = None;
            }
            Err(err) if err.is_transient() && backoff.wait(None, deadline).await => {
                tracing::warn!(%err, "list failed; retrying");
            }
            Err(err) => return Err(err),
        }
    }
}

/// Every object `params` selects, paged.
pub async fn list<K>(api: Api<K>, params: ListParams) -> Result<Vec<K>>
where
    K: Clone + DeserializeOwned + Debug,
{
    fold(api, params, Vec::new, Vec::push).await
}

/// The node's pods and the budgets of their namespaces: what the hook's deadline needs.
pub async fn on_node(client: &Client, node: &str) -> Result<Snapshot> {
    let pods = list(
        Api::<Pod>::all(client.clone()),
        ListParams::default().fields(&format!("spec.nodeName={node}")),
    )
    .await?;
    let namespaces: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.namespace.as_deref())
        .collect();
    let pdbs = try_join_all(namespaces.into_iter().map(|ns| pdbs(client, Some(ns)))).await?;
    Ok(Snapshot {
        pdbs: pdbs.into_iter().flatten().collect(),
        pods,
        ..Snapshot::default()
    })
}

/// Everything the planner reads for `node` (see the module's doc).
pub async fn snapshot(client: &Client, node: &str) -> Result<Snapshot> {
    let (local, nodes, usage) = futures::try_join!(
        on_node(client, node),
        list(Api::<Node>::all(client.clone()), ListParams::default()),
        fold(
            Api::<Pod>::all(client.clone()),
            ListParams::default(),
            Usage::default,
            |usage, pod| usage.add(&pod),
        ),
    )?;
    let workloads = workloads(client, &local.pods).await?;
    let mut pods = local.pods;
    let mut seen: BTreeSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    pods.extend(
        workloads
            .pods
            .into_iter()
            .filter(|p| p.uid().is_some_and(|uid| seen.insert(uid))),
    );
    Ok(Snapshot {
        nodes,
        usage,
        pods,
        pdbs: local.pdbs,
        replica_sets: workloads.replica_sets,
        deployments: workloads.deployments,
        stateful_sets: workloads.stateful_sets,
    })
}

/// Every node, pod, budget and workload of the cluster, paged: for a judgement over a whole
/// node group at once (`quiesce roll`'s pre-flight, run once per roll by an operator), never
/// per lifecycle action, where [`snapshot`] reads only what one node's drain needs.
pub async fn whole_cluster(client: &Client) -> Result<Snapshot> {
    let all = ListParams::default;
    let (nodes, pods, pdbs, replica_sets, deployments, stateful_sets) = futures::try_join!(
        list(Api::<Node>::all(client.clone()), all()),
        list(Api::<Pod>::all(client.clone()), all()),
        pdbs(client, None),
        list(Api::<ReplicaSet>::all(client.clone()), all()),
        list(Api::<Deployment>::all(client.clone()), all()),
        list(Api::<StatefulSet>::all(client.clone()), all()),
    )?;
    Ok(Snapshot {
        nodes,
        usage: Usage::of(&pods),
        pods,
        pdbs,
        replica_sets,
        deployments,
        stateful_sets,
    })
}

/// The workloads of some pods, with their ReplicaSets and all their pods.
#[derive(Default)]
struct Workloads {
    replica_sets: Vec<ReplicaSet>,
    deployments: Vec<Deployment>,
    stateful_sets: Vec<StatefulSet>,
    pods: Vec<Pod>,
}

type Key = (String, String);

/// The controllers of `pods` by name, and each workload's ReplicaSets and pods by its label
/// selector (the gate counts the workload's pods elsewhere; a pod is the workload's by owner
/// chain, which the planner checks on what the selector returns).
async fn workloads(client: &Client, pods: &[Pod]) -> Result<Workloads> {
    let mut rs_names = BTreeSet::new();
    let mut sts_names = BTreeSet::new();
    for pod in pods {
        let ns = pod.namespace().unwrap_or_default();
        for owner in pod
            .owner_references()
            .iter()
            .filter(|o| o.controller == Some(true))
        {
            match owner.kind.as_str() {
                "ReplicaSet" => rs_names.insert((ns.clone(), owner.name.clone())),
                "StatefulSet" => sts_names.insert((ns.clone(), owner.name.clone())),
                _ => false,
            };
        }
    }
    let owners: Vec<ReplicaSet> = get_all(client, &rs_names).await?;
    let mut deploy_names = BTreeSet::new();
    // (namespace, selector) of every workload whose pods the gate counts.
    let mut selectors: BTreeMap<Key, Option<LabelSelector>> = BTreeMap::new();
    for rs in &owners {
        let ns = rs.namespace().unwrap_or_default();
        match rs
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Deployment")
        {
            Some(owner) => {
                deploy_names.insert((ns, owner.name.clone()));
            }
            None => {
                selectors.insert(
                    (ns, format!("rs/{}", rs.name_any())),
                    rs.spec.as_ref().map(|s| s.selector.clone()),
                );
            }
        }
    }
    let (deployments, stateful_sets): (Vec<Deployment>, Vec<StatefulSet>) =
        futures::try_join!(get_all(client, &deploy_names), get_all(client, &sts_names))?;
    let mut rs_selectors = Vec::new();
    for d in &deployments {
        let ns = d.namespace().unwrap_or_default();
        let selector = d.spec.as_ref().map(|s| s.selector.clone());
        rs_selectors.push((ns.clone(), selector.clone()));
        selectors.insert((ns, format!("deploy/{}", d.name_any())), selector);
    }
    for s in &stateful_sets {
        selectors.insert(
            (
                s.namespace().unwrap_or_default(),
                format!("sts/{}", s.name_any()),
            ),
            s.spec.as_ref().map(|s| s.selector.clone()),
        );
    }
    let (pod_lists, rs_lists) = futures::try_join!(
        try_join_all(selectors.iter().map(|((ns, _), sel)| by_selector::<Pod>(
            client,
            ns,
            sel.as_ref()
        ))),
        try_join_all(
            rs_selectors
                .iter()
                .map(|(ns, sel)| by_selector::<ReplicaSet>(client, ns, sel.as_ref()))
        ),
    )?;
    let mut replica_sets = owners;
    let mut seen: BTreeSet<String> = replica_sets.iter().filter_map(|r| r.uid()).collect();
    replica_sets.extend(
        rs_lists
            .into_iter()
            .flatten()
            .filter(|r| r.uid().is_some_and(|uid| seen.insert(uid))),
    );
    Ok(Workloads {
        replica_sets,
        deployments,
        stateful_sets,
        pods: pod_lists.into_iter().flatten().collect(),
    })
}

/// A namespaced kind the reads can get and list.
trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
{
}

/// The named objects that exist (a workload deleted meanwhile is simply absent).
async fn get_all<K>(client: &Client, names: &BTreeSet<Key>) -> Result<Vec<K>>
where
    K: Namespaced,
{
    let found = try_join_all(names.iter().map(|(ns, name)| async move {
        Api::<K>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(Error::from)
    }))
    .await?;
    Ok(found.into_iter().flatten().collect())
}

/// The objects of one namespace that `selector` matches; none for a workload without one
/// (upstream requires it, and an empty selector would be every pod of the namespace).
async fn by_selector<K>(
    client: &Client,
    ns: &str,
    selector: Option<&LabelSelector>,
) -> Result<Vec<K>>
where
    K: Namespaced,
{
    let Some(selector) = selector.and_then(|s| Selector::try_from(s.clone()).ok()) else {
        return Ok(Vec::new());
    };
    if selector.selects_all() {
        return Ok(Vec::new());
    }
    list(
        Api::<K>::namespaced(client.clone(), ns),
        ListParams::default().labels_from(&selector),
    )
    .await
}

/// The namespace's PDBs through policy/v1, or policy/v1beta1 on servers older than 1.21 (the
/// fields the planner reads are the same in both versions).
async fn pdbs(client: &Client, ns: Option<&str>) -> Result<Vec<PodDisruptionBudget>> {
    let params = ListParams::default();
    let api = match ns {
        Some(ns) => Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        None => Api::<PodDisruptionBudget>::all(client.clone()),
    };
    match list(api, params.clone()).await {
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {
            let gvk = GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget");
            let resource = ApiResource::from_gvk(&gvk);
            let api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            list(api, params)
                .await?
                .into_iter()
                .map(|obj| {
                    let value = serde_json::to_value(obj).map_err(kube::Error::SerdeError)?;
                    Ok(serde_json::from_value(value).map_err(kube::Error::SerdeError)?)
                })
                .collect()
        }
        other => other,
    }
}
