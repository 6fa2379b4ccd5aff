//! The Deployment controller, as upstream's `pkg/controller/deployment`: one ReplicaSet per
//! pod template, named `<deployment>-<pod-template-hash>`, rolled with RollingUpdate
//! (maxSurge/maxUnavailable) or Recreate, and the status and conditions `kubectl rollout
//! status` reads. Left out: progressDeadlineSeconds (no ProgressDeadlineExceeded), pausing
//! mid-rollout beyond "do nothing", proportional scaling during a rollout, hash collisions.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::deployment_status::{self, Counts, Progress};
use super::ownership::{controlled_by, controller_ref, key};
use super::pod_index::ByController;
use super::pod_state::{availability, is_active, is_ready};
use super::rollout::{Set, fenceposts, new_replicas, old_replicas};
use super::template_hash::template_hash;
use super::watches::{Watches, earliest};
use super::writes;
use crate::time::TimeScale;

/// The label tying a ReplicaSet and its pods to one template of the Deployment.
const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet, copied onto its Deployment.
const REVISION: &str = "deployment.kubernetes.io/revision";
/// How long a scale we wrote may take to show in the cache before we act without it.
const AWAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the controller until the task is dropped.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let mut controller = Controller {
        deployments: watches.store(),
        sets: watches.store(),
        pods: watches.store(),
        client,
        scale,
        awaiting: HashMap::new(),
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
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    /// ReplicaSets (`namespace/name`) we created or scaled, with the replicas we wrote: until
    /// the cache shows them, decisions would be made on numbers we already changed.
    awaiting: HashMap<String, (i32, Instant)>,
}

/// One owned ReplicaSet with its pods' counts.
struct Owned {
    rs: ReplicaSet,
    replicas: i32,
    active: i32,
    ready: i32,
    available: i32,
}

impl Owned {
    fn set(&self) -> Set {
        Set {
            replicas: self.replicas,
            available: self.available.min(self.replicas),
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            name: self.rs.name_any(),
            active: self.active,
            ready: self.ready,
            available: self.available,
        }
    }

    fn revision(&self) -> i64 {
        revision_of(&self.rs.metadata)
    }
}

/// What one rollout step decides from: the Deployment, its ReplicaSets split into the new
/// one (matching the current template) and the old ones, and the highest old revision.
#[derive(Clone, Copy)]
struct Step<'a> {
    deployment: &'a Deployment,
    api: &'a Api<ReplicaSet>,
    replicas: i32,
    hash: &'a str,
    new: Option<&'a Owned>,
    old: &'a [Owned],
    max_old_revision: i64,
}

fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

impl Controller {
    async fn pass(&mut self) -> Option<Duration> {
        let mut wake = None;
        let pods = ByController::new(&self.pods);
        for deployment in self.deployments.state() {
            if deployment.metadata.deletion_timestamp.is_none() {
                wake = earliest(wake, self.sync(&deployment, &pods).await);
            }
        }
        wake
    }

    /// Whether the cache still lags a scale we wrote for one of `sets`.
    fn lagging(&mut self, sets: &[Owned]) -> bool {
        self.awaiting.retain(|k, (want, since)| {
            let seen = sets.iter().find(|o| key(&o.rs) == *k).map(|o| o.replicas);
            seen != Some(*want) && since.elapsed() < AWAIT_TIMEOUT
        });
        !self.awaiting.is_empty()
    }

