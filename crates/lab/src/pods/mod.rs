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

pub mod process;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::{LISTEN_ENV, LISTENING, POD_NAME_ENV};
use crate::dataplane::Registry;
use crate::timeline::{Timeline, kind};
use process::{Container, Exec, Isolation, Pid1, describe, run_hook};
use spec::{ContainerSpec, grace_period};

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
                        let task = tokio::spawn(pod_life(rx, life.clone()));
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

/// Bound and given an IP by the sandbox: the moment the container starts.
fn bound_ip(pod: &Pod) -> Option<(String, String)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    Some((node, ip))
}

/// What ended a wait on the pod.
enum Next {
    /// The pod object is gone (or the run ended).
    Gone,
    /// It has a deletionTimestamp.
    Deleting(Box<Pod>),
}

/// Waits until the pod is being deleted or gone (or the run is over, which counts as gone).
async fn deletion(
    rx: &mut watch::Receiver<Option<Pod>>,
    stopped: &mut watch::Receiver<bool>,
) -> Next {
    loop {
        match rx.borrow_and_update().clone() {
            None => return Next::Gone,
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                return Next::Deleting(Box::new(p));
            }
            Some(_) => {}
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Next::Gone },
            _ = stopped.wait_for(|s| *s) => return Next::Gone,
        }
    }
}

/// Removes the pod's registry entry when its task ends, however it ends.
struct Unregister(Registry, String);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// One pod's container, from the bind to the final delete.
async fn pod_life(mut rx: watch::Receiver<Option<Pod>>, life: Life) {
    let mut stopped = life.stopped.clone();
    let (pod, node, ip) = loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => return,
            Some(p) if p.metadata.deletion_timestamp.is_some() => return,
            Some(p) => {
                if let Some((node, ip)) = bound_ip(&p) {
                    break (p, node, ip);
                }
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|s| *s) => return,
        }
    };
    let subject = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    life.update(&subject, |r| {
        r.pod = subject.clone();
        r.node = node.clone();
    });
    let fail = |why: String| {
        tracing::warn!(pod = %subject, error = %why, "the pod's container did not run");
        life.update(&subject, |r| r.error = Some(why));
    };
    let spec = match ContainerSpec::of(&pod, &life.opts.program) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let listen = match life.opts.listen {
        Listen::Ephemeral => SocketAddr::from(([127, 0, 0, 1], 0)),
        Listen::PodAddress(port) => match crate::kernel::pod_address(&ip) {
            Some(a) => SocketAddr::from((a, port)),
            None => return fail(format!("pod IP {ip} has no address in the lab's namespace")),
        },
    };
    let dir = life.opts.run_dir.join(pod.name_any());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(format!("creating {}: {e}", dir.display()));
    }
    // The container's environment: the spec's, and what its runtime adds — the downward API's
    // pod name and address, and a control socket in the container's own directory.
    let mut env = spec.env.clone();
    env.insert(POD_NAME_ENV.into(), pod.name_any());
    env.insert(LISTEN_ENV.into(), listen.to_string());
    env.insert(
        "QUIESCE_CONTROL_SOCKET".into(),
        dir.join("quiesce-init.sock").to_string_lossy().into_owned(),
    );
    let exec = Exec {
        argv: spec.argv.clone(),
        env: env.clone(),
    };
    let (logs_tx, mut logs) = mpsc::unbounded_channel();
    let started = Container::start(&exec, &life.opts.isolation, LISTENING, logs_tx, 64).await;
    let (mut container, listening) = match started {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    life.update(&subject, |r| {
        r.pid1 = Some(container.pid1().clone());
        r.started_at = life.now();
    });
    life.timeline.record(
        kind::PROCESS_STARTED,
        &subject,
        json!({"node": node, "pid1": container.pid1(), "isolation": life.opts.isolation}),
    );
    let log_task = {
        let timeline = life.timeline.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            while let Some(line) = logs.recv().await {
                timeline.record(kind::CONTAINER_LOG, &subject, json!({"line": line}));
            }
        })
    };
    let _logs = AbortOnDrop(log_task);
    let Some(addr) = listening.and_then(|l| l.parse::<SocketAddr>().ok()) else {
        let status = container.wait().await;
        life.update(&subject, |r| {
            r.exited_at = life.now();
            r.exit = Some(describe(status));
            r.stopped_by = Some("crashed".into());
        });
        life.timeline.record(
            kind::PROCESS_EXITED,
            &subject,
            json!({"status": describe(status)}),
        );
        return;
    };
    life.registry.insert(ip.clone(), addr);
    let _unregister = Unregister(life.registry.clone(), ip.clone());

    // Probing until Ready, while watching for the deletion and for the process's end.
    let probe = spec.probe.clone();
    let ready = async {
        let Some(probe) = probe else {
            return;
        };
        loop {
            if probe_passes(addr, &probe).await {
                return;
            }
            tokio::time::sleep(probe.period).await;
        }
    };
    let next = tokio::select! {
        () = ready => {
            life.update(&subject, |r| r.ready_at = life.now());
            life.timeline.record(kind::PROBE_PASSED, &subject, json!({"addr": addr.to_string()}));
            let latest = rx.borrow().clone().unwrap_or_else(|| pod.clone());
            if let Err(e) = set_ready(&life.api, &latest).await {
                tracing::warn!(pod = %subject, error = %e, "could not report the pod Ready");
            }
            None
        }
        n = deletion(&mut rx, &mut stopped) => Some(n),
        status = container.wait() => {
            exited(&life, &subject, status, "crashed");
            return;
        }
    };
    let next = match next {
        Some(n) => n,
        None => tokio::select! {
            n = deletion(&mut rx, &mut stopped) => n,
            status = container.wait() => {
                exited(&life, &subject, status, "crashed");
                return;
            }
        },
    };
    let deleting = match next {
        Next::Gone => {
            // No graceful stop: the object vanished (node gone, force delete) or the run ended.
            let by = if *stopped.borrow() {
                "lab-end"
            } else {
                "pod-vanished"
            };
            life.update(&subject, |r| r.sigkill_at = life.now());
            container.kill();
            let status = container.wait().await;
            exited(&life, &subject, status, by);
            return;
        }
        Next::Deleting(p) => p,
    };
    let status = terminate(&life, &subject, &mut container, &spec, &env, &deleting).await;
    exited(&life, &subject, status, "kubelet");
    drop(_unregister);
    // The kubelet's final delete, once the container is gone.
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: deleting.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = deleting.name_any();
    let delete = life.api.delete(&name, &dp);
    if let Ok(Err(e)) = tokio::time::timeout(WRITE_TIMEOUT, delete).await {
        tracing::debug!(pod = %subject, error = %e, "final delete");
    }
}

