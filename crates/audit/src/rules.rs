//! The rules: each finding names the rule, the object, the field path and the fix.

use std::path::PathBuf;
use std::time::Duration;

use quiesce_core::budget::{self, Stack};
use serde::Serialize;
use serde_json::Value;

use crate::workload::Workload;

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
        why: "Behind a Service, the endpoint is removed at the same time as SIGTERM is sent; clients keep sending requests until every discovery layer catches up.",
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
];

/// Looks up a rule for `--explain`.
pub fn explain(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// What the audit assumes where the manifest is silent.
#[derive(Debug, Clone)]
pub struct Options {
    /// Discovery stacks in front of every workload (the annotation `quiesce.io/discovery` overrides).
    pub stacks: Vec<Stack>,
    /// The longest request the app serves.
    pub max_request: Duration,
    /// The app's own shutdown time when the manifest does not show it.
    pub shutdown: Duration,
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
}

/// Kubernetes' default terminationGracePeriodSeconds (PodSpec API reference: "Defaults to 30 seconds").
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

fn containers<'a>(w: &Workload<'a>) -> impl Iterator<Item = (usize, &'a Value)> + use<'a> {
    w.pod_spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c.get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

fn arg<'a>(c: &'a Value, flag: &str) -> Option<&'a str> {
    let words: Vec<&str> = ["command", "args"]
        .iter()
        .filter_map(|k| c.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    words.iter().enumerate().find_map(|(i, w)| {
        w.strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
            .or_else(|| (*w == flag).then(|| words.get(i + 1).copied()).flatten())
    })
}

fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .or_else(|| text.parse::<u64>().ok().map(Duration::from_secs))
}

/// quiesce-init's `--drain-delay` when none is given.
const QUIESCE_INIT_DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// The preStop delay of one container: the sleep action, a `sleep N` exec, or quiesce-init's
/// drain delay (`QUIESCE_DRAIN_DELAY` / `--drain-delay`). With drain-until-quiet
/// (`QUIESCE_DRAIN_QUIET` / `--drain-until-quiet`) the drain may end much earlier; only its
/// maximum, the drain delay (quiesce-init's default 5 s when unset), is certain.
fn prestop_delay(c: &Value) -> Option<Duration> {
    if let Some(d) = env(c, "QUIESCE_DRAIN_DELAY").or_else(|| arg(c, "--drain-delay")) {
        return duration(d);
    }
    if env(c, "QUIESCE_DRAIN_QUIET")
        .or_else(|| arg(c, "--drain-until-quiet"))
        .is_some()
    {
        return Some(QUIESCE_INIT_DEFAULT_DRAIN_DELAY);
    }
    let pre = c.pointer("/lifecycle/preStop")?;
    if let Some(s) = pre.pointer("/sleep/seconds").and_then(Value::as_u64) {
        return Some(Duration::from_secs(s));
    }
    let words: Vec<&str> = pre
        .pointer("/exec/command")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .flat_map(str::split_whitespace)
        .collect();
    words
        .windows(2)
        .find(|w| w[0] == "sleep")
        .and_then(|w| duration(w[1].trim_end_matches(';')))
}

/// The app's own shutdown time, where the manifest shows it.
fn shutdown(c: &Value) -> Option<Duration> {
    env(c, "QUIESCE_STOP_TIMEOUT")
        .or_else(|| arg(c, "--stop-timeout"))
        .or_else(|| env(c, "SPRING_LIFECYCLE_TIMEOUT_PER_SHUTDOWN_PHASE"))
        .and_then(duration)
}

