//! `quiesce drain` against the real `kubectl drain --ignore-daemonsets --delete-emptydir-data`
//! on identical sandbox clusters (default scenario, 3 nodes, real time), draining the node with
//! the most workload pods.
//!
//! For each tool: seconds until the node holds only DaemonSet pods, seconds until every
//! Deployment and StatefulSet has its desired Ready pods on other nodes, API requests made
//! (the sandbox's counter, minus the observer's own single watch), and the floor the workloads
//! impose by themselves: a Deployment's replacement starts as soon as the old pod starts
//! terminating, so the floor is the longer of the slowest shutdown and the slowest startup;
//! the overhead column is the rest.
//!
//! Run: `cargo bench -p quiesce-kube --bench drain_vs_kubectl` (`--profile dev` builds faster).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use quiesce_core::DrainOptions;
use quiesce_kube::cluster::Cordon;
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use tokio::time::Instant;

/// Desired Ready pods per workload label in the default scenario.
const DESIRED: [(&str, usize); 3] = [("web", 3), ("api", 1), ("db", 2)];
const LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone)]
struct Observed {
    empty: Option<f64>,
    replaced: Option<f64>,
    /// Seconds from deletionTimestamp seen to pod gone, per evicted pod.
    shutdowns: Vec<f64>,
    /// Seconds from a replacement's appearance to Ready.
    startups: Vec<f64>,
}

#[derive(Debug)]
struct Figures {
    tool: &'static str,
    observed: Observed,
    requests: u64,
}

fn app(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get("app").map(String::as_str)
}

fn on(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Watches every pod and timestamps the two goals; one watch request for the whole run.
fn observe(
    client: kube::Client,
    node: String,
    start: Instant,
) -> (
    Arc<Mutex<Observed>>,
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
) {
    let shared = Arc::new(Mutex::new(Observed::default()));
    let out = shared.clone();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut stream = watch(Api::<Pod>::all(client), watcher::Config::default()).boxed();
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let (mut deleting, mut appeared): (BTreeMap<String, f64>, BTreeMap<String, f64>) =
            Default::default();
        let mut listed = false;
        while let Some(Ok(event)) = stream.next().await {
            let now = start.elapsed().as_secs_f64();
            match event {
                Event::InitApply(p) | Event::Apply(p) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if p.metadata.deletion_timestamp.is_some() {
                        deleting.entry(uid.clone()).or_insert(now);
                    } else if listed && !pods.contains_key(&uid) {
                        appeared.insert(uid.clone(), now);
                    }
                    if listed
                        && quiesce_core::gate::is_ready(&p)
                        && let Some(t) = appeared.remove(&uid)
                    {
                        out.lock().unwrap().startups.push(now - t);
                    }
                    pods.insert(uid, p);
                }
                Event::Delete(p) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    pods.remove(&uid);
                    if let Some(t) = deleting.remove(&uid) {
                        out.lock().unwrap().shutdowns.push(now - t);
                    }
                }
                Event::InitDone => listed = true,
                Event::Init => {}
            }
            if !listed {
                continue;
            }
            let mut o = out.lock().unwrap();
            let non_ds_left = pods
                .values()
                .any(|p| on(p, &node) && app(p) != Some("log-agent"));
            if o.empty.is_none() && !non_ds_left && now > 0.0 {
                o.empty = Some(now);
            }
            let replaced = DESIRED.iter().all(|(name, want)| {
                pods.values()
                    .filter(|p| app(p) == Some(name) && !on(p, &node))
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| quiesce_core::gate::is_ready(p))
                    .count()
                    >= *want
            });
            if o.empty.is_some() && o.replaced.is_none() && replaced {
                o.replaced = Some(now);
                let _ = done_tx.send(true);
            }
        }
    });
    (shared, done_rx, task)
}

