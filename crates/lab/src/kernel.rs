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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::timeline::{Timeline, kind};

/// The sysctl kube-proxy sets so that DNAT to loopback addresses is routed (upstream
/// `sysctlRouteLocalnet` in proxier.go); in the lab every pod address is a loopback one.
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// No iptables or conntrack command may hang a sync: each one is local and takes milliseconds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The commands the kernel data plane runs (with the package that ships each).
const TOOLS: [(&str, &str, &str); 4] = [
    ("iptables-restore", "--version", "iptables"),
    ("iptables-save", "--version", "iptables"),
    ("conntrack", "--version", "conntrack"),
    ("ip", "-V", "iproute2"),
];

/// Why the lab cannot use the kernel data plane; it then says so and uses the userspace one.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Network namespaces and iptables need root.
    #[error("not running as root (effective uid {0})")]
    NotRoot(u32),
    /// A command the data plane runs is not installed.
    #[error("`{tool}` is not installed (Debian package {package})")]
    Missing {
        /// The command.
        tool: &'static str,
        /// Where it comes from.
        package: &'static str,
    },
    /// The kernel refused a private network namespace.
    #[error("unshare(CLONE_NEWNET) failed: {0}")]
    Unshare(nix::Error),
    /// Setting up the namespace failed.
    #[error("{0}")]
    Setup(#[from] CommandError),
}

/// A command of the data plane that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// It ran past [`COMMAND_TIMEOUT`] and was killed.
    #[error(
        "`{command}` did not finish within {}",
        humantime::format_duration(COMMAND_TIMEOUT)
    )]
    Timeout {
        /// The command line.
        command: String,
    },
    /// Writing a sysctl failed.
    #[error("writing {path}: {source}")]
    Sysctl {
        /// The /proc path.
        path: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Proof that the calling thread left the host's network namespace for a private one: the
/// kernel data plane takes it, so its rules can never be written to the host's tables.
#[derive(Debug, Clone, Copy)]
pub struct PrivateNetns {
    _private: (),
}

/// Moves the calling thread into a new, private network namespace with `lo` up and
/// `route_localnet=1`, after checking that it runs as root and that iptables, conntrack and
/// iproute2 are installed.
///
/// `unshare(CLONE_NEWNET)` moves only the calling thread; every thread it starts afterwards (the
/// async runtime's workers, the commands the proxier runs) inherits the namespace. So call it
/// before the runtime starts — `quiesce lab` does so first thing. Done in-process rather than
/// by re-executing under `unshare -n`: one process, no re-exec, and a test thread can take a
/// namespace of its own. The namespace is anonymous and held only by the lab's threads and
/// children, so the kernel removes it, with every rule and conntrack entry in it, when the lab
/// exits by any route — normal exit, SIGINT, a panic, even SIGKILL: nothing is left behind and
/// nothing is named in `/run/netns` for a second run to trip over.
pub fn enter_private_netns() -> Result<PrivateNetns, Unavailable> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(Unavailable::NotRoot(euid.as_raw()));
    }
    for (tool, arg, package) in TOOLS {
        match std::process::Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Unavailable::Missing { tool, package });
            }
            Err(source) => {
                return Err(CommandError::Spawn {
                    command: format!("{tool} {arg}"),
                    source,
                }
                .into());
            }
            Ok(_) => {}
        }
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(Unavailable::Unshare)?;
    let out = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .map_err(|source| CommandError::Spawn {
            command: "ip link set lo up".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            command: "ip link set lo up".into(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
        .into());
    }
    // /proc/sys/net shows the namespace of the thread that opens it: this one's, now.
    std::fs::write(ROUTE_LOCALNET, "1").map_err(|source| CommandError::Sysctl {
        path: ROUTE_LOCALNET,
        source,
    })?;
    Ok(PrivateNetns { _private: () })
}

/// The address a pod's server listens on inside the lab's namespace. The sandbox hands out pod
/// IPs in `10.244.0.0/16`; the lab keeps every address in `127.0.0.0/8`, so `10.244.y.z` plays
/// as `127.0.(y+1).z` (never `127.0.0.z`, where the sandbox's own API server listens). `None`
/// for an address outside that range.
pub fn pod_address(pod_ip: &str) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = pod_ip.parse().ok()?;
    let [a, b, y, z] = ip.octets();
    ((a, b) == (10, 244) && y < 255).then(|| Ipv4Addr::new(127, 0, y + 1, z))
}

