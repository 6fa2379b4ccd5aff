//! The data plane against the sandbox, in real time with real sockets: a pod deleted under
//! traffic drops requests when its app stops on SIGTERM while kube-proxy still routes to it,
//! and drops none when the app drains for longer than the propagation delay.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use quiesce_lab::dataplane::{App, AppBehaviour, Balancer, Listen, PodServers};
use quiesce_lab::timeline::{Timeline, kind, watch_cluster};
use quiesce_lab::traffic::{Route, Traffic, TrafficOptions, TrafficStats};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};

const SCENARIO: &str = r#"
nodes:
  - {namePrefix: node-, count: 2}
objects:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: default, labels: {app: web}}
    spec:
      replicas: 3
      selector: {matchLabels: {app: web}}
      template:
        metadata:
          labels: {app: web}
          # The app takes 4 s to exit after SIGTERM: longer than the drain delay, so the pod
          # object outlives the drain (the kubelet removes it when the app has exited).
          annotations: {sandbox.quiesce.io/startup-delay: 1s, sandbox.quiesce.io/shutdown-delay: 4s}
        spec:
          terminationGracePeriodSeconds: 30
          containers:
            - name: web
              image: registry.example/web:1.0
              env: [{name: QUIESCE_DRAIN_DELAY, value: 3s}]
              ports: [{name: http, containerPort: 8080}]
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: default}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
"#;

const PROPAGATION: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(15);

/// Polls a condition until it holds or the deadline passes (the condition is the
/// synchronisation; the short pause only keeps the loop from spinning).
async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes one web pod under traffic and returns what the traffic saw.
async fn delete_one_pod_under_traffic(behaviour: AppBehaviour) -> (TrafficStats, Timeline) {
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: Scenario::from_yaml(SCENARIO, "test").unwrap(),
        ..Default::default()
    })
    .await
    .expect("the sandbox starts");
    let client = sandbox.client();
    let timeline = Timeline::new();
    let _watch = watch_cluster(client.clone(), timeline.clone());
    let servers = PodServers::start(
        client.clone(),
        "default",
        "app=web",
        App {
            behaviour,
            work: Duration::from_millis(5),
            listen: Listen::Ephemeral,
        },
        timeline.clone(),
    );
    let registry = servers.registry();
    let balancer = Balancer::start(
        client.clone(),
        "default",
        "web",
        PROPAGATION,
        registry.clone(),
        timeline.clone(),
    );
    let served = {
        let registry = registry.clone();
        move |ips: &[String]| ips.len() == 3 && ips.iter().all(|ip| registry.get(ip).is_some())
    };
    assert!(
        balancer.wait_until(DEADLINE, served.clone()).await,
        "3 ready endpoints with servers"
    );

    let traffic = Traffic::start(
        vec![("web".into(), Route::Balancer(balancer.clone()))],
        TrafficOptions {
            rps: 200.0,
            concurrency: 6,
            requests_per_connection: 10,
            ..Default::default()
        },
        timeline.clone(),
    );
    eventually("steady traffic", DEADLINE, || traffic.snapshot().ok >= 100).await;
    assert_eq!(
        traffic.snapshot().failed,
        0,
        "no failures before the deletion"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let victim = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .remove(0);
    let victim_ip = victim.status.as_ref().unwrap().pod_ip.clone().unwrap();
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await
        .unwrap();

    // The replacement is Ready and propagated, the victim's pod and server are gone.
    let replaced = {
        let served = served.clone();
        let victim_ip = victim_ip.clone();
        move |ips: &[String]| served(ips) && !ips.contains(&victim_ip)
    };
    assert!(
        balancer.wait_until(DEADLINE, replaced).await,
        "the replacement serves"
    );
    assert!(
        registry
            .wait_until(DEADLINE, |m| !m.contains_key(&victim_ip))
            .await,
        "the victim's server is gone with its pod"
    );
    let after = traffic.snapshot().sent + 100;
    eventually("traffic after the replacement", DEADLINE, || {
        traffic.snapshot().sent >= after
    })
    .await;
    let stats = traffic.stop().await;
    drop(balancer);
    servers.stop();
    sandbox.shutdown().await;
    (stats, timeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_on_sigterm_drops_requests_while_endpoints_lag() {
    let (stats, timeline) = delete_one_pod_under_traffic(AppBehaviour::StopOnSigterm).await;
    eprintln!("{stats:?}");
    assert!(
        stats.failed > 0,
        "an app that stops on SIGTERM drops requests: {stats:?}"
    );
    assert_eq!(stats.sent, stats.ok + stats.failed);
    for cause in stats.by_cause.keys() {
        assert!(
            cause == "refused" || cause == "reset",
            "failures are refused or reset, got {cause}: {stats:?}"
        );
    }
    let kinds: Vec<String> = timeline.events().into_iter().map(|e| e.kind).collect();
    for k in [
        kind::POD_TERMINATING,
        kind::APP_SIGTERM,
        kind::POD_GONE,
        kind::ENDPOINTS,
    ] {
        assert!(kinds.iter().any(|x| x == k), "timeline has {k}: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_init_drain_longer_than_propagation_drops_nothing() {
    let (stats, timeline) = delete_one_pod_under_traffic(AppBehaviour::QuiesceInit).await;
    eprintln!("{stats:?}");
    assert_eq!(stats.failed, 0, "a 3 s drain covers a 1 s lag: {stats:?}");
    assert!(stats.ok > 200, "{stats:?}");
    let json = timeline.to_json();
    assert!(
        json["requests"].as_array().is_some_and(|r| !r.is_empty()),
        "request buckets recorded"
    );
}
