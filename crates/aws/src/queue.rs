//! The message queue the lifecycle events arrive on. The drainer reads through this trait, so
//! the same loop serves SQS ([`Sqs`]) and the lab's in-process queue.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageSystemAttributeName;

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The queue's id for the message (the same across redeliveries).
    pub id: String,
    /// The handle that deletes or extends exactly this delivery.
    pub receipt: String,
    /// The body: an event JSON.
    pub body: String,
    /// How many times it has been delivered, this time included.
    pub receive_count: u32,
}

/// A queue call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {message}")]
pub struct QueueError {
    /// The API call.
    pub call: &'static str,
    /// The service's error.
    pub message: String,
}

/// The three queue calls the drainer makes.
pub trait Queue: Send + Sync {
    /// Long-polls for up to `max` messages, hiding each for `visibility`.
    fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;
    /// Deletes a message whose work is durably done.
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Keeps a message hidden for `visibility` from now (0 makes it visible at once).
    fn extend(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// An SQS queue through aws-sdk-sqs.
#[derive(Debug, Clone)]
pub struct Sqs {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Sqs {
    /// The queue at `url`.
    pub fn new(config: &aws_config::SdkConfig, url: impl Into<String>) -> Sqs {
        Sqs {
            client: aws_sdk_sqs::Client::new(config),
            url: url.into(),
        }
    }
}

fn error<E>(call: &'static str, err: E) -> QueueError
where
    E: std::error::Error + Send + Sync + 'static,
{
    QueueError {
        call,
        message: DisplayErrorContext(err).to_string(),
    }
}

/// SQS takes whole seconds, at most 12 hours of visibility and 20 s of long polling.
fn secs(d: Duration, max: u64) -> i32 {
    d.as_secs().min(max) as i32
}

/// A long poll answers after up to `wait` with nothing to say: its attempts may take that long
/// on top of the usual timeout, and no longer.
fn long_poll_timeouts(wait: Duration) -> aws_config::timeout::TimeoutConfig {
    let wait = Duration::from_secs(wait.as_secs().min(20));
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(crate::sdk::CONNECT_TIMEOUT)
        .operation_attempt_timeout(crate::sdk::ATTEMPT_TIMEOUT + wait)
        .operation_timeout(crate::sdk::OPERATION_TIMEOUT + wait * 3)
        .build()
}

impl Queue for Sqs {
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(secs(wait, 20))
            .visibility_timeout(secs(visibility, 43_200))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(long_poll_timeouts(wait)),
            )
            .send()
            .await
            .map_err(|e| error("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Received {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("DeleteMessage", e))
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(visibility, 43_200))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("ChangeMessageVisibility", e))
    }
}
