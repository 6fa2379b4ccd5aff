//! One lab run: a sandbox cluster with the demo workloads, whose Service pods are real
//! processes ([`crate::pods`]), real HTTP traffic through a kube-proxy data plane (the
//! kernel's, or the userspace model), the simulated group's instance refresh, and the
//! drainer's production code completing its lifecycle hooks. `quiesce` and `naive` differ only
//! in what production clusters differ in: the drain's replacement gate and surge, and whether
//! the container's first process is quiesce-init (with its preStop hook and drain delay) or
//! the app itself.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use quiesce_core::DrainOptions;
use quiesce_drainer::Settings;
use quiesce_drainer::client::Timeouts;
use quiesce_drainer::metrics::Metrics;
use quiesce_sandbox::scenario::Scenario;
use quiesce_sandbox::{Sandbox, SandboxOptions};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::asg::{Group, GroupOptions, Replacement};
use crate::chaos::conductor::ChaosReport;
use crate::chaos::fleet;
use crate::chaos::invariants::Invariants;
use crate::chaos::{self, ChaosOptions, Drainers, Witness};
use crate::dataplane::{Balancer, Registry};
use crate::kernel::{KernelReport, PrivateNetns, Proxier, ServicePort};
use crate::pods::process::Isolation;
use crate::pods::{Listen, PodRecord, Runtime, RuntimeOptions};
use crate::timeline::{Timeline, watch_cluster};
use crate::traffic::{Route, Traffic, TrafficOptions, TrafficStats};

/// Which world the lab plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// quiesce: replacement gate and surge in the drain, quiesce-init's drain delay in the apps.
    Quiesce,
    /// What most clusters do today: kubectl-drain semantics, apps that stop on SIGTERM.
    Naive,
}

/// Which data plane carries the traffic.
#[derive(Debug, Clone, Copy)]
pub enum Dataplane {
    /// Virtual IPs and kube-proxy's iptables rules in the lab's private network namespace
    /// (entered before the run: [`crate::kernel::enter_private_netns`]).
    Kernel(PrivateNetns),
    /// The in-process balancer that models kube-proxy (no root needed).
    Userspace,
}

impl Dataplane {
    /// `kernel` or `userspace`, as the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Dataplane::Kernel(_) => "kernel",
            Dataplane::Userspace => "userspace",
        }
    }
}

/// Everything a run can be told.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Nodes in the group (all are replaced).
    pub nodes: usize,
    /// quiesce or naive.
    pub mode: Mode,
    /// Requests per second over both Services.
    pub rps: f64,
    /// How late the client applies an EndpointSlice change (kube-proxy's lag).
    pub propagation_delay: Duration,
    /// quiesce-init's drain delay in quiesce mode (must exceed the propagation delay).
    pub drain_delay: Duration,
    /// From launch until the new node registers.
    pub boot: Duration,
    /// Lifecycle hooks' heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// Traffic before the refresh starts and after it ends.
    pub settle: Duration,
    /// What carries the traffic.
    pub dataplane: Dataplane,
    /// How long the app works on each request, so that requests are in flight when pods stop.
    pub work: Duration,
    /// Inject faults and play drainer restarts (`--chaos`).
    pub chaos: Option<ChaosOptions>,
    /// Roll through `quiesce roll`'s code, gated on the failed requests (`--slo`).
    pub gate: Option<crate::roll::GateOptions>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            nodes: 3,
            mode: Mode::Quiesce,
            rps: 300.0,
            propagation_delay: Duration::from_secs(1),
            drain_delay: Duration::from_secs(3),
            boot: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            settle: Duration::from_secs(2),
            dataplane: Dataplane::Userspace,
            work: Duration::from_millis(2),
            chaos: None,
            gate: None,
        }
    }
}

