//! What happened when during a lab run: node and pod transitions, evictions, endpoint changes
//! and request outcomes, stamped in seconds since the lab started. The report draws it; the
//! JSON output carries it, so a run can be explained after the fact.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The event kinds the lab records; the report knows each by name. Free-form kinds are allowed
/// (the report lists them as plain markers), these are the ones it draws specially.
pub mod kind {
    /// A node object appeared (the instance launched and registered).
    pub const NODE_LAUNCHED: &str = "node-launched";
    /// A node's Ready condition became True.
    pub const NODE_READY: &str = "node-ready";
    /// A node became unschedulable: the drain begins.
    pub const NODE_CORDONED: &str = "node-cordoned";
    /// A node became schedulable again.
    pub const NODE_UNCORDONED: &str = "node-uncordoned";
    /// A node object was deleted (the instance is gone).
    pub const NODE_TERMINATED: &str = "node-terminated";
    /// A pod was bound to a node.
    pub const POD_SCHEDULED: &str = "pod-scheduled";
    /// A pod's Ready condition became True.
    pub const POD_READY: &str = "pod-ready";
    /// A pod got its deletionTimestamp.
    pub const POD_TERMINATING: &str = "pod-terminating";
    /// A pod object was deleted.
    pub const POD_GONE: &str = "pod-gone";
    /// A pod was evicted (recorded by whoever evicts).
    pub const EVICTION: &str = "eviction";
    /// A Service's applied endpoint list changed (detail: `ready`, the count).
    pub const ENDPOINTS: &str = "endpoints";
    /// The kernel data plane rewrote a Service's iptables rules (detail: `chain`, `endpoints`,
    /// and for each endpoint whose rule went, the connections conntrack kept on it).
    pub const RULES: &str = "rules";
    /// A pod's container process started (detail: `pid1`, its pids and command line).
    pub const PROCESS_STARTED: &str = "process-started";
    /// A pod's readiness probe passed for the first time (the runtime reports it Ready).
    pub const PROBE_PASSED: &str = "probe-passed";
    /// A pod's exec preStop hook started (detail: `command`).
    pub const PRESTOP: &str = "prestop";
    /// The preStop hook ended (detail: `status`).
    pub const PRESTOP_DONE: &str = "prestop-done";
    /// The container's PID 1 got SIGTERM (after its preStop).
    pub const SIGTERM: &str = "sigterm";
    /// The container got SIGKILL (its grace period ran out, or its pod vanished).
    pub const SIGKILL: &str = "sigkill";
    /// The container's process exited (detail: `status`, `exit 0` or `signal 9 (SIGKILL)`).
    pub const PROCESS_EXITED: &str = "process-exited";
    /// A line the container wrote on stderr (quiesce-init's phases, as `kubectl logs` shows).
    pub const CONTAINER_LOG: &str = "container-log";
}

/// Width of one request bucket: fine enough to see a one-second burst of failures.
pub const BUCKET: Duration = Duration::from_millis(250);

/// One recorded event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the lab started.
    pub t: f64,
    /// One of [`kind`] or a free-form kind.
    pub kind: String,
    /// What it happened to: a node name, `namespace/pod`, a Service name.
    pub subject: String,
    /// Kind-specific facts (node of a pod, workload, ready count …).
    pub detail: Value,
}

/// Requests of one service whose send time fell in one [`BUCKET`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Bucket {
    /// Answered 2xx–4xx.
    pub ok: u64,
    /// Failures by cause (`refused`, `reset`, `5xx`, `timeout`).
    pub failed: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Log {
    events: Vec<Event>,
    buckets: BTreeMap<(u64, String), Bucket>,
}

struct Inner {
    start: Instant,
    log: Mutex<Log>,
}

/// The shared event log of one lab run. Cloning is cheap: every part (traffic, data plane,
/// cluster watches, the orchestration) records into the same log.
#[derive(Clone)]
pub struct Timeline(Arc<Inner>);

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

