//! The Lambda mode across invocations, against moto and the sandbox: an invocation that runs
//! out of time leaves the action recorded on the Node and returns the message as a batch item
//! failure; the next invocation (a new handler, as in a new execution environment) resumes it
//! and completes the hook once.

#[path = "../../drainer/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use quiesce_aws::record::Phase;
use quiesce_lambda::{BatchSettings, handle_batch};
use tokio::time::Instant;

/// What the event source mapping would hand the function: the queue's visible messages.
async fn invocation_event(bed: &support::Bed) -> SqsEvent {
    let mut event = SqsEvent::default();
    let out = bed
        .sqs
        .receive_message()
        .queue_url(&bed.queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(60)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    for m in out.messages() {
        let mut record = SqsMessage::default();
        record.message_id = m.message_id().map(str::to_string);
        record.receipt_handle = m.receipt_handle().map(str::to_string);
        record.body = m.body().map(str::to_string);
        event.records.push(record);
    }
    event
}

/// One invocation with `budget` left before its deadline, in a fresh execution environment
/// (a new handler).
async fn invoke(bed: &support::Bed, event: &SqsEvent, budget: Duration) -> SqsBatchResponse {
    let settings = BatchSettings {
        reserve: Duration::from_millis(200),
        resume_after: Duration::from_secs(1),
        ..BatchSettings::default()
    };
    let handler = bed.handler(bed.settings());
    handle_batch(
        &handler,
        &*bed.queue(),
        event,
        Instant::now() + budget,
        &settings,
    )
    .await
}

/// What Lambda does with an item that succeeded.
async fn delete(bed: &support::Bed, record: &SqsMessage) {
    bed.sqs
        .delete_message()
        .queue_url(&bed.queue_url)
        .receipt_handle(record.receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_longer_than_an_invocation_resumes_in_the_next() {
    let bed = support::bed(3, 0, 30, "").await;
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;

    // First invocation: far too short for a drain whose pods take a second to stop and their
    // replacements a second to be Ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lifecycle_id = loop {
        assert!(Instant::now() < deadline, "no lifecycle message arrived");
        let event = invocation_event(&bed).await;
        let response = invoke(&bed, &event, Duration::from_millis(600)).await;
        let mut found = None;
        for record in &event.records {
            let failed = response
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == record.message_id.as_ref());
            if record.body.as_deref().unwrap_or_default().contains(&victim) {
                assert!(
                    failed,
                    "the unfinished action goes back as a batch item failure: {response:?}"
                );
                found = record.message_id.clone();
            } else {
                assert!(!failed, "the test notification succeeds: {response:?}");
                delete(&bed, record).await;
            }
        }
        if let Some(id) = found {
            break id;
        }
    };
    let record = bed
        .record("node-1")
        .await
        .expect("the action is recorded on the node");
    assert_eq!(record.phase, Phase::Draining);
    assert_eq!(
        bed.node("node-1").await.spec.unwrap().unschedulable,
        Some(true)
    );
    assert!(bed.action_for(&victim).await.unwrap()["result"].is_null());

    // Second invocation, with time enough: it resumes from the record and completes. The
    // message is back after `resume_after`.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the message did not come back");
        let event = invocation_event(&bed).await;
        let Some(record) = event
            .records
            .iter()
            .find(|r| r.message_id.as_deref() == Some(lifecycle_id.as_str()))
        else {
            continue;
        };
        let response = invoke(&bed, &event, Duration::from_secs(60)).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        delete(&bed, record).await;
        break;
    }
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["result"], "CONTINUE", "{action}");
    assert_eq!(action["completions"], 1, "{action}");
    assert_eq!(bed.record("node-1").await.unwrap().phase, Phase::Continued);
}