/// What `--output json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// The mode.
    pub mode: Mode,
    /// `kernel` or `userspace`.
    pub dataplane: &'static str,
    /// What the kernel data plane did (its rules' packet counters, what conntrack kept); null
    /// on the userspace one.
    pub kernel: Option<KernelReport>,
    /// How each pod's first process was isolated: `pid-namespace` (it is PID 1 there), or
    /// `subreaper` and why not.
    pub pod_isolation: Isolation,
    /// Every Service pod's process: pids, when it started, turned Ready, got its preStop,
    /// SIGTERM, SIGKILL, and how it exited.
    pub pods: Vec<PodRecord>,
    /// Nodes at the start.
    pub nodes: usize,
    /// Old nodes terminated after their drain.
    pub nodes_replaced: usize,
    /// Traffic outcome.
    pub requests: TrafficStats,
    /// Seconds each phase took, in order.
    pub phases: Vec<PhaseTime>,
    /// Each node's replacement.
    pub replacements: Vec<Replacement>,
    /// The drainer's Prometheus metrics at the end.
    pub drainer_metrics: String,
    /// The roll's guarantees, judged from the sandbox's and the group's own record.
    pub invariants: Invariants,
    /// How the drainer was broken on purpose ([`chaos::SABOTAGE`]), if it was.
    pub sabotage: Option<&'static str>,
    /// With `--chaos`: `seed`, `faults.injected` by kind, `drainer.restarts`.
    #[serde(flatten)]
    pub chaos: Option<ChaosReport>,
    /// With `--slo`: the roll's report (`roll.outcome`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roll: Option<crate::roll::LabRoll>,
}

/// One phase of the run.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    /// `cluster-ready`, `traffic-warmup`, `refresh`, `traffic-cooldown`, `total`.
    pub name: String,
    /// How long it took.
    pub seconds: f64,
}

/// The Services the traffic goes to.
const SERVICES: [&str; 2] = ["web", "api"];

/// The apps' containerPort (the Services' targetPort `http`).
const POD_PORT: u16 = 8080;

/// The demo workloads: web (3 replicas, PDB, Service), api (1 replica, no PDB, Service), db
/// (StatefulSet), and a log agent DaemonSet.
fn scenario(opts: &LabOptions) -> Scenario {
    let quiesce = opts.mode == Mode::Quiesce;
    let delay = humantime::format_duration(opts.drain_delay).to_string();
    let work = humantime::format_duration(opts.work).to_string();
    let app = |name: &str| -> Value {
        let mut container = json!({"name": name, "image": format!("registry.example/{name}:1"),
            "ports": [{"name": "http", "containerPort": POD_PORT}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": POD_PORT}, "periodSeconds": 1},
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}});
        if quiesce {
            // quiesce-init is the container's first process; its preStop hook starts the drain
            // (readiness 503, the app serving on for the drain delay) before the SIGTERM.
            container["command"] = json!(["/quiesce-init", "--", "lab-app", "--work", work]);
            container["env"] = json!([{"name": "QUIESCE_DRAIN_DELAY", "value": delay}]);
            container["lifecycle"] =
                json!({"preStop": {"exec": {"command": ["/quiesce-init", "prestop"]}}});
        } else {
            container["command"] = json!(["lab-app", "--work", work]);
        }
        json!({
            "metadata": {"labels": {"app": name},
                "annotations": {quiesce_sandbox::cluster::EXTERNAL_RUNTIME: "true"}},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [container]}
        })
    };
    let deployment = |name: &str, replicas: u32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": app(name)}})
    };
    let service = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    };
    let objects = vec![
        deployment("web", 3),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        service("web"),
        deployment("api", 1),
        service("api"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "sql", "port": 5432}]}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}, "annotations": {"sandbox.quiesce.io/startup-delay": "1s"}},
                    "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "db", "image": "registry.example/db:15",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "log-agent", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"app": "log-agent"}},
                "template": {"metadata": {"labels": {"app": "log-agent"}, "annotations": {"sandbox.quiesce.io/startup-delay": "500ms"}},
                    "spec": {"containers": [{"name": "agent", "image": "registry.example/log-agent:2",
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]}}}}),
    ];
    Scenario {
        objects,
        ..Scenario::nodes_only(opts.nodes)
    }
}

