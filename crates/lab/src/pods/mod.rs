//! The lab's container runtime: every pod of the demo Services is a real OS process, run the
//! way a node's kubelet runs a container. The sandbox's simulated kubelet binds the pod (phase
//! Running, a pod IP) and leaves the rest to this runtime (annotation
//! [`quiesce_sandbox::cluster::EXTERNAL_RUNTIME`]):
//!
//! - at the bind the container's command starts ([`spec`] resolves it against the lab's image,
//!   [`process`] runs it — as root in a PID namespace of its own);
//! - the pod turns Ready when its readiness probe, an HTTP GET on the pod's port, first passes;
//! - at deletion: the exec preStop hook runs as a real command, then SIGTERM goes to the
//!   container's PID 1, then SIGKILL when the grace period runs out; once the process has
//!   exited the pod object is deleted with grace 0, as the kubelet's final delete does.
//!
//! Every step goes to the timeline, and each pod's life to a [`PodRecord`] for the report.

mod life;
mod probe;
pub mod process;
pub mod spec;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dataplane::Registry;
use crate::timeline::Timeline;
use process::{Isolation, Pid1};

/// Where a pod's app listens: what the data plane dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Any free port on 127.0.0.1: the userspace balancer dials it through the [`Registry`],
    /// and lab runs on one host never collide.
    Ephemeral,
    /// The pod's own address in the lab's private network namespace
    /// ([`crate::kernel::pod_address`]) and this port: where the kernel data plane's DNAT
    /// rules send connections, as a cluster's rules send them to the pod IP.
    PodAddress(u16),
}

/// How the runtime runs containers.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// The binary behind the image's programs: the `quiesce` binary (the lab re-executes
    /// itself, `std::env::current_exe()`).
    pub program: PathBuf,
    /// Where apps listen.
    pub listen: Listen,
    /// PID namespaces or the subreaper fallback ([`Isolation::detect`]).
    pub isolation: Isolation,
    /// A directory of the run's own: each container gets a private directory in it (its
    /// quiesce-init control socket lives there, as in a container's own /tmp).
    pub run_dir: PathBuf,
}

/// One pod's container over its life, as the report shows it. Times are seconds into the run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PodRecord {
    /// `namespace/name`.
    pub pod: String,
    /// The node it ran on.
    pub node: String,
    /// The container's first process (pids, and its command line).
    pub pid1: Option<Pid1>,
    /// When the process started.
    pub started_at: Option<f64>,
    /// When the readiness probe first passed.
    pub ready_at: Option<f64>,
    /// When the preStop hook started, and how it ended.
    pub prestop_at: Option<f64>,
    /// The preStop hook's exit status (`exit 0`), or `timeout`.
    pub prestop_exit: Option<String>,
    /// When PID 1 got SIGTERM.
    pub sigterm_at: Option<f64>,
    /// When it got SIGKILL (the grace period ran out, or the pod object vanished).
    pub sigkill_at: Option<f64>,
    /// When the process exited.
    pub exited_at: Option<f64>,
    /// How: `exit 0`, `signal 9 (SIGKILL)`.
    pub exit: Option<String>,
    /// Who stopped it: `kubelet` (the pod's deletion), `pod-vanished` (its object went without
    /// a graceful stop), `lab-end` (still running when the run ended), `crashed`.
    pub stopped_by: Option<String>,
    /// Why it never ran, if it did not.
    pub error: Option<String>,
}

type Records = Arc<Mutex<BTreeMap<String, PodRecord>>>;

/// The runtime for the pods matching one label selector. [`Runtime::stop`] ends every
/// container; dropping it does too (each killed).
pub struct Runtime {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    records: Records,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Runtime {
    /// Watches the pods of `namespace` matching `selector` and runs each one's container from
    /// its bind to its end; each app's address goes into `registry` while it runs.
    pub fn start(
        client: Client,
        namespace: &str,
        selector: &str,
        opts: RuntimeOptions,
        registry: Registry,
        timeline: Timeline,
    ) -> Runtime {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(selector);
        let records: Records = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let life = Life {
            api: api.clone(),
            opts: Arc::new(opts),
            registry,
            timeline,
            records: records.clone(),
            stopped,
        };
        let task = tokio::spawn(watch_pods(api, config, life));
        Runtime {
            task,
            stop,
            records,
        }
    }

    /// Kills every container still running (the run is over) and waits until each has exited;
    /// returns every pod's record, in name order.
    pub async fn stop(mut self) -> Vec<PodRecord> {
        self.stop.send_replace(true);
        let _ = (&mut self.task).await;
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// What every pod's task shares.
#[derive(Clone)]
struct Life {
    api: Api<Pod>,
    opts: Arc<RuntimeOptions>,
    registry: Registry,
    timeline: Timeline,
    records: Records,
    stopped: watch::Receiver<bool>,
}

impl Life {
    fn update(&self, pod: &str, f: impl FnOnce(&mut PodRecord)) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        f(records.entry(pod.to_string()).or_default());
    }

    fn now(&self) -> Option<f64> {
        Some(self.timeline.elapsed().as_secs_f64())
    }
}

type PodTasks = HashMap<String, (watch::Sender<Option<Pod>>, JoinHandle<()>)>;

async fn watch_pods(api: Api<Pod>, config: watcher::Config, life: Life) {
    let mut pods: PodTasks = HashMap::new();
    let mut seen_in_init: Option<BTreeSet<String>> = None;
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut stopped = life.stopped.clone();
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = stopped.wait_for(|s| *s) => None,
        };
        let Some(event) = event else { break };
        let Ok(event) = event else { continue };
        match event {
            watcher::Event::Init => seen_in_init = Some(BTreeSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let name = pod.name_any();
                if let Some(seen) = &mut seen_in_init {
                    seen.insert(name.clone());
                }
                pods.retain(|_, (_, task)| !task.is_finished());
                match pods.get(&name) {
                    Some((tx, _)) => {
                        tx.send_replace(Some(pod));
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(pod));
                        let task = tokio::spawn(life::pod_life(rx, life.clone()));
                        pods.insert(name, (tx, task));
                    }
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen_in_init.take() {
                    for (name, (tx, _)) in &pods {
                        if !seen.contains(name) {
                            tx.send_replace(None);
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some((tx, _)) = pods.get(&pod.name_any()) {
                    tx.send_replace(None);
                }
            }
        }
    }
    // The run is over (or the watch ended): every pod task kills its container and returns.
    for (_, (_, task)) in pods {
        let _ = task.await;
    }
}
