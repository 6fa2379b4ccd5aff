//! The Lambda face of a chaos run (`--chaos --face lambda`): the same roll driven through
//! quiesce-lambda's [`handle_batch`], as Lambda's SQS event source mapping drives the function.
//! A poller receives messages one batch of [`BATCH_SIZE`] at a time and starts up to
//! [`MAX_CONCURRENCY`] invocations at once (the SAM template's `ScalingConfig`), so the two
//! deliveries of one action go to two invocations running side by side. Each invocation is a
//! new execution environment (a fresh client, node index and handler, with an identity of
//! its own, as the Lambda's unique identity per handler) and ends at its deadline, [`TIMEOUT`]
//! after it started: a drain longer than that is recorded on the Node, the message goes back
//! as a batch item failure, and a later invocation resumes it. What an invocation reports as
//! done is deleted, as the mapping does with `ReportBatchItemFailures`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use quiesce_aws::queue::{Queue, Received};
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{BadMessage, Handler, Settings};
use quiesce_lambda::{BatchSettings, handle_batch};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use quiesce_sandbox::api::FaultInjector;

use super::conductor::arm;
use super::fleet::{Spec, client};
use super::schedule::ActionPlan;
use crate::asg::{Group, GroupEvent};

/// Messages per invocation: one, so a duplicate is another invocation's.
pub const BATCH_SIZE: u32 = 1;
/// Invocations at once (the SAM template's `MaximumConcurrency` is at least 2).
pub const MAX_CONCURRENCY: usize = 3;
/// Each invocation's time: far shorter than a drain under faults, so drains span slices.
pub const TIMEOUT: Duration = Duration::from_secs(8);
/// Kept back from the deadline to give messages back and return.
const RESERVE: Duration = Duration::from_secs(2);
/// How soon a message given back is delivered again.
const RESUME_AFTER: Duration = Duration::from_secs(1);
/// How long the mapping waits for one SQS call of its own (its SDK's timeout).
const CALL_LIMIT: Duration = Duration::from_secs(5);
/// The queue's visibility timeout as the mapping receives (Lambda asks for six times the
/// function's timeout; the function shortens it for what it gives back).
const VISIBILITY: Duration = Duration::from_secs(48);

/// `lambda` in the JSON of a run on the Lambda face.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LambdaReport {
    /// Invocations made.
    pub invocations: u64,
    /// Invocations that gave their message back unfinished (a slice ended; the next resumed).
    pub slices_given_back: u64,
    /// Invocations started while another one held a message of the same action.
    pub concurrent_on_duplicates: u64,
    /// The most invocations running at once.
    pub peak_concurrency: usize,
}

/// The running event source mapping.
pub struct LambdaFace {
    task: JoinHandle<LambdaReport>,
    stop: watch::Sender<bool>,
}

/// The callers' prefix: the mapping's own calls, then `drainer-lambda-<n>` per invocation.
const CALLER: &str = "drainer-lambda";

impl LambdaFace {
    /// Starts polling `group`'s queue for invocations of `spec`'s drainer.
    /// `plans`' API faults are armed through `faults` as each terminate action starts.
    pub fn start(
        spec: &Spec,
        group: &Group,
        plans: Vec<ActionPlan>,
        faults: FaultInjector,
    ) -> LambdaFace {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(arm_as_actions_start(
            group.clone(),
            plans,
            faults,
            stopped.clone(),
        ));
        let task = tokio::spawn(poll(spec.clone(), group.clone(), stopped));
        LambdaFace { task, stop }
    }