impl Timeline {
    /// Starts the clock: every stamp is relative to now.
    pub fn new() -> Timeline {
        Timeline(Arc::new(Inner {
            start: Instant::now(),
            log: Mutex::new(Log::default()),
        }))
    }

    /// Time since the lab started.
    pub fn elapsed(&self) -> Duration {
        self.0.start.elapsed()
    }

    /// Seconds since the start for an instant (0 for one before it).
    pub fn seconds_at(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.0.start).as_secs_f64()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event now.
    pub fn record(&self, kind: &str, subject: impl Into<String>, detail: Value) {
        let t = self.elapsed().as_secs_f64();
        self.log().events.push(Event {
            t,
            kind: kind.to_string(),
            subject: subject.into(),
            detail,
        });
    }

    /// Counts one request of `service` sent at `sent_at`: `None` when it succeeded, else the
    /// failure's cause.
    pub fn count_request(&self, service: &str, sent_at: Instant, failure: Option<&str>) {
        let since = sent_at.saturating_duration_since(self.0.start);
        let index = (since.as_millis() / BUCKET.as_millis()) as u64;
        let mut log = self.log();
        let bucket = log.buckets.entry((index, service.to_string())).or_default();
        match failure {
            None => bucket.ok += 1,
            Some(cause) => *bucket.failed.entry(cause.to_string()).or_default() += 1,
        }
    }

    /// The events recorded so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.log().events.clone()
    }

    /// The whole log as JSON: `{duration, bucket_seconds, events: [{t, kind, subject, detail}],
    /// requests: [{t, service, ok, failed: {cause: n}}]}` — what [`crate::report::render`] reads.
    pub fn to_json(&self) -> Value {
        let duration = self.elapsed().as_secs_f64();
        let log = self.log();
        let step = BUCKET.as_secs_f64();
        let requests: Vec<Value> = log
            .buckets
            .iter()
            .map(|((i, service), b)| {
                json!({"t": *i as f64 * step, "service": service, "ok": b.ok, "failed": b.failed})
            })
            .collect();
        json!({
            "duration": duration,
            "bucket_seconds": step,
            "events": log.events,
            "requests": requests,
        })
    }
}

/// The background watches of [`watch_cluster`]; they stop when this is dropped.
#[derive(Debug)]
pub struct ClusterWatch {
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWatch {
    /// Stops the watches.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Records node and pod transitions (launched, Ready, cordoned, terminated; scheduled, Ready,
/// terminating, gone) as the watches see them, so the report shows the cluster's side without
/// the orchestration having to narrate it.
pub fn watch_cluster(client: Client, timeline: Timeline) -> ClusterWatch {
    let nodes = tokio::spawn(watch_nodes(Api::all(client.clone()), timeline.clone()));
    let pods = tokio::spawn(watch_pods(Api::all(client), timeline));
    ClusterWatch {
        tasks: vec![nodes, pods],
    }
}

#[derive(Default, Clone, PartialEq)]
struct NodeState {
    ready: bool,
    cordoned: bool,
}

fn node_state(node: &Node) -> NodeState {
    let ready = quiesce_drainer::nodes::is_ready(node);
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    NodeState { ready, cordoned }
}

async fn watch_nodes(api: Api<Node>, timeline: Timeline) {
    let mut known: HashMap<String, NodeState> = HashMap::new();
    let mut seen_in_init: Option<Vec<String>> = None;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        match event {
            watcher::Event::Init => seen_in_init = Some(Vec::new()),
            watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                if let Some(seen) = &mut seen_in_init {
                    seen.push(node.name_any());
                }
                node_changed(&timeline, &mut known, &node);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen_in_init.take() {
                    let gone: Vec<String> = known
                        .keys()
                        .filter(|n| !seen.contains(n))
                        .cloned()
                        .collect();
                    for name in gone {
                        known.remove(&name);
                        timeline.record(kind::NODE_TERMINATED, name, json!({}));
                    }
                }
            }
            watcher::Event::Delete(node) => {
                let name = node.name_any();
                if known.remove(&name).is_some() {
                    timeline.record(kind::NODE_TERMINATED, name, json!({}));
                }
            }
        }
    }
}

