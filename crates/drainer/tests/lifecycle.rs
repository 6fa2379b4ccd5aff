//! The terminate hook end to end, against real servers on loopback: moto (Auto Scaling and
//! SQS, with quiesce's lifecycle-hook extension) reached through aws-sdk-rust, and the sandbox
//! reached through kube-rs. The notifications are the ones the extension sends to the hook's
//! SQS target, in the documented direct-notification shape.

mod support;

use std::time::Duration;

use quiesce_aws::record::Phase;
use quiesce_drainer::UnknownInstance;
use support::{GROUP, bed, metric, ready_pods};

fn count(value: &serde_json::Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_drains_then_continues_exactly_once() {
    let bed = bed(3, 0, 30, "").await;
    let handler = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(30));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;

    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(60))
        .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["completedBy"], "api", "{action}");
    assert_eq!(count(&action["completions"]), 1, "{action}");
    assert!(count(&action["heartbeats"]) >= 1, "{action}");

    // Only once the node was empty and the replacements Ready elsewhere.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(bed.sandbox.client());
    let left = pods
        .list(&kube::api::ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    assert!(
        left.items.iter().all(|p| p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DaemonSet")),
        "only DaemonSet pods stay on node-1"
    );
    assert_eq!(ready_pods(&bed.sandbox, "app=web").await, 3);
    let record = bed
        .record("node-1")
        .await
        .expect("the record stays on the node");
    assert_eq!(record.phase, Phase::Continued);
    assert_eq!(record.token, action["token"].as_str().unwrap());
    let group = bed
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(GROUP)
        .send()
        .await
        .unwrap();
    assert!(
        group.auto_scaling_groups()[0]
            .instances()
            .iter()
            .all(|i| i.instance_id() != Some(victim.as_str())),
        "the instance terminated after CONTINUE"
    );

    // The same notification again (SQS delivers at least once): recognised, not re-run.
    let deleted = || async {
        metric(
            &handler.metrics().encode(),
            "quiesce_sqs_messages_total{outcome=\"deleted\"}",
        )
    };
    bed.wait_for(
        "the action's message deleted",
        Duration::from_secs(10),
        || async { bed.visible_bodies().await.is_empty() },
    )
    .await;
    let before = deleted().await;
    bed.send(&support::notification(&victim, &action["token"]))
        .await;
    bed.wait_for("the duplicate deleted", Duration::from_secs(15), || async {
        deleted().await > before
    })
    .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(
        count(&action["completions"]),
        1,
        "still one completion: {action}"
    );
    let text = handler.metrics().encode();
    assert_eq!(
        metric(
            &text,
            "quiesce_lifecycle_completions_total{result=\"continue\"}"
        ),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "quiesce_drains_total{result=\"drained\"}"),
        1,
        "{text}"
    );

    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_drain_heartbeats_then_abandons_and_uncordons_at_the_deadline() {
    let bed = bed(3, 0, 3, support::BLOCKER).await;
    let (node, victim) = bed.blocked_instance().await;
    let handler = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(30));
    bed.terminate(&victim).await;

    bed.wait_for("the hook completed", Duration::from_secs(90), || async {
        bed.action_for(&victim)
            .await
            .is_some_and(|a| !a["result"].is_null())
    })
    .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["result"], "ABANDON", "{action}");
    assert_eq!(
        action["completedBy"], "api",
        "abandoned by us, not by the timeout: {action}"
    );
    assert!(
        count(&action["heartbeats"]) >= 3,
        "heartbeats kept the 3 s hook alive while the budget blocked: {action}"
    );
    let n = bed.node(&node).await;
    assert!(
        !n.spec.as_ref().unwrap().unschedulable.unwrap_or(false),
        "the node is schedulable again"
    );
    let record = bed.record(&node).await.unwrap();
    assert_eq!(record.phase, Phase::Abandoned);
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("did not finish"),
        "{record:?}"
    );
    assert!(
        !bed.abandoned_events(&node).await.is_empty(),
        "an Event tells people why the node is still there"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drainer_killed_mid_drain_is_resumed_by_the_next_and_completes_once() {
    let bed = bed(3, 0, 30, "").await;
    let first = bed.handler(bed.settings());
    let (_stop, task) = bed.run_worker(first, Duration::from_secs(3));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_for("the drain under way", Duration::from_secs(30), || async {
        bed.record("node-1")
            .await
            .is_some_and(|r| r.phase == Phase::Draining)
            && bed.node("node-1").await.spec.unwrap().unschedulable == Some(true)
    })
    .await;
    // The process dies: the task and every future it owns are dropped mid-drain.
    task.abort();
    let _ = task.await;
    assert!(
        bed.action_for(&victim).await.unwrap()["result"].is_null(),
        "killed before completing"
    );

    let second = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(second.clone(), Duration::from_secs(3));
    bed.wait_result(&victim, "CONTINUE", Duration::from_secs(60))
        .await;
    let actions: Vec<_> = bed
        .actions()
        .await
        .into_iter()
        .filter(|a| a["instanceId"] == victim.as_str())
        .collect();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(count(&actions[0]["completions"]), 1, "{actions:?}");
    assert_eq!(bed.record("node-1").await.unwrap().phase, Phase::Continued);
    let text = second.metrics().encode();
    assert_eq!(
        metric(
            &text,
            "quiesce_lifecycle_completions_total{result=\"continue\"}"
        ),
        1,
        "{text}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_foreign_and_unknown_messages_are_handled_by_policy() {
    let bed = bed(2, 1, 30, "").await;
    let stranger = bed.strangers[0].clone();
    let mut settings = bed.settings();
    settings.cluster = Some("ours".into());
    let ignoring = bed.handler(settings.clone());
    let (stop, task) = bed.run_worker(ignoring.clone(), Duration::from_secs(30));

    bed.send("this is not JSON").await;
    bed.send(r#"{"version":"0","source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","detail":{"state":"running"}}"#).await;
    // Another cluster's hook (its NotificationMetadata names it) on the same queue.
    let theirs = serde_json::json!({
        "version": "0", "id": "7bf73129", "detail-type": "EC2 Instance-terminate Lifecycle Action",
        "source": "aws.autoscaling", "account": "123456789012", "time": "2026-11-23T10:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {"LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
            "AutoScalingGroupName": "their-workers", "LifecycleHookName": "drain",
            "EC2InstanceId": "i-0feedfacefeedface", "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "NotificationMetadata": "{\"cluster\": \"theirs\"}"}
    });
    bed.send(&theirs.to_string()).await;
    bed.terminate(&stranger).await;

    let metrics = || ignoring.metrics().encode();
    bed.wait_for(
        "two invalid messages and two left",
        Duration::from_secs(20),
        || async {
            let text = metrics();
            metric(&text, "quiesce_sqs_messages_total{outcome=\"invalid\"}") == 2
                && metric(&text, "quiesce_sqs_messages_total{outcome=\"left\"}") >= 2
        },
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let bodies = bed.visible_bodies().await;
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("not JSON") && !b.contains("aws.ec2")),
        "invalid messages are deleted: {bodies:?}"
    );
    assert!(
        bed.action_for(&stranger).await.unwrap()["result"].is_null(),
        "ignore leaves a stranger's hook alone"
    );

    // With `--unknown-instance continue` the stranger's hook is completed; the other
    // cluster's message is still left alone.
    settings.unknown_instance = UnknownInstance::Continue;
    let continuing = bed.handler(settings);
    let (stop, task) = bed.run_worker(continuing.clone(), Duration::from_secs(30));
    bed.wait_result(&stranger, "CONTINUE", Duration::from_secs(30))
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    bed.wait_for(
        "the other cluster's message, left for its drainer, visible again",
        Duration::from_secs(10),
        || async {
            bed.visible_bodies()
                .await
                .iter()
                .any(|b| b.contains("their-workers"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_hook_continues_once_the_new_node_and_its_daemonset_pods_are_ready() {
    let bed = bed(2, 0, 30, "").await;
    let queue_arn = bed.queue_arn().await;
    bed.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name("quiesce-launch")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(30)
        .default_result("ABANDON")
        .notification_target_arn(&queue_arn)
        .role_arn("arn:aws:iam::123456789012:role/lifecycle")
        .send()
        .await
        .unwrap();
    let handler = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(30));
    bed.asg
        .set_desired_capacity()
        .auto_scaling_group_name(GROUP)
        .desired_capacity(3)
        .send()
        .await
        .unwrap();
    let launched = || async {
        bed.actions().await.into_iter().find(|a| {
            a["transition"]
                .as_str()
                .unwrap_or_default()
                .contains("LAUNCHING")
        })
    };
    bed.wait_for(
        "the drainer heartbeating the launch hook",
        Duration::from_secs(20),
        || async {
            launched()
                .await
                .is_some_and(|a| count(&a["heartbeats"]) >= 1)
        },
    )
    .await;
    let action = launched().await.unwrap();
    assert!(
        action["result"].is_null(),
        "no CONTINUE before the node exists: {action}"
    );

    // The instance boots and its kubelet registers the node.
    let instance = action["instanceId"].as_str().unwrap().to_string();
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "node-new", "labels": {"kubernetes.io/hostname": "node-new"}},
        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")},
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(bed.sandbox.client())
        .create(&Default::default(), &node)
        .await
        .unwrap();
    bed.wait_for(
        "CONTINUE for the launch",
        Duration::from_secs(30),
        || async { launched().await.is_some_and(|a| a["result"] == "CONTINUE") },
    )
    .await;
    let agent_ready = ready_pods(&bed.sandbox, "app=log-agent").await;
    assert_eq!(
        agent_ready, 3,
        "the new node's DaemonSet pod was Ready first"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_provider_id_is_found_by_private_dns_name() {
    let bed = bed(1, 1, 30, "").await;
    let stranger = bed.strangers[0].clone();
    let ec2 = quiesce_aws::ec2::Ec2::new(&bed.aws).unwrap();
    let dns = ec2
        .private_dns_name(&stranger)
        .await
        .unwrap()
        .expect("moto names the instance");
    // A kubelet without a cloud provider: named after the host, no providerID.
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": dns, "labels": {"kubernetes.io/hostname": dns}},
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(bed.sandbox.client())
        .create(&Default::default(), &node)
        .await
        .unwrap();
    let handler = std::sync::Arc::new(quiesce_drainer::Handler::new(
        bed.sandbox.client(),
        quiesce_drainer::nodes::NodeIndex::listed(bed.sandbox.client()).with_ec2_fallback(ec2),
        quiesce_aws::hooks::AutoScaling::new(&bed.aws),
        bed.settings(),
        std::sync::Arc::new(quiesce_drainer::metrics::Metrics::default()),
    ));
    let (stop, task) = bed.run_worker(handler, Duration::from_secs(30));
    bed.terminate(&stranger).await;
    bed.wait_result(&stranger, "CONTINUE", Duration::from_secs(30))
        .await;
    let record = bed
        .record(&dns)
        .await
        .expect("the action was recorded on that node");
    assert_eq!(record.instance_id, stranger);
    assert_eq!(record.phase, Phase::Continued);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_action_by_eventbridge_and_by_the_hook_target_completes_once() {
    let bed = bed(2, 0, 30, "").await;
    let queue_arn = bed.queue_arn().await;
    // Both routes configured at once, a common mistake: every action arrives twice, once as
    // the EventBridge event and once as the hook's direct notification.
    bed.route_eventbridge_to_queue(&queue_arn);
    let handler = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(30));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    let deleted = || {
        metric(
            &handler.metrics().encode(),
            "quiesce_sqs_messages_total{outcome=\"deleted\"}",
        )
    };
    // The test notification, then the action by both routes.
    bed.wait_for(
        "both deliveries handled and deleted",
        Duration::from_secs(60),
        || async { deleted() >= 3 && bed.visible_bodies().await.is_empty() },
    )
    .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["result"], "CONTINUE", "{action}");
    assert_eq!(count(&action["completions"]), 1, "{action}");
    let text = handler.metrics().encode();
    assert_eq!(
        metric(&text, "quiesce_drains_total{result=\"drained\"}"),
        1,
        "drained once: {text}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// A pod no controller will recreate: evicting it loses it, so the drain refuses (no --force).
const UNMANAGED: &str = r#"
objects:
  - apiVersion: v1
    kind: Pod
    metadata: {name: pet, namespace: default}
    spec:
      nodeName: node-1
      containers: [{name: pet, image: pet:1}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_instance_that_is_going_leaves_its_node_cordoned_with_the_reason() {
    let bed = bed(2, 0, 30, UNMANAGED).await;
    // A group without the retention the templates set: ABANDON terminates the instance.
    bed.without_retention().await;
    let handler = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(30));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_result(&victim, "ABANDON", Duration::from_secs(30))
        .await;
    bed.wait_for("the record final", Duration::from_secs(30), || async {
        bed.record("node-1")
            .await
            .is_some_and(|r| r.phase == Phase::Abandoned)
    })
    .await;
    let node = bed.node("node-1").await;
    assert_eq!(
        node.spec.as_ref().unwrap().unschedulable,
        Some(true),
        "no pod is invited onto a node whose instance is going"
    );
    let reason = bed
        .record("node-1")
        .await
        .unwrap()
        .reason
        .unwrap_or_default();
    assert!(
        reason.contains("stays cordoned") && reason.contains("blocked"),
        "{reason}"
    );
    let events = bed.abandoned_events("node-1").await;
    assert!(
        events.iter().any(|m| m.contains("blocked")),
        "an Event says why the hook was abandoned: {events:?}"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_blocker_abandons_at_once_and_leaves_the_node_schedulable() {
    let bed = bed(2, 0, 30, UNMANAGED).await;
    let handler = bed.handler(bed.settings());
    let (stop, task) = bed.run_worker(handler.clone(), Duration::from_secs(30));
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    bed.wait_result(&victim, "ABANDON", Duration::from_secs(30))
        .await;
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["completedBy"], "api", "{action}");
    let record = bed.record("node-1").await.unwrap();
    assert_eq!(record.phase, Phase::Abandoned);
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("blocked"),
        "{record:?}"
    );
    assert_ne!(
        bed.node("node-1").await.spec.unwrap().unschedulable,
        Some(true)
    );
    let pets: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(bed.sandbox.client(), "default");
    assert!(
        pets.get("pet")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "the unmanaged pod was not evicted"
    );

    // The same message again after the hook is gone from Auto Scaling and the record too (a
    // node replaced by hand): completing answers "No active Lifecycle Action", which counts
    // as done, and the message is deleted.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(bed.sandbox.client());
    nodes
        .patch(
            "node-1",
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {quiesce_aws::record::ANNOTATION: null}}})),
        )
        .await
        .unwrap();
    let mut settings = bed.settings();
    settings.unknown_instance = UnknownInstance::Continue;
    stop.send(true).unwrap();
    task.await.unwrap();
    let continuing = bed.handler(settings);
    let (stop, task) = bed.run_worker(continuing.clone(), Duration::from_secs(30));
    bed.send(&support::notification(
        "i-0000000000000dead",
        &action["token"],
    ))
    .await;
    bed.wait_for(
        "the stale message settled",
        Duration::from_secs(15),
        || async {
            // Whichever answers first: the completion ("not active") or the first heartbeat
            // (the hook is gone, so nothing is done).
            let text = continuing.metrics().encode();
            metric(
                &text,
                "quiesce_lifecycle_completions_total{result=\"not-active\"}",
            ) + metric(&text, "quiesce_drains_total{result=\"expired\"}")
                == 1
        },
    )
    .await;
    bed.wait_for(
        "the stale message deleted",
        Duration::from_secs(10),
        || async {
            bed.visible_bodies()
                .await
                .iter()
                .all(|b| !b.contains("i-0000000000000dead"))
        },
    )
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}
