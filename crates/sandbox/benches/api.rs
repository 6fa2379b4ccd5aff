//! Throughput and memory of the sandbox API server at the size of a large cluster: 1,000 nodes
//! and 30,000 pods. Run with `cargo bench -p quiesce-sandbox --bench api`; it prints one line
//! per measurement. Numbers depend on the machine; the test suite never asserts on them.
//!
//! Wall-clock rates on a shared machine are noisy, so the bench can also be counted in
//! instructions, which do not depend on load: `QUIESCE_BENCH_DIVISOR=10` runs a tenth of every
//! case's requests (at least one), and the bench calls [`case_starts`] before each case and
//! before its untimed warm-up request, so `valgrind --tool=callgrind
//! --dump-before='*case_starts*'` writes one profile part per stretch: start-up and populate,
//! then warm-up and case, in turn. `docs/sandbox-benchmark.md` has the method and the figures.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use quiesce_sandbox::api::ApiServer;
use quiesce_sandbox::api::resources::lookup;
use serde_json::json;

const NODES: usize = 1_000;
const PODS: usize = 30_000;
const NAMESPACES: usize = 10;
/// Requests in flight at once, like a handful of controllers and a drain engine.
const CONCURRENCY: usize = 8;
const WATCHERS: usize = 100;
const WATCHED_CHANGES: usize = 200;

/// `count` divided by `QUIESCE_BENCH_DIVISOR` (default 1), at least 1: a fixed, smaller
/// workload for counting instructions under callgrind.
fn requests(count: usize) -> usize {
    let divisor = std::env::var("QUIESCE_BENCH_DIVISOR")
        .ok()
        .and_then(|d| d.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    (count / divisor).max(1)
}

/// Marks where a case begins (and, with `"end"`, where the last one ends), for callgrind's
/// `--dump-before='*case_starts*'`; never inlined so the symbol exists.
#[inline(never)]
fn case_starts(case: &str) {
    std::hint::black_box(case);
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn report(what: &str, count: usize, unit: &str, elapsed: Duration) {
    println!(
        "{what:<44} {count:>7} {unit} in {:>8.3}s = {:>10.0} {unit}/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
}

fn populate(server: &ApiServer) {
    let store = server.store();
    let nodes = lookup("", "v1", "nodes").expect("served");
    let pods = lookup("", "v1", "pods").expect("served");
    let namespaces = lookup("", "v1", "namespaces").expect("served");
    for n in 0..NAMESPACES {
        store
            .create(
                namespaces,
                "",
                json!({"metadata": {"name": format!("team-{n}")}}),
                false,
            )
            .expect("namespace");
    }
    for n in 0..NODES {
        let node = json!({"metadata": {"name": format!("node-{n}"), "labels": {"zone": format!("z{}", n % 3)}},
            "spec": {"providerID": format!("aws:///us-east-1a/i-{n:017x}")},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}}});
        store.create(nodes, "", node, false).expect("node");
    }
    for p in 0..PODS {
        let pod = json!({
            "metadata": {"name": format!("app-{p}"), "labels": {"app": format!("app-{}", p % 50), "tier": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{}-6d4cf56db6", p % 50),
                                              "uid": "0b6f1c3e-8f9a-4c1e-9d7b-2a9f0c1e5d3a", "controller": true}]},
            "spec": {"nodeName": format!("node-{}", p % NODES),
                     "containers": [{"name": "app", "image": "registry.invalid/app:1",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        });
        store
            .create(pods, &format!("team-{}", p % NAMESPACES), pod, false)
            .expect("pod");
    }
}

/// Runs `count` requests, `CONCURRENCY` at a time, and reports the rate. One untimed request
/// (number `count`, outside the timed range) goes first, so one-time work — the lazily built
/// schemas, the first connection — is not counted in the case.
async fn timed<F, Fut>(what: &str, count: usize, request: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let count = requests(count);
    case_starts("warm-up");
    request(count).await;
    case_starts(what);
    let start = Instant::now();
    stream::iter(0..count)
        .map(request)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    report(what, count, "req", start.elapsed());
}

async fn watch_fan_out(client: kube::Client) {
    case_starts("watch fan-out");
    let changes = requests(WATCHED_CHANGES);
    let pods: Api<Pod> = Api::all(client.clone());
    let rv = pods
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        let stream = pods
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .expect("watch");
        streams.push(stream.boxed());
    }
    let counters = streams.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < changes {
                match s.try_next().await {
                    Ok(Some(WatchEvent::Modified(_))) => seen += 1,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            seen
        })
    });
    let counters: Vec<_> = counters.collect();
    let team0: Api<Pod> = Api::namespaced(client, "team-0");
    let start = Instant::now();
    for i in 0..changes {
        let patch =
            Patch::Merge(json!({"metadata": {"annotations": {"bench/fan-out": i.to_string()}}}));
        team0
            .patch(
                &format!("app-{}", i * NAMESPACES),
                &PatchParams::default(),
                &patch,
            )
            .await
            .expect("patch");
    }
    let mut delivered = 0;
    for counter in counters {
        delivered += tokio::time::timeout(Duration::from_secs(120), counter)
            .await
            .expect("every watcher saw every change within 120s")
            .expect("watcher task");
    }
    report(
        &format!("watch fan-out ({WATCHERS} watchers, all pods)"),
        delivered,
        "events",
        start.elapsed(),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let rss_empty = rss_mib();
        let server = ApiServer::start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("server starts");
        let start = Instant::now();
        populate(&server);
        report(
            &format!("populate {NODES} nodes + {PODS} pods (in-process)"),
            NODES + PODS,
            "objects",
            start.elapsed(),
        );
        println!(
            "{:<44} {:>7.0} MiB (empty server process: {rss_empty:.0} MiB)",
            "resident memory after populate",
            rss_mib()
        );

        let client = server.client();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "team-3");
        timed("get pod", 5_000, |i| {
            let pods = pods.clone();
            async move {
                pods.get(&format!("app-{}", (i * NAMESPACES + 3) % PODS))
                    .await
                    .expect("get");
            }
        })
        .await;
        let all: Api<Pod> = Api::all(client.clone());
        timed("list pods fieldSelector=spec.nodeName", 1_000, |i| {
            let all = all.clone();
            async move {
                let lp = ListParams::default().fields(&format!("spec.nodeName=node-{}", i % NODES));
                let list = all.list(&lp).await.expect("list");
                assert_eq!(list.items.len(), PODS / NODES);
            }
        })
        .await;
        timed("list all 30000 pods", 10, |_| {
            let all = all.clone();
            async move {
                let list = all.list(&ListParams::default()).await.expect("list");
                assert_eq!(list.items.len(), PODS);
            }
        })
        .await;
        timed("patch pod (merge, labels)", 5_000, |i| {
            let pods = pods.clone();
            async move {
                let patch = Patch::Merge(json!({"metadata": {"labels": {"bench": i.to_string()}}}));
                pods.patch(
                    &format!("app-{}", (i * NAMESPACES + 3) % PODS),
                    &PatchParams::default(),
                    &patch,
                )
                .await
                .expect("patch");
            }
        })
        .await;
        watch_fan_out(client).await;
        case_starts("end");
        println!(
            "{:<44} {:>7.0} MiB; {} API requests served",
            "resident memory at the end",
            rss_mib(),
            server.request_count()
        );
        server.shutdown().await;
    });
}
