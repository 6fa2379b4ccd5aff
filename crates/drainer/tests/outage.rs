//! Many terminations at once and an API server outage mid-drain: every received action is
//! cordoned and heartbeated at once (the drain slots bound evictions only), and transient
//! errors are retried in place, so the message is not redelivered towards the dead-letter
//! queue.

mod support;

use std::time::Duration;

use quiesce_aws::record::Phase;
use quiesce_drainer::Settings;
use quiesce_sandbox::api::FaultKind;
use support::bed;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_received_action_is_cordoned_and_heartbeated_at_once() {
    let bed = bed(6, 0, 30, "").await;
    let mut settings = bed.settings();
    // One drain at a time: the others wait for the slot, cordoned and heartbeated.
    settings.max_drains = 1;
    let handler = bed.handler(settings);
    let (stop, task) = bed.run_worker(handler, Duration::from_secs(30));
    let victims: Vec<String> = bed.instances[..4].to_vec();
    let started = Instant::now();
    for victim in &victims {
        bed.terminate(victim).await;
    }
    bed.wait_for(
        "every terminating node cordoned and its hook heartbeated",
        Duration::from_secs(10),
        || async {
            let mut all = true;
            for (i, victim) in victims.iter().enumerate() {
                let node = bed.node(&format!("node-{}", i + 1)).await;
                let heartbeats = bed
                    .action_for(victim)
                    .await
                    .map_or(0, |a| a["heartbeats"].as_u64().unwrap_or(0));
                all &= node.spec.unwrap().unschedulable == Some(true) && heartbeats >= 1;
            }
            all
        },
    )
    .await;
    let cordoned_after = started.elapsed();
    for victim in &victims {
        bed.wait_result(victim, "CONTINUE", Duration::from_secs(120))
            .await;
    }
    tracing::info!(?cordoned_after, "all four cordoned and heartbeated");
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_mid_drain_ends_in_one_continue_and_an_empty_dead_letter_queue() {
    let bed = bed(3, 0, 30, "").await;
    // The templates' redrive policy: five receives, then the dead-letter queue.
    let (dlq_url, dlq_arn) = quiesce_testbed::aws::queue(&bed.sqs, "lifecycle-dlq").await;
    bed.sqs
        .set_queue_attributes()
        .queue_url(&bed.queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let mut settings = bed.settings();
    // The outage must not outlast the drain's deadline (then ABANDON would be right).
    settings.drain_margin = Duration::from_secs(300);
    settings.max_retry_pause = Duration::from_secs(2);
    let handler = bed.handler(settings);
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(3));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_for("the drain under way", Duration::from_secs(30), || async {
        bed.record("node-1")
            .await
            .is_some_and(|r| r.phase == Phase::Draining)
    })
    .await;
    // The 90 s scaled to 20 s: at the drainer's 1 s retry of the "later" path, that is
    // four times maxReceiveCount; what matters is that no receive is spent on it.
    bed.sandbox.faults().inject_for(
        Some("GET"),
        Some("nodes"),
        Duration::from_secs(20),
        FaultKind::InternalError,
    );
    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(120))
        .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["completions"], 1, "{action}");
    assert_eq!(
        action["completedBy"], "api",
        "not the hook's timeout: {action}"
    );
    let dead = bed
        .sqs
        .receive_message()
        .queue_url(&dlq_url)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap();
    assert!(
        dead.messages().is_empty(),
        "nothing in the dead-letter queue: {:?}",
        dead.messages()
    );
    let text = handler.metrics().encode();
    assert!(
        text.contains("quiesce_retries_in_place_total"),
        "the outage was retried in place: {text}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_and_auto_scaling_throttling_is_survived() {
    let bed = bed(3, 0, 30, "").await;
    // The drain's deadline counts from the event's time, and the throttled calls before the
    // drain (the SDK's backoff, then ours) spend it: with the bed's 5 s margin a loaded
    // machine ran out of deadline, ABANDONed, and the wait for CONTINUE timed out. The
    // deadline is not what this test is about, so it is generous; retry pauses stay short.
    let handler = bed.handler(Settings {
        drain_margin: Duration::from_secs(600),
        max_retry_pause: Duration::from_secs(2),
        ..bed.settings()
    });
    // More failures in a row than the SDK's three attempts per call, on every call the
    // drainer makes of each service (the heartbeat: one call's attempts, since the next
    // heartbeat may not be due before the drain ends; its failure is survived by the next).
    bed.inject_aws("ReceiveMessage", 4, 400, "ThrottlingException");
    bed.inject_aws("ChangeMessageVisibility", 4, 400, "ThrottlingException");
    bed.inject_aws("RecordLifecycleActionHeartbeat", 3, 400, "Throttling");
    bed.inject_aws("DescribeAutoScalingInstances", 4, 400, "Throttling");
    bed.inject_aws("CompleteLifecycleAction", 4, 400, "Throttling");
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(4));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(90))
        .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["completions"], 1, "{action}");
    let left: Vec<_> = bed
        .aws_faults_left()
        .into_iter()
        .filter(|f| f["action"] != "ChangeMessageVisibility")
        .collect();
    assert!(left.is_empty(), "every injected fault was hit: {left:?}");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// An API server shutting down answers 503 with a `Retry-After` (upstream's
