//! The userspace data plane: clients reach the pods' apps (real processes, see
//! [`crate::pods`]) through a [`Balancer`] that behaves like kube-proxy — it learns of
//! EndpointSlice changes late (the propagation delay of iptables rules), and an open
//! keep-alive connection stays with its pod after the pod left the list (conntrack). Those two
//! facts are why a pod that stops on SIGTERM drops requests, and what a drain delay fixes. The
//! kernel data plane ([`crate::kernel`]) programs its rules from the same endpoint views.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::timeline::{Timeline, kind};

/// Pod IP → the loopback address of the server that plays that pod. Shared by the
/// [`crate::pods::Runtime`] that fills it and the [`Balancer`]s that dial through it, since pod IPs in the
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

    /// Records the app playing the pod with this IP (the lab's runtime, when it is up).
    pub(crate) fn insert(&self, pod_ip: String, addr: SocketAddr) {
        self.0.send_modify(|m| {
            m.insert(pod_ip, addr);
        });
    }

    /// Forgets it (the app's process is gone).
    pub(crate) fn remove(&self, pod_ip: &str) {
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