fn node_changed(timeline: &Timeline, known: &mut HashMap<String, NodeState>, node: &Node) {
    let name = node.name_any();
    let now = node_state(node);
    let before = match known.get(&name) {
        Some(s) => s.clone(),
        None => {
            let zone = node
                .labels()
                .get("topology.kubernetes.io/zone")
                .cloned()
                .unwrap_or_default();
            timeline.record(kind::NODE_LAUNCHED, &name, json!({"zone": zone}));
            NodeState::default()
        }
    };
    if now.ready && !before.ready {
        timeline.record(kind::NODE_READY, &name, json!({}));
    }
    if now.cordoned != before.cordoned {
        let k = if now.cordoned {
            kind::NODE_CORDONED
        } else {
            kind::NODE_UNCORDONED
        };
        timeline.record(k, &name, json!({}));
    }
    known.insert(name, now);
}

#[derive(Default, Clone)]
struct PodState {
    node: Option<String>,
    ready: bool,
    terminating: bool,
}

/// The workload a pod belongs to, as a person names it: the Deployment (the ReplicaSet's name
/// without its hash), StatefulSet, DaemonSet, or the pod itself.
pub fn workload_of(pod: &Pod) -> String {
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)).or(o.first()));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => match o.name.rsplit_once('-') {
            Some((deployment, _hash)) => deployment.to_string(),
            None => o.name.clone(),
        },
        Some(o) => o.name.clone(),
        None => pod.name_any(),
    }
}

fn pod_detail(pod: &Pod, node: Option<&str>) -> Value {
    json!({
        "node": node,
        "namespace": pod.namespace().unwrap_or_default(),
        "workload": workload_of(pod),
    })
}

fn pod_subject(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

async fn watch_pods(api: Api<Pod>, timeline: Timeline) {
    let mut known: HashMap<String, (PodState, Value)> = HashMap::new();
    let mut seen_in_init: Option<Vec<String>> = None;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        match event {
            watcher::Event::Init => seen_in_init = Some(Vec::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let Some(seen) = &mut seen_in_init {
                    seen.push(pod_subject(&pod));
                }
                pod_changed(&timeline, &mut known, &pod);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen_in_init.take() {
                    let gone: Vec<String> = known
                        .keys()
                        .filter(|n| !seen.contains(n))
                        .cloned()
                        .collect();
                    for subject in gone {
                        if let Some((_, detail)) = known.remove(&subject) {
                            timeline.record(kind::POD_GONE, subject, detail);
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let subject = pod_subject(&pod);
                let detail = known.remove(&subject).map_or_else(
                    || pod_detail(&pod, pod.spec.as_ref().and_then(|s| s.node_name.as_deref())),
                    |(_, d)| d,
                );
                timeline.record(kind::POD_GONE, subject, detail);
            }
        }
    }
}

fn pod_changed(timeline: &Timeline, known: &mut HashMap<String, (PodState, Value)>, pod: &Pod) {
    let subject = pod_subject(pod);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let ready = quiesce_core::gate::is_ready(pod);
    let now = PodState {
        node: node.clone(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
    };
    let before = known
        .get(&subject)
        .map(|(s, _)| s.clone())
        .unwrap_or_default();
    let detail = pod_detail(pod, node.as_deref());
    if now.node.is_some() && before.node.is_none() {
        timeline.record(kind::POD_SCHEDULED, &subject, detail.clone());
    }
    if now.ready && !before.ready {
        timeline.record(kind::POD_READY, &subject, detail.clone());
    }
    if now.terminating && !before.terminating {
        timeline.record(kind::POD_TERMINATING, &subject, detail.clone());
    }
    known.insert(subject, (now, detail));
}
