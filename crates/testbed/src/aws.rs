//! What tests set up in moto through the AWS SDK (feature `aws`): test credentials, a queue,
//! an instance, and an ELBv2 target group holding it, so that the tests of several crates (the
//! drainer's, the roll's, the load-balancer lookup's, `quiesce drain`'s) build their world one
//! way.

use aws_sdk_autoscaling::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_autoscaling::types::{InstanceLifecyclePolicy, RetentionAction, RetentionTriggers};
use aws_sdk_elasticloadbalancingv2::types::{Tag, TargetDescription, TargetGroupAttribute};

/// `config` (pointed at moto) with moto's test credentials, so no test reads the machine's.
pub fn with_test_credentials(config: aws_config::SdkConfig) -> aws_config::SdkConfig {
    config
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "test",
        )))
        .build()
}

/// An instance lifecycle policy whose `TerminateHookAbandon` trigger is `action`: `Retain` is
/// what the deploy templates set (an abandoned terminate keeps the instance), `Terminate` what
/// a group without the policy does.
pub fn on_abandon(action: RetentionAction) -> InstanceLifecyclePolicy {
    InstanceLifecyclePolicy::builder()
        .retention_triggers(
            RetentionTriggers::builder()
                .terminate_hook_abandon(action)
                .build(),
        )
        .build()
}

/// A new queue `name`: its URL and its ARN (what a lifecycle hook or a redrive policy names).
pub async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url
        .expect("a created queue has a URL");
    let arn = queue_arn(sqs, &url).await;
    (url, arn)
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("moto answers GetQueueAttributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("a queue has an ARN")
}

/// One instance of moto's EC2, launched by a one-instance Auto Scaling group `group` (moto
/// registers it in `target_groups`, the group's attached target groups, as AWS does).
pub async fn instance(
    config: &aws_config::SdkConfig,
    group: &str,
    target_groups: &[String],
) -> String {
    let asg = aws_sdk_autoscaling::Client::new(config);
    asg.create_launch_configuration()
        .launch_configuration_name(group)
        .image_id("ami-12c6146b")
        .instance_type("t3.medium")
        .send()
        .await
        .expect("CreateLaunchConfiguration");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(group)
        .launch_configuration_name(group)
        .min_size(1)
        .max_size(1)
        .availability_zones("us-east-1a")
        .set_target_group_arns(Some(target_groups.to_vec()))
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    groups.auto_scaling_groups()[0].instances()[0]
        .instance_id()
        .expect("an instance id")
        .to_string()
}

/// A target group of `target_type` in `vpc` with a deregistration delay of `delay` seconds,
/// tagged `tags`, holding `instances`; its ARN.
pub async fn target_group(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    vpc: &str,
    name: &str,
    target_type: &str,
    delay: u64,
    tags: &[(&str, &str)],
    instances: &[&str],
) -> String {
    let arn = elb
        .create_target_group()
        .name(name)
        .protocol("HTTP".into())
        .port(80)
        .vpc_id(vpc)
        .target_type(target_type.into())
        .send()
        .await
        .expect("CreateTargetGroup")
        .target_groups()[0]
        .target_group_arn()
        .expect("an ARN")
        .to_string();
    elb.modify_target_group_attributes()
        .target_group_arn(&arn)
        .attributes(
            TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value(delay.to_string())
                .build(),
        )
        .send()
        .await
        .expect("ModifyTargetGroupAttributes");
    for (key, value) in tags {
        elb.add_tags()
            .resource_arns(&arn)
            .tags(Tag::builder().key(*key).value(*value).build())
            .send()
            .await
            .expect("AddTags");
    }
    for instance in instances {
        elb.register_targets()
            .target_group_arn(&arn)
            .targets(TargetDescription::builder().id(*instance).build())
            .send()
            .await
            .expect("RegisterTargets");
    }
    arn
}
