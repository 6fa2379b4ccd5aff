//! The rules: each finding names the rule, the object, the field path and the fix.

mod container;
mod timing;

use std::path::PathBuf;
use std::time::Duration;

use quiesce_core::budget::Stack;
use serde::Serialize;
use serde_json::Value;

use crate::index::Index;
use crate::workload::Workload;
use container::{containers, exec_prestop_shell, looks_like_spring_boot, spring_graceful};

/// How bad a finding is; any `Error` makes `quiesce audit` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Requests will be dropped on every rollout or drain.
    Error,
    /// Risky, but it depends on the app.
    Warning,
}

/// A rule's id, level and the explanation `--explain` prints.
#[derive(Debug)]
pub struct Rule {
    /// Stable id, used in reports and `--explain`.
    pub id: &'static str,
    /// Level of its findings.
    pub level: Level,
    /// Why it matters.
    pub why: &'static str,
    /// What to change.
    pub fix: &'static str,
}

/// Every rule, in report order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "no-readiness-probe",
        level: Level::Warning,
        why: "Without a readiness probe a new pod receives traffic as soon as it starts, before it can serve.",
        fix: "Add a readinessProbe that checks the app can serve requests.",
    },
    Rule {
        id: "recreate-strategy",
        level: Level::Warning,
        why: "strategy Recreate stops every old pod before a new one starts: each rollout is an outage.",
        fix: "Use strategy.type RollingUpdate with maxUnavailable below the replica count.",
    },
    Rule {
        id: "single-replica",
        level: Level::Warning,
        why: "With one replica every drain or rollout leaves no pod serving.",
        fix: "Run at least 2 replicas.",
    },
    Rule {
        id: "no-spread",
        level: Level::Warning,
        why: "Without pod anti-affinity or topology spread, every replica may land on one node or in one zone, and one drain takes them all.",
        fix: "Add topologySpreadConstraints over kubernetes.io/hostname (and topology.kubernetes.io/zone), or a preferred podAntiAffinity.",
    },
    Rule {
        id: "no-pdb",
        level: Level::Warning,
        why: "Without a PodDisruptionBudget a drain may evict every replica at once.",
        fix: "Add a PodDisruptionBudget with maxUnavailable: 1.",
    },
    Rule {
        id: "readiness-equals-liveness",
        level: Level::Warning,
        why: "When readiness and liveness probe the same thing, a slow moment restarts the container instead of only taking it out of rotation, and a drain flip of readiness kills it.",
        fix: "Make liveness a cheap 'process is alive' check and readiness the 'can serve now' check.",
    },
    Rule {
        id: "rolling-all-at-once",
        level: Level::Error,
        why: "A RollingUpdate whose maxUnavailable covers every replica may take all of them down at once.",
        fix: "Set rollingUpdate.maxUnavailable below the replica count (0 or 1, with maxSurge 1).",
    },
    Rule {
        id: "pdb-blocks-drain",
        level: Level::Error,
        why: "A PodDisruptionBudget that never allows a disruption (maxUnavailable 0, minAvailable at or above the replicas, 100%) blocks every node drain until someone deletes it.",
        fix: "Use maxUnavailable: 1 (or a minAvailable below the replica count).",
    },
    Rule {
        id: "multiple-pdbs",
        level: Level::Error,
        why: "The eviction API refuses with a 500 for a pod under more than one PodDisruptionBudget, so drains fail on it.",
        fix: "Keep exactly one PodDisruptionBudget per set of pods.",
    },
    Rule {
        id: "pdb-selects-nothing",
        level: Level::Warning,
        why: "A PodDisruptionBudget that selects no workload protects nothing; usually its selector has a typo.",
        fix: "Make spec.selector match the pod template's labels.",
    },
    Rule {
        id: "headless-service-stateless",
        level: Level::Warning,
        why: "A headless Service hands out pod IPs through DNS; clients cache them past the pod's end, so a Deployment behind it drops requests on every rollout.",
        fix: "Use a ClusterIP Service for stateless apps; keep headless Services for StatefulSets.",
    },
    Rule {
        id: "exec-prestop-needs-shell",
        level: Level::Warning,
        why: "An exec preStop that runs sh or bash fails in images without a shell (distroless, scratch); the kubelet then sends SIGTERM at once.",
        fix: "Use lifecycle.preStop.sleep, or quiesce-init's shell-free `quiesce-init prestop`.",
    },
    Rule {
        id: "spring-no-graceful-shutdown",
        level: Level::Warning,
        why: "Spring Boot stops at once on SIGTERM unless server.shutdown=graceful, cutting in-flight requests.",
        fix: "Set SERVER_SHUTDOWN=graceful (or --server.shutdown=graceful) and spring.lifecycle.timeout-per-shutdown-phase.",
    },
    Rule {
        id: "no-prestop-delay",
        level: Level::Error,
        why: "The discovery stacks in front of the pod (a Service's kube-proxy, a load balancer, Eureka, a mesh) learn that it is terminating at the same time as SIGTERM is sent, or later; clients keep sending requests until the slowest one catches up.",
        fix: "Add a preStop delay (lifecycle.preStop.sleep, or quiesce-init's QUIESCE_DRAIN_DELAY) as long as the computed budget.",
    },
    Rule {
        id: "prestop-too-short",
        level: Level::Error,
        why: "The preStop delay ends before every discovery layer stops sending new requests.",
        fix: "Raise the preStop delay to the needed value shown term by term.",
    },
    Rule {
        id: "grace-too-short",
        level: Level::Error,
        why: "terminationGracePeriodSeconds counts from the start of preStop; the kubelet sends SIGKILL when it runs out, cutting the app's shutdown short.",
        fix: "Set terminationGracePeriodSeconds to at least the preStop delay plus the app's shutdown time.",
    },
    Rule {
        id: "no-lb-readiness-gate",
        level: Level::Warning,
        why: "With ip targets the load balancer registers each new pod and health-checks it before sending traffic, while the rollout or drain only waits for Kubernetes readiness: old pods can be removed before any new target is healthy. The AWS Load Balancer Controller's pod readiness gate holds the pod unready until its target is healthy. Checked when the pod's Namespace is among the manifests (or live, with --cluster).",
        fix: "Label the namespace elbv2.k8s.aws/pod-readiness-gate-inject=enabled (then restart the pods so the gate is injected).",
    },
    Rule {
        id: "grace-exceeds-node-shutdown",
        level: Level::Warning,
        why: "On a node shutdown (an instance refresh, a Spot reclaim, a reboot) the kubelet gives pods at most its graceful-shutdown window, shutdownGracePeriod minus shutdownGracePeriodCriticalPods for ordinary pods, whatever terminationGracePeriodSeconds says; a longer preStop plus shutdown is cut short.",
        fix: "Keep preStop plus shutdown inside the window (--node-shutdown-grace), or raise the kubelet's shutdownGracePeriod on the node group.",
    },
    Rule {
        id: "preemptible-budget",
        level: Level::Warning,
        why: "Spot capacity is reclaimed two minutes after the interruption notice; a pod whose preStop plus shutdown takes longer is killed mid-drain on every interruption.",
        fix: "Keep preStop plus shutdown under 2 minutes for pods on Spot, or run them on on-demand capacity.",
    },
    Rule {
        id: "invalid-annotation",
        level: Level::Error,
        why: "A quiesce.io annotation the audit cannot read is ignored, so the budget is computed without what it was meant to say.",
        fix: "Write quiesce.io/discovery as a comma-separated list of stacks and quiesce.io/app-drain-delay as a duration such as 3s.",
    },
];

