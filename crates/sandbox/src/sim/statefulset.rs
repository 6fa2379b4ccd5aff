//! The StatefulSet controller, as upstream's `pkg/controller/statefulset`: pods named
//! `<set>-<ordinal>`, created in order under OrderedReady (ordinal i only once 0..i-1 are
//! Running and Ready) or all at once under Parallel, removed highest ordinal first, replaced
//! under the same name once the old pod is gone, and rolled highest ordinal first on a
//! template change. The sandbox API serves no PersistentVolumeClaims, so volumeClaimTemplates
//! are ignored (with a warning) and no ControllerRevision objects are written: revisions are
//! `<set>-<template hash>`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::expectations::Expectations;
use super::ownership::{controller_ref, key};
use super::pod_index::ByController;
use super::pod_state::{availability, is_running_and_ready, is_terminating, phase};
use super::template_hash::template_hash;
use super::watches::{Watches, earliest};
use super::writes;
use crate::time::TimeScale;

/// The label naming each pod of a set, so a Service can select exactly one.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label recording the revision (template) a pod was created from.
const REVISION_LABEL: &str = "controller-revision-hash";
/// The label carrying the pod's ordinal.
const INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Runs the controller until the task is dropped.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let mut controller = Controller {
        sets: watches.store(),
        pods: watches.store(),
        client,
        scale,
        expectations: Expectations::default(),
        warned: HashSet::new(),
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
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    expectations: Expectations,
    /// Sets already warned about their ignored volumeClaimTemplates.
    warned: HashSet<String>,
}

impl Controller {
    async fn pass(&mut self) -> Option<Duration> {
        let mut wake = None;
        let pods = ByController::new(&self.pods);
        for set in self.sets.state() {
            if set.metadata.deletion_timestamp.is_none() {
                wake = earliest(wake, self.sync(&set, &pods).await);
            }
        }
        wake
    }

    async fn sync(&mut self, set: &StatefulSet, owned: &ByController) -> Option<Duration> {
        let namespace = set.namespace().unwrap_or_default();
        let owner = key(set);
        if let Some(wait) = self.expectations.wait(&owner, &namespace, &self.pods) {
            return Some(wait);
        }
        let spec = set.spec.as_ref()?;
        if spec
            .volume_claim_templates
            .as_ref()
            .is_some_and(|v| !v.is_empty())
            && self.warned.insert(owner.clone())
        {
            tracing::warn!(statefulset = %owner, "volumeClaimTemplates ignored: the sandbox API serves no PersistentVolumeClaims");
        }
        let replicas = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let revision = format!(
            "{}-{}",
            set.name_any(),
            template_hash(
                &spec.template,
                set.status.as_ref().and_then(|s| s.collision_count)
            )
        );
        let pods = Self::ordinals(set, owned);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);

        // Ordinals 0..replicas: create what is missing, in order unless Parallel.
        let mut blocked = false;
        for ordinal in 0..replicas {
            match pods.get(&ordinal) {
                None => {
                    let pod = new_pod(set, ordinal, &revision);
                    if writes::create(&api, &pod).await.is_some() {
                        tracing::debug!(statefulset = %owner, ordinal, "created pod");
                        self.expectations.created(&owner, pod.name_any());
                    }
                    blocked = true;
                }
                Some(pod)
                    if matches!(phase(pod), "Succeeded" | "Failed") && !is_terminating(pod) =>
                {
                    // Upstream deletes a finished pod so it can be created again.
                    if writes::delete(&api, pod).await {
                        self.expectations.deleted(&owner, pod.name_any());
                    }
                    blocked = true;
                }
                Some(pod) => blocked |= !is_running_and_ready(pod) || is_terminating(pod),
            }
            if blocked && ordered {
                break;
            }
        }

