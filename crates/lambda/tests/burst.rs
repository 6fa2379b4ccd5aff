//! Ten terminations at once (a spot reclaim, an AZ rebalance) through the Lambda with the SAM
//! template's event source mapping — `BatchSize` messages per invocation, at most
//! `MaximumConcurrency` invocations at a time — while the drains, four at a time, take longer
//! than the hooks' heartbeat timeout: every hook ends in CONTINUE, none times out (#20).

#[path = "../../drainer/tests/support/mod.rs"]
mod support;

mod invocation;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use invocation::{delete, invocation_event, invoke};
use tokio::time::Instant;

const VICTIMS: usize = 10;
/// Shorter than the drains take together, four at a time.
const HEARTBEAT_TIMEOUT: i32 = 8;

/// Pods that take seconds to go (a preStop delay inside their grace period), two per node.
const SLOW: &str = r#"
objects:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: slow, namespace: default}
    spec:
      replicas: 22
      selector: {matchLabels: {app: slow}}
      template:
        metadata:
          labels: {app: slow}
          annotations: {sandbox.quiesce.io/startup-delay: 1s, sandbox.quiesce.io/prestop-delay: 4s}
        spec:
          terminationGracePeriodSeconds: 6
          containers: [{name: slow, image: slow:1, resources: {requests: {cpu: 10m, memory: 16Mi}}}]
"#;

/// The template's `name:` value (the first line that has one after `after`, if given).
fn template_number(template: &str, after: Option<&str>, name: &str) -> usize {
    let mut lines = template.lines().map(str::trim);
    if let Some(after) = after {
        lines
            .find(|l| *l == after)
            .expect("the template has the section");
    }
    lines
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the SAM template has no number for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_terminations_at_once_with_the_templates_concurrency_all_continue() {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sam/template.yaml"),
    )
    .expect("the SAM template");
    let batch_size = template_number(&template, None, "BatchSize:");
    let concurrency = template_number(&template, Some("MaximumConcurrency:"), "Default:");
    assert!(
        batch_size * concurrency >= VICTIMS,
        "the test needs them all held"
    );

    let bed = support::bed(VICTIMS + 1, 0, HEARTBEAT_TIMEOUT, SLOW).await;
    bed.wait_for("every slow pod Ready", Duration::from_secs(60), || async {
        support::ready_pods(&bed.sandbox, "app=slow").await == 22
    })
    .await;
    let victims: Vec<String> = bed.instances[..VICTIMS].to_vec();
    for victim in &victims {
        bed.terminate(victim).await;
    }

    // The event source mapping: `concurrency` pollers, each invoking with up to `batch_size`
    // messages and deleting what succeeded, until every hook is done.
    let deadline = Instant::now() + Duration::from_secs(240);
    let invocations = Arc::new(Mutex::new(0usize));
    let bed = &bed;
    let victims = &victims;
    let done = || async move {
        let actions = bed.actions().await;
        victims.iter().all(|v| {
            actions
                .iter()
                .any(|a| a["instanceId"] == v.as_str() && a["result"].is_string())
        })
    };
    let poller = |_: usize| {
        let invocations = invocations.clone();
        async move {
            while Instant::now() < deadline && !done().await {
                let mut event = invocation_event(bed).await;
                event.records.truncate(batch_size);
                if event.records.is_empty() {
                    continue;
                }
                *invocations.lock().unwrap() += 1;
                let response = invoke(bed, bed.settings(), &event, Duration::from_secs(60)).await;
                let failed: BTreeSet<String> = response
                    .batch_item_failures
                    .iter()
                    .map(|f| f.item_identifier.clone())
                    .collect();
                for record in &event.records {
                    if !failed.contains(record.message_id.as_deref().unwrap_or_default()) {
                        delete(bed, record).await;
                    }
                }
            }
        }
    };
    futures::future::join_all((0..concurrency).map(poller)).await;

    let actions = bed.actions().await;
    for victim in victims {
        let action = actions
            .iter()
            .find(|a| a["instanceId"] == victim.as_str())
            .unwrap_or_else(|| panic!("no lifecycle action for {victim}"));
        assert_ne!(
            action["completedBy"], "timeout",
            "the hook of {victim} expired: {action}"
        );
        assert_eq!(action["result"], "CONTINUE", "{victim}: {action}");
    }
    assert!(*invocations.lock().unwrap() >= 1);
}
