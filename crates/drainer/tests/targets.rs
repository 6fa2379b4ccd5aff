//! The `targets-deregistered` phase end to end (issue 17): moto's Auto Scaling, SQS and ELBv2
//! (tests/moto/elbv2_ext.py: deregistration delays, and a stand-in for the AWS Load Balancer
//! Controller that reads the sandbox's Nodes and deregisters the fenced ones from the target
//! groups tagged with its cluster), the sandbox for Kubernetes, the production handler and
//! queue loop in between.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::Api;
use quiesce_aws::elbv2::{CONTROLLER_TAG, DEFAULT_RATE, Elbv2, TargetState};
use quiesce_aws::hooks::AutoScaling;
use quiesce_aws::record::Phase;
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, LoadBalancerWait, OnLbDrainTimeout, Settings};
use quiesce_kube::cluster::Cordon;
use quiesce_kube::kube_cluster::{EXCLUDE_LB_LABEL, FENCE_TAINT};
use quiesce_testbed::aws::target_group;
use serde_json::{Value, json};
use support::{Bed, bed};

const CLUSTER: &str = "lab";

/// The bed's hook times out after this without a heartbeat: longer waits prove heartbeats.
const HEARTBEAT_TIMEOUT: i32 = 4;

struct Lb<'a> {
    bed: &'a Bed,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    vpc: String,
}

impl<'a> Lb<'a> {
    /// The ELBv2 side of `bed`, with the controller stand-in watching its sandbox.
    fn new(bed: &'a Bed) -> Lb<'a> {
        let started = bed
            .moto
            .post(
                "/_quiesce/elbv2/controller",
                &json!({"apiServer": bed.sandbox.url(), "cluster": CLUSTER}),
            )
            .unwrap();
        assert!(!started.is_empty());
        Lb {
            bed,
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&bed.aws),
            vpc: bed.moto.default_vpc().unwrap(),
        }
    }

    /// An instance-mode target group with `delay` seconds of deregistration delay, tagged as
    /// the controller's when `controller`, holding `instances`.
    async fn group(&self, name: &str, delay: u64, controller: bool, instances: &[&str]) -> String {
        let tags: &[(&str, &str)] = if controller {
            &[(CONTROLLER_TAG, CLUSTER)]
        } else {
            &[]
        };
        target_group(
            &self.elb, &self.vpc, name, "instance", delay, tags, instances,
        )
        .await
    }

    async fn state(&self, arn: &str, instance: &str) -> TargetState {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .targets(TargetDescription::builder().id(instance).build())
            .send()
            .await
            .unwrap();
        let health = out.target_health_descriptions()[0].target_health().unwrap();
        TargetState::of(health.state(), health.reason())
    }

    /// The handler of production, with the ELBv2 client, fencing nodes (label and taint).
    fn handler(&self, load_balancers: LoadBalancerWait) -> Arc<Handler<AutoScaling>> {
        let settings = Settings {
            cluster: Some(CLUSTER.into()),
            cordon: Cordon {
                taint: None,
                exclude_from_load_balancers: true,
                fence_taint: true,
            },
            load_balancers,
            ..self.bed.settings()
        };
        let client = self.bed.sandbox.client();
        Arc::new(
            Handler::new(
                client.clone(),
                NodeIndex::listed(client),
                AutoScaling::new(&self.bed.aws),
                settings,
                Arc::new(Metrics::default()),
            )
            .with_load_balancers(Arc::new(Elbv2::new(&self.bed.aws, DEFAULT_RATE))),
        )
    }

