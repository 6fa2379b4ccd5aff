//! The Lambda mode's proof of life: an enabled event source mapping on the terminate hook's
//! queue. A Lambda has no Lease to renew; what makes it answer the hooks is Lambda polling the
//! queue the hook notifies, so that mapping, in state `Enabled`, is what pre-flight asks for
//! (`ListEventSourceMappings` filtered by `EventSourceArn`; the states are listed in the
//! Lambda API reference's `EventSourceMappingConfiguration.State`).

use std::time::Duration;

use aws_sdk_lambda::error::DisplayErrorContext;

use crate::aws::{GroupFacts, TERMINATING};
use crate::preflight::DrainerLiveness;

/// The queue the group's terminate hook notifies, if it names an SQS queue: the event source
/// a Lambda drainer must be mapped to.
pub fn terminate_queue(group: &GroupFacts) -> Option<&str> {
    group
        .hooks
        .iter()
        .filter(|h| h.transition == TERMINATING)
        .filter_map(|h| h.target.as_deref())
        .find(|arn| arn.starts_with("arn:") && arn.split(':').nth(2) == Some("sqs"))
}

/// Asks Lambda whether a function polls `queue`: alive when one mapping is `Enabled`. A
/// mapping being created or updated is not yet proof, and one disabled never answers.
pub async fn mapping_liveness(
    client: &aws_sdk_lambda::Client,
    queue: &str,
    limit: Duration,
) -> DrainerLiveness {
    let call = client
        .list_event_source_mappings()
        .event_source_arn(queue)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>();
    let mappings = match tokio::time::timeout(limit, call).await {
        Err(_) => {
            return DrainerLiveness::Dead(format!(
                "ListEventSourceMappings for {queue}: no answer within {}",
                humantime::format_duration(limit)
            ));
        }
        Ok(Err(e)) => {
            return DrainerLiveness::Dead(format!(
                "ListEventSourceMappings for {queue}: {}",
                DisplayErrorContext(e)
            ));
        }
        Ok(Ok(mappings)) => mappings,
    };
    let described: Vec<String> = mappings
        .iter()
        .map(|m| {
            format!(
                "{} ({})",
                m.function_arn().unwrap_or("a function"),
                m.state().unwrap_or("no state")
            )
        })
        .collect();
    match mappings.iter().find(|m| m.state() == Some("Enabled")) {
        Some(m) => DrainerLiveness::Live(format!(
            "{} polls {queue} (event source mapping {}, Enabled)",
            m.function_arn().unwrap_or("a function"),
            m.uuid().unwrap_or("?")
        )),
        None if described.is_empty() => DrainerLiveness::Dead(format!(
            "no Lambda event source mapping reads {queue} (the SAM template's QueueMapping creates one)"
        )),
        None => DrainerLiveness::Dead(format!(
            "no enabled event source mapping reads {queue}: {}",
            described.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::HookFacts;

    fn hook(transition: &str, target: Option<&str>) -> HookFacts {
        HookFacts {
            name: "h".into(),
            transition: transition.into(),
            default_result: "ABANDON".into(),
            target: target.map(String::from),
        }
    }

    #[test]
    fn the_queue_is_the_terminate_hooks_sqs_target() {
        let queue = "arn:aws:sqs:eu-west-1:123456789012:drain";
        let group = GroupFacts {
            hooks: vec![
                hook(
                    crate::aws::LAUNCHING,
                    Some("arn:aws:sqs:eu-west-1:1:launch"),
                ),
                hook(TERMINATING, Some("arn:aws:sns:eu-west-1:1:topic")),
                hook(TERMINATING, Some(queue)),
            ],
            ..GroupFacts::default()
        };
        assert_eq!(terminate_queue(&group), Some(queue));
        let none = GroupFacts {
            hooks: vec![hook(TERMINATING, None)],
            ..GroupFacts::default()
        };
        assert_eq!(terminate_queue(&none), None);
    }
}
