//! The CronJob controller: creates a CronJob's Jobs on its schedule, as upstream's
//! `pkg/controller/cronjob` (v2) does — one Job per due run, named `<cronjob>-<scheduled
//! minute since the epoch>` (so a run is created once whatever the retries), owned by the
//! CronJob, carrying the template's labels and annotations and the
//! `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation; `concurrencyPolicy` Forbid
//! skips a run while one is active, Replace deletes the active ones first;
//! `startingDeadlineSeconds` skips a run found too late; `suspend` stops new runs; finished
//! Jobs beyond the history limits are deleted, oldest first. Status keeps `active`,
//! `lastScheduleTime` and `lastSuccessfulTime`.
//!
//! Time runs on the simulation's [`Clock`]: with a time scale of 60, `*/1 * * * *` fires every
//! wall-clock second. Only UTC schedules are modelled (`spec.timeZone` is ignored).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::ownership::{controlled_by, controller_ref};
use super::schedule::{Clock, Schedule};
use super::watches::{Watches, earliest};
use super::writes;
use crate::time::TimeScale;

/// The annotation upstream (1.28+) puts on every Job it creates for a run.
const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Runs the controller until the task is dropped, on a clock `scale` times faster than real.
pub async fn run(client: Client, scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let controller = Controller {
        cronjobs: watches.store(),
        jobs: watches.store(),
        client,
        clock: Clock::start(scale),
    };
    watches.ready().await;
    loop {
        let wake = controller.pass().await;
        watches.changed(wake).await;
    }
}

struct Controller {
    client: Client,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    clock: Clock,
}

/// Whether a Job has finished, and how.
fn outcome(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        })
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// The Job for the run scheduled at `at`, from the CronJob's template.
fn job_for(cronjob: &CronJob, at: Timestamp) -> Job {
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_ANNOTATION.into(),
        at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cronjob.name_any(), at.as_second() / 60)),
            namespace: cronjob.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cronjob)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

impl Controller {
    async fn pass(&self) -> Option<Duration> {
        let mut wake = None;
        for cronjob in self.cronjobs.state() {
            if cronjob.metadata.deletion_timestamp.is_none() {
                wake = earliest(wake, self.sync(&cronjob).await);
            }
        }
        wake
    }

    fn owned(&self, cronjob: &CronJob) -> Vec<Arc<Job>> {
        let uid = cronjob.metadata.uid.as_deref();
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .state()
            .into_iter()
            .filter(|j| {
                j.metadata.namespace == cronjob.metadata.namespace
                    && controlled_by(&j.metadata, uid)
            })
            .collect();
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        jobs
    }

    /// Deletes finished Jobs beyond the CronJob's history limits, oldest first.
    async fn trim_history(&self, cronjob: &CronJob, jobs: &[Arc<Job>], api: &Api<Job>) {
        let spec = cronjob.spec.as_ref();
        let limits = [
            (
                "Complete",
                spec.and_then(|s| s.successful_jobs_history_limit)
                    .unwrap_or(3),
            ),
            (
                "Failed",
                spec.and_then(|s| s.failed_jobs_history_limit).unwrap_or(1),
            ),
        ];
        for (kind, limit) in limits {
            let finished: Vec<&Arc<Job>> =
                jobs.iter().filter(|j| outcome(j) == Some(kind)).collect();
            let keep = usize::try_from(limit.max(0)).unwrap_or(0);
            for job in finished.iter().take(finished.len().saturating_sub(keep)) {
                writes::delete(api, job).await;
            }
        }
    }

    async fn sync(&self, cronjob: &CronJob) -> Option<Duration> {
        let spec = cronjob.spec.as_ref()?;
        let name = cronjob.name_any();
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(cronjob = %name, schedule = %spec.schedule, %error, "unparseable schedule; not scheduling");
                return None;
            }
        };
        let namespace = cronjob.namespace().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let jobs = self.owned(cronjob);
        self.trim_history(cronjob, &jobs, &jobs_api).await;
        let mut active: Vec<ObjectReference> = jobs
            .iter()
            .filter(|j| outcome(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .map(|j| reference(j))
            .collect();
        let mut status = cronjob.status.clone().unwrap_or_default();
        status.last_successful_time = jobs
            .iter()
            .filter(|j| outcome(j) == Some("Complete"))
            .filter_map(|j| j.status.as_ref()?.completion_time.clone())
            .max_by_key(|t| t.0)
            .or(status.last_successful_time);
        let now = self.clock.now();
        let since = status
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| {
                let created = cronjob.metadata.creation_timestamp.as_ref()?;
                Some(self.clock.at(created.0))
            })
            .unwrap_or(now);
        let due = schedule.most_recent(since, now);
        let too_late = |at: Timestamp| {
            spec.starting_deadline_seconds.is_some_and(|deadline| {
                at.checked_add(SignedDuration::from_secs(deadline))
                    .is_ok_and(|until| until < now)
            })
        };
        if let Some(at) = due
            && spec.suspend != Some(true)
            && !too_late(at)
        {
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if policy == "Forbid" && !active.is_empty() {
                tracing::debug!(cronjob = %name, "run skipped: a Job is still active (Forbid)");
            } else {
                if policy == "Replace" {
                    for job in jobs.iter().filter(|j| outcome(j).is_none()) {
                        writes::delete(&jobs_api, job).await;
                    }
                    active.clear();
                }
                if let Some(created) = writes::create(&jobs_api, &job_for(cronjob, at)).await {
                    tracing::debug!(cronjob = %name, job = %created.name_any(), "created job");
                    active.push(reference(&created));
                }
                status.last_schedule_time = Some(Time(at));
            }
        }
        status.active = Some(active).filter(|a| !a.is_empty());
        self.write_status(cronjob, status, &namespace).await;
        let next = schedule.next(now)?;
        Some(self.clock.wait_until(next).max(Duration::from_millis(10)))
    }

    async fn write_status(&self, cronjob: &CronJob, status: CronJobStatus, namespace: &str) {
        let mut current = cronjob.status.clone().unwrap_or_default();
        // Compare without the resourceVersions the references carry, which change with every
        // status write of the Jobs themselves.
        let strip = |s: &mut CronJobStatus| {
            for r in s.active.iter_mut().flatten() {
                r.resource_version = None;
            }
        };
        let mut wanted = status.clone();
        strip(&mut current);
        strip(&mut wanted);
        if current == wanted {
            return;
        }
        let mut updated = cronjob.clone();
        updated.status = Some(status);
        writes::write_status(
            &Api::<CronJob>::namespaced(self.client.clone(), namespace),
            &updated,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn a_run_is_named_by_its_minute_and_carries_the_template() {
        let cronjob: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "ops", "uid": "u1"},
            "spec": {"schedule": "0 0 * * *", "jobTemplate": {
                "metadata": {"labels": {"app": "report"}},
                "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}}}}
        }))
        .unwrap();
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let job = job_for(&cronjob, at);
        assert_eq!(job.metadata.name.as_deref(), Some("nightly-29934720"));
        assert_eq!(
            job.metadata
                .labels
                .unwrap_or_default()
                .get("app")
                .map(String::as_str),
            Some("report")
        );
        let annotations: BTreeMap<String, String> = job.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get(SCHEDULED_ANNOTATION).map(String::as_str),
            Some("2026-12-01T00:00:00Z")
        );
        assert_eq!(job.metadata.owner_references.unwrap()[0].uid, "u1");
    }
}
