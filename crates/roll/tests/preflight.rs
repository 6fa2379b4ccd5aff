//! Pre-flight against moto and the sandbox: every reason at once, then none once fixed.

mod support;

use aws_sdk_autoscaling::types::{InstanceLifecyclePolicy, RetentionAction, RetentionTriggers};
use k8s_openapi::api::coordination::v1::Lease;
use quiesce_roll::preflight::{DrainerCheck, Intent, Refusal, gather};
use quiesce_roll::refresh::Preferences;
use support::{GROUP, GroupSetup, bed, iam_role};

fn intent(p: &Preferences) -> Intent<'_> {
    Intent {
        preferences: p,
        version: Some("2"),
        rollback: true,
        skip_undrainable: false,
        drain: quiesce_core::DrainOptions {
            delete_emptydir_data: true,
            ..Default::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_with_every_reason_at_once_then_passes_once_fixed() {
    let bed = bed(
        GroupSetup {
            terminate_hook: Some("CONTINUE"),
            launch_hook: false,
            retain: false,
            ..GroupSetup::default()
        },
        "",
    )
    .await;
    let drainer = DrainerCheck::Lease {
        namespace: "default".into(),
        name: "quiesce-drainer".into(),
    };
    // Every instance at once: the budget lets one web pod go.
    let all_at_once = Preferences {
        min_healthy: 0,
        ..Preferences::default()
    };
    let (_, pre) = gather(
        &bed.refresh,
        bed.sandbox.client(),
        GROUP,
        &drainer,
        &intent(&all_at_once),
    )
    .await
    .unwrap();
    let has = |f: &dyn Fn(&Refusal) -> bool| pre.refusals.iter().any(f);
    assert_eq!(pre.batch, 3);
    assert!(
        has(&|r| matches!(r, Refusal::TerminateDefault { result, .. } if result == "CONTINUE")),
        "{:#?}",
        pre.refusals
    );
    assert!(
        has(&|r| matches!(r, Refusal::NoLaunchHook(_))),
        "{:#?}",
        pre.refusals
    );
    assert!(
        has(&|r| matches!(r, Refusal::NotRetained { found, .. } if found == "unset")),
        "{:#?}",
        pre.refusals
    );
    assert!(
        has(
            &|r| matches!(r, Refusal::Budget { pdb, in_batch: 3, allowed: 1, min_healthy: 67, .. } if pdb == "default/web")
        ),
        "{:#?}",
        pre.refusals
    );
    assert!(
        has(&|r| matches!(r, Refusal::NoDrainer(why) if why.contains("does not exist"))),
        "{:#?}",
        pre.refusals
    );
    assert!(
        has(&|r| matches!(r, Refusal::NoRoom { batch: 3, pods } if pods.contains("default/web-"))),
        "the whole group out leaves no room: {:#?}",
        pre.refusals
    );
    assert_eq!(pre.refusals.len(), 6, "{:#?}", pre.refusals);

    // No terminate hook at all.
    bed.asg
        .delete_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name("quiesce-drain")
        .send()
        .await
        .unwrap();
    let (_, pre) = gather(
        &bed.refresh,
        bed.sandbox.client(),
        GROUP,
        &drainer,
        &intent(&all_at_once),
    )
    .await
    .unwrap();
    assert!(
        pre.refusals
            .iter()
            .any(|r| matches!(r, Refusal::NoTerminateHook(_))),
        "{:#?}",
        pre.refusals
    );

    // Fixed: hooks, retention, a live drainer, batches of one.
    let queue = "arn:aws:sqs:us-east-1:123456789012:lifecycle";
    for (name, transition) in [
        ("quiesce-drain", "autoscaling:EC2_INSTANCE_TERMINATING"),
        ("quiesce-launch", "autoscaling:EC2_INSTANCE_LAUNCHING"),
    ] {
        bed.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(GROUP)
            .lifecycle_hook_name(name)
            .lifecycle_transition(transition)
            .default_result("ABANDON")
            .notification_target_arn(queue)
            .role_arn("arn:aws:iam::123456789012:role/lifecycle")
            .send()
            .await
            .unwrap();
    }
    bed.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .instance_lifecycle_policy(
            InstanceLifecyclePolicy::builder()
                .retention_triggers(
                    RetentionTriggers::builder()
                        .terminate_hook_abandon(RetentionAction::Retain)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "quiesce-drainer", "namespace": "default"},
        "spec": {"holderIdentity": "quiesce-drainer-0", "leaseDurationSeconds": 15,
                 "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now())}
    }))
    .unwrap();
    kube::Api::<Lease>::namespaced(bed.sandbox.client(), "default")
        .create(&Default::default(), &lease)
        .await
        .unwrap();
    let one = Preferences {
        min_healthy: 67,
        ..Preferences::default()
    };
    let (_, pre) = gather(
        &bed.refresh,
        bed.sandbox.client(),
        GROUP,
        &drainer,
        &intent(&one),
    )
    .await
    .unwrap();
    assert!(pre.refusals.is_empty(), "{:#?}", pre.refusals);
    assert_eq!((pre.size, pre.batch, pre.nodes.len()), (3, 1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_an_eks_managed_group() {
    let bed = bed(GroupSetup::default(), "").await;
    bed.asg
        .create_or_update_tags()
        .tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .resource_id(GROUP)
                .resource_type("auto-scaling-group")
                .key("eks:nodegroup-name")
                .value("ng-1")
                .propagate_at_launch(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let p = Preferences::default();
    let (_, pre) = gather(
        &bed.refresh,
        bed.sandbox.client(),
        GROUP,
        &DrainerCheck::Skip,
        &intent(&p),
    )
    .await
    .unwrap();
    assert!(
        pre.refusals
            .iter()
            .any(|r| matches!(r, Refusal::EksManaged { nodegroup, .. } if nodegroup == "ng-1")),
        "{:#?}",
        pre.refusals
    );
}

/// The Lambda mode has no Lease: pre-flight asks Lambda for an enabled event source mapping on
/// the terminate hook's queue, and refuses without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lambda_mode_needs_an_enabled_mapping_on_the_hooks_queue() {
    let bed = bed(GroupSetup::default(), "").await;
    let p = Preferences {
        min_healthy: 67,
        ..Preferences::default()
    };
    let judge = || async {
        let (_, pre) = gather(
            &bed.refresh,
            bed.sandbox.client(),
            GROUP,
            &DrainerCheck::Lambda,
            &intent(&p),
        )
        .await
        .unwrap();
        pre.refusals.into_iter().find_map(|r| match r {
            Refusal::NoDrainer(why) => Some(why),
            _ => None,
        })
    };
    let why = judge().await.expect("no mapping: refused");
    assert!(
        why.contains("no Lambda event source mapping reads"),
        "{why}"
    );

    let lambda = aws_sdk_lambda::Client::new(&bed.aws);
    let role = iam_role(&bed.moto, "quiesce-lambda");
    // An empty zip archive (its end-of-central-directory record): moto stores the code, and
    // nothing here invokes it.
    let mut empty_zip = b"PK\x05\x06".to_vec();
    empty_zip.resize(22, 0);
    lambda
        .create_function()
        .function_name("quiesce-lambda")
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role(role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(empty_zip))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let facts = bed.refresh.group(GROUP).await.unwrap().unwrap();
    let queue = quiesce_roll::mapping::terminate_queue(&facts)
        .expect("the bed's terminate hook targets its queue")
        .to_string();
    let mapping = lambda
        .create_event_source_mapping()
        .function_name("quiesce-lambda")
        .event_source_arn(&queue)
        .batch_size(1)
        .enabled(false)
        .send()
        .await
        .unwrap();
    let why = judge().await.expect("a disabled mapping: refused");
    assert!(why.contains("no enabled event source mapping"), "{why}");

    lambda
        .update_event_source_mapping()
        .uuid(mapping.uuid().unwrap())
        .enabled(true)
        .send()
        .await
        .unwrap();
    assert_eq!(judge().await, None, "an enabled mapping is a live drainer");
}
