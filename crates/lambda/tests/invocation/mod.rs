//! What Lambda's SQS event source mapping does around the function, for the tests: receive a
//! batch, invoke with a deadline, delete what succeeded.

#![allow(dead_code)]

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use quiesce_drainer::Settings;
use quiesce_lambda::{BatchSettings, handle_batch};
use tokio::time::Instant;

use crate::support::Bed;

/// What the event source mapping would hand the function: the queue's visible messages.
pub async fn invocation_event(bed: &Bed) -> SqsEvent {
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
pub async fn invoke(
    bed: &Bed,
    handler_settings: Settings,
    event: &SqsEvent,
    budget: Duration,
) -> SqsBatchResponse {
    let settings = BatchSettings {
        reserve: Duration::from_millis(200),
        resume_after: Duration::from_secs(1),
        ..BatchSettings::default()
    };
    let handler = bed.handler(handler_settings);
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
pub async fn delete(bed: &Bed, record: &SqsMessage) {
    bed.sqs
        .delete_message()
        .queue_url(&bed.queue_url)
        .receipt_handle(record.receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();
}
