//! Lifecycle messages in every shape that reaches a drainer. The fixtures are written after
//! the examples in the Amazon EC2 Auto Scaling User Guide (EventBridge events for lifecycle
//! actions; notifications sent to an SQS target; the test notification).

use quiesce_aws::event::{EventError, LifecycleAction, Message, Transition, parse};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn terminate() -> LifecycleAction {
    LifecycleAction {
        transition: Transition::Terminating,
        group: "eks-workers".into(),
        hook: "quiesce-drain".into(),
        instance_id: "i-0abc123def4567890".into(),
        token: "87654321-4321-4321-4321-210987654321".into(),
        metadata: None,
        time: Some("2026-11-23T07:00:00.000Z".into()),
    }
}

#[test]
fn eventbridge_and_direct_notifications_parse_to_the_same_action() {
    let via_eventbridge = parse(&fixture("eventbridge-terminate.json")).unwrap();
    let expected = LifecycleAction {
        metadata: Some("cluster=prod".into()),
        // EventBridge's envelope time, when the instance entered Terminating:Wait.
        time: Some("2026-11-23T07:00:00Z".into()),
        ..terminate()
    };
    assert_eq!(via_eventbridge, Message::Action(expected));
    assert_eq!(
        parse(&fixture("sqs-direct-terminate.json")).unwrap(),
        Message::Action(terminate())
    );
}

#[test]
fn launch_actions_and_test_notifications() {
    let Message::Action(launch) = parse(&fixture("eventbridge-launch.json")).unwrap() else {
        panic!("a launch action")
    };
    assert_eq!(launch.transition, Transition::Launching);
    assert_eq!(launch.instance_id, "i-0fedcba9876543210");
    assert_eq!(
        parse(&fixture("test-notification.json")).unwrap(),
        Message::Test {
            group: "eks-workers".into()
        }
    );
}

#[test]
fn malformed_and_foreign_messages_are_named() {
    assert!(matches!(parse("{not json"), Err(EventError::NotJson(_))));
    let ec2 = r#"{"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"instance-id": "i-1", "state": "running"}}"#;
    assert!(
        matches!(parse(ec2), Err(EventError::Foreign(keys)) if keys.contains(&"source".to_string()))
    );
    let other = r#"{"source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Successful", "detail": {}}"#;
    assert_eq!(
        parse(other),
        Err(EventError::OtherEvent(
            "EC2 Instance Launch Successful".into()
        ))
    );
    let no_token =
        fixture("sqs-direct-terminate.json").replace("\"LifecycleActionToken\"", "\"Other\"");
    let err = parse(&no_token).unwrap_err();
    assert_eq!(
        err,
        EventError::Missing {
            field: "LifecycleActionToken"
        }
    );
    assert!(err.to_string().contains("LifecycleActionToken"));
    let odd = fixture("sqs-direct-terminate.json")
        .replace("EC2_INSTANCE_TERMINATING", "EC2_INSTANCE_REBOOTING");
    assert!(matches!(parse(&odd), Err(EventError::Transition(t)) if t.ends_with("REBOOTING")));
}

#[test]
fn an_sns_wrapped_notification_is_unwrapped() {
    let inner = fixture("sqs-direct-terminate.json");
    // The envelope SNS delivers to an SQS subscription without raw message delivery.
    let envelope = serde_json::json!({
        "Type": "Notification",
        "MessageId": "a1b2c3",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:lifecycle",
        "Subject": "Auto Scaling:  Lifecycle action 'TERMINATING' for instance i-0abc123def4567890",
        "Message": inner,
        "Timestamp": "2026-11-23T07:00:00.100Z",
        "SignatureVersion": "1",
    })
    .to_string();
    assert_eq!(parse(&envelope).unwrap(), Message::Action(terminate()));
}
