//! The queue loop: receive, hand each message to the handler while keeping it hidden, and
//! delete it only once its hook is completed. Bounded in concurrency; stops on request.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use quiesce_aws::hooks::LifecycleHooks;
use quiesce_aws::queue::{Queue, QueueError, Received};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handler::{Disposition, Handler};

/// What to do with a message that can never be handled (not JSON, another service's event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadMessage {
    /// Log it in full and delete it: it would fail the same way forever.
    #[default]
    Delete,
    /// Log it and leave it: the queue's redrive policy moves it to a dead-letter queue.
    Keep,
}

impl FromStr for BadMessage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delete" => Ok(BadMessage::Delete),
            "keep" => Ok(BadMessage::Keep),
            other => Err(format!(
                "bad-message policy {other:?}: expected delete or keep"
            )),
        }
    }
}

/// How the loop reads the queue.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Messages in hand at once. Each is claimed, cordoned and heartbeated as soon as it is
    /// received; [`crate::Settings::max_drains`] bounds the drains among them. Generous: a
    /// message left in the queue is heartbeated by nobody (the 500-action benchmark saw 300
    /// of 500 hooks expire at the old 200).
    pub max_in_hand: usize,
    /// Visibility while a message is worked on; extended every half of it.
    pub visibility: Duration,
    /// Long-poll wait.
    pub wait: Duration,
    /// When a message that needs more work (or is not ours) shows up again.
    pub retry_after: Duration,
    /// See [`BadMessage`].
    pub bad_message: BadMessage,
    /// How long past its long-poll wait a receive may take before the loop counts as stuck
    /// and `/healthz` fails; the SQS client's own timeout for the call is shorter.
    pub receive_slack: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            max_in_hand: 1000,
            visibility: Duration::from_secs(60),
            wait: Duration::from_secs(20),
            retry_after: Duration::from_secs(10),
            bad_message: BadMessage::Delete,
            receive_slack: Duration::from_secs(60),
        }
    }
}

/// Reads `queue` until `stop` turns true, then waits for the messages in hand.
pub async fn run<Q, H>(
    queue: Arc<Q>,
    handler: Arc<Handler<H>>,
    settings: WorkerSettings,
    mut stop: watch::Receiver<bool>,
) where
    Q: Queue + 'static,
    H: LifecycleHooks + 'static,
{
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    let live = handler.liveness().clone();
    // A round takes at most one long poll, bounded by the queue client's own timeout.
    let promise = settings.wait + settings.receive_slack;
    while !*stop.borrow() {
        live.beat("queue", promise);
        while tasks.try_join_next().is_some() {}
        let free = settings.max_in_hand.saturating_sub(tasks.len());
        if free == 0 {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = stop.changed() => {}
                // Come round anyway, so a long drain does not look like a stuck loop.
                _ = tokio::time::sleep(settings.wait) => {}
            }
            continue;
        }
        let receive = queue.receive(free as u32, settings.wait, settings.visibility);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = stop.changed() => {
                // A long poll already sent can still be handed messages; dropping it would hide
                // them for a whole visibility timeout. Take them and give them back at once.
                if let Ok(messages) = receive.await {
                    for m in messages {
                        if let Err(err) = queue.extend(&m.receipt, Duration::ZERO).await {
                            tracing::warn!(message = %m.id, %err, "could not release the message");
                        }
                    }
                }
                continue;
            }
        };
        match received {
            Ok(messages) => {
                failures = 0;
                for message in messages {
                    let (queue, handler, settings) =
                        (queue.clone(), handler.clone(), settings.clone());
                    tasks
                        .spawn(async move { process(&*queue, &handler, &settings, message).await });
                }
            }
            Err(err) => {
                failures = (failures + 1).min(6);
                let pause = Duration::from_secs(1 << failures);
                tracing::warn!(%err, ?pause, "receiving from the queue failed");
                live.beat("queue", pause + promise);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    live.forget("queue");
    while tasks.join_next().await.is_some() {}
}

/// Handles one message, keeping it hidden meanwhile, and settles it with the queue.
pub async fn process<Q: Queue, H: LifecycleHooks>(
    queue: &Q,
    handler: &Handler<H>,
    settings: &WorkerSettings,
    message: Received,
) {
    let metrics = handler.metrics().clone();
    if message.receive_count > 1 {
        // Each receive brings the redrive policy's maxReceiveCount closer.
        tracing::info!(message = %message.id, receives = message.receive_count, "received again");
        metrics.redelivery();
    }
    let disposition = tokio::select! {
        d = handler.handle(&message.body, None) => d,
        () = keep_hidden(queue, &message, settings) => unreachable!("the visibility loop never ends"),
    };
    let id = &message.id;
    let settled = match disposition {
        Disposition::Done(done) => {
            tracing::info!(message = %id, ?done, "hook completed; deleting the message");
            metrics.message("deleted");
            delete(queue, &message, settings).await
        }
        Disposition::Later(why) => {
            tracing::info!(message = %id, %why, "will resume");
            metrics.message("retried");
            queue.extend(&message.receipt, settings.retry_after).await
        }
        Disposition::Leave(why) => {
            tracing::info!(message = %id, %why, "leaving the message for another drainer");
            metrics.message("left");
            queue.extend(&message.receipt, settings.retry_after).await
        }
        Disposition::Invalid(err) => {
            tracing::error!(message = %id, %err, body = %message.body, policy = ?settings.bad_message, "unusable message");
            metrics.message("invalid");
            match settings.bad_message {
                BadMessage::Delete => delete(queue, &message, settings).await,
                BadMessage::Keep => Ok(()),
            }
        }
    };
    if let Err(err) = settled {
        tracing::warn!(message = %id, %err, "could not settle the message; it will come back");
    }
}

/// Keeps `message` hidden while it is in hand: its visibility extended every half timeout.
async fn keep_hidden<Q: Queue>(queue: &Q, message: &Received, settings: &WorkerSettings) {
    let mut tick = tokio::time::interval(settings.visibility / 2);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = queue.extend(&message.receipt, settings.visibility).await {
            tracing::warn!(message = %message.id, %err, "could not extend visibility");
        }
    }
}

/// Tries of a delete before the message is left to come back.
const DELETE_TRIES: u32 = 4;

/// Deletes a settled message, trying again in place (pauses doubling from 1 s, the message
/// kept hidden meanwhile) when the call fails after the SDK's own attempts: a delete given up
/// brings the message back one receive closer to the dead-letter queue, its work over. A
/// receipt that is no longer valid (the message was delivered again) is not tried again.
async fn delete<Q: Queue>(
    queue: &Q,
    message: &Received,
    settings: &WorkerSettings,
) -> Result<(), QueueError> {
    let tries = async {
        let mut pause = Duration::from_secs(1);
        let mut tried = 1;
        loop {
            match queue.delete(&message.receipt).await {
                Err(err)
                    if tried < DELETE_TRIES && !err.message.contains("ReceiptHandleIsInvalid") =>
                {
                    tracing::warn!(message = %message.id, %err, tried, ?pause, "could not delete the message; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tried += 1;
                }
                other => return other,
            }
        }
    };
    tokio::select! {
        r = tries => r,
        () = keep_hidden(queue, message, settings) => unreachable!("the visibility loop never ends"),
    }
}
