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
    let report = roll::<_, Prometheus>(
        &bed.refresh,
        None,
        bed.sandbox.client(),
        &spec,
        empty_preflight(),
        &|_| {},
    )
    .await
    .unwrap();
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
    let value = Arc::new(std::sync::Mutex::new(0.0));
    let url = support::prometheus(value.clone()).await;
    let slo = Prometheus::new(&url, "errors_total < 5".parse().unwrap()).unwrap();
    let spec = bed.spec(one_at_a_time());
    // The first replacement breaks the SLO.
    let breaking = value.clone();
    let report = roll(
        &bed.refresh,
        Some(&slo),
        bed.sandbox.client(),
        &spec,
        empty_preflight(),
        &move |p| {
            if p.replaced >= 1 {
                *breaking.lock().unwrap() = 9.0;
            }
        },
    )
    .await
    .unwrap();
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
