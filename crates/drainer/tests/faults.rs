//! The drainer's Kubernetes client against what a stalled, throttling or restarting API
//! server does (the sandbox's fault injector): every call ends in bounded time, a long watch
//! is not mistaken for a hang, throttling and cut watches are survived, and a loop that stops
//! coming round fails `/healthz`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use quiesce_aws::hooks::AutoScaling;
use quiesce_aws::queue::{Queue, QueueError, Received};
use quiesce_drainer::client::{self, Rate, Timeouts};
use quiesce_drainer::error::kube_transient;
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_sandbox::api::{AUDIT_HEADER, FaultKind};
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;
use tokio::time::Instant;

fn quick() -> Timeouts {
    Timeouts {
        operation: Duration::from_secs(1),
        ..Timeouts::default()
    }
}

fn client_for(sandbox: &Sandbox, timeouts: Timeouts) -> kube::Client {
    client::build(
        kube::Config::new(sandbox.url().parse().unwrap()),
        timeouts,
        Rate::default(),
    )
    .unwrap()
}

async fn create_node(sandbox: &Sandbox, name: &str, instance: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"providerID": format!("aws:///us-east-1a/{instance}")},
    }))
    .unwrap();
    Api::<Node>::all(sandbox.client())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `limit`.
async fn wait_for<F: Fn() -> bool>(what: &str, limit: Duration, cond: F) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_hung_call_ends_at_the_operation_timeout_and_counts_as_transient() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    // For a while, not for a count: the sandbox's own controllers read nodes too.
    sandbox.faults().inject_for(
        Some("GET"),
        Some("nodes"),
        Duration::from_secs(60),
        FaultKind::Hang,
    );
    let nodes: Api<Node> = Api::all(client_for(&sandbox, quick()));
    let started = Instant::now();
    // The outer bound only keeps a failing test from hanging the suite.
    let answer = tokio::time::timeout(Duration::from_secs(20), nodes.get_opt("node-1"))
        .await
        .expect("the client gave up by itself");
    let err = answer.expect_err("a hung request is an error, not an answer");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the timeout"
    );
    assert!(kube_transient(&err), "a timeout is worth retrying: {err}");
    sandbox.faults().clear();
    assert_eq!(
        nodes.get_opt("node-1").await.unwrap(),
        None,
        "the next call is answered"
    );
}

#[tokio::test]
async fn a_watch_longer_than_the_operation_timeout_is_not_a_hang() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let nodes: Api<Node> = Api::all(client_for(&sandbox, quick()));
    let mut stream = Box::pin(
        nodes
            .watch(&WatchParams::default().timeout(30), "0")
            .await
            .unwrap(),
    );
    // Nothing happens for longer than the operation timeout, then a node arrives.
    let quiet_until = Instant::now() + Duration::from_millis(2500);
    let creator = {
        let client = sandbox.client();
        tokio::spawn(async move {
            tokio::time::sleep_until(quiet_until).await;
            let node: Node = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
            Api::<Node>::all(client)
                .create(&PostParams::default(), &node)
                .await
                .unwrap();
        })
    };
    use futures::StreamExt;
    let event = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch delivered")
    .expect("the stream is open")
    .expect("no error on a quiet watch");
    assert!(
        matches!(&event, WatchEvent::Added(n) if n.metadata.name.as_deref() == Some("late")),
        "{event:?}"
    );
    assert!(Instant::now() >= quiet_until);
    creator.await.unwrap();
}

#[tokio::test]
async fn throttling_is_a_429_with_its_retry_after_and_counts_as_transient() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.faults().inject_for(
        Some("GET"),
        Some("nodes"),
        Duration::from_secs(60),
        FaultKind::TooManyRequests { retry_after: 3 },
    );
    let nodes: Api<Node> = Api::all(client_for(&sandbox, quick()));
    let err = nodes.list(&Default::default()).await.unwrap_err();
    match &err {
        kube::Error::Api(status) => assert_eq!(status.code, 429, "{status:?}"),
        other => panic!("expected the 429 as an API error, got {other}"),
    }
    assert!(kube_transient(&err));
    sandbox.faults().clear();
    nodes.list(&Default::default()).await.expect("served again");
}

