//! The kernel data plane: the lab runs in a private network namespace of its own, each Service
//! gets a virtual IP in `127.96.0.0/16`, and a [`Proxier`] programs it the way kube-proxy's
//! iptables mode does (upstream `pkg/proxy/iptables/proxier.go`, `syncProxyRules`):
//! `OUTPUT` → `KUBE-SERVICES` → `KUBE-SVC-…` with one `statistic --mode random --probability`
//! rule per endpoint → `KUBE-SEP-…` DNAT to the pod's address, and a filter-table REJECT for a
//! Service with no endpoints. Clients connect to the virtual IP; the kernel picks the backend
//! when the connection opens and conntrack keeps an established connection on its pod after the
//! rules drop it — the two facts the lab's failures come from, here from the kernel itself.
//!
//! Every address stays in `127.0.0.0/8` inside the namespace (`route_localnet=1`, as
//! kube-proxy sets it), so no packet of the lab uses another range, and nothing touches the
//! host's rules.
//!
//! - [`netns`]: the private namespace the lab moves into first;
//! - [`rules`]: the rules as text, as kube-proxy writes them, and what the kernel's counters and
//!   conntrack say back;
//! - [`command`]: the `iptables-restore`, `iptables-save` and `conntrack` runs, each bounded;
//! - here: the [`Proxier`] that keeps the rules in step with the Services' endpoints.

mod command;
mod netns;
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

pub use command::CommandError;
use command::{established, restore, sep_counters};
pub use netns::{PrivateNetns, Unavailable, enter_private_netns};
use rules::{Desired, render_delete, render_jumps, render_sync};
pub use rules::{ServicePort, pod_address, service_vip};

use crate::timeline::{Timeline, kind};

/// One `KUBE-SEP-` rule over its whole life, for the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointRule {
    /// The chain (`KUBE-SEP-…`).
    pub chain: String,
    /// The Service.
    pub service: String,
    /// The pod's IP in the EndpointSlice.
    pub pod_ip: String,
    /// The DNAT destination (the pod's address in the namespace).
    pub destination: String,
    /// Connections the rule took (packets through the DNAT rule).
    pub packets: u64,
    /// Bytes of those first packets.
    pub bytes: u64,
    /// Seconds into the run when the rule was programmed.
    pub programmed_at: f64,
    /// Seconds into the run when the Service's chain stopped jumping to it (the last time, if
    /// the endpoint came back in between).
    pub removed_at: Option<f64>,
    /// ESTABLISHED connections conntrack still kept on the pod right after that (summed over
    /// removals): they stay on the pod whatever the rules say, until one side closes them.
    pub kept_by_conntrack: Option<u64>,
}

/// What the kernel data plane did in one run (`kernel` in the lab's JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelReport {
    /// Service → its virtual IP and port.
    pub services: BTreeMap<String, String>,
    /// Rule syncs written (`iptables-restore` runs that changed a Service).
    pub syncs: u64,
    /// Every `KUBE-SEP-` rule the run had, with its packet counter.
    pub endpoint_rules: Vec<EndpointRule>,
    /// Sum of the `KUBE-SEP-` packet counters: the connections the kernel balanced.
    pub sep_packets: u64,
    /// Sum of `kept_by_conntrack`: connections conntrack kept on a pod after its rule went.
    pub conntrack_kept: u64,
    /// Syncs or reads that failed (none in a healthy run).
    pub errors: Vec<String>,
}

/// What the proxier knows between syncs.
struct State {
    /// Chain → the rule's record; `removed_at` is None while it is programmed.
    rules: BTreeMap<String, EndpointRule>,
    /// Each Service's endpoints as last programmed.
    programmed: BTreeMap<String, Vec<SocketAddrV4>>,
    /// Counts of earlier lives of a chain: an endpoint that left and came back gets a new
    /// chain of the same name, whose kernel counter starts again at zero.
    carried: BTreeMap<String, (u64, u64)>,
    syncs: u64,
    errors: Vec<String>,
}

impl State {
    /// Takes the kernel's counter of a chain's current life into its record.
    fn count(&mut self, chain: &str, (packets, bytes): (u64, u64)) {
        let (p0, b0) = self.carried.get(chain).copied().unwrap_or_default();
        if let Some(rule) = self.rules.get_mut(chain) {
            rule.packets = p0 + packets;
            rule.bytes = b0 + bytes;
        }
    }
}