    /// Terminates `instance` and lets `handler`'s queue loop handle it until moto records
    /// `result`.
    async fn handle(&self, handler: &Arc<Handler<AutoScaling>>, instance: &str, result: &str) {
        let (stop, task) = self
            .bed
            .run_worker(handler.clone(), Duration::from_secs(30));
        self.bed.terminate(instance).await;
        self.bed
            .wait_result(instance, result, Duration::from_secs(90))
            .await;
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    fn log(&self) -> Vec<Value> {
        tokio::task::block_in_place(|| self.bed.moto.elbv2_log().unwrap())
    }
}

/// The Unix time of the first log entry with `event` for `target` (and `group`, if given).
fn at(log: &[Value], event: &str, target: &str, group: Option<&str>) -> Option<f64> {
    log.iter()
        .find(|e| {
            e["event"] == event && e["target"] == target && group.is_none_or(|g| e["group"] == g)
        })
        .and_then(|e| e["at"].as_f64())
}

/// The phase histogram's count and sum for `targets-deregistered`.
fn phase(handler: &Handler<AutoScaling>) -> (u64, f64) {
    let text = handler.metrics().encode();
    let sample = |suffix: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "quiesce_drain_phase_seconds_{suffix}{{phase=\"targets-deregistered\"}}"
                ))?
                .trim()
                .parse::<f64>()
                .ok()
            })
            .unwrap_or(0.0)
    };
    (sample("count") as u64, sample("sum"))
}

fn has_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == FENCE_TAINT))
}

fn label(node: &Node) -> Option<String> {
    node.metadata
        .labels
        .as_ref()?
        .get(EXCLUDE_LB_LABEL)
        .cloned()
}

