//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled with upstream's arithmetic
//! (`pkg/controller/deployment/rolling.go`): the new set grows while the total stays within
//! replicas + maxSurge, old sets shrink while available pods stay at or above
//! replicas − maxUnavailable (surge rounds up, unavailable rounds down, both 0 → 1
//! unavailable). Status and conditions are what `kubectl rollout status` reads.

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use super::Pass;
use super::objects::{self, deleting, scaled};
use super::replicaset::owned;
use crate::api::resources::by_kind;
use crate::api::store::{Part, now};

const REVISION: &str = "deployment.kubernetes.io/revision";

/// A stable hash of the pod template, as the `pod-template-hash` label.
fn template_hash(template: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = hasher.finish();
    (0..10)
        .map(|_| {
            let c = alphabet[(n % alphabet.len() as u64) as usize] as char;
            n /= alphabet.len() as u64;
            c
        })
        .collect()
}

fn replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn available(rs: &Value) -> i64 {
    rs["status"]["availableReplicas"].as_i64().unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Reconciles every Deployment.
pub(super) fn reconcile(pass: &mut Pass<'_>) {
    let deployments = by_kind("apps", "Deployment");
    let replicasets = by_kind("apps", "ReplicaSet");
    let all_rs = pass.all(replicasets);
    for deploy in pass.all(deployments) {
        if deleting(&deploy) {
            continue;
        }
        let hash = template_hash(&deploy["spec"]["template"]);
        let mine: Vec<Value> = owned(&all_rs, &deploy).into_iter().cloned().collect();
        let desired = deploy["spec"]["replicas"].as_i64().unwrap_or(1);
        let Some(new_rs) = mine
            .iter()
            .find(|rs| rs["metadata"]["labels"]["pod-template-hash"] == json!(hash))
        else {
            create_new_rs(pass, &deploy, &hash, &mine, desired);
            continue;
        };
        let old: Vec<&Value> = mine
            .iter()
            .filter(|rs| rs["metadata"]["uid"] != new_rs["metadata"]["uid"])
            .collect();
        let strategy = &deploy["spec"]["strategy"];
        let total: i64 = mine.iter().map(replicas).sum();
        if strategy["type"] == "Recreate" {
            for rs in old.iter().filter(|rs| replicas(rs) > 0) {
                pass.update(replicasets, rs, Part::Main, |r| {
                    r["spec"]["replicas"] = json!(0)
                });
            }
            let old_pods: i64 = old
                .iter()
                .map(|rs| rs["status"]["replicas"].as_i64().unwrap_or(0))
                .sum();
            if old_pods == 0 && replicas(new_rs) != desired {
                pass.update(replicasets, new_rs, Part::Main, |r| {
                    r["spec"]["replicas"] = json!(desired)
                });
            }
        } else {
            let ru = &strategy["rollingUpdate"];
            let surge = scaled(&ru["maxSurge"], desired, true);
            let mut unavailable = scaled(&ru["maxUnavailable"], desired, false);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            let new_replicas = replicas(new_rs);
            if old.is_empty() || new_replicas > desired {
                if new_replicas != desired {
                    pass.update(replicasets, new_rs, Part::Main, |r| {
                        r["spec"]["replicas"] = json!(desired)
                    });
                }
            } else if total < desired + surge && new_replicas < desired {
                let grow = (desired + surge - total).min(desired - new_replicas);
                pass.update(replicasets, new_rs, Part::Main, |r| {
                    r["spec"]["replicas"] = json!(new_replicas + grow)
                });
            }
            let min_available = desired - unavailable;
            let all_available: i64 = mine.iter().map(available).sum();
            let new_unavailable = (new_replicas - available(new_rs)).max(0);
            let mut budget =
                (all_available - min_available).min(total - min_available - new_unavailable);
            let mut old_sorted = old.clone();
            old_sorted.sort_by_key(|rs| revision(rs));
            for rs in old_sorted {
                if budget <= 0 {
                    break;
                }
                let shrink = replicas(rs).min(budget);
                if shrink > 0 {
                    budget -= shrink;
                    pass.update(replicasets, rs, Part::Main, |r| {
                        r["spec"]["replicas"] = json!(replicas(rs) - shrink)
                    });
                }
            }
        }
        update_status(pass, &deploy, new_rs, &mine, desired);
    }
}

fn create_new_rs(pass: &mut Pass<'_>, deploy: &Value, hash: &str, mine: &[Value], desired: i64) {
    let mut template = deploy["spec"]["template"].clone();
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut selector = deploy["spec"]["selector"].clone();
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let next_revision = mine.iter().map(revision).max().unwrap_or(0) + 1;
    let initial = if mine.is_empty() { desired } else { 0 };
    let rs = json!({
        "metadata": {
            "name": format!("{}-{hash}", objects::name(deploy)),
            "labels": template["metadata"]["labels"],
            "annotations": {REVISION: next_revision.to_string()},
            "ownerReferences": objects::owner_ref(deploy),
        },
        "spec": {"replicas": initial, "selector": selector, "template": template,
            "minReadySeconds": deploy["spec"]["minReadySeconds"]},
    });
    pass.create(
        by_kind("apps", "ReplicaSet"),
        objects::namespace(deploy),
        rs,
    );
}

fn update_status(
    pass: &mut Pass<'_>,
    deploy: &Value,
    new_rs: &Value,
    mine: &[Value],
    desired: i64,
) {
    let sum = |field: &str| -> i64 {
        mine.iter()
            .map(|rs| rs["status"][field].as_i64().unwrap_or(0))
            .sum()
    };
    let (total, ready, avail) = (
        sum("replicas"),
        sum("readyReplicas"),
        sum("availableReplicas"),
    );
    let updated = new_rs["status"]["replicas"].as_i64().unwrap_or(0);
    let ru = &deploy["spec"]["strategy"]["rollingUpdate"];
    let max_unavailable = scaled(&ru["maxUnavailable"], desired, false);
    let complete = updated == desired && total == desired && available(new_rs) >= desired;
    let existing = &deploy["status"]["conditions"];
    let condition = |kind: &str, status: &str, reason: &str, message: String| {
        let same = existing
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind && c["status"] == status);
        let since = same.map_or_else(|| json!(now()), |c| c["lastTransitionTime"].clone());
        json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": since, "lastTransitionTime": since})
    };
    let available_condition = if avail >= desired - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let rs_name = objects::name(new_rs);
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    let observed = deploy["metadata"]["generation"].clone();
    pass.update(by_kind("apps", "Deployment"), deploy, Part::Status, |d| {
        d["status"] = json!({"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
            "readyReplicas": ready, "availableReplicas": avail, "unavailableReplicas": (desired - avail).max(0),
            "conditions": [available_condition, progressing]});
    });
}
