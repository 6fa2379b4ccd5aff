//! The Lambda takes `quiesce drainer`'s drain settings from the same `QUIESCE_…` variables:
//! with the environment the SAM template sets, a terminating node is labelled out of external
//! load balancers and tainted before its pods go, seen on the Node in the sandbox. (Before,
//! the Lambda never took a node out of its load balancers.)
//!
//! Its own test binary, with one test: the environment is the process's, and is set before
//! any thread starts.

#[path = "../../drainer/tests/support/mod.rs"]
mod support;

mod invocation;

use std::time::Duration;

use invocation::{delete, invocation_event, invoke};
use tokio::time::Instant;

const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

#[test]
#[allow(unsafe_code)]
fn the_lambdas_environment_takes_the_node_out_of_load_balancers() {
    // SAFETY: the only test of this binary, before the runtime (or any other thread) starts,
    // so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("QUIESCE_TAINT", "quiesce.io/draining=true:NoSchedule");
        std::env::set_var("QUIESCE_DRAIN_MARGIN", "5s");
        std::env::set_var("QUIESCE_REPLACEMENT_STARTUP", "2s");
        std::env::set_var("QUIESCE_KUBE_QPS", "20");
        std::env::set_var("QUIESCE_KUBE_BURST", "40");
    }
    let env = quiesce_lambda::settings_from_env().expect("the environment parses");
    let (settings, rate) = (env.handler, env.rate);
    assert_eq!(
        (rate.qps, rate.burst.get()),
        (20.0, 40),
        "the client's rate limit comes from QUIESCE_KUBE_QPS and QUIESCE_KUBE_BURST"
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let bed = support::bed(3, 0, 30, "").await;
            let victim = bed.instances[0].clone();
            bed.terminate(&victim).await;

            // One short invocation: enough to claim and fence the node, not to drain it.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(Instant::now() < deadline, "no lifecycle message arrived");
                let event = invocation_event(&bed).await;
                invoke(&bed, settings.clone(), &event, Duration::from_millis(600)).await;
                let mut found = false;
                for record in &event.records {
                    if record.body.as_deref().unwrap_or_default().contains(&victim) {
                        found = true;
                    } else {
                        delete(&bed, record).await;
                    }
                }
                if found {
                    break;
                }
            }

            let node = bed.node("node-1").await;
            let labels = node.metadata.labels.unwrap_or_default();
            assert_eq!(
                labels.get(EXCLUDE_LB_LABEL).map(String::as_str),
                Some("quiesce"),
                "the node stays in its load balancers: {labels:?}"
            );
            let spec = node.spec.unwrap_or_default();
            assert_eq!(spec.unschedulable, Some(true));
            let taints = spec.taints.unwrap_or_default();
            assert!(
                taints
                    .iter()
                    .any(|t| t.key == "quiesce.io/draining" && t.effect == "NoSchedule"),
                "QUIESCE_TAINT was not applied: {taints:?}"
            );
            // The other nodes are untouched.
            let other = bed.node("node-2").await.metadata.labels.unwrap_or_default();
            assert!(!other.contains_key(EXCLUDE_LB_LABEL), "{other:?}");
        });
}
