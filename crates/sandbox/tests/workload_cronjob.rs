//! The CronJob controller on a fast clock: with simulated time 120 times faster, a
//! `*/1 * * * *` schedule is due every half second of wall time, so the test sees runs without
//! waiting minutes (the schedule check itself is unit-tested at given instants in
//! `src/sim/schedule.rs`).

mod workload_support;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use quiesce_sandbox::time::TimeScale;
use serde_json::json;
use workload_support::{Cluster, create, eventually};

#[tokio::test]
async fn a_cronjob_creates_a_job_for_each_scheduled_minute() {
    let cluster = Cluster::start_scaled(TimeScale::new(120.0).unwrap()).await;
    let cronjobs = cluster.api::<CronJob>();
    let jobs = cluster.api::<Job>();
    let bad: CronJob = serde_json::from_value(json!({"metadata": {"name": "bad"},
        "spec": {"schedule": "every minute", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": []}}}}}}))
    .unwrap();
    match cronjobs.create(&Default::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(
                status.message.starts_with(
                    r#"CronJob.batch "bad" is invalid: spec.schedule: Invalid value: "every minute": "#
                ),
                "{}",
                status.message
            );
        }
        other => panic!("an unparseable schedule is refused, got {other:?}"),
    }
    let cronjob: CronJob = create(
        &cronjobs,
        json!({"metadata": {"name": "tick"}, "spec": {"schedule": "*/1 * * * *",
            "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
    )
    .await;
    let uid = cronjob.metadata.uid.clone().unwrap();
    let runs = eventually("two runs of the CronJob", || async {
        let list = jobs.list(&Default::default()).await.ok()?;
        let mut minutes: Vec<(i64, Job)> = list
            .items
            .into_iter()
            .filter_map(|j| {
                let minute = j
                    .metadata
                    .name
                    .as_deref()?
                    .strip_prefix("tick-")?
                    .parse()
                    .ok()?;
                Some((minute, j))
            })
            .collect();
        minutes.sort_by_key(|(m, _)| *m);
        (minutes.len() >= 2).then_some(minutes)
    })
    .await;
    for (minute, job) in &runs {
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("CronJob", uid.as_str())
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "tick");
        let scheduled = &job.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/cronjob-scheduled-timestamp"];
        let at: k8s_openapi::jiff::Timestamp = scheduled.parse().unwrap();
        assert_eq!(
            at.as_second(),
            minute * 60,
            "{scheduled} is the run's minute"
        );
    }
    eventually("the CronJob's status to name its last run", || async {
        let status = cronjobs.get("tick").await.ok()?.status?;
        let last = status.last_schedule_time?.0.as_second() / 60;
        (last >= runs[1].0 && !status.active.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
    cluster.stop().await;
}
