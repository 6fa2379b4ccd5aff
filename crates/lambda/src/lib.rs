//! The drainer as a Lambda, the seed's architecture: EventBridge → SQS → Lambda. A drain can
//! outlast one invocation (15 minutes at most); the action's state stays on its Node, the
//! message goes back as a batch item failure, and the next invocation resumes it.

pub mod eks;

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use clap::Parser;
use quiesce_aws::hooks::LifecycleHooks;
use quiesce_aws::queue::Queue;
use quiesce_drainer::args::HandlerArgs;
use quiesce_drainer::client::Rate;
use quiesce_drainer::{BadMessage, Disposition, Handler, Settings};
use tokio::time::Instant;

/// The Lambda's configuration: `quiesce drainer`'s handler flags, read only from their
/// environment variables (a Lambda has no command line), so the two cannot differ.
#[derive(Debug, Parser)]
#[command(name = "quiesce-lambda", no_binary_name = true)]
struct FromEnv {
    #[command(flatten)]
    handler: HandlerArgs,
}

/// Everything the Lambda is told by its environment.
#[derive(Debug, Clone)]
pub struct LambdaSettings {
    /// The handler's settings.
    pub handler: Settings,
    /// How an invocation spends its time.
    pub batch: BatchSettings,
    /// The Kubernetes client's rate limit.
    pub rate: Rate,
    /// Whether nodes without an AWS providerID are looked up by PrivateDnsName.
    pub ec2_fallback: bool,
}

/// The Lambda's settings from the environment (`QUIESCE_CLUSTER`,
/// `QUIESCE_KEEP_IN_LOAD_BALANCERS`, `QUIESCE_KUBE_QPS`, `QUIESCE_NO_EC2_FALLBACK`, … as
/// listed in `quiesce drainer --help`). A bad value is an error naming the flag whose
/// variable it is.
pub fn settings_from_env() -> Result<LambdaSettings, clap::Error> {
    let args = FromEnv::try_parse_from(std::iter::empty::<String>())?.handler;
    Ok(LambdaSettings {
        handler: args.settings(),
        batch: BatchSettings {
            bad_message: args.bad_message,
            ..BatchSettings::default()
        },
        rate: args.kube.rate(),
        ec2_fallback: args.ec2_fallback(),
    })
}

/// How an invocation spends its time.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Kept back from the invocation's deadline to settle messages and return.
    pub reserve: Duration,
    /// How soon a message that needs more work is delivered again.
    pub resume_after: Duration,
    /// What to do with a message that is not a lifecycle event.
    pub bad_message: BadMessage,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            reserve: Duration::from_secs(20),
            resume_after: Duration::from_secs(10),
            bad_message: BadMessage::Delete,
        }
    }
}

/// Sets a message that needs more work to come back after `resume_after`, trying again
/// (pauses doubling from 200 ms) while the invocation has time left. Given up, the message
/// stays hidden for the queue's whole visibility timeout, which the template sets to six
/// function timeouts as Lambda asks: far longer than the hook's heartbeat timeout, so nobody
/// would heartbeat the hook before it expires (the chaos lab's Lambda face, seed 1, saw one
/// expire so after a throttled ChangeMessageVisibility).
async fn give_back<Q: Queue>(
    queue: &Q,
    id: &str,
    receipt: &str,
    resume_after: Duration,
    deadline: Instant,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        let err = match queue.extend(receipt, resume_after).await {
            Ok(()) => return,
            Err(err) => err,
        };
        if Instant::now() + pause >= deadline {
            tracing::warn!(message = %id, %err, "could not set the visibility; no time left to try again");
            return;
        }
        tracing::warn!(message = %id, %err, ?pause, "could not set the visibility; trying again");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// Handles one invocation's messages until `deadline`, all at once: each is claimed, cordoned
/// and heartbeated from the start of the invocation, and the handler's drain slots bound the
/// drains among them (one after another, the last message of a batch would wait unheartbeated
/// for the drains before it). Messages whose hook was completed (or that are bad, with the
/// delete policy) succeed, so Lambda deletes them; every other message is reported as a batch
/// item failure, after its visibility is set to `resume_after` so it comes back soon instead
/// of after the queue's whole visibility timeout.
pub async fn handle_batch<H: LifecycleHooks, Q: Queue>(
    handler: &Handler<H>,
    queue: &Q,
    event: &SqsEvent,
    deadline: Instant,
    settings: &BatchSettings,
) -> SqsBatchResponse {
    let slice_end = deadline
        .checked_sub(settings.reserve)
        .unwrap_or_else(Instant::now);
    let outcomes = futures::future::join_all(event.records.iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.as_deref().unwrap_or_default();
        let disposition = if Instant::now() >= slice_end {
            Disposition::Later("no time left in this invocation".into())
        } else {
            handler.handle(body, Some(slice_end)).await
        };
        let retry = match disposition {
            Disposition::Done(done) => {
                tracing::info!(message = %id, ?done, "hook completed");
                false
            }
            Disposition::Invalid(err) => {
                tracing::error!(message = %id, %err, %body, "unusable message");
                settings.bad_message == BadMessage::Keep
            }
            Disposition::Later(why) | Disposition::Leave(why) => {
                tracing::info!(message = %id, %why, "returning the message for later");
                true
            }
        };
        if retry && let Some(receipt) = &record.receipt_handle {
            give_back(queue, &id, receipt, settings.resume_after, deadline).await;
        }
        retry.then_some(id)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for id in outcomes.into_iter().flatten() {
        response.add_failure(id);
    }
    response
}