    async fn sync(&mut self, deployment: &Deployment, pods: &ByController) -> Option<Duration> {
        let namespace = deployment.namespace().unwrap_or_default();
        let spec = deployment.spec.as_ref()?;
        let replicas = spec.replicas.unwrap_or(1);
        let hash = template_hash(
            &spec.template,
            deployment.status.as_ref().and_then(|s| s.collision_count),
        );
        let (mut sets, wake) = self.owned_sets(deployment, &namespace, pods);
        if self.lagging(&sets) {
            return Some(AWAIT_TIMEOUT);
        }
        sets.sort_by_key(|o| o.rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let new_index = sets
            .iter()
            .position(|o| o.rs.labels().get(HASH_LABEL) == Some(&hash));
        let new = new_index.map(|i| sets.remove(i));
        let old = sets;
        let sets_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
        let max_old_revision = old.iter().map(Owned::revision).max().unwrap_or(0);

        if !spec.paused.unwrap_or(false) {
            let recreate =
                spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
            let step = Step {
                deployment,
                api: &sets_api,
                replicas,
                hash: &hash,
                new: new.as_ref(),
                old: &old,
                max_old_revision,
            };
            let done = if recreate {
                self.recreate(&step).await
            } else {
                self.roll(&step).await
            };
            if let Err(error) = done {
                tracing::warn!(deployment = %key(deployment), %error, "invalid rollout strategy");
            }
            self.prune_history(deployment, &sets_api, &old).await;
        }
        if let Some(new) = &new {
            let revision = new.revision().to_string();
            if deployment.annotations().get(REVISION) != Some(&revision) {
                let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
                writes::merge(
                    &Api::<Deployment>::namespaced(self.client.clone(), &namespace),
                    &deployment.name_any(),
                    patch,
                )
                .await;
            }
        }
        let progress = Progress {
            replicas,
            new: new.as_ref().map(Owned::counts),
            old: old.iter().map(Owned::counts).sum(),
            scale: self.scale,
        };
        let (status, deadline) = deployment_status::status(deployment, &progress);
        if deployment.status.as_ref() != Some(&status) {
            let mut updated = deployment.clone();
            updated.status = Some(status);
            writes::write_status(
                &Api::<Deployment>::namespaced(self.client.clone(), &namespace),
                &updated,
            )
            .await;
        }
        earliest(wake, deadline)
    }

    /// The ReplicaSets `deployment` controls, with their active/ready/available pod counts,
    /// and when the next Ready pod becomes available.
    fn owned_sets(
        &self,
        deployment: &Deployment,
        namespace: &str,
        pods: &ByController,
    ) -> (Vec<Owned>, Option<Duration>) {
        let min_ready = deployment
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let uid = deployment.uid();
        let mut wake = None;
        let sets = self
            .sets
            .state()
            .into_iter()
            .filter(|rs| {
                rs.namespace().as_deref() == Some(namespace)
                    && controlled_by(&rs.metadata, uid.as_deref())
            })
            .map(|rs| {
                let mine: Vec<_> = pods
                    .owned(rs.as_ref())
                    .into_iter()
                    .filter(|p| is_active(p))
                    .collect();
                let mut available = 0;
                for pod in &mine {
                    let (yes, until) = availability(pod, min_ready, self.scale);
                    available += i32::from(yes);
                    wake = earliest(wake, until);
                }
                Owned {
                    replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    active: count(mine.len()),
                    ready: count(mine.iter().filter(|p| is_ready(p)).count()),
                    available,
                    rs: rs.as_ref().clone(),
                }
            })
            .collect();
        (sets, wake)
    }

    async fn roll(&mut self, step: &Step<'_>) -> Result<(), String> {
        let Step {
            deployment,
            api,
            replicas,
            hash,
            new,
            old,
            max_old_revision,
        } = *step;
        let rolling = deployment
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref());
        let (surge, unavailable) = fenceposts(
            rolling.and_then(|r| r.max_surge.as_ref()),
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            replicas,
        )?;
        let old_sets: Vec<Set> = old.iter().map(Owned::set).collect();
        let Some(new) = new else {
            let start = new_replicas(
                replicas,
                surge,
                Set {
                    replicas: 0,
                    available: 0,
                },
                &old_sets,
            );
            self.create_set(deployment, api, hash, start, max_old_revision + 1)
                .await;
            return Ok(());
        };
        self.bump_revision(api, new, max_old_revision).await;
        let target = new_replicas(replicas, surge, new.set(), &old_sets);
        if target != new.replicas {
            self.scale(api, &new.rs, target).await;
        }
        for (set, target) in
            old.iter()
                .zip(old_replicas(replicas, unavailable, new.set(), &old_sets))
        {
            if target != set.replicas {
                self.scale(api, &set.rs, target).await;
            }
        }
        Ok(())
    }