    /// Stops polling and lets the invocations in flight reach their deadlines.
    pub async fn finish(self) -> LambdaReport {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

/// The action a lifecycle message is about: the EventBridge event's or the notification's
/// token.
fn token_of(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["detail"]["LifecycleActionToken"]
        .as_str()
        .or(v["LifecycleActionToken"].as_str())
        .map(str::to_string)
}

/// Arms each terminate action's API faults as it starts (the conductor's part on this face).
async fn arm_as_actions_start(
    group: Group,
    plans: Vec<ActionPlan>,
    faults: FaultInjector,
    mut stop: watch::Receiver<bool>,
) {
    let (mut seen, mut terminates) = (0, 0);
    while !*stop.borrow() {
        let history = group.history();
        for r in &history[seen..] {
            if let GroupEvent::ActionStarted {
                launching: false, ..
            } = r.event
            {
                if let Some(plan) = plans.get(terminates) {
                    arm(&faults, plan);
                }
                terminates += 1;
            }
        }
        seen = history.len();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn poll(spec: Spec, group: Group, mut stop: watch::Receiver<bool>) -> LambdaReport {
    let mapping = group.as_caller(&format!("{CALLER}-mapping"));
    let mut report = LambdaReport::default();
    let mut running: JoinSet<(u64, bool)> = JoinSet::new();
    // The action each running invocation holds.
    let holding: Arc<Mutex<HashMap<u64, Option<String>>>> = Arc::default();
    let mut n = 0u64;
    while !*stop.borrow() {
        while let Some(done) = running.try_join_next() {
            if let Ok((i, gave_back)) = done {
                holding.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
                report.slices_given_back += u64::from(gave_back);
            }
        }
        if running.len() >= MAX_CONCURRENCY {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let received = tokio::select! {
            r = tokio::time::timeout(CALL_LIMIT, mapping.receive(BATCH_SIZE, Duration::from_secs(1), VISIBILITY)) => r,
            _ = stop.changed() => break,
        };
        let messages = match received {
            Ok(Ok(m)) => m,
            Err(_) => {
                tracing::warn!("the event source mapping's receive got no answer");
                continue;
            }
            Ok(Err(err)) => {
                // The mapping backs off and polls again, as Lambda's does.
                tracing::warn!(%err, "the event source mapping could not receive");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for message in messages {
            n += 1;
            let token = token_of(&message.body);
            {
                let mut held = holding.lock().unwrap_or_else(|p| p.into_inner());
                if token.is_some() && held.values().any(|t| *t == token) {
                    report.concurrent_on_duplicates += 1;
                }
                held.insert(n, token);
            }
            report.invocations += 1;
            let (spec, group, mapping) = (spec.clone(), group.clone(), mapping.clone());
            running.spawn(async move {
                let gave_back = invoke(&spec, &group, &mapping, n, message).await;
                (n, gave_back)
            });
            report.peak_concurrency = report.peak_concurrency.max(running.len());
        }
    }
    // Invocations in flight run to their deadlines.
    while running.join_next().await.is_some() {}
    report
}

/// One invocation, `n`, on `message`; whether it gave the message back.
async fn invoke(spec: &Spec, group: &Group, mapping: &Group, n: u64, message: Received) -> bool {
    let caller = format!("{CALLER}-{n}");
    let client = match client(&spec.url, &caller, spec.timeouts) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, "could not build an invocation's client");
            return true;
        }
    };
    let hooks = group.as_caller(&caller);
    let handler = Handler::new(
        client.clone(),
        NodeIndex::listed(client),
        hooks.clone(),
        Settings {
            identity: Some(caller.clone()),
            ..spec.settings.clone()
        },
        spec.metrics.clone(),
    );
    let event: SqsEvent = serde_json::from_value(json!({"Records": [{
        "messageId": message.id,
        "receiptHandle": message.receipt,
        "body": message.body,
    }]}))
    .expect("an SQS event");
    let settings = BatchSettings {
        reserve: RESERVE,
        resume_after: RESUME_AFTER,
        bad_message: BadMessage::Delete,
    };
    let response = Box::pin(handle_batch(
        &handler,
        &hooks,
        &event,
        Instant::now() + TIMEOUT,
        &settings,
    ))
    .await;
    let gave_back = !response.batch_item_failures.is_empty();
    if !gave_back {
        match tokio::time::timeout(CALL_LIMIT, mapping.delete(&message.receipt)).await {
            Ok(Ok(())) => {}
            // The message comes back after its visibility timeout; the next invocation finds
            // the action over.
            Ok(Err(err)) => tracing::warn!(%err, "the event source mapping could not delete"),
            Err(_) => tracing::warn!("the event source mapping's delete got no answer"),
        }
    }
    gave_back
}
