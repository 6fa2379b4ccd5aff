//! Late and dead hooks: Auto Scaling is asked before acting, so a message whose hook already
//! timed out is not acted on; a hook that goes away mid-drain stops the work, and the node of
//! an instance that is going stays cordoned (pods must not be invited onto it).

mod support;

use std::time::Duration;

use quiesce_aws::record::Phase;
use quiesce_drainer::{Disposition, Done};
use support::bed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_read_after_its_hook_timed_out_is_not_acted_on() {
    let bed = bed(3, 0, 2, "").await;
    let victim = bed.instances[0].clone();
    bed.terminate(&victim).await;
    let body = bed.message_for(&victim).await;
    // Nobody handles it in time (a drainer outage): the hook's DefaultResult applies.
    bed.wait_for("the hook timed out", Duration::from_secs(30), || async {
        bed.action_for(&victim)
            .await
            .is_some_and(|a| !a["result"].is_null())
    })
    .await;
    let handler = bed.handler(bed.settings());
    let done = handler.handle(&body, None).await;
    assert!(matches!(done, Disposition::Done(Done::Expired)), "{done:?}");
    let node = bed.node("node-1").await;
    assert_ne!(
        node.spec.unwrap().unschedulable,
        Some(true),
        "no drain for a hook that is over"
    );
    assert!(bed.record("node-1").await.is_none(), "nothing recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_completed_elsewhere_mid_drain_stops_the_work_and_the_going_node_stays_cordoned() {
    let bed = bed(3, 0, 6, support::BLOCKER).await;
    // The operator's ABANDON terminates the instance.
    bed.without_retention().await;
    let (node, victim) = bed.blocked_instance().await;
    let mut settings = bed.settings();
    settings.drain_margin = Duration::from_secs(600);
    let handler = bed.handler(settings);
    let (stop, task) = bed.run_worker(handler, Duration::from_secs(30));
    bed.terminate(&victim).await;
    bed.wait_for("the drain under way", Duration::from_secs(30), || async {
        bed.record(&node)
            .await
            .is_some_and(|r| r.phase == Phase::Draining)
            && bed.node(&node).await.spec.unwrap().unschedulable == Some(true)
    })
    .await;
    // An operator (or another tool) answers the hook: the instance terminates.
    let action = bed.action_for(&victim).await.unwrap();
    bed.asg
        .complete_lifecycle_action()
        .auto_scaling_group_name(support::GROUP)
        .lifecycle_hook_name(support::HOOK)
        .lifecycle_action_token(action["token"].as_str().unwrap())
        .instance_id(&victim)
        .lifecycle_action_result("ABANDON")
        .send()
        .await
        .unwrap();
    bed.wait_for(
        "the drainer stopped and recorded why",
        Duration::from_secs(20),
        || async {
            bed.record(&node).await.is_some_and(|r| {
                r.phase == Phase::Abandoned
                    && r.reason
                        .as_deref()
                        .is_some_and(|why| why.contains("no longer active"))
            })
        },
    )
    .await;
    assert_eq!(
        bed.node(&node).await.spec.unwrap().unschedulable,
        Some(true),
        "the instance is going: its node stays cordoned"
    );
    let action = bed.action_for(&victim).await.unwrap();
    assert_eq!(action["completions"], 1, "only the operator's: {action}");
    stop.send(true).unwrap();
    task.await.unwrap();
}