/// The kubelet's stop: preStop, SIGTERM, SIGKILL at the end of the grace period.
async fn terminate(
    life: &Life,
    subject: &str,
    container: &mut Container,
    spec: &ContainerSpec,
    env: &BTreeMap<String, String>,
    pod: &Pod,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + grace_period(pod);
    if let Some(argv) = &spec.prestop {
        life.update(subject, |r| r.prestop_at = life.now());
        life.timeline
            .record(kind::PRESTOP, subject, json!({"command": argv.join(" ")}));
        let hook = Exec {
            argv: argv.clone(),
            env: env.clone(),
        };
        // The hook runs to its end (or the deadline) whatever the container does meanwhile:
        // quiesce-init's drain may well stop the app and exit before the hook returns.
        let hook = run_hook(&hook, deadline);
        let mut hook = std::pin::pin!(hook);
        let ran = tokio::select! {
            r = &mut hook => r,
            _ = container.wait() => hook.await,
        };
        let outcome = match ran {
            Ok(Some(s)) => describe(s),
            Ok(None) => "timeout".into(),
            Err(e) => e.to_string(),
        };
        life.update(subject, |r| r.prestop_exit = Some(outcome.clone()));
        life.timeline
            .record(kind::PRESTOP_DONE, subject, json!({"status": outcome}));
    }
    if container.signal(Signal::SIGTERM) {
        life.update(subject, |r| r.sigterm_at = life.now());
        life.timeline.record(
            kind::SIGTERM,
            subject,
            json!({"pid": container.pid1().host_pid}),
        );
    }
    if let Ok(status) = tokio::time::timeout_at(deadline, container.wait()).await {
        return status;
    }
    container.kill();
    life.update(subject, |r| r.sigkill_at = life.now());
    life.timeline
        .record(kind::SIGKILL, subject, json!({"grace_period_over": true}));
    container.wait().await
}

fn exited(life: &Life, subject: &str, status: std::process::ExitStatus, by: &str) {
    life.update(subject, |r| {
        r.exited_at = life.now();
        r.exit = Some(describe(status));
        r.stopped_by = Some(by.to_string());
    });
    life.timeline.record(
        kind::PROCESS_EXITED,
        subject,
        json!({"status": describe(status), "stopped_by": by}),
    );
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP GET of the probe's path on the app's address: passes on a 2xx or 3xx status, as
/// the kubelet's HTTP probe does.
async fn probe_passes(addr: SocketAddr, probe: &spec::Probe) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/lab\r\nConnection: close\r\n\r\n",
            probe.path
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&status))
    };
    tokio::time::timeout(probe.timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The status a kubelet posts when a pod's readiness probe passes: Ready and ContainersReady
/// True, the container ready.
async fn set_ready(api: &Api<Pod>, pod: &Pod) -> kube::Result<()> {
    let status = pod.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.unwrap_or_default();
    for c in &mut conditions {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            c.status = "True".into();
        }
    }
    let mut containers = status.container_statuses.unwrap_or_default();
    for c in &mut containers {
        c.ready = true;
        c.started = Some(true);
    }
    let patch = json!({"status": {"conditions": conditions, "containerStatuses": containers}});
    let (name, params, patch) = (pod.name_any(), PatchParams::default(), Patch::Merge(patch));
    let write = api.patch_status(&name, &params, &patch);
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {WRITE_TIMEOUT:?}").into(),
        )),
    }
}

/// How long the runtime waits for one of its writes to the API (a bound, as every network
/// call has).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