/// The drainer as each mode runs it.
fn drainer_settings(mode: Mode) -> Settings {
    match mode {
        Mode::Quiesce => Settings {
            drain_margin: Duration::from_secs(30),
            replacement_startup: Duration::from_secs(5),
            drain: DrainOptions {
                surge_all: true,
                delete_emptydir_data: true,
                ..DrainOptions::default()
            },
            ..Settings::default()
        },
        Mode::Naive => Settings {
            drain_margin: Duration::from_secs(30),
            replacement_startup: Duration::from_secs(5),
            replacement_gate: false,
            ..Settings::default()
        },
    }
}

async fn ready_pods(client: &kube::Client) -> usize {
    Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| quiesce_core::gate::is_ready(p))
                .count()
        })
        .unwrap_or(0)
}

/// Runs the lab; `progress` hears what happens, as it happens.
pub async fn run(
    opts: &LabOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(LabReport, Timeline)> {
    let started = Instant::now();
    let mut phases = Vec::new();
    let mut mark = |name: &str, since: &mut Instant| {
        phases.push(PhaseTime {
            name: name.to_string(),
            seconds: since.elapsed().as_secs_f64(),
        });
        *since = Instant::now();
    };
    let mut since = Instant::now();
    let timeline = Timeline::new();
    let sandbox = Sandbox::start(SandboxOptions {
        scenario: scenario(opts),
        ..SandboxOptions::default()
    })
    .await?;
    let client = sandbox.client();
    let cluster_watch = watch_cluster(client.clone(), timeline.clone());
    let isolation = Isolation::detect().await;
    progress(&match &isolation {
        Isolation::PidNamespace => {
            "pods: real processes, each in a PID namespace of its own (its first process is PID 1)"
                .to_string()
        }
        Isolation::Subreaper(why) => format!(
            "pods: real processes without PID namespaces ({why}): quiesce-init runs as a child \
             subreaper instead of PID 1"
        ),
    });
    let run_dir = tempfile::Builder::new().prefix("quiesce-lab-").tempdir()?;
    let runtime = RuntimeOptions {
        program: std::env::current_exe()?,
        listen: match opts.dataplane {
            Dataplane::Kernel(_) => Listen::PodAddress(POD_PORT),
            Dataplane::Userspace => Listen::Ephemeral,
        },
        isolation: isolation.clone(),
        run_dir: run_dir.path().to_path_buf(),
    };
    let registry = Registry::default();
    let runtimes: Vec<Runtime> = SERVICES
        .iter()
        .map(|service| {
            Runtime::start(
                client.clone(),
                "default",
                &format!("app={service}"),
                runtime.clone(),
                registry.clone(),
                timeline.clone(),
            )
        })
        .collect();
    // web 3 + api 1 + db 2 + one log agent per node.
    let expected = 6 + opts.nodes;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_pods(&client).await < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo workloads were not Ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress(&format!(
        "cluster ready: {} nodes, {expected} pods Ready",
        opts.nodes
    ));
    mark("cluster-ready", &mut since);

    let mut targets = Vec::new();
    for service in SERVICES {
        let balancer = Balancer::start(
            client.clone(),
            "default",
            service,
            opts.propagation_delay,
            registry.clone(),
            timeline.clone(),
        );
        anyhow::ensure!(
            balancer
                .wait_until(Duration::from_secs(30), |eps| !eps.is_empty())
                .await,
            "Service {service} got no endpoints"
        );
        targets.push((service.to_string(), balancer));
    }
    // The kernel data plane's proxier, and the endpoint views it programs from (they watch the
    // sandbox, so they go before it does).
    let mut proxier: Option<(Proxier, Vec<Balancer>)> = None;
    let targets: Vec<(String, Route)> = match opts.dataplane {
        Dataplane::Userspace => targets
            .into_iter()
            .map(|(name, b)| (name, Route::Balancer(b)))
            .collect(),
        Dataplane::Kernel(netns) => {
            let ports = targets
                .iter()
                .zip(0u8..)
                .map(|((name, balancer), n)| {
                    (ServicePort::http(name, n, POD_PORT), balancer.subscribe())
                })
                .collect();
            let p = Proxier::start(netns, ports, timeline.clone()).await?;
            let vips = p.vips();
            progress(&format!(
                "kernel data plane: {}",
                vips.iter()
                    .map(|(s, a)| format!("{s} at {a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            proxier = Some((p, targets.into_iter().map(|(_, b)| b).collect()));
            vips.into_iter()
                .map(|(name, vip)| (name, Route::Vip(vip)))
                .collect()
        }
    };
    anyhow::ensure!(
        registry
            .wait_until(Duration::from_secs(30), |m| m.len() >= 4)
            .await,
        "the pod servers did not start"
    );
    let traffic = Traffic::start(
        targets,
        TrafficOptions {
            rps: opts.rps,
            max_duration: Duration::from_secs(600),
            ..TrafficOptions::default()
        },
        timeline.clone(),
    );
    tokio::time::sleep(opts.settle).await;
    progress(&format!(
        "traffic: {} rps to Services web and api",
        opts.rps
    ));
    mark("traffic-warmup", &mut since);

    let group = Group::adopt(
        client.clone(),
        GroupOptions {
            heartbeat_timeout: opts.heartbeat_timeout,
            boot: opts.boot,
            ..GroupOptions::default()
        },
        timeline.clone(),
    )
    .await?;
    let witness = Witness::start(&sandbox, &group)?;
    let metrics = Arc::new(Metrics::default());
    let (settings, sabotage) = chaos::sabotaged(drainer_settings(opts.mode))?;
    let drain = settings.drain;
    if let Some(how) = sabotage {
        progress(&format!("the drainer is broken on purpose: {how}"));
    }
    let drainers = Drainers::start(
        &sandbox,
        &group,
        fleet::Spec {
            url: sandbox.url().to_string(),
            identity: String::new(),
            settings,
            timeouts: Timeouts::default(),
            lease: None,
            metrics: metrics.clone(),
            load_balancers: None,
        },
        opts.chaos.as_ref(),
        opts.nodes,
        timeline.clone(),
    )?;
    let ticker = async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = traffic.snapshot();
            progress(&format!(
                "requests so far: {} sent, {} failed",
                s.sent, s.failed
            ));
        }
    };
    let failed = || traffic.snapshot().failed;
    let gate = opts.gate.as_ref();
    let (replacements, roll) = tokio::select! {
        r = crate::roll::refresh(gate, &group, &client, drain, &failed, opts.rps, progress) => r?,
        () = ticker => unreachable!("the ticker never ends"),
    };
    mark("refresh", &mut since);
    tokio::time::sleep(opts.settle).await;
    let requests = traffic.stop().await;
    mark("traffic-cooldown", &mut since);
    let kernel = match proxier {
        Some((p, views)) => {
            let report = p.finish().await;
            drop(views);
            Some(report)
        }
        None => None,
    };
    let callers = drainers.callers();
    let chaos = drainers.finish(&sandbox, &group).await;
    let mut pods = Vec::new();
    for r in runtimes {
        pods.extend(r.stop().await);
    }
    drop(cluster_watch);
    let invariants = witness.judge(&sandbox, &group, &callers, requests.failed)?;
    sandbox.shutdown().await;
    phases.push(PhaseTime {
        name: "total".into(),
        seconds: started.elapsed().as_secs_f64(),
    });
    let nodes_replaced = replacements
        .iter()
        .filter(|r| r.result == "terminated" && !r.rollback)
        .count();
    Ok((
        LabReport {
            mode: opts.mode,
            dataplane: opts.dataplane.name(),
            kernel,
            pod_isolation: isolation,
            pods,
            nodes: opts.nodes,
            nodes_replaced,
            requests,
            phases,
            replacements,
            drainer_metrics: metrics.encode(),
            invariants,
            sabotage,
            chaos,
            roll,
        },
        timeline,
    ))
}