async fn events(bed: &Bed, node: &str, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(bed.sandbox.client(), "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(node))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_comes_only_after_both_controller_groups_dropped_the_fenced_node() {
    let bed = bed(3, 0, HEARTBEAT_TIMEOUT, "").await;
    let lb = Lb::new(&bed);
    let victim = bed.instances[0].clone();
    let short = lb.group("web-3s", 3, true, &[&victim]).await;
    let long = lb.group("api-6s", 6, true, &[&victim]).await;
    let handler = lb.handler(LoadBalancerWait::default());

    lb.handle(&handler, &victim, "CONTINUE").await;

    let node = bed.node("node-1").await;
    assert_eq!(label(&node).as_deref(), Some("quiesce"), "{node:?}");
    assert!(has_taint(&node), "fenced with the taint: {node:?}");
    let log = lb.log();
    let done = at(&log, "completed", &victim, None).expect("CONTINUE is logged");
    for (group, delay) in [("web-3s", 3.0), ("api-6s", 6.0)] {
        let deregistered = at(&log, "deregistered", &victim, Some(group)).unwrap_or_else(|| {
            panic!("the controller deregistered the node from {group}: {log:#?}")
        });
        let drained = at(&log, "drained", &victim, Some(group))
            .unwrap_or_else(|| panic!("{group} drained: {log:#?}"));
        assert!(
            log.iter().any(|e| e["event"] == "deregistered"
                && e["group"] == group
                && e["by"] == "controller"),
            "{log:#?}"
        );
        assert!(
            (drained - deregistered - delay).abs() < 0.5,
            "{group}: {log:#?}"
        );
        assert!(
            done >= drained,
            "CONTINUE after {group} dropped the node: {log:#?}"
        );
    }
    assert_eq!(lb.state(&short, &victim).await, TargetState::Out);
    assert_eq!(lb.state(&long, &victim).await, TargetState::Out);
    let action = bed.action_for(&victim).await.unwrap();
    assert!(
        action["heartbeats"].as_u64().unwrap() >= 2,
        "the hook was heartbeated through the wait: {action}"
    );
    let (count, seconds) = phase(&handler);
    assert_eq!(count, 1, "one targets-deregistered phase observed");
    println!("targets-deregistered phase: {seconds:.2}s (6 s delay, fence at the cordon)");
    assert_eq!(bed.record("node-1").await.unwrap().phase, Phase::Continued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_still_draining_at_the_bound_follows_the_policy_with_the_reason() {
    let bed = bed(3, 0, 30, "").await;
    let lb = Lb::new(&bed);
    let [first, second, third] = [0, 1, 2].map(|i| bed.instances[i].clone());
    lb.group("slow", 300, true, &[&first, &second, &third])
        .await;
    // A label the user set on node-1 is theirs: the ABANDON leaves it. node-2 was cordoned
    // by an operator before its hook: it stays cordoned, but not fenced.
    let nodes = Api::<Node>::all(bed.sandbox.client());
    for (node, patch) in [
        (
            "node-1",
            json!({"metadata": {"labels": {EXCLUDE_LB_LABEL: "maintenance"}}}),
        ),
        ("node-2", json!({"spec": {"unschedulable": true}})),
    ] {
        nodes
            .patch(node, &Default::default(), &kube::api::Patch::Merge(patch))
            .await
            .unwrap();
    }
    let bounded = LoadBalancerWait {
        timeout: Some(Duration::from_secs(3)),
        ..LoadBalancerWait::default()
    };

    let abandoning = lb.handler(bounded.clone());
    lb.handle(&abandoning, &first, "ABANDON").await;
    let record = bed.record("node-1").await.unwrap();
    assert_eq!(record.phase, Phase::Abandoned);
    let reason = record.reason.unwrap_or_default();
    assert!(
        reason.contains("still a target") && reason.contains("slow (draining)"),
        "{reason}"
    );
    let node = bed.node("node-1").await;
    assert!(
        !has_taint(&node),
        "the ABANDON removed the fence taint: {node:?}"
    );
    assert_eq!(
        label(&node).as_deref(),
        Some("maintenance"),
        "the user's label stays"
    );
    assert!(!quiesce_core::capacity::is_cordoned(&node));

    lb.handle(&abandoning, &second, "ABANDON").await;
    let node = bed.node("node-2").await;
    assert!(
        quiesce_core::capacity::is_cordoned(&node),
        "the operator's cordon stays"
    );
    assert!(!has_taint(&node), "but not the fence: {node:?}");
    assert_eq!(label(&node), None, "{node:?}");

    let continuing = lb.handler(LoadBalancerWait {
        on_timeout: OnLbDrainTimeout::Continue,
        ..bounded
    });
    lb.handle(&continuing, &third, "CONTINUE").await;
    let warned = events(&bed, "node-3", "TargetsStillDraining").await;
    assert!(
        warned
            .iter()
            .any(|m| m.contains("slow (draining)") && m.contains("continuing")),
        "{warned:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_group_is_skipped_with_a_warning_unless_asked_and_no_group_is_no_wait() {
    // A fourth node keeps room for the replacements of three drained ones.
    let bed = bed(4, 0, 30, "").await;
    let lb = Lb::new(&bed);
    let (first, second, third) = (
        bed.instances[0].clone(),
        bed.instances[1].clone(),
        bed.instances[2].clone(),
    );
    let terraform = lb.group("terraform", 2, false, &[&first, &second]).await;

    let skipping = lb.handler(LoadBalancerWait::default());
    lb.handle(&skipping, &first, "CONTINUE").await;
    let warned = events(&bed, "node-1", "TargetGroupSkipped").await;
    assert!(
        warned
            .iter()
            .any(|m| m.contains("terraform") && m.contains("--deregister-foreign-targets")),
        "{warned:?}"
    );
    // node-3's instance is in no target group: no wait, no phase.
    lb.handle(&skipping, &third, "CONTINUE").await;
    assert_eq!(
        phase(&skipping).0,
        0,
        "no targets-deregistered phase without a waited group"
    );
    let log = lb.log();
    assert!(at(&log, "deregistered", &first, None).is_none(), "{log:#?}");
    assert!(at(&log, "deregistered", &third, None).is_none(), "{log:#?}");

    let deregistering = lb.handler(LoadBalancerWait {
        deregister_foreign: true,
        ..LoadBalancerWait::default()
    });
    lb.handle(&deregistering, &second, "CONTINUE").await;
    let log = lb.log();
    let by_us = log
        .iter()
        .find(|e| e["event"] == "deregistered" && e["target"] == second.as_str())
        .unwrap_or_else(|| panic!("the drainer deregistered node-2: {log:#?}"));
    assert_eq!(by_us["by"], "api");
    let drained = at(&log, "drained", &second, Some("terraform")).unwrap();
    let done = at(&log, "completed", &second, None).unwrap();
    assert!(done >= drained, "CONTINUE after the delay: {log:#?}");
    assert_eq!(lb.state(&terraform, &second).await, TargetState::Out);
    assert_eq!(phase(&deregistering).0, 1);
}