/// Looks up a rule for `--explain`.
pub fn explain(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// What the audit assumes where the manifest is silent.
#[derive(Debug, Clone)]
pub struct Options {
    /// Discovery stacks that replace the detected ones for every workload that receives
    /// traffic; empty to detect them from the manifests (the annotation `quiesce.io/discovery`
    /// overrides both).
    pub stacks: Vec<Stack>,
    /// The longest request the app serves.
    pub max_request: Duration,
    /// The app's own shutdown time when the manifest does not show it.
    pub shutdown: Duration,
    /// The kubelet's `shutdownGracePeriod` on the nodes.
    pub node_shutdown_grace: Duration,
    /// The part of it reserved for critical pods (`shutdownGracePeriodCriticalPods`).
    pub node_shutdown_critical_grace: Duration,
}

impl Default for Options {
    /// The CLI's defaults. The node-shutdown window is the EKS AL2023 AMI's from Kubernetes
    /// 1.34 on: 2m30s, the last 30s for critical pods (awslabs/amazon-eks-ami #2390).
    fn default() -> Self {
        Self {
            stacks: Vec::new(),
            max_request: Duration::from_secs(5),
            shutdown: Duration::from_secs(10),
            node_shutdown_grace: Duration::from_secs(150),
            node_shutdown_critical_grace: Duration::from_secs(30),
        }
    }
}

/// One problem with one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The rule's id.
    pub rule: &'static str,
    /// The rule's level.
    pub level: Level,
    /// The file the workload came from.
    pub source: PathBuf,
    /// `Kind namespace/name`.
    pub workload: String,
    /// JSON pointer of the offending field.
    pub path: String,
    /// What is wrong, with the numbers.
    pub message: String,
    /// What to change.
    pub fix: String,
    /// For timing findings, the discovery stacks found in front of the workload and what in
    /// the manifests showed each, so a reader can check the budget's premises.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// Collects one workload's findings, filling in what every finding of it shares.
struct Findings<'w, 'a> {
    w: &'w Workload<'a>,
    out: Vec<Finding>,
}

impl Findings<'_, '_> {
    /// Adds a finding of rule `id`; `fix` replaces the rule's generic fix when the numbers
    /// are known. Returns it so timing rules can attach their evidence.
    fn emit(
        &mut self,
        id: &'static str,
        path: String,
        message: String,
        fix: Option<String>,
    ) -> &mut Finding {
        let rule = explain(id).expect("rule ids are listed in RULES");
        self.out.push(Finding {
            rule: id,
            level: rule.level,
            source: self.w.object.source.clone(),
            workload: format!("{} {}", self.w.kind, self.w.name),
            path,
            message,
            fix: fix.unwrap_or_else(|| rule.fix.to_string()),
            evidence: Vec::new(),
        });
        self.out.last_mut().expect("just pushed")
    }
}

/// An int-or-percent against `total` (percentages round as upstream's `GetScaledValueFromIntOrPercent`).
fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<f64>().ok())
            .map_or(0, |p| {
                let exact = p * total as f64 / 100.0;
                if round_up {
                    exact.ceil() as i64
                } else {
                    exact.floor() as i64
                }
            }),
        other => other.as_i64().unwrap_or(0),
    }
}

