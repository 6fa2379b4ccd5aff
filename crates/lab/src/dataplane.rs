//! The lab's data plane: every pod of a demo Service is a real HTTP/1.1 server on a loopback
//! port, and clients reach them through a [`Balancer`] that behaves like kube-proxy — it
//! learns of EndpointSlice changes late (the propagation delay of iptables rules), and an open
//! keep-alive connection stays with its pod after the pod left the list (conntrack). Those two
//! facts are why a pod that stops on SIGTERM drops requests, and what a drain delay fixes; the
//! servers model both kinds of app so the lab shows the difference with real sockets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::timeline::{Timeline, kind};

/// Pod annotation the sandbox kubelet reads as an exec/httpGet preStop hook's duration (the
/// kubelet's own constant is private to the sandbox).
pub const PRESTOP_DELAY: &str = "sandbox.quiesce.io/prestop-delay";
/// quiesce-init's drain delay when the container's environment does not set one.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// How the app in each pod reacts to SIGTERM: the difference the lab exists to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppBehaviour {
    /// What most apps do (and what the naive baseline runs): at SIGTERM the listener closes
    /// (new connections are refused) and open connections are dropped (clients see resets).
    StopOnSigterm,
    /// The app under quiesce-init: from SIGTERM it keeps serving for the container's
    /// `QUIESCE_DRAIN_DELAY` (answering `Connection: close` so keep-alive clients move to
    /// other pods), then stops accepting, finishes in-flight requests and closes.
    QuiesceInit,
}

/// The app every pod runs.
#[derive(Debug, Clone, Copy)]
pub struct App {
    /// What SIGTERM does.
    pub behaviour: AppBehaviour,
    /// Time each request takes to serve, so that requests are in flight when pods stop.
    pub work: Duration,
    /// Where the pod's server listens.
    pub listen: Listen,
}

impl From<AppBehaviour> for App {
    fn from(behaviour: AppBehaviour) -> Self {
        App {
            behaviour,
            work: Duration::ZERO,
            listen: Listen::Ephemeral,
        }
    }
}

/// Where a pod's server listens: what the data plane dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Any free port on 127.0.0.1: the userspace [`Balancer`] dials it through the [`Registry`],
    /// and lab runs on one host never collide.
    Ephemeral,
    /// The pod's own address in the lab's private network namespace
    /// ([`crate::kernel::pod_address`]) and this port: where the kernel data plane's DNAT
    /// rules send connections, as a cluster's rules send them to the pod IP.
    PodAddress(u16),
}

/// Pod IP → the loopback address of the server that plays that pod. Shared by the
/// [`PodServers`] that fill it and the [`Balancer`]s that dial through it, since pod IPs in the
/// sandbox are not routable.
#[derive(Clone, Debug)]
pub struct Registry(Arc<watch::Sender<HashMap<String, SocketAddr>>>);

impl Default for Registry {
    fn default() -> Self {
        Registry(Arc::new(watch::Sender::new(HashMap::new())))
    }
}

impl Registry {
    /// The server playing the pod with this IP, if one was started and the pod still exists.
    pub fn get(&self, pod_ip: &str) -> Option<SocketAddr> {
        self.0.borrow().get(pod_ip).copied()
    }

    /// How many pods have a server.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// Whether no pod has a server.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, pod_ip: String, addr: SocketAddr) {
        self.0.send_modify(|m| {
            m.insert(pod_ip, addr);
        });
    }

    fn remove(&self, pod_ip: &str) {
        self.0.send_if_modified(|m| m.remove(pod_ip).is_some());
    }

    /// Waits until `pred` holds for the map, up to `timeout`; false when it never did.
    /// Tests and the orchestration wait on conditions, never on sleeps.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&HashMap<String, SocketAddr>) -> bool,
    ) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|m| pred(m)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The servers of every pod matching a label selector, started and stopped as the pods come
/// and go. Dropping it (or [`PodServers::stop`]) stops every server.
#[derive(Debug)]
pub struct PodServers {
    registry: Registry,
    task: JoinHandle<()>,
}

