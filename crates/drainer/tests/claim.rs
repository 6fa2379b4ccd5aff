//! The record on the Node is the lock on the node's action: two actors handling one message at
//! once (two Lambda invocations, an old and a new leader) never both act, and records of other
//! schema versions are handled by their version — a newer one is left alone, an older one
//! resumed and upgraded.

mod support;

use quiesce_aws::record::{Phase, SCHEMA};
use quiesce_drainer::{Disposition, Done};
use serde_json::{Value, json};
use support::{bed, metric};

fn token_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["LifecycleActionToken"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_actors_on_one_message_only_one_acts() {
    let bed = bed(3, 0, 30, "").await;
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    let body = bed.message_for(&victim).await;
    // Two processes' handlers (each its own identity and in-memory state), one message.
    let (a, b) = (bed.handler(bed.settings()), bed.handler(bed.settings()));
    assert_ne!(a.identity(), b.identity());
    let (da, db) = tokio::join!(a.handle(&body, None), b.handle(&body, None));
    let outcomes = [&da, &db];
    let continued = outcomes
        .iter()
        .filter(|d| matches!(d, Disposition::Done(Done::Continued)))
        .count();
    assert_eq!(continued, 1, "exactly one actor completed: {da:?} / {db:?}");
    let other = outcomes
        .iter()
        .find(|d| !matches!(d, Disposition::Done(Done::Continued)))
        .unwrap();
    // It waits in place while the claim is held, then finds the hook completed.
    assert!(
        matches!(other, Disposition::Later(why) if why.contains("held by"))
            || matches!(other, Disposition::Done(Done::Duplicate | Done::Expired)),
        "the other one stood back: {other:?}"
    );
    let drains: u64 = [&a, &b]
        .iter()
        .map(|h| {
            metric(
                &h.metrics().encode(),
                "quiesce_drains_total{result=\"drained\"}",
            )
        })
        .sum();
    assert_eq!(drains, 1, "one drain ran, not two");
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["result"], "CONTINUE", "{action}");
    assert_eq!(action["completions"], 1, "{action}");
    let record = bed.record("node-1").await.unwrap();
    assert_eq!(record.phase, Phase::Continued);
    assert_eq!(record.version, SCHEMA);
    assert_eq!(record.holder, None, "a final record is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_schema_is_left_alone_and_an_older_one_resumed() {
    let bed = bed(3, 0, 30, "").await;
    let (newer, older) = (bed.instances[0].clone(), bed.instances[1].clone());
    bed.terminate(&newer).await;
    bed.terminate(&older).await;
    let newer_body = bed.message_for(&newer).await;
    let older_body = bed.message_for(&older).await;
    let deadline = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(600))
        .unwrap()
        .to_string();
    let record = |instance: &str, body: &str| {
        json!({
            "instanceId": instance, "group": support::GROUP, "hook": support::HOOK,
            "token": token_of(body), "transition": "terminating", "phase": "draining",
            "deadline": deadline,
        })
    };
    // A drainer of a future schema version holds node-1's action (with fields we cannot know).
    let mut future = record(&newer, &newer_body);
    future["v"] = json!(SCHEMA + 1);
    future["lease"] = json!({"epoch": 7});
    bed.put_record("node-1", &future).await;
    // A version-1 drainer (no version field, no holder) started node-2's and went away.
    bed.put_record("node-2", &record(&older, &older_body)).await;

    let handler = bed.handler(bed.settings());
    let left = handler.handle(&newer_body, None).await;
    assert!(
        matches!(&left, Disposition::Later(why) if why.contains("schema version")),
        "{left:?}"
    );
    let node = bed.node("node-1").await;
    assert_ne!(
        node.spec.unwrap().unschedulable,
        Some(true),
        "node-1 was not touched"
    );
    let annotation = node.metadata.annotations.unwrap()[quiesce_aws::record::ANNOTATION].clone();
    assert_eq!(
        serde_json::from_str::<Value>(&annotation).unwrap(),
        future,
        "the newer record is left as it was"
    );
    assert!(bed.action_for(&newer).await.unwrap()["result"].is_null());

    let resumed = handler.handle(&older_body, None).await;
    assert!(
        matches!(resumed, Disposition::Done(Done::Continued)),
        "{resumed:?}"
    );
    let record = bed.record("node-2").await.unwrap();
    assert_eq!(record.phase, Phase::Continued);
    assert_eq!(
        record.version, SCHEMA,
        "the record is upgraded as it is resumed"
    );
    assert_eq!(bed.action_for(&older).await.unwrap()["completions"], 1);
}
