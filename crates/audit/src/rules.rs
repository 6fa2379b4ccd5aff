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
        id: "no-pdb",
        level: Level::Warning,
        why: "Without a PodDisruptionBudget a drain may evict every replica at once.",
        fix: "Add a PodDisruptionBudget with maxUnavailable: 1.",
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

/// The preStop delay of one container: the sleep action, a `sleep N` exec, or quiesce-init's
/// drain delay (`QUIESCE_DRAIN_DELAY` / `--drain-delay`).
fn prestop_delay(c: &Value) -> Option<Duration> {
    if let Some(d) = env(c, "QUIESCE_DRAIN_DELAY").or_else(|| arg(c, "--drain-delay")) {
        return duration(d);
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
    let doc = &w.object.doc;
    if doc.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        emit(
            "recreate-strategy",
            "/spec/strategy/type".into(),
            "strategy is Recreate".into(),
            None,
        );
    }
    if matches!(w.kind.as_str(), "Deployment" | "StatefulSet") {
        let replicas = doc
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        if replicas < 2 {
            emit(
                "single-replica",
                "/spec/replicas".into(),
                format!("replicas is {replicas}"),
                None,
            );
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
    let delay = containers(w).filter_map(|(_, c)| prestop_delay(c)).max();
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
            format!("{spec}/containers/0/lifecycle/preStop"),
            format!(
                "no preStop delay behind a Service; needed {needed} = {}",
                terms.join(" + ")
            ),
            Some(format!("add a preStop delay of at least {needed}")),
        ),
        Some(d) if d < b.needed_prestop => emit(
            "prestop-too-short",
            format!("{spec}/containers/0/lifecycle/preStop"),
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
