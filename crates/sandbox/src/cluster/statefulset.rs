//! The StatefulSet controller: pods `<name>-0 … <name>-(N-1)` with stable names, created in
//! order under `OrderedReady` (ordinal i only once 0…i−1 are Running and Ready) or all at once
//! under `Parallel`; a deleted pod comes back under the same name once the old one is gone;
//! surplus ordinals go highest first. Template updates and volumeClaimTemplates are not
//! modelled (docs/sandbox-fidelity.md).

use serde_json::json;

use super::objects::{self, deleting};
use super::replicaset::owned;
use super::{Pass, pod_from_template, pods};
use crate::api::eviction::is_ready;
use crate::api::resources::by_kind;
use crate::api::store::Part;

/// Reconciles every StatefulSet.
pub(super) fn reconcile(pass: &mut Pass<'_>) {
    let statefulsets = by_kind("apps", "StatefulSet");
    let all_pods = pass.all(pods());
    for sts in pass.all(statefulsets) {
        if deleting(&sts) {
            continue;
        }
        let name = objects::name(&sts).to_string();
        let want = sts["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let ordered = sts["spec"]["podManagementPolicy"] != "Parallel";
        let mine = owned(&all_pods, &sts);
        let by_ordinal = |i: i64| {
            let pod_name = format!("{name}-{i}");
            mine.iter().copied().find(|p| objects::name(p) == pod_name)
        };
        for i in 0..want {
            match by_ordinal(i) {
                Some(pod) if ordered && (deleting(pod) || !is_ready(pod)) => break,
                Some(_) => {}
                None => {
                    let pod_name = format!("{name}-{i}");
                    let mut pod = pod_from_template(
                        &sts,
                        Some(&pod_name),
                        &[("statefulset.kubernetes.io/pod-name", pod_name.clone())],
                    );
                    pod["spec"]["hostname"] = json!(pod_name);
                    if let Some(service) = sts["spec"]["serviceName"].as_str() {
                        pod["spec"]["subdomain"] = json!(service);
                    }
                    pass.create(pods(), objects::namespace(&sts), pod);
                    if ordered {
                        break;
                    }
                }
            }
        }
        let mut surplus: Vec<_> = mine
            .iter()
            .filter(|p| !deleting(p))
            .filter_map(|p| {
                let ordinal: i64 = objects::name(p).rsplit('-').next()?.parse().ok()?;
                (ordinal >= want).then_some((ordinal, *p))
            })
            .collect();
        surplus.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        for (_, pod) in surplus.iter().take(if ordered { 1 } else { usize::MAX }) {
            pass.delete(pods(), pod, None);
        }
        let replicas = mine.iter().filter(|p| objects::active(p)).count();
        let ready = mine
            .iter()
            .filter(|p| objects::active(p) && is_ready(p))
            .count();
        let observed = sts["metadata"]["generation"].clone();
        pass.update(statefulsets, &sts, Part::Status, |s| {
            s["status"] = json!({"observedGeneration": observed, "replicas": replicas, "readyReplicas": ready,
                "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": ready});
        });
    }
}