/// Why a PDB can never allow a disruption of `replicas` pods, if it cannot.
fn blocks_every_drain(pdb: &Value, replicas: i64) -> Option<String> {
    let spec = pdb.get("spec")?;
    if let Some(max) = spec.get("maxUnavailable") {
        return (int_or_percent(max, replicas, true) == 0)
            .then(|| format!("maxUnavailable {max} allows no disruption"));
    }
    let min = spec.get("minAvailable")?;
    (int_or_percent(min, replicas, true) >= replicas)
        .then(|| format!("minAvailable {min} with {replicas} replica(s) allows no disruption"))
}

/// Whether the pod spec spreads replicas over nodes or zones.
fn spreads(pod_spec: &Value) -> bool {
    pod_spec.pointer("/affinity/podAntiAffinity").is_some()
        || pod_spec
            .get("topologySpreadConstraints")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
}

/// Probe, preStop-shell and Spring Boot rules, per container.
fn container_rules(f: &mut Findings<'_, '_>) {
    let w = f.w;
    let spec = w.pod_spec_path;
    for (i, c) in containers(w) {
        if c.get("readinessProbe").is_none() && !w.services.is_empty() {
            f.emit(
                "no-readiness-probe",
                format!("{spec}/containers/{i}/readinessProbe"),
                "container has no readiness probe but a Service sends it traffic".into(),
                None,
            );
        }
    }
    for (i, c) in containers(w) {
        if let (Some(r), Some(l)) = (c.get("readinessProbe"), c.get("livenessProbe"))
            && r == l
        {
            f.emit(
                "readiness-equals-liveness",
                format!("{spec}/containers/{i}/livenessProbe"),
                "livenessProbe is identical to readinessProbe".into(),
                None,
            );
        }
        if let Some(shell) = exec_prestop_shell(c) {
            f.emit(
                "exec-prestop-needs-shell",
                format!("{spec}/containers/{i}/lifecycle/preStop/exec/command"),
                format!("the preStop hook runs {shell}, which images without a shell lack"),
                None,
            );
        }
        if looks_like_spring_boot(c) && !spring_graceful(c) {
            f.emit(
                "spring-no-graceful-shutdown",
                format!("{spec}/containers/{i}/env"),
                "a Spring Boot app without server.shutdown=graceful".into(),
                None,
            );
        }
    }
}

