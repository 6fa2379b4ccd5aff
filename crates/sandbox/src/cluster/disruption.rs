//! The disruption controller (upstream `pkg/controller/disruption/disruption.go`): for each
//! PodDisruptionBudget, count the healthy pods it selects (Ready, not terminating, not recently
//! evicted), derive expectedPods and desiredHealthy (from minAvailable, or from maxUnavailable
//! against the owning controllers' scale), and publish disruptionsAllowed. Pods the eviction
//! handler recorded in `disruptedPods` count as unhealthy until they are gone, being deleted,
//! or older than upstream's DeletionTimeout of 2 minutes.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::objects::{self, controller_uid, deleting, scaled};
use super::{Pass, pods};
use crate::api::eviction::is_ready;
use crate::api::resources::by_kind;
use crate::api::selector::LabelSelector;
use crate::api::store::{Part, now};

/// Upstream's `DeletionTimeout`.
const DELETION_TIMEOUT_SECS: i64 = 120;

/// The scale of the controller behind a pod (ReplicaSet → its Deployment), keyed by UID.
fn controller_scales(pass: &Pass<'_>) -> HashMap<String, (String, i64)> {
    let mut scales = HashMap::new();
    let deployments: HashMap<String, i64> = pass
        .all(by_kind("apps", "Deployment"))
        .iter()
        .map(|d| {
            (
                objects::uid(d).to_string(),
                d["spec"]["replicas"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    for rs in pass.all(by_kind("apps", "ReplicaSet")) {
        let own = rs["spec"]["replicas"].as_i64().unwrap_or(1);
        let scale = match controller_uid(&rs) {
            Some(d) if deployments.contains_key(d) => (d.to_string(), deployments[d]),
            _ => (objects::uid(&rs).to_string(), own),
        };
        scales.insert(objects::uid(&rs).to_string(), scale);
    }
    for sts in pass.all(by_kind("apps", "StatefulSet")) {
        let uid = objects::uid(&sts).to_string();
        scales.insert(
            uid.clone(),
            (uid, sts["spec"]["replicas"].as_i64().unwrap_or(1)),
        );
    }
    scales
}

/// Reconciles every PDB's status.
pub(super) fn reconcile(pass: &mut Pass<'_>) {
    let pdbs = by_kind("policy", "PodDisruptionBudget");
    let all_pods = pass.all(pods());
    let scales = controller_scales(pass);
    let now_secs = Timestamp::now().as_second();
    for pdb in pass.all(pdbs) {
        let ns = objects::namespace(&pdb);
        // policy/v1: an empty selector selects every pod in the namespace; none selects none.
        let selected: Vec<&Value> = if pdb["spec"]["selector"].is_null() {
            Vec::new()
        } else {
            let selector = LabelSelector::from_object(&pdb["spec"]["selector"]);
            all_pods
                .iter()
                .filter(|p| {
                    objects::namespace(p) == ns && selector.matches(&p["metadata"]["labels"])
                })
                .collect()
        };
        let mut disrupted: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(map) = pdb["status"]["disruptedPods"].as_object() {
            for (name, at) in map {
                let pod = selected.iter().find(|p| objects::name(p) == name);
                let age = at
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .map_or(i64::MAX, |t| now_secs - t.as_second());
                if pod.is_some_and(|p| !deleting(p)) && age < DELETION_TIMEOUT_SECS {
                    disrupted.insert(name.clone(), at.clone());
                }
            }
        }
        let healthy = selected
            .iter()
            .filter(|p| is_ready(p) && !deleting(p) && !disrupted.contains_key(objects::name(p)))
            .count() as i64;
        let mut controllers: HashMap<&str, i64> = HashMap::new();
        for pod in &selected {
            if let Some((uid, scale)) = controller_uid(pod).and_then(|c| scales.get(c)) {
                controllers.insert(uid.as_str(), *scale);
            }
        }
        let controller_total: i64 = controllers.values().sum();
        let spec = &pdb["spec"];
        let (expected, desired) = if !spec["maxUnavailable"].is_null() {
            let max_unavailable = scaled(&spec["maxUnavailable"], controller_total, true);
            (
                controller_total,
                (controller_total - max_unavailable).max(0),
            )
        } else if spec["minAvailable"].is_string() {
            (
                controller_total,
                scaled(&spec["minAvailable"], controller_total, true),
            )
        } else {
            (
                selected.len() as i64,
                spec["minAvailable"].as_i64().unwrap_or(0),
            )
        };
        let allowed = (healthy - desired).max(0);
        let reason = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let previous = pdb["status"]["conditions"]
            .as_array()
            .and_then(|c| c.first())
            .cloned();
        let since = previous
            .filter(|c| c["status"] == reason.0)
            .map_or_else(|| json!(now()), |c| c["lastTransitionTime"].clone());
        let observed = pdb["metadata"]["generation"].clone();
        pass.update(pdbs, &pdb, Part::Status, |p| {
            p["status"] = json!({"observedGeneration": observed, "disruptionsAllowed": allowed,
                "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
                "disruptedPods": disrupted,
                "conditions": [{"type": "DisruptionAllowed", "status": reason.0, "reason": reason.1,
                    "message": "", "lastTransitionTime": since, "observedGeneration": observed}]});
        });
    }
}
