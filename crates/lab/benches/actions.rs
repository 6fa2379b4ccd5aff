//! 500 lifecycle actions at once on a sandbox of 1,000 nodes and 30,000 pods, through the
//! drainer's production code (handler, queue loop, client with its rate limit and timeouts)
//! against the lab's in-process Auto Scaling group and queue (#20 item 7). Not a test: it
//! measures, and prints
//!
//! - hooks that expired (must be 0): every action is heartbeated from receipt;
//! - the drainer's peak API requests per second, from the sandbox's request audit log (must
//!   stay at the configured limit: burst + QPS in the first second, QPS after);
//! - the process's peak RSS (VmHWM; the sandbox and its 30,000 pods live in the same process,
//!   so the RSS before the drainer starts is printed too);
//! - seconds from the first terminate hook until every terminating node is cordoned.
//!
//! The group is refreshed with MinHealthyPercentage 50: 500 instances launch (500 launch
//! hooks), then 500 are put in `Terminating:Wait` at once, as a spot reclaim or an AZ
//! rebalance does. The bench stops once every terminating node is cordoned and two heartbeat
//! timeouts have passed after that, without waiting for 500 drains at four at a time.
//!
//! `nice -n 10 cargo bench -p quiesce-lab --bench actions` (a release build).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use quiesce_drainer::client::{self, Rate, Timeouts};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_lab::asg::{Group, GroupOptions};
use quiesce_lab::timeline::Timeline;
use quiesce_sandbox::api::AUDIT_HEADER;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

const NODES: usize = 1000;
const DEPLOYMENTS: usize = 300;
const REPLICAS: usize = 100;
const ACTIONS: usize = 500;
const HEARTBEAT: Duration = Duration::from_secs(60);
/// Bounds every wait of the bench.
const LIMIT: Duration = Duration::from_secs(1800);

fn scenario() -> Scenario {
    let mut scenario = Scenario::nodes_only(NODES);
    // One namespace: every drain then lists all 300 budgets (one page) — the worst case.
    for d in 0..DEPLOYMENTS {
        let ns = "default";
        let app = format!("app-{d}");
        scenario.objects.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": ns},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "app", "image": "app:1",
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}]
                    }
                }
            }
        }));
        scenario.objects.push(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": app, "namespace": ns},
            "spec": {"maxUnavailable": "10%", "selector": {"matchLabels": {"app": app}}}
        }));
    }
    scenario
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_for<F, Fut>(what: &str, every: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(started.elapsed() < LIMIT, "gave up waiting for {what}");
        tokio::time::sleep(every).await;
    }
    started.elapsed()
}

async fn running_pods(client: &kube::Client) -> usize {
    let ready = quiesce_kube::reads::fold(
        Api::<Pod>::all(client.clone()),
        ListParams::default(),
        || 0usize,
        |n, p| *n += usize::from(quiesce_core::gate::is_ready(&p)),
    );
    ready.await.unwrap_or(0)
}