        // Ordinals beyond replicas: highest first; one at a time unless Parallel.
        let condemned: Vec<&Pod> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
        let condemned_terminating = condemned.iter().any(|p| is_terminating(p));
        for pod in condemned.iter().filter(|p| !is_terminating(p)) {
            if ordered && (blocked || condemned_terminating) {
                break;
            }
            if writes::delete(&api, *pod).await {
                self.expectations.deleted(&owner, pod.name_any());
            }
            if ordered {
                break;
            }
        }

        // RollingUpdate: replace the highest out-of-date ordinal at or above the partition,
        // one at a time, once every pod is Running and Ready.
        let strategy = spec.update_strategy.as_ref();
        let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete");
        let partition = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let partition = usize::try_from(partition).unwrap_or(0);
        let healthy = (0..replicas).all(|i| {
            pods.get(&i)
                .is_some_and(|p| is_running_and_ready(p) && !is_terminating(p))
        });
        if rolling && healthy && condemned.is_empty() {
            let stale = (partition..replicas)
                .rev()
                .filter_map(|i| pods.get(&i))
                .find(|p| p.labels().get(REVISION_LABEL) != Some(&revision));
            if let Some(pod) = stale
                && writes::delete(&api, pod).await
            {
                tracing::debug!(statefulset = %owner, pod = %pod.name_any(), "replacing with the updated revision");
                self.expectations.deleted(&owner, pod.name_any());
            }
        }

        let (status, wake) = self.status(set, &pods, revision);
        if set.status.as_ref() != Some(&status) {
            let mut updated = set.clone();
            updated.status = Some(status);
            writes::write_status(
                &Api::<StatefulSet>::namespaced(self.client.clone(), &namespace),
                &updated,
            )
            .await;
        }
        wake
    }

    /// The set's pods by ordinal (those named `<set>-<n>` that it controls).
    fn ordinals(set: &StatefulSet, owned: &ByController) -> BTreeMap<usize, Pod> {
        let prefix = format!("{}-", set.name_any());
        owned
            .owned(set)
            .into_iter()
            .filter_map(|p| {
                Some((
                    p.name_any().strip_prefix(&prefix)?.parse().ok()?,
                    p.as_ref().clone(),
                ))
            })
            .collect()
    }

    fn status(
        &self,
        set: &StatefulSet,
        pods: &BTreeMap<usize, Pod>,
        update_revision: String,
    ) -> (StatefulSetStatus, Option<Duration>) {
        let spec = set.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let live: Vec<&Pod> = pods.values().filter(|p| !is_terminating(p)).collect();
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let mut wake = None;
        let mut available = 0;
        for pod in live.iter().filter(|p| is_running_and_ready(p)) {
            let (yes, until) = availability(pod, min_ready, self.scale);
            available += i32::from(yes);
            wake = earliest(wake, until);
        }
        let revision_of = |p: &Pod| p.labels().get(REVISION_LABEL).cloned();
        let updated = count(&|p| revision_of(p).as_ref() == Some(&update_revision));
        let ready = count(&is_running_and_ready);
        let previous = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current_revision = match previous {
            Some(current) if updated < replicas || ready < replicas => current,
            _ => update_revision.clone(),
        };
        let status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: count(&|_| true),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            current_replicas: Some(count(&|p| {
                revision_of(p).as_ref() == Some(&current_revision)
            })),
            updated_replicas: Some(updated),
            current_revision: Some(current_revision),
            update_revision: Some(update_revision),
            collision_count: set.status.as_ref().and_then(|s| s.collision_count),
            conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        (status, wake)
    }
}

/// Pod `<set>-<ordinal>` from the template, with the identity labels, hostname and
/// subdomain (the governing Service) upstream gives it.
fn new_pod(set: &StatefulSet, ordinal: usize, revision: &str) -> Pod {
    let spec = set.spec.clone().unwrap_or_default();
    let name = format!("{}-{ordinal}", set.name_any());
    let template_meta = spec.template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(INDEX_LABEL.into(), ordinal.to_string());
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = spec.service_name.filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}