/// kube-proxy for the lab's Services: each time a Service's (already propagation-delayed)
/// endpoint list changes, one sync rewrites its rules in the namespace's iptables.
pub struct Proxier {
    services: Vec<ServicePort>,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Proxier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxier")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl Drop for Proxier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxier {
    /// Installs the jump rules, programs every Service from its current list and keeps the
    /// rules in step with each list from then on. Each list holds pod IPs in kube-proxy's
    /// endpoint choice (see [`crate::dataplane::usable_endpoints`]); a pod IP outside the
    /// sandbox's range is skipped with a warning.
    pub async fn start(
        _netns: PrivateNetns,
        services: Vec<(ServicePort, watch::Receiver<Arc<Vec<String>>>)>,
        timeline: Timeline,
    ) -> Result<Proxier, CommandError> {
        restore(&render_jumps()).await?;
        let state = Arc::new(Mutex::new(State {
            rules: BTreeMap::new(),
            programmed: BTreeMap::new(),
            carried: BTreeMap::new(),
            syncs: 0,
            errors: Vec::new(),
        }));
        let (kick, mut kicked) = mpsc::unbounded_channel::<()>();
        let mut forwarders = Vec::new();
        for (_, rx) in &services {
            let mut rx = rx.clone();
            let kick = kick.clone();
            forwarders.push(tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    if kick.send(()).is_err() {
                        return;
                    }
                }
            }));
        }
        sync(&services, &state, &timeline).await?;
        let (stop, mut stopped) = watch::channel(false);
        let task = {
            let services = services.clone();
            let state = state.clone();
            let timeline = timeline.clone();
            tokio::spawn(async move {
                let _forwarders = AbortAll(forwarders);
                loop {
                    tokio::select! {
                        biased;
                        _ = stopped.wait_for(|s| *s) => return,
                        k = kicked.recv() => if k.is_none() { return },
                    }
                    // Changes that came meanwhile are covered by this one sync.
                    while kicked.try_recv().is_ok() {}
                    if let Err(e) = sync(&services, &state, &timeline).await {
                        tracing::warn!(error = %e, "iptables sync failed");
                        state.lock().await.errors.push(e.to_string());
                    }
                }
            })
        };
        Ok(Proxier {
            services: services.into_iter().map(|(s, _)| s).collect(),
            state,
            stop,
            task,
        })
    }

    /// The Services' virtual IPs, in the order given.
    pub fn vips(&self) -> Vec<(String, SocketAddr)> {
        self.services
            .iter()
            .map(|s| (s.name.clone(), s.vip_addr()))
            .collect()
    }

    /// Stops syncing (after the sync in progress) and reads the final counters.
    pub async fn finish(mut self) -> KernelReport {
        self.stop.send_replace(true);
        let _ = (&mut self.task).await;
        let mut state = self.state.lock().await;
        match sep_counters().await {
            Ok(counters) => {
                for (chain, &counts) in &counters {
                    let live = state
                        .rules
                        .get(chain)
                        .is_some_and(|r| r.removed_at.is_none());
                    if live {
                        state.count(chain, counts);
                    }
                }
            }
            Err(e) => state.errors.push(e.to_string()),
        }
        let mut endpoint_rules: Vec<EndpointRule> = state.rules.values().cloned().collect();
        endpoint_rules.sort_by(|a, b| a.programmed_at.total_cmp(&b.programmed_at));
        KernelReport {
            services: self
                .services
                .iter()
                .map(|s| (s.name.clone(), s.vip_addr().to_string()))
                .collect(),
            syncs: state.syncs,
            sep_packets: endpoint_rules.iter().map(|r| r.packets).sum(),
            conntrack_kept: endpoint_rules
                .iter()
                .filter_map(|r| r.kept_by_conntrack)
                .sum(),
            endpoint_rules,
            errors: state.errors.clone(),
        }
    }
}

