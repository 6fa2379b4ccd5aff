//! The target-group lookup against moto's ELBv2 (with tests/moto/elbv2_ext.py: deregistration
//! delays and paging), through the same aws-sdk-rust calls production makes.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{Tag, TargetDescription, TargetGroupAttribute};
use quiesce_aws::elbv2::{CONTROLLER_TAG, DEFAULT_RATE, Elbv2, LoadBalancers, Owner, TargetState};
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_testbed::moto::Moto;
use serde_json::json;
use tokio::time::Instant;

async fn group(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    vpc: &str,
    name: &str,
    delay: u64,
    target_type: &str,
    tags: &[(&str, &str)],
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
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
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
        .unwrap();
    for (key, value) in tags {
        elb.add_tags()
            .resource_arns(&arn)
            .tags(Tag::builder().key(*key).value(*value).build())
            .send()
            .await
            .unwrap();
    }
    arn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_found_over_pages_classified_and_deregistered_targets_drain() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .expect("moto starts (scripts/test --setup installs it in the venv)");
    // Pages of two groups, whatever the client asks: the lookup must follow NextMarker.
    moto.post("/_quiesce/elbv2", &json!({"maxPage": 2}))
        .unwrap();
    let config = sdk_config(&AwsOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url().to_string()),
    })
    .await
    .into_builder()
    .credentials_provider(aws_sdk_autoscaling::config::SharedCredentialsProvider::new(
        aws_sdk_autoscaling::config::Credentials::new("testing", "testing", None, None, "test"),
    ))
    .build();
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let vpc = moto.default_vpc().unwrap();
    let asg = aws_sdk_autoscaling::Client::new(&config);

    let controller = group(
        &elb,
        &vpc,
        "k8s-web",
        3,
        "instance",
        &[(CONTROLLER_TAG, "prod")],
    )
    .await;
    let foreign = group(&elb, &vpc, "terraform", 2, "instance", &[("team", "edge")]).await;
    let attached = group(&elb, &vpc, "asg-tg", 300, "instance", &[]).await;
    let _pods = group(&elb, &vpc, "k8s-ip", 10, "ip", &[(CONTROLLER_TAG, "prod")]).await;
    let _empty = group(&elb, &vpc, "empty", 10, "instance", &[]).await;

    asg.create_launch_configuration()
        .launch_configuration_name("lc")
        .image_id("ami-12c6146b")
        .instance_type("t3.medium")
        .send()
        .await
        .unwrap();
    // moto registers the group's instances in its attached target groups, as AWS does.
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("workers")
        .launch_configuration_name("lc")
        .min_size(1)
        .max_size(1)
        .availability_zones("us-east-1a")
        .target_group_arns(&attached)
        .send()
        .await
        .unwrap();
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("workers")
        .send()
        .await
        .unwrap();
    let instance = groups.auto_scaling_groups()[0].instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    for arn in [&controller, &foreign] {
        elb.register_targets()
            .target_group_arn(arn)
            .targets(TargetDescription::builder().id(&instance).build())
            .send()
            .await
            .unwrap();
    }

    let lb = Elbv2::new(&config, DEFAULT_RATE);
    let mut found = lb.memberships(&instance, Some("workers")).await.unwrap();
    found.sort_by(|a, b| a.group.name.cmp(&b.group.name));
    let summary: Vec<(&str, &Owner, u64)> = found
        .iter()
        .map(|m| {
            (
                m.group.name.as_str(),
                &m.group.owner,
                m.group.delay.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("asg-tg", &Owner::AutoScaling, 300),
            (
                "k8s-web",
                &Owner::Controller {
                    cluster: "prod".into()
                },
                3
            ),
            ("terraform", &Owner::Foreign, 2),
        ],
        "the IP-mode group and the empty one are not the instance's"
    );
    assert!(
        found
            .iter()
            .all(|m| m.state == TargetState::Serving("healthy".into())),
        "{found:?}"
    );

    // Drained by hand, not by its group: no attachment deregisters it, so the group's own
    // target group counts as anyone else's.
    let by_hand = lb.memberships(&instance, None).await.unwrap();
    assert!(
        by_hand
            .iter()
            .any(|m| m.group.name == "asg-tg" && m.group.owner == Owner::Foreign),
        "{by_hand:?}"
    );

    // Deregistered, the target drains for the group's delay, then it is out.
    let terraform = &found
        .iter()
        .find(|m| m.group.name == "terraform")
        .unwrap()
        .group;
    lb.deregister(terraform, &instance).await.unwrap();
    let deregistered = Instant::now();
    assert_eq!(
        lb.state(terraform, &instance).await.unwrap(),
        TargetState::Draining
    );
    let deadline = deregistered + Duration::from_secs(30);
    while lb.state(terraform, &instance).await.unwrap() != TargetState::Out {
        assert!(Instant::now() < deadline, "still draining after 30s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained_after = deregistered.elapsed();
    assert!(
        drained_after >= Duration::from_millis(1500),
        "out only after the 2 s delay, not {drained_after:?}"
    );
    let log = moto.elbv2_log().unwrap();
    assert!(
        log.iter()
            .any(|e| e["event"] == "drained" && e["group"] == "terraform"),
        "{log:?}"
    );
}