#[tokio::test]
async fn the_node_index_survives_a_cut_watch_and_a_410_on_resume() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    create_node(&sandbox, "before", "i-0aaa").await;
    let mut config = kube::Config::new(sandbox.url().parse().unwrap());
    config
        .headers
        .push((AUDIT_HEADER.parse().unwrap(), "index".parse().unwrap()));
    // By time, not count: the sandbox's own controllers watch nodes too. Every watch opened
    // meanwhile is cut 200 ms after it started.
    let faults = sandbox.faults();
    faults.inject_for(
        Some("GET"),
        Some("nodes"),
        Duration::from_secs(60),
        FaultKind::CutWatch(Duration::from_millis(200)),
    );
    let (index, keep) =
        NodeIndex::watched(client::build(config, quick(), Rate::default()).unwrap());
    let keeping = tokio::spawn(keep);
    let count = |watch: bool| {
        sandbox
            .audited()
            .iter()
            .filter(|a| a.path.ends_with("/nodes") && a.query.contains("watch=true") == watch)
            .count()
    };
    wait_for(
        "the index synced and cut watches resumed",
        Duration::from_secs(30),
        || index.ready() && count(true) >= 3,
    )
    .await;
    // The watch open now is cut too; its resumption is told its version is gone.
    faults.clear();
    faults.inject_for(
        Some("GET"),
        Some("nodes"),
        Duration::from_secs(60),
        FaultKind::Gone,
    );
    let listed = count(false);
    wait_for("a relist after the 410", Duration::from_secs(30), || {
        count(false) > listed
    })
    .await;
    faults.clear();
    create_node(&sandbox, "after", "i-0bbb").await;
    wait_for(
        "the index saw the new node",
        Duration::from_secs(20),
        || index.cached("i-0bbb").as_deref() == Some("after"),
    )
    .await;
    assert_eq!(index.cached("i-0aaa").as_deref(), Some("before"));
    keeping.abort();
}

/// A queue whose receive never returns: what a loop stuck past every timeout looks like (the
/// class of bug no timeout catches, which the liveness check is for).
struct Stuck;

impl Queue for Stuck {
    async fn receive(&self, _: u32, _: Duration, _: Duration) -> Result<Vec<Received>, QueueError> {
        std::future::pending().await
    }
    async fn delete(&self, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn extend(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_queue_loop_fails_healthz() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let handler = Arc::new(Handler::new(
        sandbox.client(),
        NodeIndex::listed(sandbox.client()),
        AutoScaling::new(&aws),
        Settings::default(),
        Arc::new(Metrics::default()),
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(quiesce_drainer::service::serve_http(
        ([127, 0, 0, 1], port).into(),
        handler.clone(),
        stopped.clone(),
    ));
    let status =
        || tokio::task::block_in_place(|| support::http_get(port, "/healthz").map(|(s, _)| s));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status() != Some(200) {
        assert!(Instant::now() < deadline, "/healthz never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settings = WorkerSettings {
        wait: Duration::from_millis(200),
        receive_slack: Duration::from_millis(500),
        ..WorkerSettings::default()
    };
    let worker = tokio::spawn(quiesce_drainer::worker::run(
        Arc::new(Stuck),
        handler.clone(),
        settings,
        stopped,
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while status() != Some(503) {
        assert!(Instant::now() < deadline, "/healthz kept saying ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.abort();
    stop.send_replace(true);
    http.await.unwrap().unwrap();
}

/// A queue whose first `failures` deletes fail (the SDK's own attempts spent on a 500),
/// counting every delete.
struct FlakyDelete {
    failures: std::sync::atomic::AtomicU32,
    deletes: std::sync::atomic::AtomicU32,
}

impl Queue for FlakyDelete {
    async fn receive(&self, _: u32, _: Duration, _: Duration) -> Result<Vec<Received>, QueueError> {
        std::future::pending().await
    }
    async fn delete(&self, _: &str) -> Result<(), QueueError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.deletes.fetch_add(1, SeqCst);
        if self
            .failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError {
                call: "DeleteMessage",
                message: "InternalError: We encountered an internal error".into(),
            });
        }
        Ok(())
    }
    async fn extend(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

/// Found by `quiesce lab --chaos --seed 3`: two failed deletes of a message whose action was
/// over each gave it back, and with a redelivery and a drainer restart before them it reached
/// maxReceiveCount and the dead-letter queue. A delete is tried again in place instead.
#[tokio::test]
async fn a_failed_delete_is_tried_again_in_place_not_left_to_come_back() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let handler = Handler::new(
        sandbox.client(),
        NodeIndex::listed(sandbox.client()),
        AutoScaling::new(&aws),
        Settings::default(),
        Arc::new(Metrics::default()),
    );
    let queue = FlakyDelete {
        failures: 2.into(),
        deletes: 0.into(),
    };
    let message = Received {
        id: "m-1".into(),
        receipt: "m-1#1".into(),
        body: json!({"Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION",
            "AutoScalingGroupName": "workers"})
        .to_string(),
        receive_count: 1,
    };
    let settings = WorkerSettings {
        visibility: Duration::from_secs(30),
        ..WorkerSettings::default()
    };
    // The outer bound only keeps a failing test from hanging the suite.
    tokio::time::timeout(
        Duration::from_secs(60),
        quiesce_drainer::worker::process(&queue, &handler, &settings, message),
    )
    .await
    .expect("settled in bounded time");
    assert_eq!(
        queue.deletes.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "two failed deletes, then the one that took"
    );
}
