//! The Lambda mode across invocations, against moto and the sandbox: an invocation that runs
//! out of time leaves the action recorded on the Node and returns the message as a batch item
//! failure; the next invocation (a new handler, as in a new execution environment) resumes it
//! and completes the hook once.

#[path = "../../drainer/tests/support/mod.rs"]
mod support;

mod invocation;

use std::time::Duration;

use invocation::{delete, invocation_event, invoke};
use quiesce_aws::record::Phase;
use tokio::time::Instant;

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
        let response = invoke(&bed, bed.settings(), &event, Duration::from_millis(600)).await;
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
        let response = invoke(&bed, bed.settings(), &event, Duration::from_secs(60)).await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        delete(&bed, record).await;
        break;
    }
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["result"], "CONTINUE", "{action}");
    assert_eq!(action["completions"], 1, "{action}");
    assert_eq!(bed.record("node-1").await.unwrap().phase, Phase::Continued);
}