/// Rollout strategy, replica, spread and PodDisruptionBudget rules.
fn availability_rules(f: &mut Findings<'_, '_>) {
    let w = f.w;
    let doc = &w.object.doc;
    let replicas = doc
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if w.kind == "Deployment"
        && doc.pointer("/spec/strategy/type").and_then(Value::as_str) != Some("Recreate")
    {
        let max_unavailable = doc
            .pointer("/spec/strategy/rollingUpdate/maxUnavailable")
            .map_or(0, |v| int_or_percent(v, replicas, false));
        if replicas > 1 && max_unavailable >= replicas {
            f.emit(
                "rolling-all-at-once",
                "/spec/strategy/rollingUpdate/maxUnavailable".into(),
                format!("maxUnavailable lets all {replicas} replicas go at once"),
                None,
            );
        }
    }
    if w.pdbs.len() > 1 {
        f.emit(
            "multiple-pdbs",
            "/metadata".into(),
            format!("{} PodDisruptionBudgets select these pods", w.pdbs.len()),
            None,
        );
    }
    for pdb in &w.pdbs {
        if let Some(why) = blocks_every_drain(&pdb.doc, replicas) {
            let name = crate::index::name(&pdb.doc);
            f.emit(
                "pdb-blocks-drain",
                "/spec".into(),
                format!("PodDisruptionBudget {name}: {why}"),
                None,
            );
        }
    }
    if w.kind == "Deployment"
        && w.services
            .iter()
            .any(|s| s.doc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None"))
    {
        f.emit(
            "headless-service-stateless",
            "/metadata".into(),
            "a headless Service selects this Deployment".into(),
            None,
        );
    }
    if doc.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        f.emit(
            "recreate-strategy",
            "/spec/strategy/type".into(),
            "strategy is Recreate".into(),
            None,
        );
    }
    if matches!(w.kind.as_str(), "Deployment" | "StatefulSet") {
        let (count, what) = match w.hpa_min_replicas {
            Some(min) => (
                min,
                format!("its HorizontalPodAutoscaler's minReplicas is {min}"),
            ),
            None => (replicas, format!("replicas is {replicas}")),
        };
        if count >= 2 && !spreads(w.pod_spec) {
            f.emit(
                "no-spread",
                format!("{}/topologySpreadConstraints", w.pod_spec_path),
                "no pod anti-affinity or topology spread: all replicas may share a node or zone"
                    .into(),
                None,
            );
        }
        if count < 2 {
            f.emit("single-replica", "/spec/replicas".into(), what, None);
        } else if w.pdbs.is_empty() {
            f.emit(
                "no-pdb",
                "/metadata".into(),
                "no PodDisruptionBudget selects these pods".into(),
                None,
            );
        }
    }
}

/// Runs every rule over one workload.
pub fn check(w: &Workload<'_>, index: &Index<'_>, opts: &Options) -> Vec<Finding> {
    let mut f = Findings { w, out: Vec::new() };
    container_rules(&mut f);
    availability_rules(&mut f);
    timing::check(&mut f, index, opts);
    f.out
}

/// Findings that belong to no workload: PodDisruptionBudgets that select none.
pub fn orphan_pdbs(objects: &[crate::load::Object], workloads: &[Workload<'_>]) -> Vec<Finding> {
    let rule = explain("pdb-selects-nothing").expect("listed in RULES");
    objects
        .iter()
        .filter(|o| o.doc.get("kind").and_then(Value::as_str) == Some("PodDisruptionBudget"))
        .filter(|o| {
            !workloads
                .iter()
                .any(|w| w.pdbs.iter().any(|p| std::ptr::eq(*p, *o)))
        })
        .map(|o| Finding {
            rule: rule.id,
            level: rule.level,
            source: o.source.clone(),
            workload: format!(
                "PodDisruptionBudget {}/{}",
                crate::index::namespace(&o.doc),
                crate::index::name(&o.doc)
            ),
            path: "/spec/selector".into(),
            message: "selects no workload in these manifests".into(),
            fix: rule.fix.into(),
            evidence: Vec::new(),
        })
        .collect()
}