impl Drop for PodServers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodServers {
    /// Watches the pods of `namespace` matching `selector` (`app=web`) and runs a server for
    /// each one that is Running with a pod IP; termination follows the pod as the container
    /// would (see [`AppBehaviour`]). Uses a fresh [`Registry`].
    pub fn start(
        client: Client,
        namespace: &str,
        selector: &str,
        app: impl Into<App>,
        timeline: Timeline,
    ) -> PodServers {
        PodServers::start_with_registry(
            client,
            namespace,
            selector,
            app,
            Registry::default(),
            timeline,
        )
    }

    /// [`PodServers::start`] into a given registry, so that several selectors can share one.
    pub fn start_with_registry(
        client: Client,
        namespace: &str,
        selector: &str,
        app: impl Into<App>,
        registry: Registry,
        timeline: Timeline,
    ) -> PodServers {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(watch_pods(
            api,
            config,
            app.into(),
            registry.clone(),
            timeline,
        ));
        PodServers { registry, task }
    }

    /// The pod IP → server map the balancers dial through.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// Stops every server (as if every container were killed).
    pub fn stop(self) {
        drop(self);
    }
}

type PodTasks = HashMap<String, (watch::Sender<Option<Pod>>, JoinHandle<()>)>;

async fn watch_pods(
    api: Api<Pod>,
    config: watcher::Config,
    app: App,
    registry: Registry,
    timeline: Timeline,
) {
    // One task per pod, fed the pod's latest state; None means the object is gone. The tasks
    // are aborted with this one (the JoinHandles live in `pods`, aborted in the guard).
    struct Guard(PodTasks);
    impl Drop for Guard {
        fn drop(&mut self) {
            for (_, (_, task)) in self.0.drain() {
                task.abort();
            }
        }
    }
    let mut pods = Guard(HashMap::new());
    let mut seen_in_init: Option<BTreeSet<String>> = None;
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        match event {
            watcher::Event::Init => seen_in_init = Some(BTreeSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let name = pod.name_any();
                if let Some(seen) = &mut seen_in_init {
                    seen.insert(name.clone());
                }
                pods.0.retain(|_, (_, task)| !task.is_finished());
                match pods.0.get(&name) {
                    Some((tx, _)) => {
                        tx.send_replace(Some(pod));
                    }
                    None => {
                        let (tx, rx) = watch::channel(Some(pod));
                        let task = tokio::spawn(pod_life(
                            name.clone(),
                            rx,
                            app,
                            registry.clone(),
                            timeline.clone(),
                        ));
                        pods.0.insert(name, (tx, task));
                    }
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = seen_in_init.take() {
                    for (name, (tx, _)) in &pods.0 {
                        if !seen.contains(name) {
                            tx.send_replace(None);
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some((tx, _)) = pods.0.get(&pod.name_any()) {
                    tx.send_replace(None);
                }
            }
        }
    }
}

fn running_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    (status.phase.as_deref() == Some("Running"))
        .then(|| status.pod_ip.clone())
        .flatten()
}

/// The preStop hook's duration as the sandbox kubelet runs it: a `sleep` action as is, else
/// the annotation for exec/httpGet hooks.
pub fn prestop_delay(pod: &Pod) -> Duration {
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    let sleep = containers
        .iter()
        .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref())
        .map(|s| s.seconds)
        .max();
    if let Some(seconds) = sleep {
        return Duration::from_secs(seconds.max(0) as u64);
    }
    pod.annotations()
        .get(PRESTOP_DELAY)
        .and_then(|v| humantime::parse_duration(v).ok())
        .unwrap_or_default()
}

/// Whether the preStop hook is `quiesce-init prestop`, which starts the drain at once instead
/// of at SIGTERM.
fn prestop_starts_drain(pod: &Pod) -> bool {
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    containers.iter().any(|c| {
        let command = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.as_ref());
        command.is_some_and(|cmd| {
            cmd.iter().any(|a| a.ends_with("quiesce-init")) && cmd.iter().any(|a| a == "prestop")
        })
    })
}

/// The container's `QUIESCE_DRAIN_DELAY`, quiesce-init's default when unset or unreadable.
pub fn drain_delay(pod: &Pod) -> Duration {
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    containers
        .iter()
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == "QUIESCE_DRAIN_DELAY")
        .and_then(|e| e.value.as_deref())
        .and_then(|v| humantime::parse_duration(v).ok())
        .unwrap_or(DEFAULT_DRAIN_DELAY)
}

