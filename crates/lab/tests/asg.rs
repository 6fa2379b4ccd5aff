//! The simulated Auto Scaling group on its own: lifecycle events in the shape the drainer
//! parses, DefaultResult when nobody answers a hook, and an instance refresh that keeps the
//! minimum healthy percentage while the production drainer completes the hooks.

use std::sync::Arc;
use std::time::Duration;

use quiesce_aws::event::{Message, Transition};
use quiesce_aws::queue::Queue;
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_lab::asg::{Group, GroupOptions, State};
use quiesce_lab::timeline::Timeline;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};

async fn sandbox(nodes: usize) -> Sandbox {
    Sandbox::start(SandboxOptions {
        scenario: Scenario::nodes_only(nodes),
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_launch_hook_is_abandoned_and_the_refresh_stops() {
    let sandbox = sandbox(2).await;
    let group = Group::adopt(
        sandbox.client(),
        GroupOptions {
            heartbeat_timeout: Duration::from_secs(1),
            boot: Duration::from_millis(100),
            ..GroupOptions::default()
        },
        Timeline::new(),
    )
    .await
    .unwrap();
    let old = group.in_service();
    assert_eq!(old.len(), 2, "both nodes adopted by their providerIDs");
    let replaced = group.refresh(&|_| {}).await;
    assert!(
        replaced.is_empty(),
        "nothing is terminated after a failed launch: {replaced:?}"
    );
    for id in &old {
        assert_eq!(group.state(id), Some(State::InService));
    }
    let messages = group
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    let launch = messages
        .iter()
        .map(|m| quiesce_aws::event::parse(&m.body).expect("the drainer can parse it"))
        .find_map(|m| match m {
            Message::Action(a) if a.transition == Transition::Launching => Some(a),
            _ => None,
        })
        .expect("an EC2 Instance-launch Lifecycle Action event was queued");
    assert_eq!(group.state(&launch.instance_id), Some(State::Terminated));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_at_half_healthy_replaces_two_at_a_time_through_the_drainer() {
    let sandbox = sandbox(4).await;
    let group = Group::adopt(
        sandbox.client(),
        GroupOptions {
            boot: Duration::from_millis(100),
            min_healthy_percentage: 50,
            ..GroupOptions::default()
        },
        Timeline::new(),
    )
    .await
    .unwrap();
    let client = sandbox.client();
    let handler = Arc::new(Handler::new(
        client.clone(),
        NodeIndex::listed(client),
        group.clone(),
        Settings::default(),
        Arc::new(Metrics::default()),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(quiesce_drainer::worker::run(
        Arc::new(group.clone()),
        handler,
        WorkerSettings {
            wait: Duration::from_millis(200),
            ..WorkerSettings::default()
        },
        stopped,
    ));
    let replaced = group.refresh(&|_| {}).await;
    assert_eq!(replaced.len(), 4, "{replaced:?}");
    assert!(
        replaced.iter().all(|r| r.result == "terminated"),
        "{replaced:?}"
    );
    // Two batches of two: each pair shares its launch.
    assert_eq!(replaced[0].launch_seconds, replaced[1].launch_seconds);
    assert_eq!(replaced[2].launch_seconds, replaced[3].launch_seconds);
    assert_ne!(replaced[0].launch_seconds, replaced[2].launch_seconds);
    assert_eq!(group.in_service().len(), 4);
    stop.send_replace(true);
    worker.await.unwrap();
    sandbox.shutdown().await;
}

/// The next lifecycle action of `transition` the group queues, within ten seconds.
async fn next_action(group: &Group, transition: Transition) -> quiesce_aws::event::LifecycleAction {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {transition:?} action was queued"
        );
        let messages = group
            .receive(10, Duration::from_millis(200), Duration::from_secs(30))
            .await
            .unwrap();
        let found = messages.iter().find_map(|m| {
            match quiesce_aws::event::parse(&m.body).expect("the drainer can parse it") {
                Message::Action(a) if a.transition == transition => Some(a),
                _ => None,
            }
        });
        if let Some(action) = found {
            return action;
        }
    }
}

/// `DescribeAutoScalingInstances` as the drainer reads it before acting, answered from the
/// group's own state through each hook: waiting, moved on once completed, gone once
/// terminated, and not in the group for another group's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_check_follows_the_groups_state() {
    use quiesce_aws::hooks::{HookResult, InstanceCheck, LifecycleHooks};

    let sandbox = sandbox(1).await;
    let group = Group::adopt(
        sandbox.client(),
        GroupOptions {
            boot: Duration::from_millis(100),
            ..GroupOptions::default()
        },
        Timeline::new(),
    )
    .await
    .unwrap();
    let refresh = tokio::spawn({
        let group = group.clone();
        async move { group.refresh(&|_| {}).await }
    });

    let launch = next_action(&group, Transition::Launching).await;
    assert_eq!(group.check(&launch).await.unwrap(), InstanceCheck::Waiting);
    let elsewhere = quiesce_aws::event::LifecycleAction {
        group: "another-group".into(),
        ..launch.clone()
    };
    assert_eq!(
        group.check(&elsewhere).await.unwrap(),
        InstanceCheck::NotInGroup
    );
    group.complete(&launch, HookResult::Continue).await.unwrap();
    assert_eq!(
        group.check(&launch).await.unwrap(),
        InstanceCheck::Moved("InService".into()),
        "a completed launch hook is not waiting any more"
    );

    let terminate = next_action(&group, Transition::Terminating).await;
    assert_eq!(
        group.check(&terminate).await.unwrap(),
        InstanceCheck::Waiting
    );
    group
        .complete(&terminate, HookResult::Continue)
        .await
        .unwrap();
    assert_eq!(
        group.check(&terminate).await.unwrap(),
        InstanceCheck::NotInGroup,
        "a terminated instance leaves the group"
    );
    let replaced = tokio::time::timeout(Duration::from_secs(30), refresh)
        .await
        .expect("the refresh ends")
        .unwrap();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    sandbox.shutdown().await;
}
