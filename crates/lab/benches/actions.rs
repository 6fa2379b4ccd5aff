//! 500 lifecycle actions at once on a sandbox of 1,000 nodes and 30,000 pods, through the
//! drainer's production code (handler, queue loop, client with its rate limit and timeouts)
//! against the lab's in-process Auto Scaling group and queue (#20 item 7). Not a test: it
//! measures, and prints
//!
//! - hooks that expired (must be 0): every action is heartbeated from receipt;
//! - the drainer's peak API requests in any 1, 10 and 60 s, from the sandbox's request audit
//!   log (must stay at the configured limit: a token bucket allows burst + QPS × seconds in
//!   any window), and what the requests until every node was cordoned were;
//! - the process's peak RSS (VmHWM; the sandbox and its 30,000 pods live in the same process,
//!   so the RSS before the drainer starts is printed too);
//! - seconds from the first terminate hook until every terminating node is cordoned.
//!
//! The group is refreshed with MinHealthyPercentage 50: 500 instances launch (500 launch
//! hooks), then 500 are put in `Terminating:Wait` at once, as a spot reclaim or an AZ
//! rebalance does. The bench stops once every terminating node is cordoned and two heartbeat
//! timeouts have passed after that, without waiting for 500 drains at four at a time.
//!
//! `nice -n 10 cargo bench -p quiesce-lab --bench actions` (a release build);
//! `QUIESCE_BENCH_SCALE=0.2` runs it at a fifth of the size (200 nodes, 6,000 pods, 100
//! actions), `--profile dev` without the release build.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use quiesce_drainer::client::{self, Rate, Timeouts};
use quiesce_drainer::metrics::Metrics;
use quiesce_drainer::nodes::NodeIndex;
use quiesce_drainer::{Handler, Settings, WorkerSettings};
use quiesce_lab::asg::{Group, GroupOptions};
use quiesce_lab::timeline::Timeline;
use quiesce_sandbox::api::resources::{Resource, lookup};
use quiesce_sandbox::api::store::{Part, now};
use quiesce_sandbox::api::{AUDIT_HEADER, ApiServer, Audited, Store};
use quiesce_sandbox::cluster::{Cluster, ClusterOptions};
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::sim::workloads::WorkloadControllers;
use quiesce_sandbox::time::TimeScale;
use serde_json::{Value, json};

/// The scale; `QUIESCE_BENCH_SCALE=0.1` (a fraction) shrinks nodes, Deployments and
/// actions alike, keeping 100 replicas per Deployment (30 pods per node).
const NODES: usize = 1000;
const DEPLOYMENTS: usize = 300;
const REPLICAS: usize = 100;
const ACTIONS: usize = 500;
const HEARTBEAT: Duration = Duration::from_secs(60);
/// Bounds every wait of the bench.
const LIMIT: Duration = Duration::from_secs(1800);

/// The bench's size, from [`NODES`], [`DEPLOYMENTS`], [`ACTIONS`] and `QUIESCE_BENCH_SCALE`.
#[derive(Clone, Copy)]
struct Size {
    nodes: usize,
    deployments: usize,
    actions: usize,
}

impl Size {
    fn from_env() -> Size {
        let scale: f64 = std::env::var("QUIESCE_BENCH_SCALE")
            .ok()
            .map(|s| {
                s.parse()
                    .expect("QUIESCE_BENCH_SCALE is a fraction such as 0.1")
            })
            .unwrap_or(1.0);
        assert!(
            scale > 0.0 && scale <= 1.0,
            "QUIESCE_BENCH_SCALE must be in (0, 1]"
        );
        let of = |n: usize| ((n as f64 * scale).round() as usize).max(1);
        Size {
            nodes: of(NODES),
            deployments: of(DEPLOYMENTS),
            actions: of(ACTIONS),
        }
    }

    fn pods(self) -> usize {
        self.deployments * REPLICAS
    }
}

