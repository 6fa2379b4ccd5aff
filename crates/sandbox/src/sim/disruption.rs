//! The disruption controller: keeps each PodDisruptionBudget's status current, as upstream's
//! `pkg/controller/disruption/disruption.go` — the numbers the eviction API then enforces.
//!
//! - expectedPods: the summed scale of the pods' controllers (a ReplicaSet owned by a
//!   Deployment counts as the Deployment, each controller once) when the budget is a
//!   maxUnavailable or a minAvailable percentage; the number of selected pods for an integer
//!   minAvailable (`getExpectedPodCount`). A pod whose controller has no scale (a DaemonSet,
//!   none at all) makes the sync fail: disruptionsAllowed 0, reason SyncFailed (`failSafe`).
//! - currentHealthy: selected pods that are Ready, not being deleted, and not in
//!   `disruptedPods` (`countHealthyPods`); desiredHealthy: minAvailable, or expected minus
//!   maxUnavailable (percentages round up, `GetScaledValueFromIntOrPercent(.., true)`);
//!   disruptionsAllowed = max(0, currentHealthy - desiredHealthy), 0 with no expected pods.
//! - disruptedPods (written by the eviction API): an entry goes once its pod is being deleted
//!   or gone, or after DeletionTimeout — 2 minutes upstream, scaled by the time scale here
//!   (`buildDisruptedPodMap`).
//!
//! Status is written with its resourceVersion, so a status computed before an eviction's
//! decrement loses with a 409 instead of handing the budget back.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::int_or_percent::scaled;
use super::ownership::{controller_of, key, matcher, referent};
use super::pod_index::ByLabels;
use super::pod_state::{is_ready, is_terminating};
use super::watches::{Watches, earliest};
use super::writes;
use crate::time::TimeScale;

/// How long an eviction's entry in disruptedPods counts the pod as disrupted if the pod is
/// not deleted (upstream DeletionTimeout), in simulated time.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the controller until the task is dropped.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let controller = Controller {
        budgets: watches.store(),
        pods: watches.store(),
        sets: watches.store(),
        deployments: watches.store(),
        statefulsets: watches.store(),
        client,
        scale,
    };
    watches.ready().await;
    loop {
        let wake = controller.pass().await;
        watches.changed(wake).await;
    }
}

struct Controller {
    client: Client,
    scale: TimeScale,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
}

impl Controller {
    async fn pass(&self) -> Option<Duration> {
        let mut wake = None;
        let pods = ByLabels::new(&self.pods);
        for budget in self.budgets.state() {
            if budget.metadata.deletion_timestamp.is_none() {
                wake = earliest(wake, self.sync(&budget, &pods).await);
            }
        }
        wake
    }

    async fn sync(&self, budget: &PodDisruptionBudget, all: &ByLabels) -> Option<Duration> {
        let namespace = budget.namespace().unwrap_or_default();
        let spec = budget.spec.as_ref()?;
        let selector = matcher(spec.selector.as_ref(), &key(budget));
        let pods = selector
            .as_ref()
            .map(|s| all.selected(&namespace, s))
            .unwrap_or_default();
        let previous = budget.status.clone().unwrap_or_default();
        let (disrupted, wake) = self.live_disruptions(&previous, &pods);
        let counts = self.expected_and_desired(
            spec.max_unavailable.as_ref(),
            spec.min_available.as_ref(),
            &namespace,
            &pods,
        );
        let status = match counts {
            Ok((expected, desired)) => {
                let healthy = pods
                    .iter()
                    .filter(|p| {
                        !is_terminating(p) && !disrupted.contains_key(&p.name_any()) && is_ready(p)
                    })
                    .count();
                let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
                let allowed = if expected <= 0 {
                    0
                } else {
                    (healthy - desired).max(0)
                };
                let reason = if allowed > 0 {
                    ("True", "SufficientPods", "")
                } else {
                    ("False", "InsufficientPods", "")
                };
                PodDisruptionBudgetStatus {
                    expected_pods: expected,
                    current_healthy: healthy,
                    desired_healthy: desired,
                    disruptions_allowed: allowed,
                    disrupted_pods: Some(disrupted),
                    observed_generation: budget.metadata.generation,
                    conditions: Some(vec![condition(
                        &previous,
                        budget.metadata.generation,
                        reason,
                    )]),
                }
            }
            Err(error) => {
                tracing::warn!(pdb = %key(budget), %error, "cannot compute the budget; allowing no disruptions");
                PodDisruptionBudgetStatus {
                    disruptions_allowed: 0,
                    disrupted_pods: Some(disrupted),
                    conditions: Some(vec![condition(
                        &previous,
                        budget.metadata.generation,
                        ("False", "SyncFailed", &error),
                    )]),
                    ..previous.clone()
                }
            }
        };
        if status != previous {
            let mut updated = budget.clone();
            updated.status = Some(status);
            writes::write_status(
                &Api::<PodDisruptionBudget>::namespaced(self.client.clone(), &namespace),
                &updated,
            )
            .await;
        }
        wake
    }