/// `waitGroupWriteRetryAfterToResponse`) to whatever the drainer asks next, mid-drain: every
/// one is retried, and the drain ends in one CONTINUE by the drainer, the message spared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_503s_with_retry_after_mid_drain_is_retried_to_one_continue() {
    const CALLER: &str = "drainer-under-503";
    let bed = bed(3, 0, 30, "").await;
    let mut config = kube::Config::new(bed.sandbox.url().parse().unwrap());
    config.headers.push((
        quiesce_sandbox::api::AUDIT_HEADER.parse().unwrap(),
        CALLER.parse().unwrap(),
    ));
    let client = quiesce_drainer::client::build(
        config,
        quiesce_drainer::client::Timeouts::default(),
        quiesce_drainer::client::Rate::default(),
    )
    .unwrap();
    let handler = std::sync::Arc::new(quiesce_drainer::Handler::new(
        client.clone(),
        quiesce_drainer::nodes::NodeIndex::listed(client),
        quiesce_aws::hooks::AutoScaling::new(&bed.aws),
        Settings {
            drain_margin: Duration::from_secs(300),
            max_retry_pause: Duration::from_secs(2),
            ..bed.settings()
        },
        std::sync::Arc::new(quiesce_drainer::metrics::Metrics::default()),
    ));
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(3));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_for("the drain under way", Duration::from_secs(30), || async {
        bed.record("node-1")
            .await
            .is_some_and(|r| r.phase == Phase::Draining)
    })
    .await;
    // The drainer's next twelve requests, whatever they are.
    const HITS: usize = 12;
    bed.sandbox.faults().inject_for_caller(
        CALLER,
        None,
        None,
        HITS,
        FaultKind::ServiceUnavailable { retry_after: 1 },
    );
    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(120))
        .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["completions"], 1, "{action}");
    assert_eq!(action["completedBy"], "api", "not the timeout: {action}");
    let hit: Vec<_> = bed
        .sandbox
        .audited()
        .into_iter()
        .filter(|a| a.fault.is_some())
        .collect();
    assert_eq!(hit.len(), HITS, "every 503 met a drainer request: {hit:?}");
    assert!(
        hit.iter()
            .all(|a| a.caller == CALLER && a.status == Some(503)),
        "{hit:?}"
    );
    // Retried where they failed, by the step or by the drain engine, whichever met them: a
    // 503 taken for a permanent error would have ended the attempt and given the message
    // back (one receive closer to the dead-letter queue) instead.
    let text = handler.metrics().encode();
    let count = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_default()
    };
    assert_eq!(
        count("quiesce_sqs_messages_total{outcome=\"retried\"} "),
        0.0,
        "the message was never given back: {text}"
    );
    assert_eq!(count("quiesce_sqs_redeliveries_total "), 0.0, "{text}");
    stop.send(true).unwrap();
    task.await.unwrap();
}
