//! The Job controller: runs a Job's pods to completion, as upstream's `pkg/controller/job`
//! does for the common case — up to `parallelism` pods at once until `completions` have
//! succeeded, then the `Complete` condition (with `SuccessCriteriaMet` before it, as 1.31+
//! writes them). A Job whose pods failed more than `backoffLimit` times is `Failed`.
//! Indexed completion, pod failure policies, suspension and TTL are not modelled.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::expectations::Expectations;
use super::ownership::{key, pod_from_template};
use super::pod_index::ByController;
use super::pod_state::{is_active, is_ready, phase};
use super::watches::Watches;
use super::writes;
use crate::time::TimeScale;

/// Runs the controller until the task is dropped (the time scale is unused: a Job waits only
/// on its pods).
pub async fn run(client: Client, _scale: TimeScale) {
    let mut watches = Watches::new(client.clone());
    let mut controller = Controller {
        jobs: watches.store(),
        pods: watches.store(),
        client,
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
    jobs: Store<Job>,
    pods: Store<Pod>,
    expectations: Expectations,
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    let now = Time(Timestamp::now());
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

impl Controller {
    async fn pass(&mut self) -> Option<Duration> {
        let mut wake = None;
        let pods = ByController::new(&self.pods);
        for job in self.jobs.state() {
            if job.metadata.deletion_timestamp.is_none() && !finished(&job) {
                wake = wake.or(self.sync(&job, &pods).await);
            }
        }
        wake
    }

    async fn sync(&mut self, job: &Job, pods: &ByController) -> Option<Duration> {
        let namespace = job.namespace().unwrap_or_default();
        let owner = key(job);
        if let Some(wait) = self.expectations.wait(&owner, &namespace, &self.pods) {
            return Some(wait);
        }
        let spec = job.spec.as_ref()?;
        let owned = pods.owned(job);
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
        };
        let active = count(&|p| is_active(p));
        let succeeded = count(&|p| phase(p) == "Succeeded");
        let failed = count(&|p| phase(p) == "Failed");
        let completions = spec.completions.unwrap_or(1);
        let parallelism = spec.parallelism.unwrap_or(1);
        let mut status = job.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        status.start_time.get_or_insert(now.clone());
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if succeeded >= completions {
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            status.completion_time = Some(now);
        } else if failed > spec.backoff_limit.unwrap_or(6) {
            conditions.push(condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else {
            let want = parallelism.min(completions - succeeded);
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let template = pod_from_template(job, job.spec.as_ref().map(|s| s.template.clone()));
            for _ in active..want {
                if let Some(created) = writes::create(&pods, &template).await {
                    tracing::debug!(job = %owner, pod = %created.name_any(), "created pod");
                    self.expectations.created(&owner, created.name_any());
                }
            }
        }
        status.active = Some(active).filter(|n| *n > 0);
        status.succeeded = Some(succeeded).filter(|n| *n > 0);
        status.failed = Some(failed).filter(|n| *n > 0);
        status.ready = Some(count(&|p| is_ready(p)));
        status.terminating = Some(0);
        if job.status.as_ref() != Some(&status) {
            let mut updated = job.clone();
            updated.status = Some(status);
            writes::write_status(
                &Api::<Job>::namespaced(self.client.clone(), &namespace),
                &updated,
            )
            .await;
        }
        None
    }
}