/// The `n`-th Service virtual IP (`127.96.0.10`, `127.96.0.11`, …).
pub fn service_vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 96, 0, 10u8.saturating_add(n))
}

/// One TCP port of one Service, as the proxier programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (`http`).
    pub port_name: String,
    /// The virtual IP clients connect to.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The pods' port (the resolved targetPort).
    pub target_port: u16,
}

impl ServicePort {
    /// Port 80, named `http`, of the Service `default/{name}` at the `n`-th virtual IP
    /// ([`service_vip`]): how the lab's demo Services are declared.
    pub fn http(name: &str, n: u8, target_port: u16) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            vip: service_vip(n),
            port: 80,
            target_port,
        }
    }

    /// Where clients connect.
    pub fn vip_addr(&self) -> SocketAddr {
        SocketAddr::from((self.vip, self.port))
    }

    /// kube-proxy's `ServicePortName.String()`: `namespace/name:port`.
    fn port_name_string(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }

    /// The `KUBE-SVC-` chain, named as upstream's `servicePortPolicyClusterChain`: the first 16
    /// base32 characters of sha256(port name + protocol), so the names match a real node's.
    pub fn svc_chain(&self) -> String {
        format!(
            "KUBE-SVC-{}",
            hash16(&format!("{}tcp", self.port_name_string()))
        )
    }

    /// The `KUBE-SEP-` chain of one endpoint, as upstream's `servicePortEndpointChainName`.
    pub fn sep_chain(&self, endpoint: SocketAddrV4) -> String {
        format!(
            "KUBE-SEP-{}",
            hash16(&format!("{}tcp{endpoint}", self.port_name_string()))
        )
    }
}

fn hash16(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut encoded = data_encoding::BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// kube-proxy's probability for the i-th of n endpoints: 1/(n-i), ten decimals (upstream
/// `computeProbability`), so each of n endpoints gets 1/n of new connections.
fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

/// The endpoints of each Service in one sync: the DNAT destinations.
type Desired = Vec<(ServicePort, Vec<SocketAddrV4>)>;

/// Input for `iptables-restore --noflush` that installs the jumps from the built-in `OUTPUT`
/// chains into `KUBE-SERVICES` (upstream `iptablesJumpChains`, the two entries for locally
/// originated traffic: the lab's clients are processes in the namespace, nothing is forwarded).
fn render_jumps() -> String {
    "*filter\n:KUBE-SERVICES - [0:0]\n\
     -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
     COMMIT\n\
     *nat\n:KUBE-SERVICES - [0:0]\n\
     -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
     COMMIT\n"
        .to_string()
}

/// One sync's `iptables-restore --noflush` input, as `syncProxyRules` writes it: the filter
/// table's `KUBE-SERVICES` with a REJECT per Service that has no endpoints ("has no
/// endpoints"); the nat table's `KUBE-SERVICES` with a jump per Service that has some, each
/// Service's `KUBE-SVC-` chain rewritten with the statistic rules (the last one unconditional,
/// as in `writeServiceToEndpointRules`), and a `KUBE-SEP-` chain for each endpoint not yet in
/// the kernel. A chain line (`:CHAIN - [0:0]`) flushes the chain it names, so every chain
/// written is replaced whole.
///
/// One difference from upstream, on purpose: an existing `KUBE-SEP-` chain is never rewritten
/// (its one DNAT rule depends only on the endpoint), so its packet counter counts every
/// connection it ever took; upstream rewrites the endpoint chains of a changed Service, which
/// resets their counters but sends no packet elsewhere. Upstream's hairpin rule (`-s podIP -j
/// KUBE-MARK-MASQ`) is left out: no pod is a client in the lab.
fn render_sync(desired: &Desired, existing: &BTreeSet<String>) -> String {
    let mut filter = String::from("*filter\n:KUBE-SERVICES - [0:0]\n");
    let mut chains = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::new();
    for (svc, endpoints) in desired {
        let name = svc.port_name_string();
        let dest = format!("-d {}/32 --dport {}", svc.vip, svc.port);
        if endpoints.is_empty() {
            let _ = writeln!(
                filter,
                "-A KUBE-SERVICES -m comment --comment \"{name} has no endpoints\" -m tcp -p tcp {dest} -j REJECT"
            );
            continue;
        }
        let svc_chain = svc.svc_chain();
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp {dest} -j {svc_chain}"
        );
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let sep = svc.sep_chain(*ep);
            let statistic = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                rules,
                "-A {svc_chain} -m comment --comment \"{name} -> {ep}\"{statistic} -j {sep}"
            );
            if !existing.contains(&sep) {
                let _ = writeln!(chains, ":{sep} - [0:0]");
                let _ = writeln!(
                    rules,
                    "-A {sep} -m comment --comment \"{name}\" -m tcp -p tcp -j DNAT --to-destination {ep}"
                );
            }
        }
    }
    filter.push_str("COMMIT\n");
    format!("{filter}{chains}{rules}COMMIT\n")
}

