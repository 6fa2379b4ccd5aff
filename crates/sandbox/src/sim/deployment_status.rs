//! A Deployment's status as upstream's `pkg/controller/deployment/sync.go` and `progress.go`
//! write it, which is what `kubectl rollout status` reads: pod counts over the owned
//! ReplicaSets, and the conditions Available (minimum availability) and Progressing
//! (ReplicaSetUpdated while rolling, NewReplicaSetAvailable once complete, and
//! ProgressDeadlineExceeded when no progress was made for progressDeadlineSeconds).

use std::iter::Sum;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::rollout::fenceposts;
use crate::time::TimeScale;

/// Upstream's default progressDeadlineSeconds.
const DEFAULT_DEADLINE_SECONDS: i32 = 600;

/// Pod counts of one ReplicaSet (or a sum of several).
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    /// The ReplicaSet's name (empty for sums).
    pub name: String,
    /// Pods not terminating and not finished.
    pub active: i32,
    /// Active pods that are Ready.
    pub ready: i32,
    /// Active pods Ready for minReadySeconds.
    pub available: i32,
}

impl Sum for Counts {
    fn sum<I: Iterator<Item = Counts>>(iter: I) -> Counts {
        iter.fold(Counts::default(), |a, b| Counts {
            name: String::new(),
            active: a.active + b.active,
            ready: a.ready + b.ready,
            available: a.available + b.available,
        })
    }
}

/// What the status is computed from.
pub(crate) struct Progress {
    /// spec.replicas.
    pub replicas: i32,
    /// The ReplicaSet of the current template, once it exists.
    pub new: Option<Counts>,
    /// All the other owned ReplicaSets together.
    pub old: Counts,
    /// The simulation's time scale, for progressDeadlineSeconds.
    pub scale: TimeScale,
}

/// The status, and when the progress deadline will pass if nothing moves before.
pub(crate) fn status(
    deployment: &Deployment,
    p: &Progress,
) -> (DeploymentStatus, Option<Duration>) {
    let new = p.new.clone().unwrap_or_default();
    let total = new.active + p.old.active;
    let available = new.available + p.old.available;
    let ready = new.ready + p.old.ready;
    let previous = deployment.status.as_ref();
    let new_name = p
        .new
        .as_ref()
        .map_or_else(|| format!("{}-", deployment.name_any()), |n| n.name.clone());

    let available_condition = if available >= p.replicas - max_unavailable(deployment, p.replicas) {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
        )
    };
    let counts_moved = previous.is_none_or(|s| {
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
        ) != (Some(total), Some(new.active), Some(ready), Some(available))
    });
    let complete = new.active == p.replicas && total == p.replicas && available == p.replicas;
    let (progressing, deadline) =
        progressing(deployment, p.scale, &new_name, complete, counts_moved);
    let status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(new.active),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((p.replicas - available).max(0)),
        conditions: Some(vec![
            condition(previous, "Available", available_condition, false),
            progressing,
        ]),
        collision_count: previous.and_then(|s| s.collision_count),
        terminating_replicas: None,
    };
    (status, deadline)
}

/// maxUnavailable as the Available condition judges it: 0 for Recreate.
fn max_unavailable(deployment: &Deployment, replicas: i32) -> i32 {
    let strategy = deployment.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return 0;
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    fenceposts(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
    )
    .map_or(0, |(_, unavailable)| unavailable)
}

/// The Progressing condition: its lastUpdateTime moves whenever the counts do, and a rollout
/// whose counts stood still for progressDeadlineSeconds (simulated) has timed out, as in
/// upstream's `DeploymentTimedOut`.
fn progressing(
    deployment: &Deployment,
    scale: TimeScale,
    new_name: &str,
    complete: bool,
    moved: bool,
) -> (DeploymentCondition, Option<Duration>) {
    let previous = deployment.status.as_ref();
    if complete {
        let done = (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        );
        return (condition(previous, "Progressing", done, false), None);
    }
    let updating = (
        "True",
        "ReplicaSetUpdated",
        format!("ReplicaSet \"{new_name}\" is progressing."),
    );
    let timed_out = (
        "False",
        "ProgressDeadlineExceeded",
        format!("ReplicaSet \"{new_name}\" has timed out progressing."),
    );
    let before = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"));
    let still =
        |c: &&DeploymentCondition, message: &str| !moved && c.message.as_deref() == Some(message);
    if let Some(before) = before.filter(|c| still(c, &timed_out.2)) {
        return (before.clone(), None);
    }
    let Some(since) = before
        .filter(|c| still(c, &updating.2))
        .and_then(|c| c.last_update_time.as_ref())
    else {
        return (condition(previous, "Progressing", updating, true), None);
    };
    let seconds = deployment
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(DEFAULT_DEADLINE_SECONDS);
    let limit = scale.real(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)));
    let stalled = Timestamp::now().duration_since(since.0).unsigned_abs();
    match limit.checked_sub(stalled).filter(|left| !left.is_zero()) {
        Some(left) => (
            condition(previous, "Progressing", updating, false),
            Some(left),
        ),
        None => (condition(previous, "Progressing", timed_out, false), None),
    }
}

/// A condition, keeping the previous one verbatim (its timestamps) when nothing changed,
/// or only its transition time when `touch` asks for a fresh lastUpdateTime.
fn condition(
    previous: Option<&DeploymentStatus>,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    touch: bool,
) -> DeploymentCondition {
    let before = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let unchanged = |c: &&DeploymentCondition| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(&message)
    };
    if let Some(before) = before.filter(unchanged).filter(|_| !touch) {
        return before.clone();
    }
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: before
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .or(now),
    }
}