    /// The disruptedPods entries still in force, and when the next one expires.
    fn live_disruptions(
        &self,
        status: &PodDisruptionBudgetStatus,
        pods: &[std::sync::Arc<Pod>],
    ) -> (BTreeMap<String, Time>, Option<Duration>) {
        let timeout = self.scale.real(DELETION_TIMEOUT);
        let now = Timestamp::now();
        let mut wake = None;
        let mut live = BTreeMap::new();
        for pod in pods.iter().filter(|p| !is_terminating(p)) {
            let Some(at) = status
                .disrupted_pods
                .as_ref()
                .and_then(|d| d.get(&pod.name_any()))
            else {
                continue;
            };
            let age = now.duration_since(at.0).unsigned_abs();
            if let Some(left) = timeout.checked_sub(age).filter(|d| !d.is_zero()) {
                live.insert(pod.name_any(), at.clone());
                wake = earliest(wake, Some(left));
            } else {
                tracing::info!(pod = %pod.name_any(), "pod was expected to be deleted after its eviction but was not; no longer counting it as disrupted");
            }
        }
        (live, wake)
    }

    /// (expectedPods, desiredHealthy), as upstream's getExpectedPodCount.
    fn expected_and_desired(
        &self,
        max_unavailable: Option<&IntOrString>,
        min_available: Option<&IntOrString>,
        namespace: &str,
        pods: &[std::sync::Arc<Pod>],
    ) -> Result<(i32, i32), String> {
        if let Some(max_unavailable) = max_unavailable {
            let expected = self.expected_scale(namespace, pods)?;
            let unavailable = scaled(max_unavailable, expected, true)
                .map_err(|e| format!("maxUnavailable: {e}"))?;
            return Ok((expected, (expected - unavailable).max(0)));
        }
        match min_available {
            Some(IntOrString::Int(min)) => {
                Ok((i32::try_from(pods.len()).unwrap_or(i32::MAX), *min))
            }
            Some(percent) => {
                let expected = self.expected_scale(namespace, pods)?;
                Ok((
                    expected,
                    scaled(percent, expected, true).map_err(|e| format!("minAvailable: {e}"))?,
                ))
            }
            None => Ok((0, 0)),
        }
    }

    /// The summed scale of the selected pods' controllers, each controller counted once.
    fn expected_scale(&self, namespace: &str, pods: &[std::sync::Arc<Pod>]) -> Result<i32, String> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        for pod in pods {
            let Some(owner) = controller_of(&pod.metadata) else {
                return Err(format!("found no controller for pod {:?}", pod.name_any()));
            };
            let (uid, replicas) = self.scale_of(owner, namespace).ok_or_else(|| {
                format!(
                    "found no controller with a scale for pod {:?} ({} {:?})",
                    pod.name_any(),
                    owner.kind,
                    owner.name
                )
            })?;
            scales.insert(uid, replicas);
        }
        Ok(scales.values().sum())
    }

    /// The controller (uid) whose scale governs pods owned by `owner`, and that scale.
    fn scale_of(&self, owner: &OwnerReference, namespace: &str) -> Option<(String, i32)> {
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = referent(&self.sets, owner, namespace)?;
                if let Some(parent) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")
                {
                    let deployment = referent(&self.deployments, parent, namespace)?;
                    return Some((
                        parent.uid.clone(),
                        deployment
                            .spec
                            .as_ref()
                            .and_then(|s| s.replicas)
                            .unwrap_or(1),
                    ));
                }
                Some((
                    owner.uid.clone(),
                    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                ))
            }
            "StatefulSet" => {
                let set = referent(&self.statefulsets, owner, namespace)?;
                Some((
                    owner.uid.clone(),
                    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                ))
            }
            _ => None,
        }
    }
}

/// The DisruptionAllowed condition, keeping the previous one (its transition time) when its
/// status, reason and message are unchanged.
fn condition(
    previous: &PodDisruptionBudgetStatus,
    generation: Option<i64>,
    (status, reason, message): (&str, &str, &str),
) -> Condition {
    let before = previous
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let same = |c: &&Condition| c.status == status && c.reason == reason && c.message == message;
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: before
            .filter(|c| c.status == status)
            .filter(same)
            .map_or_else(
                || Time(Timestamp::now()),
                |c| c.last_transition_time.clone(),
            ),
    }
}