/// Input that flushes and deletes chains no rule jumps to any more (upstream writes a chain line
/// and `-X` for each stale chain in the same way).
fn render_delete(stale: &BTreeSet<String>) -> String {
    let mut out = String::from("*nat\n");
    for chain in stale {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in stale {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Packet and byte counters of every `KUBE-SEP-` DNAT rule in `iptables-save -c -t nat`
/// output (`[packets:bytes] -A KUBE-SEP-… … -j DNAT …`). Only a connection's first packet
/// passes the nat table, so the packet count is the number of connections the rule took.
fn parse_sep_counters(save: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((counts, rule)) = rest.split_once("] ") else {
            continue;
        };
        let Some(chain) = rule
            .strip_prefix("-A ")
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        if !chain.starts_with("KUBE-SEP-") || !rule.contains("-j DNAT") {
            continue;
        }
        let Some((p, b)) = counts.split_once(':') else {
            continue;
        };
        if let (Ok(p), Ok(b)) = (p.parse(), b.parse()) {
            out.insert(chain.to_string(), (p, b));
        }
    }
    out
}

/// How many lines of `conntrack -L` output are ESTABLISHED TCP entries.
fn count_established(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "ESTABLISHED"))
        .count() as u64
}

/// Runs a data-plane command with a deadline, feeding it `input`; its stdout on success.
async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, CommandError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let written = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        if let Err(source) = written {
            return Err(CommandError::Spawn { command, source });
        }
    }
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => return Err(CommandError::Spawn { command, source }),
        Err(_) => return Err(CommandError::Timeout { command }),
    };
    if !out.status.success() {
        return Err(CommandError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn restore(input: &str) -> Result<(), CommandError> {
    // --noflush: only the chains named in the input are replaced, as kube-proxy restores.
    run("iptables-restore", &["--noflush"], Some(input))
        .await
        .map(|_| ())
}

async fn sep_counters() -> Result<BTreeMap<String, (u64, u64)>, CommandError> {
    Ok(parse_sep_counters(
        &run("iptables-save", &["-c", "-t", "nat"], None).await?,
    ))
}

/// ESTABLISHED connections conntrack holds from a Service's virtual IP to one endpoint.
async fn established(svc: &ServicePort, ep: SocketAddrV4) -> Result<u64, CommandError> {
    let listing = run(
        "conntrack",
        &[
            "-L",
            "-p",
            "tcp",
            "--orig-dst",
            &svc.vip.to_string(),
            "--reply-src",
            &ep.ip().to_string(),
            "--reply-port-src",
            &ep.port().to_string(),
            "--state",
            "ESTABLISHED",
        ],
        None,
    )
    .await?;
    Ok(count_established(&listing))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServicePort {
        ServicePort::http("web", 0, 8080)
    }

    fn ep(host: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, host), 8080)
    }

    #[test]
    fn pod_ips_map_into_loopback_outside_127_0_0() {
        assert_eq!(pod_address("10.244.0.1"), Some(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(
            pod_address("10.244.3.250"),
            Some(Ipv4Addr::new(127, 0, 4, 250))
        );
        assert_eq!(pod_address("10.244.255.1"), None);
        assert_eq!(pod_address("10.0.0.1"), None);
        assert_eq!(pod_address("not an ip"), None);
        assert_eq!(service_vip(1), Ipv4Addr::new(127, 96, 0, 11));
    }

    #[test]
    fn chain_names_are_kube_proxys_shape_and_fit_iptables() {
        let svc = web();
        let svc_chain = svc.svc_chain();
        assert!(svc_chain.starts_with("KUBE-SVC-"), "{svc_chain}");
        assert_eq!(svc_chain.len(), 25, "{svc_chain}");
        assert!(svc_chain.len() <= 28, "iptables' limit");
        assert_eq!(svc_chain, web().svc_chain(), "stable across syncs");
        let (a, b) = (svc.sep_chain(ep(1)), svc.sep_chain(ep(2)));
        assert!(a.starts_with("KUBE-SEP-") && a.len() == 25, "{a}");
        assert_ne!(a, b, "one chain per endpoint");
        let api = ServicePort::http("api", 0, 8080);
        assert_ne!(api.svc_chain(), svc_chain);
        assert_ne!(api.sep_chain(ep(1)), a, "the Service is part of the name");
    }

    #[test]
    fn a_sync_splits_new_connections_evenly_and_rejects_a_service_without_endpoints() {
        let api = ServicePort::http("api", 1, 8080);
        let desired = vec![(web(), vec![ep(1), ep(2), ep(3)]), (api, vec![])];
        let text = render_sync(&desired, &BTreeSet::new());
        let svc = web().svc_chain();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} ")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("--probability 0.3333333333"), "{text}");
        assert!(lines[1].contains("--probability 0.5000000000"), "{text}");
        assert!(
            !lines[2].contains("statistic"),
            "the last is certain: {text}"
        );
        assert!(lines[2].ends_with(&web().sep_chain(ep(3))), "{text}");
        assert!(
            text.contains("-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 127.96.0.10/32 --dport 80 -j KUBE-SVC-"),
            "{text}"
        );
        assert!(
            text.contains("--comment \"default/api:http has no endpoints\" -m tcp -p tcp -d 127.96.0.11/32 --dport 80 -j REJECT"),
            "{text}"
        );
        assert!(
            text.contains("-j DNAT --to-destination 127.0.1.2:8080"),
            "{text}"
        );
        // The filter table comes first and each table is committed.
        assert!(text.starts_with("*filter\n"), "{text}");
        assert_eq!(text.matches("COMMIT\n").count(), 2, "{text}");
    }

    #[test]
    fn an_endpoint_chain_already_in_the_kernel_is_not_rewritten() {
        let existing: BTreeSet<String> = [web().sep_chain(ep(1))].into();
        let text = render_sync(&vec![(web(), vec![ep(1), ep(2)])], &existing);
        assert!(
            !text.contains(&format!(":{}", web().sep_chain(ep(1)))),
            "{text}"
        );
        assert!(!text.contains("127.0.1.1:8080\n"), "no new DNAT: {text}");
        assert!(
            text.contains(&format!(":{}", web().sep_chain(ep(2)))),
            "{text}"
        );
        assert!(
            text.contains(&format!("-j {}", web().sep_chain(ep(1)))),
            "still balanced to: {text}"
        );
    }

    #[test]
    fn stale_chains_are_flushed_then_deleted() {
        let stale: BTreeSet<String> = ["KUBE-SEP-A".to_string(), "KUBE-SVC-B".to_string()].into();
        assert_eq!(
            render_delete(&stale),
            "*nat\n:KUBE-SEP-A - [0:0]\n:KUBE-SVC-B - [0:0]\n-X KUBE-SEP-A\n-X KUBE-SVC-B\nCOMMIT\n"
        );
    }

    #[test]
    fn counters_are_read_from_the_dnat_rules_only() {
        let save = "# Generated by iptables-save\n*nat\n:KUBE-SEP-X - [0:0]\n\
            [7:420] -A KUBE-SVC-Y -m comment --comment \"a\" -j KUBE-SEP-X\n\
            [5:300] -A KUBE-SEP-X -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 127.0.1.1:8080\n\
            [2:120] -A KUBE-SEP-Z -p tcp -m tcp -j DNAT --to-destination 127.0.1.2:8080\n\
            [0:0] -A KUBE-SEP-Q -s 127.0.1.3/32 -j KUBE-MARK-MASQ\nCOMMIT\n";
        let c = parse_sep_counters(save);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c["KUBE-SEP-X"], (5, 300));
        assert_eq!(c["KUBE-SEP-Z"], (2, 120));
    }

    #[test]
    fn only_established_entries_count_as_kept() {
        let listing = "tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.96.0.10 sport=1 dport=80 src=127.0.1.1 dst=127.0.0.1 sport=8080 dport=1 [ASSURED] mark=0 use=1\n\
            tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.96.0.10 sport=2 dport=80 src=127.0.1.1 dst=127.0.0.1 sport=8080 dport=2 [ASSURED] mark=0 use=1\n";
        assert_eq!(count_established(listing), 1);
    }
}
