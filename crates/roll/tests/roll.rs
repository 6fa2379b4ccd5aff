//! `quiesce roll` against moto and the sandbox, through the production code: the refresh, the
//! drainer handling every hook, the gate, the report.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quiesce_roll::refresh::Preferences;
use quiesce_roll::report::Outcome;
use quiesce_roll::run::roll;
use quiesce_roll::slo::Prometheus;
use support::{GroupSetup, bed, ready_pods};

fn one_at_a_time() -> Preferences {
    Preferences {
        min_healthy: 66,
        checkpoints: vec![50, 100],
        checkpoint_delay: Some(Duration::from_secs(1)),
        ..Preferences::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_completes_with_the_drainer_handling_every_hook() {
    let mut bed = bed(GroupSetup::default(), "").await;
    bed.run_drainer();
    bed.run_kubelets();
    let spec = bed.spec(one_at_a_time());
    let report = ungated(&bed, &spec).await;
    assert_eq!(
        report.outcome,
        Outcome::Complete,
        "{report:#?}\n{}",
        bed.moto.log_tail()
    );
    let mut replaced = report.replaced.clone();
    replaced.sort();
    let mut old = bed.instances.clone();
    old.sort();
    assert_eq!(replaced, old, "every old instance replaced");
    let members = bed.members().await;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        members.iter().all(|(_, s, v)| s == "InService" && v == "2"),
        "every instance on version 2: {members:?}"
    );
    let actions = bed.actions().await;
    let terminates: Vec<_> = actions
        .iter()
        .filter(|a| a["transition"].as_str().unwrap().contains("TERMINATING"))
        .collect();
    let launches: Vec<_> = actions
        .iter()
        .filter(|a| a["transition"].as_str().unwrap().contains("LAUNCHING"))
        .collect();
    assert_eq!(terminates.len(), 3, "{actions:#?}");
    assert_eq!(launches.len(), 3, "{actions:#?}");
    for a in terminates.iter().chain(&launches) {
        assert_eq!(a["result"], "CONTINUE", "the drainer answered: {a}");
        assert_eq!(a["completedBy"], "api", "not a timeout: {a}");
    }
    assert_eq!(ready_pods(&bed.sandbox, "app=web").await, 3);
}

/// The roll without an SLO gate.
async fn ungated(
    bed: &support::Bed,
    spec: &quiesce_roll::run::RollSpec,
) -> quiesce_roll::report::RollReport {
    ungated_with(&bed.refresh, bed.sandbox.client(), spec).await
}

/// The roll gated on `errors_total < 5`, which the first replacement breaks (to `value`).
async fn broken_by_the_first_replacement(
    bed: &support::Bed,
    spec: &quiesce_roll::run::RollSpec,
    value: f64,
) -> quiesce_roll::report::RollReport {
    let errors = Arc::new(std::sync::Mutex::new(0.0));
    let url = support::prometheus(errors.clone()).await;
    let slo = Prometheus::new(&url, "errors_total < 5".parse().unwrap()).unwrap();
    let progress = move |p: &quiesce_roll::run::Progress| {
        if p.replaced >= 1 {
            *errors.lock().unwrap() = value;
        }
    };
    roll(
        &bed.refresh,
        Some(&slo),
        bed.sandbox.client(),
        spec,
        empty_preflight(),
        &progress,
    )
    .await
    .unwrap()
}

fn empty_preflight() -> quiesce_roll::preflight::Preflight {
    quiesce_roll::preflight::Preflight {
        size: 3,
        batch: 1,
        nodes: Vec::new(),
        refusals: Vec::new(),
        notes: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breach_rolls_back_to_the_previous_version() {
    let mut bed = bed(GroupSetup::default(), "").await;
    bed.run_drainer();
    bed.run_kubelets();
    let spec = bed.spec(one_at_a_time());
    let report = broken_by_the_first_replacement(&bed, &spec, 9.0).await;
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    let reason = report.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("errors_total < 5") && reason.contains('9'),
        "{reason}"
    );
    assert!(
        report.breaches.iter().any(|b| b.value == 9.0 && !b.ok),
        "{report:#?}"
    );
    let members = bed.members().await;
    assert!(
        members.iter().all(|(_, s, v)| s == "InService" && v == "1"),
        "back on version 1: {members:?}"
    );
    assert!(
        report.replaced.len() < 3,
        "fewer old instances replaced than the group has: {report:#?}"
    );
}

/// A pod no controller recreates, on node-1: the drainer's plan calls it a hard blocker and
/// ABANDONs the node's hook.
const PINNED: &str = r#"
objects:
  - apiVersion: v1
    kind: Pod
    metadata: {name: pet, namespace: default}
    spec:
      nodeName: node-1
      containers: [{name: pet, image: pet:1, resources: {requests: {cpu: 10m, memory: 16Mi}}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_node_is_retained_the_roll_completes_and_release_lets_it_go_once_fixed() {
    let mut bed = bed(GroupSetup::default(), PINNED).await;
    bed.run_drainer();
    bed.run_kubelets();
    let spec = bed.spec(one_at_a_time());
    let report = ungated(&bed, &spec).await;
    assert_eq!(report.outcome, Outcome::Complete, "{report:#?}");
    let pet = &bed.instances[0];
    assert_eq!(report.retained.len(), 1, "{report:#?}");
    let retained = &report.retained[0];
    assert_eq!(&retained.instance, pet);
    assert_eq!(retained.node.as_deref(), Some("node-1"));
    let reason = retained.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("default/pet") && reason.contains("no controller"),
        "{reason}"
    );
    let members = bed.members().await;
    assert!(
        members
            .iter()
            .any(|(i, s, _)| i == pet && s == "Terminating:Retained"),
        "{members:?}"
    );
    assert_eq!(
        members
            .iter()
            .filter(|(_, s, v)| s == "InService" && v == "2")
            .count(),
        3,
        "the group is whole on version 2: {members:?}"
    );

    // Released before the pod is dealt with: the node still cannot be drained.
    let client = bed.sandbox.client();
    let opts = quiesce_core::DrainOptions::default();
    let err = quiesce_roll::release::release(
        &bed.refresh,
        client.clone(),
        pet,
        Duration::from_secs(30),
        opts,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, quiesce_roll::release::ReleaseError::Undrained { .. }),
        "{err}"
    );
    assert!(bed.members().await.iter().any(|(i, _, _)| i == pet), "kept");
    // A person moves the pet elsewhere; then the release drains the node and terminates it.
    kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default")
        .delete("pet", &Default::default())
        .await
        .unwrap();
    let released =
        quiesce_roll::release::release(&bed.refresh, client, pet, Duration::from_secs(30), opts)
            .await
            .unwrap();
    assert_eq!(released.node.as_deref(), Some("node-1"));
    assert!(
        !bed.members().await.iter().any(|(i, _, _)| i == pet),
        "terminated once released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_red_gate_holds_the_next_terminate_hook_until_the_slo_is_good_again() {
    let mut bed = bed(GroupSetup::default(), "").await;
    bed.run_drainer();
    bed.run_kubelets();
    let value = Arc::new(std::sync::Mutex::new(9.0));
    let url = support::prometheus(value.clone()).await;
    let slo = Prometheus::new(&url, "errors_total < 5".parse().unwrap()).unwrap();
    let mut spec = bed.spec(one_at_a_time());
    spec.on_breach = quiesce_roll::run::OnBreach::Hold;
    let client = bed.sandbox.client();
    let refresh = bed.refresh.clone();
    let rolling = tokio::spawn(async move {
        roll(
            &refresh,
            Some(&slo),
            client,
            &spec,
            empty_preflight(),
            &|_| {},
        )
        .await
    });
    // The first instance goes into Terminating:Wait and its hook is heartbeated, but its node
    // is not drained: no cordon, the record still `received`, for more than one heartbeat.
    let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(bed.sandbox.client());
    let held = || async {
        let actions = bed.actions().await;
        let a = actions
            .iter()
            .find(|a| a["transition"].as_str().unwrap().contains("TERMINATING"))?;
        Some((
            a["instanceId"].as_str().unwrap().to_string(),
            a["heartbeats"].as_u64().unwrap_or(0),
            a["result"].clone(),
        ))
    };
    bed.wait_for(
        "a terminate hook heartbeated twice",
        Duration::from_secs(60),
        || async { held().await.is_some_and(|(_, beats, _)| beats >= 2) },
    )
    .await;
    let (instance, _, result) = held().await.unwrap();
    assert!(result.is_null(), "not completed while red: {result}");
    let index = bed.instances.iter().position(|i| *i == instance).unwrap();
    let node = nodes.get(&format!("node-{}", index + 1)).await.unwrap();
    assert_ne!(
        node.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true),
        "the held node is not cordoned"
    );
    let annotations = node.metadata.annotations.unwrap_or_default();
    assert!(
        annotations.contains_key(quiesce_aws::roll_gate::ANNOTATION),
        "{annotations:?}"
    );
    let record = quiesce_aws::record::InFlight::from_annotation(
        &annotations[quiesce_aws::record::ANNOTATION],
    )
    .unwrap();
    assert_eq!(record.phase, quiesce_aws::record::Phase::Received);
    assert_eq!(
        ready_pods(&bed.sandbox, "app=web").await,
        3,
        "nothing evicted"
    );

    // Good again: the hold ends and the roll completes.
    *value.lock().unwrap() = 0.0;
    let report = tokio::time::timeout(Duration::from_secs(240), rolling)
        .await
        .expect("the roll ends")
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Complete, "{report:#?}");
    assert!(
        report.held_seconds >= 10.0,
        "held across two heartbeats: {report:#?}"
    );
    assert!(
        report.breaches.iter().all(|b| b.value == 9.0),
        "{report:#?}"
    );
    assert_eq!(report.replaced.len(), 3);
    let node = nodes.list(&Default::default()).await.unwrap();
    assert!(
        node.items.iter().all(|n| !n
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(quiesce_aws::roll_gate::ANNOTATION))),
        "the gate is gone from every node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breach_with_on_breach_cancel_cancels_and_offers_the_resume() {
    let mut bed = bed(GroupSetup::default(), "").await;
    bed.run_drainer();
    bed.run_kubelets();
    let mut spec = bed.spec(one_at_a_time());
    spec.on_breach = quiesce_roll::run::OnBreach::Cancel;
    let report = broken_by_the_first_replacement(&bed, &spec, 7.0).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:#?}");
    assert!(
        report.reason.clone().unwrap_or_default().contains("was 7"),
        "{report:#?}"
    );
    assert!(
        report
            .resume
            .as_deref()
            .is_some_and(|r| r.contains("--skip-matching")),
        "{report:#?}"
    );
    assert!(
        !report.replaced.is_empty() && report.replaced.len() < 3,
        "{report:#?}"
    );
    let members = bed.members().await;
    assert!(
        members.iter().any(|(_, _, v)| v == "1"),
        "old instances stay after a cancel: {members:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_node_with_undrainable_stop_cancels_the_roll() {
    let mut bed = bed(GroupSetup::default(), PINNED).await;
    bed.run_drainer();
    bed.run_kubelets();
    let mut spec = bed.spec(one_at_a_time());
    spec.undrainable = quiesce_roll::run::Undrainable::Stop;
    let report = ungated(&bed, &spec).await;
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:#?}");
    let reason = report.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&bed.instances[0]) && reason.contains("--undrainable stop"),
        "{reason}"
    );
    assert_eq!(report.retained.len(), 1, "{report:#?}");
    assert!(report.replaced.len() < 3, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_red_past_hold_max_ends_held_and_cancelled() {
    let mut bed = bed(GroupSetup::default(), "").await;
    bed.run_drainer();
    bed.run_kubelets();
    let url = support::prometheus(Arc::new(std::sync::Mutex::new(9.0))).await;
    let slo = Prometheus::new(&url, "errors_total < 5".parse().unwrap()).unwrap();
    let mut spec = bed.spec(one_at_a_time());
    spec.on_breach = quiesce_roll::run::OnBreach::Hold;
    spec.hold_max = Duration::from_secs(3);
    let report = roll(
        &bed.refresh,
        Some(&slo),
        bed.sandbox.client(),
        &spec,
        empty_preflight(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::Held, "{report:#?}");
    assert!(report.held_seconds >= 3.0, "{report:#?}");
    assert!(report.resume.is_some(), "{report:#?}");
    assert!(
        report.replaced.len() <= 1,
        "at most the held instance went: {report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alarm_of_the_refresh_rolls_it_back_by_itself_with_auto_rollback() {
    let mut bed = bed(GroupSetup::default(), "").await;
    bed.run_drainer();
    bed.run_kubelets();
    tokio::task::block_in_place(|| {
        bed.cloudwatch(
            "Action=PutMetricAlarm&AlarmName=5xx&MetricName=errors&Namespace=app&Statistic=Sum\
             &Period=60&EvaluationPeriods=1&Threshold=1&ComparisonOperator=GreaterThanThreshold",
        )
    });
    let mut spec = bed.spec(Preferences {
        alarms: vec!["5xx".into()],
        auto_rollback: true,
        ..one_at_a_time()
    });
    spec.on_breach = quiesce_roll::run::OnBreach::Hold;
    let refresh = bed.refresh.clone();
    let client = bed.sandbox.client();
    let rolling = tokio::spawn(async move { ungated_with(&refresh, client, &spec).await });
    bed.wait_for(
        "a first instance on version 2",
        Duration::from_secs(60),
        || async {
            bed.members()
                .await
                .iter()
                .any(|(_, s, v)| s == "InService" && v == "2")
        },
    )
    .await;
    tokio::task::block_in_place(|| {
        bed.cloudwatch("Action=SetAlarmState&AlarmName=5xx&StateValue=ALARM&StateReason=test")
    });
    let report = tokio::time::timeout(Duration::from_secs(240), rolling)
        .await
        .expect("the roll ends")
        .unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    assert!(
        report.reason.as_deref().unwrap_or_default().contains("5xx"),
        "{report:#?}"
    );
    let members = bed.members().await;
    assert!(
        members.iter().all(|(_, s, v)| s == "InService" && v == "1"),
        "back on version 1: {members:?}"
    );
}

async fn ungated_with(
    refresh: &quiesce_roll::aws::AwsRefresh,
    client: kube::Client,
    spec: &quiesce_roll::run::RollSpec,
) -> quiesce_roll::report::RollReport {
    roll::<_, Prometheus>(refresh, None, client, spec, empty_preflight(), &|_| {})
        .await
        .unwrap()
}