/// Waits until the pod object is gone (or the watch feeding this task went away).
async fn deleted(rx: &mut watch::Receiver<Option<Pod>>) {
    let _ = rx.wait_for(Option::is_none).await;
}

/// One pod's container, from Running to the pod's deletion.
async fn pod_life(
    name: String,
    mut rx: watch::Receiver<Option<Pod>>,
    app: App,
    registry: Registry,
    timeline: Timeline,
) {
    // Running with an IP: the container is up.
    let ip = loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => return,
            Some(p) if p.metadata.deletion_timestamp.is_some() && running_ip(&p).is_none() => {
                return;
            }
            Some(p) => {
                if let Some(ip) = running_ip(&p) {
                    break ip;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    };
    let bind = match app.listen {
        Listen::Ephemeral => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        Listen::PodAddress(port) => {
            crate::kernel::pod_address(&ip).map(|a| SocketAddr::from((a, port)))
        }
    };
    let Some(bind) = bind else {
        tracing::warn!(pod = %name, %ip, "the pod IP has no address in the lab's namespace");
        return;
    };
    let server = match Server::start(&name, app.work, bind).await {
        Ok(server) => server,
        Err(e) => {
            tracing::warn!(pod = %name, %bind, error = %e, "could not bind the pod's server");
            return;
        }
    };
    registry.insert(ip.clone(), server.addr);
    let _unregister = Unregister(registry, ip);

    // Until the pod is deleted, serve.
    let pod = loop {
        let pod = rx.borrow_and_update().clone();
        match pod {
            None => return,
            Some(p) if p.metadata.deletion_timestamp.is_some() => break p,
            Some(_) => {}
        }
        if rx.changed().await.is_err() {
            return;
        }
    };
    let deleting_at = Instant::now();
    let sigterm_at = deleting_at + prestop_delay(&pod);
    let subject = format!("{}/{name}", pod.namespace().unwrap_or_default());
    let drain_started_at = if prestop_starts_drain(&pod) {
        deleting_at
    } else {
        sigterm_at
    };
    let drain_until = drain_started_at + drain_delay(&pod);

    // preStop: the app serves on as before. Deletion of the object ends everything (kill).
    tokio::select! {
        () = tokio::time::sleep_until(sigterm_at) => {}
        () = deleted(&mut rx) => return,
    }
    timeline.record(kind::APP_SIGTERM, &subject, json!({}));
    match app.behaviour {
        AppBehaviour::StopOnSigterm => {
            server.set(Phase::Killed);
            timeline.record(kind::APP_STOPPED, &subject, json!({"graceful": false}));
        }
        AppBehaviour::QuiesceInit => {
            server.set(Phase::Draining);
            tokio::select! {
                () = tokio::time::sleep_until(drain_until) => {}
                () = deleted(&mut rx) => return,
            }
            server.set(Phase::Stopping);
            timeline.record(kind::APP_STOPPED, &subject, json!({"graceful": true}));
        }
    }
    deleted(&mut rx).await;
    // `server` drops here: listener and every connection gone, as the container is.
}

/// Removes the pod's entry when its task ends, however it ends.
struct Unregister(Registry, String);

impl Drop for Unregister {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Where a pod's server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Accepting, keep-alive on.
    Serving,
    /// Accepting, every response says `Connection: close`.
    Draining,
    /// Listener closed; in-flight requests finish, idle connections close.
    Stopping,
    /// Listener closed, every connection dropped at once.
    Killed,
}

/// One pod's HTTP server; dropping it kills it.
struct Server {
    addr: SocketAddr,
    phase: watch::Sender<Phase>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Killed);
        self.task.abort();
    }
}

impl Server {
    async fn start(pod: &str, work: Duration, bind: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let (phase, rx) = watch::channel(Phase::Serving);
        let body = Bytes::from(format!("served by {pod}\n"));
        let task = tokio::spawn(accept_loop(listener, rx, body, work));
        Ok(Server { addr, phase, task })
    }

    fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut phase: watch::Receiver<Phase>,
    body: Bytes,
    work: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_connection(stream, phase.clone(), body.clone(), work));
                }
            }
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() >= Phase::Stopping {
                    break;
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // The listener closes: new connects get ECONNREFUSED from the kernel.
    drop(listener);
    if *phase.borrow() == Phase::Killed {
        conns.abort_all();
        return;
    }
    // Stopping: connections finish their in-flight request and close; a kill cuts that short.
    loop {
        tokio::select! {
            next = conns.join_next() => if next.is_none() { return },
            changed = phase.wait_for(|p| *p == Phase::Killed) => {
                let _ = changed;
                conns.abort_all();
                return;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    mut phase: watch::Receiver<Phase>,
    body: Bytes,
    work: Duration,
) {
    let draining = phase.clone();
    let service = service_fn(move |_req: Request<Incoming>| {
        let body = body.clone();
        let draining = *draining.borrow() >= Phase::Draining;
        async move {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            let mut response = Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/plain");
            if draining {
                // hyper closes the connection after a response that says so: keep-alive
                // clients reconnect, and a new connection goes to a pod still in the list.
                response = response.header("connection", "close");
            }
            Ok::<_, Infallible>(response.body(Full::new(body)).expect("static response"))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = phase.wait_for(|p| *p >= Phase::Stopping) => {}
    }
    if *phase.borrow() == Phase::Killed {
        return;
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Where a new connection goes, as kube-proxy decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// A ready endpoint, and the server that plays it.
    Endpoint {
        /// The pod IP.
        ip: String,
        /// The server's loopback address.
        addr: SocketAddr,
    },
    /// The applied list is empty: kube-proxy's REJECT rule, a refused connection.
    NoEndpoints,
    /// The endpoint's pod has no server (gone, or never started): nothing answers that IP,
    /// counted as refused.
    NoServer {
        /// The pod IP.
        ip: String,
    },
}

struct BalancerInner {
    service: String,
    applied: watch::Receiver<Arc<Vec<String>>>,
    next: AtomicUsize,
    registry: Registry,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for BalancerInner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A Service's client-side view, as one node's kube-proxy has it: the usable endpoints
/// ([`usable_endpoints`]) of the Service's EndpointSlices, each change applied only after the
/// propagation delay. Cheap to clone; the watches stop when the last clone is dropped.
#[derive(Clone)]
pub struct Balancer(Arc<BalancerInner>);

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.0.service)
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl Balancer {
    /// Watches the EndpointSlices of `service` (label `kubernetes.io/service-name`) and applies
    /// each change `propagation_delay` after it was seen — the lag that makes a stopped pod
    /// still receive new connections. Records every applied change in the timeline.
    pub fn start(
        client: Client,
        namespace: &str,
        service: &str,
        propagation_delay: Duration,
        registry: Registry,
        timeline: Timeline,
    ) -> Balancer {
        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let config =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let (applied_tx, applied) = watch::channel(Arc::new(Vec::new()));
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let watch = tokio::spawn(watch_slices(api, config, propagation_delay, changes_tx));
        let apply = tokio::spawn(apply_changes(
            service.to_string(),
            changes_rx,
            applied_tx,
            timeline,
        ));
        Balancer(Arc::new(BalancerInner {
            service: service.to_string(),
            applied,
            next: AtomicUsize::new(0),
            registry,
            tasks: vec![watch, apply],
        }))
    }

    /// The Service's name.
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// The applied (propagated) usable endpoint IPs, sorted.
    pub fn endpoints(&self) -> Vec<String> {
        self.0.applied.borrow().as_ref().clone()
    }

    /// The endpoint for a new connection: round robin over the applied list. Only new
    /// connections ask; an open connection stays where it is (conntrack).
    pub fn pick(&self) -> Pick {
        let list = self.0.applied.borrow().clone();
        if list.is_empty() {
            return Pick::NoEndpoints;
        }
        let i = self.0.next.fetch_add(1, Ordering::Relaxed) % list.len();
        let ip = list[i].clone();
        match self.0.registry.get(&ip) {
            Some(addr) => Pick::Endpoint { ip, addr },
            None => Pick::NoServer { ip },
        }
    }

    /// The applied list as it changes: what the kernel data plane programs from.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<String>>> {
        self.0.applied.clone()
    }

    /// Waits until `pred` holds for the applied endpoint list, up to `timeout`; false when it
    /// never did.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> bool,
    ) -> bool {
        let mut rx = self.0.applied.clone();
        tokio::time::timeout(timeout, rx.wait_for(|l| pred(l)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The endpoint IPs kube-proxy sends new connections to, over all of a Service's slices: the
/// Ready ones; when none is Ready, the ones that are serving and terminating, so that a
/// Service whose every pod is shutting down still reaches the pods that can answer (KEP-1669;
/// upstream `CategorizeEndpoints` in pkg/proxy/topology.go, kube-proxy ≥ 1.28). Sorted, once
/// each.
pub fn usable_endpoints<'a>(endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Vec<String> {
    let endpoints: Vec<&Endpoint> = endpoints.into_iter().collect();
    let condition = |e: &Endpoint, f: fn(&EndpointConditions) -> Option<bool>| {
        e.conditions.as_ref().and_then(f) == Some(true)
    };
    let pick = |keep: &dyn Fn(&Endpoint) -> bool| -> Vec<String> {
        let mut ips: Vec<String> = endpoints
            .iter()
            .filter(|e| keep(e))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    };
    let ready = pick(&|e| condition(e, |c| c.ready));
    if !ready.is_empty() {
        return ready;
    }
    pick(&|e| condition(e, |c| c.serving) && condition(e, |c| c.terminating))
}

async fn watch_slices(
    api: Api<EndpointSlice>,
    config: watcher::Config,
    delay: Duration,
    changes: mpsc::UnboundedSender<(Instant, Vec<String>)>,
) {
    let mut slices: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, Vec<Endpoint>>> = None;
    let mut last: Option<Vec<String>> = None;
    let mut stream = watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        match event {
            watcher::Event::Init => {
                init = Some(BTreeMap::new());
                continue;
            }
            watcher::Event::InitApply(slice) => {
                if let Some(init) = &mut init {
                    init.insert(slice.name_any(), slice.endpoints.clone());
                }
                continue;
            }
            watcher::Event::InitDone => slices = init.take().unwrap_or_default(),
            watcher::Event::Apply(slice) => {
                slices.insert(slice.name_any(), slice.endpoints.clone());
            }
            watcher::Event::Delete(slice) => {
                slices.remove(&slice.name_any());
            }
        }
        let list = usable_endpoints(slices.values().flatten());
        if last.as_ref() != Some(&list) {
            last = Some(list.clone());
            if changes.send((Instant::now() + delay, list)).is_err() {
                return;
            }
        }
    }
}

async fn apply_changes(
    service: String,
    mut changes: mpsc::UnboundedReceiver<(Instant, Vec<String>)>,
    applied: watch::Sender<Arc<Vec<String>>>,
    timeline: Timeline,
) {
    // Every change has the same delay, so they come due in the order they were seen.
    while let Some((due, list)) = changes.recv().await {
        tokio::time::sleep_until(due).await;
        let count = list.len();
        let changed = applied.send_if_modified(|cur| {
            if cur.as_ref() == &list {
                return false;
            }
            *cur = Arc::new(list.clone());
            true
        });
        if changed {
            timeline.record(
                kind::ENDPOINTS,
                &service,
                json!({"ready": count, "endpoints": list}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            ..Endpoint::default()
        }
    }

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let eps = [
            endpoint("10.244.0.2", true, true, false),
            endpoint("10.244.0.1", false, true, true),
            endpoint("10.244.0.3", false, false, false),
        ];
        assert_eq!(usable_endpoints(&eps), ["10.244.0.2"]);
    }

    #[test]
    fn with_none_ready_serving_terminating_endpoints_take_the_traffic() {
        let eps = [
            endpoint("10.244.0.2", false, true, true),
            endpoint("10.244.0.1", false, true, true),
            // Terminating and no longer serving: never.
            endpoint("10.244.0.3", false, false, true),
            // Not ready and not terminating (starting up): never.
            endpoint("10.244.0.4", false, true, false),
        ];
        assert_eq!(usable_endpoints(&eps), ["10.244.0.1", "10.244.0.2"]);
        assert!(usable_endpoints(&eps[2..]).is_empty());
    }
}