fn scenario(size: Size) -> Scenario {
    let mut scenario = Scenario::nodes_only(size.nodes);
    // One namespace: every drain then lists all 300 budgets (one page) — the worst case.
    for d in 0..size.deployments {
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

/// The sandbox's API, simulation and controllers, started by hand so that the pods can be
/// written into the store before any controller runs.
struct Lab {
    api: ApiServer,
    cluster: Cluster,
    workloads: WorkloadControllers,
}

/// How many stored objects of `r` satisfy `pred`.
fn count(store: &Store, r: &'static Resource, pred: impl Fn(&Value) -> bool) -> usize {
    let mut n = 0;
    store.for_each(r, |o| n += usize::from(pred(o)));
    n
}

/// Starts the sandbox with `size.pods()` pods already bound, Running and Ready.
///
/// Letting the controllers create them goes through the API at a few pods a second (every
/// simulation pass reads every pod), hours for 30,000. So the Deployment controller runs alone
/// first and creates the ReplicaSets (it names them and sets their `pod-template-hash`); then
/// the pods are written straight into the store, owned by their ReplicaSets and spread over
/// the nodes, as `crates/sandbox/benches/api.rs` seeds its pods; only then do the simulation
/// and every controller start, and they find each ReplicaSet satisfied.
async fn start(size: Size) -> Lab {
    let api = ApiServer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the API server starts");
    let store = api.store();
    let scenario = scenario(size);
    scenario.apply(&store).expect("the scenario applies");
    let sets = lookup("apps", "v1", "replicasets").expect("served");
    let deployments = tokio::spawn(quiesce_sandbox::sim::deployment::run(
        api.client(),
        TimeScale::REAL,
    ));
    wait_for(
        "every ReplicaSet at full scale",
        Duration::from_millis(100),
        || {
            let full = count(&store, sets, |rs| rs["spec"]["replicas"] == REPLICAS);
            async move { full >= size.deployments }
        },
    )
    .await;
    deployments.abort();
    let _ = deployments.await;
    let nodes: Vec<String> = scenario
        .node_objects()
        .iter()
        .map(|n| {
            n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    seed_pods(&store, &nodes);
    let cluster = Cluster::spawn(store.clone(), ClusterOptions::default());
    let workloads = WorkloadControllers::spawn(api.client(), TimeScale::REAL);
    Lab {
        api,
        cluster,
        workloads,
    }
}

/// Writes every ReplicaSet's `spec.replicas` pods: its template, its controller reference,
/// bound round-robin to `nodes`, with the status a kubelet posts for a Ready pod.
fn seed_pods(store: &Store, nodes: &[String]) {
    let sets = lookup("apps", "v1", "replicasets").expect("served");
    let pods = lookup("", "v1", "pods").expect("served");
    let mut all = Vec::new();
    store.for_each(sets, |rs| all.push(rs.clone()));
    let mut n = 0usize;
    for rs in &all {
        let (ns, name) = (
            rs["metadata"]["namespace"].as_str().unwrap_or("default"),
            rs["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let template = &rs["spec"]["template"];
        for r in 0..rs["spec"]["replicas"].as_u64().unwrap_or(0) {
            let pod_name = format!("{name}-{r:05}");
            let mut spec = template["spec"].clone();
            spec["nodeName"] = json!(nodes[n % nodes.len()]);
            let pod = json!({
                "metadata": {"name": pod_name, "labels": template["metadata"]["labels"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": name, "uid": rs["metadata"]["uid"], "controller": true,
                        "blockOwnerDeletion": true}]},
                "spec": spec,
            });
            store.create(pods, ns, pod, false).expect("a pod");
            let ip = format!("10.245.{}.{}", n / 250, n % 250 + 1);
            store
                .modify(pods, ns, &pod_name, Part::Status, |p| {
                    let mut p = p.clone();
                    p["status"] = ready_status(&p, &ip);
                    Ok(p)
                })
                .expect("a pod's status");
            n += 1;
        }
    }
}

/// The status the sandbox's kubelet posts once a pod is Ready.
fn ready_status(pod: &Value, ip: &str) -> Value {
    let t = now();
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                "started": true, "restartCount": 0, "state": {"running": {"startedAt": t}}})
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": t});
    json!({
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1",
        "startTime": t, "containerStatuses": containers,
        "conditions": [condition("Initialized"), condition("Ready"),
            condition("ContainersReady"), condition("PodScheduled")],
    })
}

/// Whether the controllers have caught up with the seeded pods: every ReplicaSet reports them
/// Ready, every budget allows disruptions, and nobody created a pod more.
fn settled(store: &Store, size: Size) -> bool {
    let sets = lookup("apps", "v1", "replicasets").expect("served");
    let budgets = lookup("policy", "v1", "poddisruptionbudgets").expect("served");
    let pods = lookup("", "v1", "pods").expect("served");
    count(store, sets, |rs| rs["status"]["readyReplicas"] == REPLICAS) >= size.deployments
        && count(store, budgets, |b| {
            b["status"]["disruptionsAllowed"].as_u64().unwrap_or(0) > 0
        }) >= size.deployments
        && count(store, pods, |_| true) == size.pods()
}

/// Which of `nodes` are cordoned, and how many are neither cordoned nor done with (their
/// terminate hook completed, e.g. expired): the wait ends when none is left.
async fn cordoned(
    client: &kube::Client,
    nodes: &[String],
    timeline: &Timeline,
) -> (Vec<String>, usize) {
    let all = quiesce_kube::reads::list(Api::<Node>::all(client.clone()), ListParams::default())
        .await
        .unwrap_or_default();
    let completed: HashSet<String> = timeline
        .events()
        .into_iter()
        .filter(|e| e.kind == "hook-completed" && e.detail["launch"] == false)
        .map(|e| e.subject)
        .collect();
    let is_cordoned = |name: &String| {
        all.iter().any(|n| {
            n.metadata.name.as_ref() == Some(name) && quiesce_core::capacity::is_cordoned(n)
        })
    };
    let cordoned = nodes.iter().filter(|n| is_cordoned(n)).cloned().collect();
    let left = nodes
        .iter()
        .filter(|n| !is_cordoned(n) && !completed.contains(*n))
        .count();
    (cordoned, left)
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
    let size = Size::from_env();
    let lab = start(size).await;
    let store = lab.api.store();
    let plain = lab.api.client();
    let settle = wait_for("the seeded pods settled", Duration::from_secs(1), || {
        let done = settled(&store, size);
        async move { done }
    })
    .await;
    println!(
        "sandbox: {} nodes, {} Ready pods, settled {:.0}s after start",
        size.nodes,
        size.pods(),
        settle.as_secs_f64()
    );
    let baseline_rss = rss_kib("VmRSS:");

    let timeline_zero = Instant::now();
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
                provider
                    .is_some_and(|p| old[..size.actions].iter().any(|i| p.ends_with(i.as_str())))
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    };

    let mut config = kube::Config::new(lab.api.url().parse().expect("the sandbox URL"));
    config
        .headers
        .push((AUDIT_HEADER.parse().unwrap(), "drainer".parse().unwrap()));
    let rate = Rate::default();
    // What the drainer ships with, unless QUIESCE_BENCH_IN_HAND says otherwise: messages
    // beyond it stay in the queue, heartbeated by nobody.
    let in_hand = std::env::var("QUIESCE_BENCH_IN_HAND")
        .ok()
        .map(|s| s.parse().expect("QUIESCE_BENCH_IN_HAND is a number"))
        .unwrap_or(WorkerSettings::default().max_in_hand);
    println!(
        "drainer: {} messages in hand at most, {} QPS, burst {}",
        in_hand, rate.qps, rate.burst
    );
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
        WorkerSettings {
            max_in_hand: in_hand,
            ..WorkerSettings::default()
        },
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
    // Where the hooks stand, every 30 s: a long wait says what it waits for.
    let reporter = {
        let timeline = timeline.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                eprintln!(
                    "[{:.0}s] {}",
                    started.elapsed().as_secs_f64(),
                    hooks(&timeline)
                );
            }
        })
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
            let gave_up = refresh.is_finished();
            async move { n > 0 || gave_up }
        },
    )
    .await;
    assert!(
        terminating() > 0,
        "the refresh stopped before terminating anything: {}",
        hooks(&timeline)
    );
    let hooks_at = Instant::now();
    println!(
        "{} launches done in {:.0}s; {} terminate hooks started",
        size.actions,
        launched.as_secs_f64(),
        terminating()
    );
    // When each node was first seen cordoned (polled every 250 ms: the figure is late by up
    // to that much, never early).
    let first_seen: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    wait_for(
        "every terminating node cordoned or its hook over",
        Duration::from_millis(250),
        || {
            let (plain, old_nodes, timeline) = (plain.clone(), old_nodes.clone(), timeline.clone());
            let first_seen = first_seen.clone();
            async move {
                let (now_cordoned, left) = cordoned(&plain, &old_nodes, &timeline).await;
                let at = Instant::now();
                let mut seen = first_seen.lock().unwrap();
                for node in now_cordoned {
                    seen.entry(node).or_insert(at);
                }
                left == 0
            }
        },
    )
    .await;
    let cordoned_after = hooks_at.elapsed();
    let cordoned_count = first_seen.lock().unwrap().len();
    // Per node: from its terminate hook's message to its cordon.
    let sent_at: HashMap<String, Instant> = timeline
        .events()
        .iter()
        .filter(|e| {
            e.kind == "hook-started"
                && e.detail["transition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
        })
        .map(|e| {
            (
                e.subject.clone(),
                timeline_zero + Duration::from_secs_f64(e.t),
            )
        })
        .collect();
    let mut latencies: Vec<f64> = sent_at
        .iter()
        .filter_map(|(node, sent)| {
            let seen = *first_seen.lock().unwrap().get(node)?;
            Some(seen.saturating_duration_since(*sent).as_secs_f64())
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
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
    reporter.abort();
    index.abort();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;

    let audited: Vec<Audited> = lab
        .api
        .audited()
        .into_iter()
        .filter(|a| a.caller == "drainer")
        .collect();
    // The same from the server's side: when the write that cordoned each node arrived (the
    // first accepted PATCH of the Node after its message; the claim writes the cordon).
    let mut written_after: Vec<f64> = sent_at
        .iter()
        .filter_map(|(node, sent)| {
            let path = format!("/api/v1/nodes/{node}");
            audited
                .iter()
                .filter(|a| {
                    a.method == "PATCH" && a.path == path && a.status == Some(200) && a.at >= *sent
                })
                .map(|a| a.at.duration_since(*sent).as_secs_f64())
                .reduce(f64::min)
        })
        .collect();
    written_after.sort_by(f64::total_cmp);
    let mut log: Vec<Instant> = audited.iter().map(|a| a.at).collect();
    log.sort();
    println!(
        "--- {} actions at once, {} nodes, {} pods",
        size.actions,
        size.nodes,
        size.pods()
    );
    println!("expired hooks: {expired}");
    println!("terminate hooks completed by the drainer meanwhile: {completed}");
    let burst = f64::from(rate.burst.get());
    for window in [1, 10, 60] {
        let peak = peak_in(&log, Duration::from_secs(window));
        println!(
            "drainer API requests in any {window} s: at most {peak} ({:.1}/s); the limit \
             (burst {burst} + {} QPS) allows {}",
            peak as f64 / window as f64,
            rate.qps,
            burst + rate.qps * window as f64
        );
    }
    let all_cordoned = hooks_at + cordoned_after;
    let until_cordoned: Vec<&Audited> = audited
        .iter()
        .filter(|a| a.at >= hooks_at && a.at <= all_cordoned)
        .collect();
    println!(
        "drainer API requests: {} in all, {} from the first terminate hook until every node was \
         cordoned; of those: {}",
        audited.len(),
        until_cordoned.len(),
        breakdown(&until_cordoned)
    );
    println!(
        "peak RSS: {} MiB (the process: sandbox + drainer); {} MiB before the drainer started; \
         VmHWM {} MiB",
        peak_rss.load(Ordering::Relaxed) / 1024,
        baseline_rss / 1024,
        rss_kib("VmHWM:") / 1024
    );
    println!(
        "{cordoned_count} of {} terminating nodes cordoned; every one cordoned or its hook \
         over {:.1}s after the first terminate hook",
        size.actions,
        cordoned_after.as_secs_f64()
    );
    let at = |sorted: &[f64], q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    for (what, sorted) in [
        (
            "the write that cordoned it arrived at the API server",
            &written_after,
        ),
        ("a poller saw it cordoned (every 250 ms)", &latencies),
    ] {
        println!(
            "from a node's terminate message until {what} ({} nodes): median {:.1}s, 99th \
             percentile {:.1}s, at most {:.1}s (the requirement: 10 s)",
            sorted.len(),
            at(sorted, 0.5),
            at(sorted, 0.99),
            at(sorted, 1.0)
        );
    }
    println!("bench ran {:.0}s", started.elapsed().as_secs_f64());
    lab.workloads.stop().await;
    lab.cluster.stop().await;
    lab.api.shutdown().await;
}

/// The hooks started and completed so far, by transition, result and who completed them.
fn hooks(timeline: &Timeline) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in timeline.events() {
        let d = &e.detail;
        let key = match e.kind.as_str() {
            "hook-started" => format!("started {}", d["transition"].as_str().unwrap_or("?")),
            "hook-completed" => format!(
                "completed launch={} {} by {}",
                d["launch"],
                d["result"].as_str().unwrap_or("?"),
                d["by"].as_str().unwrap_or("?")
            ),
            _ => continue,
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.join(", ")
}

/// The most requests in any `window` of the sorted `times`.
fn peak_in(times: &[Instant], window: Duration) -> usize {
    let (mut start, mut peak) = (0, 0);
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    peak
}

/// Requests counted by method and resource (`PATCH nodes`, `GET pods/eviction`), most first.
fn breakdown(requests: &[&Audited]) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for a in requests {
        *counts
            .entry(format!("{} {}", a.method, resource_of(&a.path, &a.query)))
            .or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.join(", ")
}

/// `pods`, `nodes (named)`, `pods/eviction`, `leases (watch)` from a request's path and query.
fn resource_of(path: &str, query: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let watch = if query.contains("watch=true") {
        " (watch)"
    } else {
        ""
    };
    match rest {
        [kind] => format!("{kind}{watch}"),
        [kind, _] => format!("{kind} (named){watch}"),
        [kind, _, sub, ..] => format!("{kind}/{sub}"),
        [] => path.to_string(),
    }
}