fn stacks(w: &Workload<'_>, opts: &Options) -> Vec<Stack> {
    let annotation = [
        "/metadata/annotations",
        "/spec/template/metadata/annotations",
    ]
    .iter()
    .find_map(|p| {
        w.object
            .doc
            .pointer(p)?
            .get("quiesce.io/discovery")?
            .as_str()
    });
    match annotation {
        Some(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        None => opts.stacks.clone(),
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

/// The shell an exec preStop runs, if it runs one.
fn exec_prestop_shell(c: &Value) -> Option<String> {
    let first = c.pointer("/lifecycle/preStop/exec/command/0")?.as_str()?;
    let base = first.rsplit('/').next().unwrap_or(first);
    matches!(base, "sh" | "bash" | "ash" | "dash" | "zsh").then(|| first.to_string())
}

/// Whether the env, command or image shows a Spring Boot app.
fn looks_like_spring_boot(c: &Value) -> bool {
    let env_says = c
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|e| {
            e.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("SPRING_"))
        });
    let args_say = ["command", "args"]
        .iter()
        .filter_map(|k| c.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .any(|a| a.contains("spring.") || a.contains("spring-boot"));
    env_says || args_say
}

/// Whether graceful shutdown is switched on (env or argument).
fn spring_graceful(c: &Value) -> bool {
    env(c, "SERVER_SHUTDOWN").is_some_and(|v| v.eq_ignore_ascii_case("graceful"))
        || arg(c, "--server.shutdown").is_some_and(|v| v.eq_ignore_ascii_case("graceful"))
        || env(c, "JAVA_TOOL_OPTIONS").is_some_and(|v| v.contains("server.shutdown=graceful"))
}

/// Runs every rule over one workload.
pub fn check(w: &Workload<'_>, opts: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut emit = |id: &'static str, path: String, message: String, fix: Option<String>| {
        let rule = explain(id).expect("rule ids are listed in RULES");
        out.push(Finding {
            rule: id,
            level: rule.level,
            source: w.object.source.clone(),
            workload: format!("{} {}", w.kind, w.name),
            path,
            message,
            fix: fix.unwrap_or_else(|| rule.fix.to_string()),
        });
    };
    let spec = w.pod_spec_path;
    for (i, c) in containers(w) {
        if c.get("readinessProbe").is_none() && !w.services.is_empty() {
            emit(
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
            emit(
                "readiness-equals-liveness",
                format!("{spec}/containers/{i}/livenessProbe"),
                "livenessProbe is identical to readinessProbe".into(),
                None,
            );
        }
        if let Some(shell) = exec_prestop_shell(c) {
            emit(
                "exec-prestop-needs-shell",
                format!("{spec}/containers/{i}/lifecycle/preStop/exec/command"),
                format!("the preStop hook runs {shell}, which images without a shell lack"),
                None,
            );
        }
        if looks_like_spring_boot(c) && !spring_graceful(c) {
            emit(
                "spring-no-graceful-shutdown",
                format!("{spec}/containers/{i}/env"),
                "a Spring Boot app without server.shutdown=graceful".into(),
                None,
            );
        }
    }
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
            emit(
                "rolling-all-at-once",
                "/spec/strategy/rollingUpdate/maxUnavailable".into(),
                format!("maxUnavailable lets all {replicas} replicas go at once"),
                None,
            );
        }
    }
    if w.pdbs.len() > 1 {
        emit(
            "multiple-pdbs",
            "/metadata".into(),
            format!("{} PodDisruptionBudgets select these pods", w.pdbs.len()),
            None,
        );
    }
    for pdb in &w.pdbs {
        if let Some(why) = blocks_every_drain(&pdb.doc, replicas) {
            let name = pdb
                .doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            emit(
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
        emit(
            "headless-service-stateless",
            "/metadata".into(),
            "a headless Service selects this Deployment".into(),
            None,
        );
    }
    if doc.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        emit(
            "recreate-strategy",
            "/spec/strategy/type".into(),
            "strategy is Recreate".into(),
            None,
        );
    }
    if matches!(w.kind.as_str(), "Deployment" | "StatefulSet") {
        let (count, path, what) = match w.hpa_min_replicas {
            Some(min) => (
                min,
                "/spec/replicas",
                format!("its HorizontalPodAutoscaler's minReplicas is {min}"),
            ),
            None => (
                replicas,
                "/spec/replicas",
                format!("replicas is {replicas}"),
            ),
        };
        if count >= 2 && !spreads(w.pod_spec) {
            emit(
                "no-spread",
                format!("{spec}/topologySpreadConstraints"),
                "no pod anti-affinity or topology spread: all replicas may share a node or zone"
                    .into(),
                None,
            );
        }
        if count < 2 {
            emit("single-replica", path.into(), what, None);
        } else if w.pdbs.is_empty() {
            emit(
                "no-pdb",
                "/metadata".into(),
                "no PodDisruptionBudget selects these pods".into(),
                None,
            );
        }
    }
    if w.services.is_empty() {
        return out;
    }
    let stacks = stacks(w, opts);
    // The container whose preStop delay is longest holds the pod; findings point at it (or at
    // the first container when none has one).
    let longest = containers(w)
        .filter_map(|(i, c)| prestop_delay(c).map(|d| (d, i)))
        .max();
    let delay = longest.map(|(d, _)| d);
    let prestop_path = format!(
        "{spec}/containers/{}/lifecycle/preStop",
        longest.map_or(0, |(_, i)| i)
    );
    let app_shutdown = containers(w)
        .filter_map(|(_, c)| shutdown(c))
        .max()
        .unwrap_or(opts.shutdown);
    let b = budget::compute(&stacks, opts.max_request, app_shutdown);
    let terms: Vec<String> = b
        .terms
        .iter()
        .map(|t| {
            format!(
                "{} {} ({})",
                humantime::format_duration(t.duration),
                t.what,
                t.source
            )
        })
        .collect();
    let needed = humantime::format_duration(b.needed_prestop);
    match delay {
        None => emit(
            "no-prestop-delay",
            prestop_path.clone(),
            format!(
                "no preStop delay behind a Service; needed {needed} = {}",
                terms.join(" + ")
            ),
            Some(format!("add a preStop delay of at least {needed}")),
        ),
        Some(d) if d < b.needed_prestop => emit(
            "prestop-too-short",
            prestop_path.clone(),
            format!(
                "preStop delay {} < needed {needed} = {}",
                humantime::format_duration(d),
                terms.join(" + ")
            ),
            Some(format!("raise the preStop delay to at least {needed}")),
        ),
        Some(_) => {}
    }
    let prestop = delay.unwrap_or_default().max(b.needed_prestop);
    let needed_grace = prestop + app_shutdown;
    let grace = w
        .pod_spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_GRACE, Duration::from_secs);
    if grace < needed_grace {
        emit(
            "grace-too-short",
            format!("{spec}/terminationGracePeriodSeconds"),
            format!(
                "terminationGracePeriodSeconds {} < preStop {} + shutdown {}",
                grace.as_secs(),
                humantime::format_duration(prestop),
                humantime::format_duration(app_shutdown)
            ),
            Some(format!(
                "set terminationGracePeriodSeconds to at least {}",
                needed_grace.as_secs()
            )),
        );
    }
    out
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
        .map(|o| {
            let ns = o
                .doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = o
                .doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Finding {
                rule: rule.id,
                level: rule.level,
                source: o.source.clone(),
                workload: format!("PodDisruptionBudget {ns}/{name}"),
                path: "/spec/selector".into(),
                message: "selects no workload in these manifests".into(),
                fix: rule.fix.into(),
            }
        })
        .collect()
}
