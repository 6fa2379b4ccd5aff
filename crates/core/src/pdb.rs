//! Which PodDisruptionBudgets cover a pod, and whether a budget can ever let it go.
//!
//! The API server refuses an eviction with 500 when more than one PDB selects the pod and with
//! 429 while `status.disruptionsAllowed` is 0 (`pkg/registry/core/pod/storage/eviction.go`).
//! A budget whose spec forbids every disruption will answer 429 forever, which is worth saying
//! before anything is evicted rather than after the deadline — but only for pods the server
//! checks the budget for at all: a Pending pod is evicted without consulting any budget
//! (`canIgnorePDB`), and a pod that is not Ready is let go under `unhealthyPodEvictionPolicy:
//! AlwaysAllow`, or under the default `IfHealthyBudget` while the budget has its desired
//! healthy pods (same file, `Evict`).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::selector;

/// The PDBs in the pod's namespace whose selector matches it.
pub fn covering<'a>(pod: &Pod, pdbs: &'a [PodDisruptionBudget]) -> Vec<&'a PodDisruptionBudget> {
    pdbs.iter()
        .filter(|pdb| pdb.metadata.namespace == pod.metadata.namespace)
        .filter(|pdb| {
            selector::matches(
                pdb.spec.as_ref().and_then(|s| s.selector.as_ref()),
                pod.metadata.labels.as_ref(),
            )
        })
        .collect()
}

/// Why `pdb` can never allow a disruption, or `None` when it can (now or later).
///
/// `expected` is the number of pods the budget protects (`status.expectedPods`, which the
/// disruption controller derives from the owners' replica counts).
pub fn never_allows(pdb: &PodDisruptionBudget) -> Option<String> {
    let spec = pdb.spec.as_ref()?;
    let expected = pdb.status.as_ref().map(|s| s.expected_pods).unwrap_or(0);
    if let Some(max) = &spec.max_unavailable {
        return (resolve(max, expected) == Some(0)).then(|| {
            format!(
                "maxUnavailable is {} so no pod may ever be disrupted",
                show(max)
            )
        });
    }
    let min = spec.min_available.as_ref()?;
    let needed = resolve(min, expected)?;
    (expected > 0 && needed >= expected).then(|| {
        if expected == 1 {
            format!(
                "minAvailable is {} and the workload has a single replica",
                show(min)
            )
        } else {
            format!(
                "minAvailable is {} but only {expected} pods are expected",
                show(min)
            )
        }
    })
}

/// Whether the API server lets `pod` go without a disruption from any budget (still subject to
/// the multiple-budget refusal unless it is Pending), so no budget can block it.
pub fn bypassed(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending" | "Succeeded" | "Failed")
    )
}

/// Whether `pdb` lets the unready `pod` go regardless of its allowed disruptions.
pub fn lets_unhealthy_go(pod: &Pod, pdb: &PodDisruptionBudget) -> bool {
    if crate::gate::is_ready(pod) {
        return false;
    }
    let always = pdb
        .spec
        .as_ref()
        .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
        == Some("AlwaysAllow");
    let healthy_enough = pdb
        .status
        .as_ref()
        .is_some_and(|s| s.current_healthy >= s.desired_healthy);
    always || healthy_enough
}

/// How many disruptions the budget allows right now, as last computed by the controller.
pub fn allowed_now(pdb: &PodDisruptionBudget) -> i32 {
    pdb.status
        .as_ref()
        .map(|s| s.disruptions_allowed)
        .unwrap_or(0)
}

/// `namespace/name` of a PDB.
pub fn key(pdb: &PodDisruptionBudget) -> String {
    format!(
        "{}/{}",
        pdb.metadata.namespace.as_deref().unwrap_or_default(),
        pdb.metadata.name.as_deref().unwrap_or_default()
    )
}

fn resolve(value: &IntOrString, expected: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let percent: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
            // The disruption controller rounds minAvailable and maxUnavailable percentages up.
            Some(((percent * i64::from(expected) + 99) / 100) as i32)
        }
    }
}

fn show(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pdb, pod};

    #[test]
    fn covering_uses_namespace_and_selector() {
        let p = pod("web-1", Some(("ReplicaSet", "web-1")), &[("app", "web")]);
        let budgets = [
            pdb(
                "web",
                &[("app", "web")],
                None,
                Some(IntOrString::Int(1)),
                2,
                1,
            ),
            pdb(
                "db",
                &[("app", "db")],
                None,
                Some(IntOrString::Int(1)),
                2,
                1,
            ),
        ];
        let found: Vec<String> = covering(&p, &budgets).into_iter().map(key).collect();
        assert_eq!(found, ["default/web"]);
    }

    #[test]
    fn spots_budgets_that_never_allow() {
        let zero = pdb("z", &[], None, Some(IntOrString::Int(0)), 3, 0);
        assert!(never_allows(&zero).unwrap().contains("maxUnavailable is 0"));
        let zero_pct = pdb("z", &[], None, Some(IntOrString::String("0%".into())), 3, 0);
        assert!(never_allows(&zero_pct).is_some());
        let all = pdb(
            "a",
            &[],
            Some(IntOrString::String("100%".into())),
            None,
            3,
            0,
        );
        assert!(never_allows(&all).unwrap().contains("only 3 pods"));
        let single = pdb("s", &[], Some(IntOrString::Int(1)), None, 1, 0);
        assert!(never_allows(&single).unwrap().contains("single replica"));
        let fine = pdb("f", &[], Some(IntOrString::Int(1)), None, 3, 2);
        assert_eq!(never_allows(&fine), None);
        assert_eq!(allowed_now(&fine), 2);
    }

    #[test]
    fn pending_pods_bypass_and_unready_pods_follow_the_unhealthy_policy() {
        let mut p = pod("web-1", Some(("ReplicaSet", "web-1")), &[("app", "web")]);
        p.status.as_mut().unwrap().phase = Some("Pending".into());
        assert!(bypassed(&p));
        p.status.as_mut().unwrap().phase = Some("Running".into());
        p.status.as_mut().unwrap().conditions = None;
        assert!(!bypassed(&p));
        let mut single = pdb("s", &[], Some(IntOrString::Int(1)), None, 1, 0);
        single.status.as_mut().unwrap().current_healthy = 0;
        assert!(
            !lets_unhealthy_go(&p, &single),
            "IfHealthyBudget below its desired count"
        );
        single.spec.as_mut().unwrap().unhealthy_pod_eviction_policy = Some("AlwaysAllow".into());
        assert!(lets_unhealthy_go(&p, &single));
    }
}