struct AbortAll(Vec<JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One sync: the Services whose list changed get their rules rewritten in one
/// `iptables-restore`; then, for each endpoint that lost its rule, conntrack is asked how many
/// established connections it keeps on the pod, the rule's final counter is read, and its chain
/// is deleted (a second restore, once nothing jumps to it, so the counter is exact).
async fn sync(
    services: &[(ServicePort, watch::Receiver<Arc<Vec<String>>>)],
    state: &Mutex<State>,
    timeline: &Timeline,
) -> Result<(), CommandError> {
    let mut state = state.lock().await;
    let mut desired: Desired = Vec::new();
    let mut ips: BTreeMap<SocketAddrV4, String> = BTreeMap::new();
    for (svc, rx) in services {
        let list = rx.borrow().clone();
        let mut eps = Vec::new();
        for ip in list.iter() {
            match pod_address(ip) {
                Some(addr) => {
                    let ep = SocketAddrV4::new(addr, svc.target_port);
                    ips.insert(ep, ip.clone());
                    eps.push(ep);
                }
                None => tracing::warn!(pod_ip = %ip, "pod IP outside 10.244.0.0/16: no rule"),
            }
        }
        desired.push((svc.clone(), eps));
    }
    let changed: Vec<&(ServicePort, Vec<SocketAddrV4>)> = desired
        .iter()
        .filter(|(svc, eps)| state.programmed.get(&svc.name) != Some(eps))
        .collect();
    if changed.is_empty() && state.syncs > 0 {
        return Ok(());
    }
    let existing: BTreeSet<String> = state
        .rules
        .iter()
        .filter(|(_, r)| r.removed_at.is_none())
        .map(|(c, _)| c.clone())
        .collect();
    restore(&render_sync(&desired, &existing)).await?;
    let now = timeline.elapsed().as_secs_f64();
    state.syncs += 1;

    // What the kernel has now, against what it had.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for (svc, eps) in &desired {
        for ep in eps {
            let chain = svc.sep_chain(*ep);
            wanted.insert(chain.clone());
            if let Some(rule) = state.rules.get_mut(&chain)
                && rule.removed_at.is_some()
            {
                // Back after it left: a new chain, counted from zero on top of the old.
                rule.removed_at = None;
                let counts = (rule.packets, rule.bytes);
                state.carried.insert(chain.clone(), counts);
            }
            state
                .rules
                .entry(chain.clone())
                .or_insert_with(|| EndpointRule {
                    chain,
                    service: svc.name.clone(),
                    pod_ip: ips.get(ep).cloned().unwrap_or_default(),
                    destination: ep.to_string(),
                    packets: 0,
                    bytes: 0,
                    programmed_at: now,
                    removed_at: None,
                    kept_by_conntrack: None,
                });
        }
    }
    let removed: Vec<String> = existing.difference(&wanted).cloned().collect();
    let mut kept_by_service: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for chain in &removed {
        let Some(rule) = state.rules.get(chain) else {
            continue;
        };
        let Some(svc) = services
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.name == rule.service)
        else {
            continue;
        };
        let Ok(ep) = rule.destination.parse::<SocketAddrV4>() else {
            continue;
        };
        let kept = established(svc, ep).await?;
        kept_by_service
            .entry(svc.name.clone())
            .or_default()
            .push(json!({"pod_ip": rule.pod_ip, "kept_by_conntrack": kept}));
        if let Some(rule) = state.rules.get_mut(chain) {
            rule.removed_at = Some(now);
            rule.kept_by_conntrack = Some(rule.kept_by_conntrack.unwrap_or(0) + kept);
        }
    }
    // Chains nothing jumps to any more: endpoint chains just dropped, and the Service chain of
    // a Service left without endpoints.
    let mut stale: BTreeSet<String> = removed.iter().cloned().collect();
    for (svc, eps) in &desired {
        let had = state
            .programmed
            .get(&svc.name)
            .is_some_and(|p| !p.is_empty());
        if eps.is_empty() && had {
            stale.insert(svc.svc_chain());
        }
    }
    if !stale.is_empty() {
        let counters = sep_counters().await?;
        for chain in &removed {
            if let Some(&counts) = counters.get(chain) {
                state.count(chain, counts);
            }
        }
        restore(&render_delete(&stale)).await?;
    }
    for (svc, eps) in &desired {
        if state.programmed.get(&svc.name) == Some(eps) {
            continue;
        }
        timeline.record(
            kind::RULES,
            &svc.name,
            json!({
                "chain": svc.svc_chain(),
                "endpoints": eps.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "removed": kept_by_service.remove(&svc.name).unwrap_or_default(),
            }),
        );
        state.programmed.insert(svc.name.clone(), eps.clone());
    }
    Ok(())
}
