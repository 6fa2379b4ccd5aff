//! Lifecycle-hook messages, in the three shapes that reach a drainer's queue or Lambda:
//!
//! 1. the EventBridge event `EC2 Instance-terminate Lifecycle Action` /
//!    `EC2 Instance-launch Lifecycle Action` (source `aws.autoscaling`, fields under `detail`);
//! 2. the notification Auto Scaling sends straight to an SQS target (the same fields at the top
//!    level, with `Service: "AWS Auto Scaling"`);
//! 3. the `autoscaling:TEST_NOTIFICATION` Auto Scaling sends when a hook's target is set up.
//!
//! Field names follow the Amazon EC2 Auto Scaling User Guide ("Amazon EventBridge events for
//! Amazon EC2 Auto Scaling", "Configure a notification target for lifecycle notifications").

use serde::Deserialize;
use serde_json::Value;

/// Which transition the instance is waiting in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `autoscaling:EC2_INSTANCE_TERMINATING`: drain, then CONTINUE (or ABANDON).
    Terminating,
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`: CONTINUE once the node is Ready.
    Launching,
}

/// One lifecycle action waiting for its hook to be completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleAction {
    /// The transition.
    pub transition: Transition,
    /// The Auto Scaling group.
    pub group: String,
    /// The hook.
    pub hook: String,
    /// The instance, `i-…`.
    pub instance_id: String,
    /// The token that completes or heartbeats exactly this action.
    pub token: String,
    /// The hook's NotificationMetadata, if any.
    pub metadata: Option<String>,
    /// When the instance entered the wait state (the event's `time`, the notification's
    /// `Time`, RFC 3339): the drain's deadline counts from here, not from when the message
    /// was read.
    pub time: Option<String>,
}

/// What a message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A lifecycle action to act on.
    Action(LifecycleAction),
    /// The test notification: nothing to do but delete it.
    Test {
        /// The group whose hook was set up.
        group: String,
    },
}

/// Why a message is not a lifecycle action we can act on. Each names what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// Not JSON at all.
    #[error("message is not JSON: {0}")]
    NotJson(String),
    /// JSON, but no shape we know (another service's event, a hand-written message).
    #[error(
        "message is not an Auto Scaling lifecycle event (expected an EventBridge event with source aws.autoscaling, a direct Auto Scaling notification, or a test notification); it has keys {0:?}"
    )]
    Foreign(Vec<String>),
    /// An Auto Scaling event of another kind (e.g. `EC2 Instance Launch Successful`).
    #[error("Auto Scaling event {0:?} is not a lifecycle action")]
    OtherEvent(String),
    /// A lifecycle event missing a field we need.
    #[error("lifecycle event without {field} (expected a string field {field})")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A transition we do not handle.
    #[error(
        "unknown lifecycle transition {0:?} (expected autoscaling:EC2_INSTANCE_TERMINATING or autoscaling:EC2_INSTANCE_LAUNCHING)"
    )]
    Transition(String),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Fields {
    lifecycle_transition: Option<String>,
    auto_scaling_group_name: Option<String>,
    lifecycle_hook_name: Option<String>,
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: Option<String>,
    lifecycle_action_token: Option<String>,
    notification_metadata: Option<String>,
    event: Option<String>,
    time: Option<String>,
}

/// Parses a message body (an SQS message's body, or a Lambda's event).
pub fn parse(body: &str) -> Result<Message, EventError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    parse_value(&value)
}

/// Parses an already-decoded message. An SNS notification envelope (an SNS topic between the
/// hook and the queue, subscribed without raw message delivery) is unwrapped: its `Message`
/// is the lifecycle message as a JSON string.
pub fn parse_value(value: &Value) -> Result<Message, EventError> {
    if value["Type"] == "Notification"
        && let Some(inner) = value["Message"].as_str()
        && value["TopicArn"].is_string()
    {
        return parse(inner);
    }
    // A field of the wrong type makes the whole message unusable: the "missing" errors
    // below then name the first field we needed.
    let fields_of = |v: &Value| -> Fields { serde_json::from_value(v.clone()).unwrap_or_default() };
    let fields = if value["source"] == "aws.autoscaling" && value["detail"].is_object() {
        let detail_type = value["detail-type"].as_str().unwrap_or_default();
        if !detail_type.ends_with("Lifecycle Action") {
            return Err(EventError::OtherEvent(detail_type.to_string()));
        }
        let mut fields = fields_of(&value["detail"]);
        fields.time = value["time"].as_str().map(str::to_string);
        fields
    } else if value["Service"] == "AWS Auto Scaling" || value["LifecycleTransition"].is_string() {
        fields_of(value)
    } else {
        let keys = value
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        return Err(EventError::Foreign(keys));
    };
    if fields.event.as_deref() == Some("autoscaling:TEST_NOTIFICATION") {
        return Ok(Message::Test {
            group: fields.auto_scaling_group_name.unwrap_or_default(),
        });
    }
    let need = |v: Option<String>, field: &'static str| {
        v.filter(|s| !s.is_empty())
            .ok_or(EventError::Missing { field })
    };
    let transition = match need(fields.lifecycle_transition, "LifecycleTransition")?.as_str() {
        "autoscaling:EC2_INSTANCE_TERMINATING" => Transition::Terminating,
        "autoscaling:EC2_INSTANCE_LAUNCHING" => Transition::Launching,
        other => return Err(EventError::Transition(other.to_string())),
    };
    Ok(Message::Action(LifecycleAction {
        transition,
        group: need(fields.auto_scaling_group_name, "AutoScalingGroupName")?,
        hook: need(fields.lifecycle_hook_name, "LifecycleHookName")?,
        instance_id: need(fields.ec2_instance_id, "EC2InstanceId")?,
        token: need(fields.lifecycle_action_token, "LifecycleActionToken")?,
        metadata: fields.notification_metadata,
        time: fields.time,
    }))
}
