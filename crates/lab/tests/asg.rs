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
use quiesce_lab::asg::refresh::{PREVIOUS_VERSION, RefreshingGroup};
use quiesce_lab::asg::{Group, GroupOptions, State};
use quiesce_lab::timeline::Timeline;
use quiesce_roll::refresh::{Preferences, Refresh, RefreshState, Status};
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

/// The production drainer's queue loop on `group`; send `true` to stop it.
fn drainer(
    sandbox: &Sandbox,
    group: &Group,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
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
    (stop, worker)
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
    let (stop, worker) = drainer(&sandbox, &group);
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

/// The refresh `id` of `target` once it has ended, within a minute.
async fn ended(target: &RefreshingGroup, id: &str) -> RefreshState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let state = target.describe("lab-workers", id).await.unwrap();
        if state.status.is_final() {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh did not end: {state:?}"
        );
        tick.tick().await;
    }
}

/// The group behind `quiesce roll`'s Refresh trait, through the production drainer: a
/// refresh replaces every instance with one on the new version; a rollback called while the
/// next refresh's first batch is in flight lets that batch finish, then puts the previous
/// version back on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_interface_replaces_every_instance_and_a_rollback_restores_the_previous_version()
 {
    let sandbox = sandbox(2).await;
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
    let (stop, worker) = drainer(&sandbox, &group);
    let (target, driver) = RefreshingGroup::new(group.clone());
    let driving = tokio::spawn(async move {
        let quiet = |_: &str| {};
        driver.run(&quiet).await
    });
    let old = group.in_service();
    let facts = target.facts();
    assert_eq!(
        facts.launch_template_version.as_deref(),
        Some(PREVIOUS_VERSION)
    );
    assert_eq!(facts.terminate_hook_abandon.as_deref(), Some("retain"));
    let preferences = Preferences {
        min_healthy: 50,
        ..Preferences::default()
    };
    assert!(
        target.cancel("lab-workers").await.is_err(),
        "nothing to cancel"
    );
    assert!(target.start("other", "2", &preferences).await.is_err());

    let id = target
        .start("lab-workers", "2", &preferences)
        .await
        .unwrap();
    let refused = target.start("lab-workers", "2", &preferences).await;
    assert!(
        refused.is_err_and(|e| e.message.contains("InstanceRefreshInProgress")),
        "one refresh at a time"
    );
    let state = ended(&target, &id).await;
    assert_eq!((state.status, state.percent), (Status::Successful, 100));
    let after = target.instances("lab-workers").await.unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    for i in &after {
        assert!(!old.contains(&i.id), "{after:?}");
        assert_eq!(
            (i.state.as_str(), i.version.as_deref()),
            ("InService", Some("2"))
        );
    }

    let id = target
        .start("lab-workers", "3", &preferences)
        .await
        .unwrap();
    // Once the first batch is in flight (its replacement launched on version 3).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !target
        .instances("lab-workers")
        .await
        .unwrap()
        .iter()
        .any(|i| i.version.as_deref() == Some("3"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no launch on version 3"
        );
        tick.tick().await;
    }
    target.rollback("lab-workers").await.unwrap();
    let state = ended(&target, &id).await;
    assert_eq!(state.status, Status::RollbackSuccessful, "{state:?}");
    let back = target.instances("lab-workers").await.unwrap();
    assert_eq!(back.len(), 2, "{back:?}");
    for i in &back {
        assert_eq!(
            (i.state.as_str(), i.version.as_deref()),
            ("InService", Some("2")),
            "{back:?}"
        );
    }
    let replacements = target.replacements();
    assert_eq!(
        replacements.iter().filter(|r| !r.rollback).count(),
        3,
        "two forward, then the batch in flight at the rollback: {replacements:?}"
    );
    assert_eq!(
        replacements.iter().filter(|r| r.rollback).count(),
        1,
        "the rollback replaced the one instance on version 3: {replacements:?}"
    );
    assert!(replacements.iter().all(|r| r.result == "terminated"));
    driving.abort();
    stop.send_replace(true);
    worker.await.unwrap();
    sandbox.shutdown().await;
}