    /// Recreate: every old pod gone before the new ReplicaSet gets any replicas.
    async fn recreate(&mut self, step: &Step<'_>) -> Result<(), String> {
        let Step {
            deployment,
            api,
            replicas,
            hash,
            new,
            old,
            max_old_revision,
        } = *step;
        for set in old.iter().filter(|s| s.replicas > 0) {
            self.scale(api, &set.rs, 0).await;
        }
        let old_uids: Vec<_> = old.iter().filter_map(|o| o.rs.uid()).collect();
        let old_pods_remain = self.pods.state().iter().any(|p| {
            old_uids
                .iter()
                .any(|uid| controlled_by(&p.metadata, Some(uid)))
                && !matches!(super::pod_state::phase(p), "Succeeded" | "Failed")
        });
        if old_pods_remain {
            return Ok(());
        }
        match new {
            None => {
                self.create_set(deployment, api, hash, replicas, max_old_revision + 1)
                    .await
            }
            Some(new) => {
                self.bump_revision(api, new, max_old_revision).await;
                if new.replicas != replicas {
                    self.scale(api, &new.rs, replicas).await;
                }
            }
        }
        Ok(())
    }

    async fn scale(&mut self, api: &Api<ReplicaSet>, rs: &ReplicaSet, replicas: i32) {
        if writes::merge(api, &rs.name_any(), json!({"spec": {"replicas": replicas}})).await {
            tracing::debug!(replicaset = %key(rs), replicas, "scaled");
            self.awaiting.insert(key(rs), (replicas, Instant::now()));
        }
    }

    /// A template that matches an old ReplicaSet again (a rollback) makes that ReplicaSet the
    /// newest revision, as upstream does.
    async fn bump_revision(&self, api: &Api<ReplicaSet>, new: &Owned, max_old_revision: i64) {
        if new.revision() <= max_old_revision {
            let patch = json!({"metadata": {"annotations": {REVISION: (max_old_revision + 1).to_string()}}});
            writes::merge(api, &new.rs.name_any(), patch).await;
        }
    }

    async fn create_set(
        &mut self,
        deployment: &Deployment,
        api: &Api<ReplicaSet>,
        hash: &str,
        replicas: i32,
        revision: i64,
    ) {
        let Some(spec) = deployment.spec.as_ref() else {
            return;
        };
        let with_hash = |labels: Option<BTreeMap<String, String>>| {
            let mut labels = labels.unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.into());
            Some(labels)
        };
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        template_meta.labels = with_hash(template_meta.labels.take());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", deployment.name_any())),
                namespace: deployment.namespace(),
                labels: template_meta.labels.clone(),
                annotations: Some(
                    [
                        (REVISION.to_owned(), revision.to_string()),
                        (
                            "deployment.kubernetes.io/desired-replicas".to_owned(),
                            spec.replicas.unwrap_or(1).to_string(),
                        ),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![controller_ref(deployment)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector: LabelSelector {
                    match_labels: with_hash(spec.selector.match_labels.clone()),
                    match_expressions: spec.selector.match_expressions.clone(),
                },
                template: Some(template),
            }),
            status: None,
        };
        if let Some(created) = writes::create(api, &rs).await {
            tracing::info!(deployment = %key(deployment), replicaset = %created.name_any(), replicas, "created ReplicaSet");
            self.awaiting
                .insert(key(&created), (replicas, Instant::now()));
        }
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn prune_history(&self, deployment: &Deployment, api: &Api<ReplicaSet>, old: &[Owned]) {
        let limit = deployment
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let idle: Vec<_> = old
            .iter()
            .filter(|o| o.replicas == 0 && o.active == 0)
            .collect();
        let surplus = idle
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for set in &idle[..surplus] {
            writes::delete(api, &set.rs).await;
        }
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