async fn cordoned(client: &kube::Client, nodes: &[String]) -> usize {
    let all = quiesce_kube::reads::list(Api::<Node>::all(client.clone()), ListParams::default())
        .await
        .unwrap_or_default();
    all.iter()
        .filter(|n| {
            nodes
                .iter()
                .any(|name| n.metadata.name.as_ref() == Some(name))
        })
        .filter(|n| quiesce_core::capacity::is_cordoned(n))
        .count()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let started = Instant::now();
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: scenario(),
        ..SandboxOptions::default()
    })
    .await
    .expect("the sandbox starts");
    let plain = sandbox.client();
    let settle = wait_for("30,000 Ready pods", Duration::from_secs(5), || {
        let plain = plain.clone();
        async move { running_pods(&plain).await >= DEPLOYMENTS * REPLICAS }
    })
    .await;
    println!(
        "sandbox: {NODES} nodes, {} Ready pods after {:.0}s",
        DEPLOYMENTS * REPLICAS,
        settle.as_secs_f64()
    );
    let baseline_rss = rss_kib("VmRSS:");

    let timeline = Timeline::new();
    let group = Group::adopt(
        plain.clone(),
        GroupOptions {
            heartbeat_timeout: HEARTBEAT,
            min_healthy_percentage: 50,
            ..GroupOptions::default()
        },
        timeline.clone(),
    )
    .await
    .expect("the group adopts the nodes");
    let old: Vec<String> = group.in_service();
    let old_nodes: Vec<String> = {
        let nodes =
            quiesce_kube::reads::list(Api::<Node>::all(plain.clone()), ListParams::default())
                .await
                .expect("nodes");
        nodes
            .iter()
            .filter(|n| {
                let provider = n.spec.as_ref().and_then(|s| s.provider_id.as_deref());
                provider.is_some_and(|p| old[..ACTIONS].iter().any(|i| p.ends_with(i.as_str())))
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    };

    let mut config = kube::Config::new(sandbox.url().parse().expect("the sandbox URL"));
    config
        .headers
        .push((AUDIT_HEADER.parse().unwrap(), "drainer".parse().unwrap()));
    let rate = Rate::default();
    let client = client::build(config, Timeouts::default(), rate).expect("the drainer's client");
    let (nodes, keep_index) = NodeIndex::watched(client.clone());
    let index = tokio::spawn(keep_index);
    let handler = Arc::new(Handler::new(
        client,
        nodes,
        group.clone(),
        Settings::default(),
        Arc::new(Metrics::default()),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(quiesce_drainer::worker::run(
        Arc::new(group.clone()),
        handler,
        WorkerSettings::default(),
        stopped,
    ));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak_rss = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                peak_rss.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let refresh = {
        let group = group.clone();
        tokio::spawn(async move { group.refresh(&|_| {}).await })
    };
    let terminating = || {
        timeline
            .events()
            .iter()
            .filter(|e| {
                e.kind == "hook-started"
                    && e.detail["transition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
            })
            .count()
    };
    let launched = wait_for(
        "the first terminate hook",
        Duration::from_millis(100),
        || {
            let n = terminating();
            async move { n > 0 }
        },
    )
    .await;
    let hooks_at = Instant::now();
    println!(
        "{ACTIONS} launches done in {:.0}s; {} terminate hooks started",
        launched.as_secs_f64(),
        terminating()
    );
    let to_cordon = wait_for(
        "every terminating node cordoned",
        Duration::from_millis(250),
        || {
            let plain = plain.clone();
            let old_nodes = old_nodes.clone();
            async move { cordoned(&plain, &old_nodes).await >= ACTIONS }
        },
    )
    .await;
    let cordoned_after = hooks_at.elapsed();
    let _ = to_cordon;
    // Two heartbeat timeouts more: a hook that nobody heartbeats expires within one.
    tokio::time::sleep(2 * HEARTBEAT).await;
    let expired = timeline
        .events()
        .iter()
        .filter(|e| e.kind == "hook-completed" && e.detail["by"] == "timeout")
        .count();
    let completed = timeline
        .events()
        .iter()
        .filter(|e| {
            e.kind == "hook-completed" && e.detail["by"] == "api" && e.detail["launch"] == false
        })
        .count();
    stop.send_replace(true);
    refresh.abort();
    sampler.abort();
    index.abort();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;

    let log: Vec<Instant> = sandbox
        .audited()
        .into_iter()
        .filter(|a| a.caller == "drainer")
        .map(|a| a.at)
        .collect();
    let (peak, peak_later) = peaks(&log, hooks_at);
    println!(
        "--- {ACTIONS} actions at once, {NODES} nodes, {} pods",
        DEPLOYMENTS * REPLICAS
    );
    println!("expired hooks: {expired}");
    println!("terminate hooks completed by the drainer meanwhile: {completed}");
    println!(
        "drainer API requests: {} in all; peak {peak} in one second (limit {} QPS, burst {}), \
         peak {peak_later} in one second after the first 5 s of the terminations",
        log.len(),
        rate.qps,
        rate.burst
    );
    println!(
        "peak RSS: {} MiB (the process: sandbox + drainer); {} MiB before the drainer started; \
         VmHWM {} MiB",
        peak_rss.load(Ordering::Relaxed) / 1024,
        baseline_rss / 1024,
        rss_kib("VmHWM:") / 1024
    );
    println!(
        "every terminating node cordoned {:.1}s after the first terminate hook",
        cordoned_after.as_secs_f64()
    );
    println!("bench ran {:.0}s", started.elapsed().as_secs_f64());
    sandbox.shutdown().await;
}

/// The most requests in any one second, over all and from 5 s after `from` on (past the
/// bucket's burst).
fn peaks(log: &[Instant], from: Instant) -> (usize, usize) {
    let mut times = log.to_vec();
    times.sort();
    let window = Duration::from_secs(1);
    let (mut start, mut peak, mut later) = (0, 0, 0);
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        let count = end - start + 1;
        peak = peak.max(count);
        if times[start] >= from + Duration::from_secs(5) {
            later = later.max(count);
        }
    }
    (peak, later)
}
