//! The simulated nodes: scheduler, kubelets and the DaemonSet controller, running in-process on
//! the API server's store (the workload controllers are kube-rs clients, in [`crate::sim`]).
//!
//! One loop reconciles everything on every change, level-triggered like upstream controllers:
//! it wakes when the store's resourceVersion moves or when the earliest simulated deadline
//! (a pod becoming Ready, a grace period running out) is due — never on a polling tick.
//! Writes go through the same store functions as HTTP clients, so watches see them as they
//! would see a real kubelet's or controller's.

mod daemonset;
mod kubelet;
pub mod objects;
mod scheduler;

pub use kubelet::EXTERNAL_RUNTIME;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::resources::{Resource, by_kind};
use crate::api::status::ApiError;
use crate::api::store::{DeleteOptions, Part, Store};
use crate::time::TimeScale;

/// Knobs of the simulation.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How much faster than real time the simulated waits run.
    pub time_scale: TimeScale,
    /// Simulated time from a pod's start to Ready, unless the pod says otherwise
    /// (annotation `sandbox.quiesce.io/startup-delay` or a readiness probe's initial delay).
    pub startup_delay: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            time_scale: TimeScale::REAL,
            startup_delay: Duration::from_secs(2),
        }
    }
}

/// Per-pod memory of the simulated kubelets, keyed by pod UID.
#[derive(Default)]
struct State {
    ready_at: HashMap<String, Instant>,
    gone_at: HashMap<String, Instant>,
    next_ip: u32,
}

/// What one reconcile pass works with.
struct Pass<'a> {
    store: &'a Store,
    opts: &'a ClusterOptions,
    state: &'a mut State,
    now: Instant,
    next_wake: Option<Instant>,
}

impl Pass<'_> {
    /// Asks for another pass at `at` (simulated deadlines).
    fn wake_at(&mut self, at: Instant) {
        self.next_wake = Some(self.next_wake.map_or(at, |n| n.min(at)));
    }

    fn all(&self, r: &'static Resource) -> Vec<Value> {
        self.matching(r, |_| true)
    }

    /// Copies of the objects `keep` picks. A pass runs on every change, and most pods need
    /// nothing (bound, Running, Ready): reading them in place instead of copying them all keeps
    /// a pass over 30,000 pods in milliseconds.
    fn matching(&self, r: &'static Resource, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        self.store.for_each(r, |o| {
            if keep(o) {
                out.push(o.clone());
            }
        });
        out
    }

    /// Creates an object; a failure (a race with a client) is retried by the next pass.
    fn create(&self, r: &'static Resource, ns: &str, obj: Value) {
        if let Err(e) = self.store.create(r, ns, obj, false) {
            tracing::debug!(resource = r.plural, error = %e.message, "simulated create failed");
        }
    }

    /// Rewrites the main resource or its status with `f`; no-op writes change nothing.
    fn update(&self, r: &'static Resource, obj: &Value, part: Part, f: impl FnOnce(&mut Value)) {
        let (ns, name) = (objects::namespace(obj), objects::name(obj));
        let result = self.store.modify(r, ns, name, part, |current| {
            let mut next = current.clone();
            f(&mut next);
            Ok(next)
        });
        log_failure(r, name, result.err());
    }

    /// Deletes an object (pods get their grace period unless `grace` says otherwise).
    fn delete(&self, r: &'static Resource, obj: &Value, grace: Option<i64>) {
        let opts = DeleteOptions {
            grace_period_seconds: grace,
            uid: Some(objects::uid(obj).to_string()),
            ..Default::default()
        };
        let result = self
            .store
            .delete(r, objects::namespace(obj), objects::name(obj), &opts);
        log_failure(r, objects::name(obj), result.err());
    }
}

fn log_failure(r: &Resource, name: &str, err: Option<ApiError>) {
    if let Some(e) = err
        && e.code != 404
    {
        tracing::debug!(resource = r.plural, name, error = %e.message, "simulated write failed");
    }
}

fn pods() -> &'static Resource {
    by_kind("", "Pod")
}

/// Passes that take longer than this are followed by a rest as long (see [`Cluster::spawn`]).
const PASS_REST_FROM: Duration = Duration::from_millis(5);

/// The running simulation; dropping it does not stop it, [`Cluster::stop`] does.
pub struct Cluster {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Starts the simulation loop on `store`.
    pub fn spawn(store: Arc<Store>, opts: ClusterOptions) -> Cluster {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut latest = store.subscribe_latest();
            let mut state = State::default();
            loop {
                latest.borrow_and_update();
                let mut pass = Pass {
                    store: &store,
                    opts: &opts,
                    state: &mut state,
                    now: Instant::now(),
                    next_wake: None,
                };
                let started = Instant::now();
                reconcile(&mut pass);
                let next_wake = pass.next_wake;
                // A pass blocks its worker thread. Under a burst of writes (five hundred
                // cordons at once on 30,000 pods) back-to-back passes would take a whole core
                // from the API server they simulate behind; resting as long as the pass took
                // keeps the simulation at half a core, reacting to the burst's changes
                // together, as a loaded controller does. A small cluster's pass takes well
                // under a millisecond and does not rest.
                let took = started.elapsed();
                if took >= PASS_REST_FROM {
                    tokio::time::sleep(took).await;
                }
                let sleep = async {
                    match next_wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = latest.changed() => if changed.is_err() { return },
                    _ = sleep => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Cluster { stop, task }
    }

    /// Stops the loop and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// One level-triggered pass of every component, in the order a real cluster converges.
fn reconcile(pass: &mut Pass<'_>) {
    kubelet::nodes(pass);
    daemonset::reconcile(pass);
    scheduler::schedule(pass);
    kubelet::pod_lifecycles(pass);
}
