//! The target-group lookup against moto's ELBv2 (with tests/moto/elbv2_ext.py: deregistration
//! delays and paging), through the same aws-sdk-rust calls production makes.

use std::time::Duration;

use quiesce_aws::elbv2::{CONTROLLER_TAG, DEFAULT_RATE, Elbv2, LoadBalancers, Owner, TargetState};
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_testbed::aws::{instance, target_group, with_test_credentials};
use quiesce_testbed::moto::Moto;
use serde_json::json;
use tokio::time::Instant;

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
    .await;
    let config = with_test_credentials(config);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let vpc = moto.default_vpc().unwrap();

    let attached = target_group(&elb, &vpc, "asg-tg", "instance", 300, &[], &[]).await;
    // moto registers the group's instances in its attached target groups, as AWS does.
    let instance = instance(&config, "workers", std::slice::from_ref(&attached)).await;
    let ours = [(CONTROLLER_TAG, "prod")];
    target_group(&elb, &vpc, "k8s-web", "instance", 3, &ours, &[&instance]).await;
    let team = [("team", "edge")];
    target_group(&elb, &vpc, "terraform", "instance", 2, &team, &[&instance]).await;
    target_group(&elb, &vpc, "k8s-ip", "ip", 10, &ours, &[]).await;
    target_group(&elb, &vpc, "empty", "instance", 10, &[], &[]).await;

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