async fn ready_cluster() -> (Sandbox, String) {
    let sb = Sandbox::start(SandboxOptions {
        scenario: Scenario::default_for(3),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    let pods: Api<Pod> = Api::all(sb.client());
    let deadline = Instant::now() + LIMIT;
    // Wait for the scenario to settle, by watching (not polling) until every workload is Ready.
    let mut stream = watch(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut seen: BTreeMap<String, Pod> = BTreeMap::new();
    while let Ok(Some(Ok(p))) = tokio::time::timeout_at(deadline, stream.next()).await {
        seen.insert(p.metadata.uid.clone().unwrap_or_default(), p);
        let all = DESIRED.iter().all(|(name, want)| {
            seen.values()
                .filter(|p| app(p) == Some(name) && quiesce_core::gate::is_ready(p))
                .count()
                >= *want
        });
        if all {
            break;
        }
    }
    // The node with the most pods to move, so the PDB-guarded web pods take part.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for p in seen.values().filter(|p| app(p) != Some("log-agent")) {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *counts.entry(n).or_default() += 1;
        }
    }
    let node = counts
        .iter()
        .max_by_key(|(n, c)| (**c, std::cmp::Reverse((*n).clone())))
        .map(|(n, _)| n.clone())
        .expect("pods are scheduled");
    let moving: Vec<&str> = seen
        .values()
        .filter(|p| on(p, &node) && app(p) != Some("log-agent"))
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    println!("draining {node}: {moving:?}");
    (sb, node)
}

async fn wait_replaced(mut done: tokio::sync::watch::Receiver<bool>) {
    tokio::time::timeout(LIMIT, done.wait_for(|d| *d))
        .await
        .expect("every replacement Ready within the limit")
        .expect("the observer runs");
}

async fn bench_quiesce() -> Figures {
    let (sb, node) = ready_cluster().await;
    let start = Instant::now();
    let (observed, done, task) = observe(sb.client(), node.clone(), start);
    let before = sb.request_count();
    let spec = DrainSpec {
        node,
        options: DrainOptions::default(),
        timeout: LIMIT,
        dry_run: false,
        uncordon_on_failure: false,
        replacement_gate: true,
        cordon: Cordon::default(),
    };
    let report = drain(&KubeCluster::new(sb.client()), &spec, &|_, _| {})
        .await
        .expect("drain runs");
    let requests = sb.request_count() - before - 1;
    assert_eq!(
        report.outcome,
        quiesce_kube::report::Outcome::Drained,
        "{report:#?}"
    );
    wait_replaced(done).await;
    task.abort();
    let observed = observed.lock().unwrap().clone();
    sb.shutdown().await;
    Figures {
        tool: "quiesce drain",
        observed,
        requests,
    }
}

async fn bench_kubectl() -> Figures {
    let (sb, node) = ready_cluster().await;
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    sb.write_kubeconfig(kubeconfig.path()).unwrap();
    let start = Instant::now();
    let (observed, done, task) = observe(sb.client(), node.clone(), start);
    let before = sb.request_count();
    let path = kubeconfig.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(path)
            .args([
                "drain",
                &node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout",
                "300s",
            ])
            .output()
            .expect("kubectl runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "kubectl drain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = sb.request_count() - before - 1;
    wait_replaced(done).await;
    task.abort();
    let observed = observed.lock().unwrap().clone();
    sb.shutdown().await;
    Figures {
        tool: "kubectl drain",
        observed,
        requests,
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let results = [bench_quiesce().await, bench_kubectl().await];
    println!(
        "{:<15} {:>12} {:>15} {:>9} {:>14} {:>13} {:>11}",
        "tool",
        "node empty s",
        "replacements s",
        "requests",
        "max shutdown s",
        "max startup s",
        "overhead s"
    );
    for f in &results {
        let o = &f.observed;
        let (shutdown, startup) = (max(&o.shutdowns), max(&o.startups));
        let replaced = o.replaced.unwrap_or(f64::NAN);
        println!(
            "{:<15} {:>12.2} {:>15.2} {:>9} {:>14.2} {:>13.2} {:>11.2}",
            f.tool,
            o.empty.unwrap_or(f64::NAN),
            replaced,
            f.requests,
            shutdown,
            startup,
            replaced - shutdown.max(startup)
        );
    }
}
