//! The ReplicaSet controller: keeps `spec.replicas` active pods per ReplicaSet and reports
//! their readiness, as upstream's `pkg/controller/replicaset` (pod adoption and the
//! slow-start creation batches are left out: the simulation never orphans pods, and the
//! sandbox API never rejects a create for quota).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::core::SelectorExt;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::expectations::Expectations;
use super::ownership::{key, pod_from_template};
use super::pod_index::ByController;
use super::pod_state::{availability, deletion_order, is_active, is_ready};
use super::watches::{Watches, earliest};
use super::writes;
use crate::time::TimeScale;

/// Runs the controller until the task is dropped.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let mut controller = Controller {
        sets: watches.store(),
        pods: watches.store(),
        client,
        scale,
        expectations: Expectations::default(),
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
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Expectations,
}

impl Controller {
    async fn pass(&mut self) -> Option<Duration> {
        let mut wake = None;
        let pods = ByController::new(&self.pods);
        for rs in self.sets.state() {
            if rs.metadata.deletion_timestamp.is_none() {
                wake = earliest(wake, self.sync(&rs, &pods).await);
            }
        }
        wake
    }

    async fn sync(&mut self, rs: &ReplicaSet, pods: &ByController) -> Option<Duration> {
        let namespace = rs.namespace().unwrap_or_default();
        let owner = key(rs);
        if let Some(wait) = self.expectations.wait(&owner, &namespace, &self.pods) {
            return Some(wait);
        }
        let spec = rs.spec.as_ref()?;
        let owned = pods.owned(rs);
        let mut active: Vec<&Pod> = owned
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| is_active(p))
            .collect();
        let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if active.len() < want {
            let template = pod_from_template(rs, rs.spec.as_ref().and_then(|s| s.template.clone()));
            for _ in active.len()..want {
                if let Some(created) = writes::create(&pods, &template).await {
                    tracing::debug!(replicaset = %owner, pod = %created.name_any(), "created pod");
                    self.expectations.created(&owner, created.name_any());
                }
            }
        } else if active.len() > want {
            active.sort_by(|a, b| deletion_order(a, b));
            for pod in &active[..active.len() - want] {
                if writes::delete(&pods, *pod).await {
                    tracing::debug!(replicaset = %owner, pod = %pod.name_any(), "deleted surplus pod");
                    self.expectations.deleted(&owner, pod.name_any());
                }
            }
        }
        let (status, wake) = self.status(rs, &active);
        if rs.status.as_ref() != Some(&status) {
            let mut updated = rs.clone();
            updated.status = Some(status);
            writes::write_status(
                &Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace),
                &updated,
            )
            .await;
        }
        wake
    }

    /// Status from the active pods, plus when the next Ready pod becomes available.
    fn status(&self, rs: &ReplicaSet, active: &[&Pod]) -> (ReplicaSetStatus, Option<Duration>) {
        let spec = rs.spec.as_ref();
        let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let template_labels = spec
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone());
        let labelled = kube::core::Selector::from_iter(template_labels.unwrap_or_default());
        let mut wake = None;
        let mut available = 0;
        for pod in active {
            let (is_available, until) = availability(pod, min_ready, self.scale);
            available += i32::from(is_available);
            wake = earliest(wake, until);
        }
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let status = ReplicaSetStatus {
            replicas: count(&|_| true),
            ready_replicas: Some(count(&|p| is_ready(p))),
            available_replicas: Some(available),
            fully_labeled_replicas: Some(count(&|p| labelled.matches(&p.labels().clone()))),
            observed_generation: rs.metadata.generation,
            conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
            terminating_replicas: None,
        };
        (status, wake)
    }
}
