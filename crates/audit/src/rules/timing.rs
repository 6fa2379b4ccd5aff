//! The timing rules: does the preStop delay cover the discovery stacks in front of the pod,
//! does the grace period cover preStop plus shutdown, and does all of it fit the windows a
//! node shutdown or a Spot reclaim leaves.

use std::borrow::Cow;
use std::time::Duration;

use humantime::format_duration;
use serde_json::Value;

use super::container::{containers, duration, prestop_delay, shutdown};
use super::{Findings, Options};
use crate::detect::{self, Detection, Term};
use crate::index::Index;

/// Kubernetes' default terminationGracePeriodSeconds (PodSpec API reference: "Defaults to 30 seconds").
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// EC2 sends a Spot Instance interruption notice two minutes before it stops or terminates the
/// instance (EC2 User Guide, "Spot Instance interruption notices").
const SPOT_NOTICE: Duration = Duration::from_secs(120);

/// The pod annotation declaring that the app keeps serving for a while after SIGTERM by
/// itself (podinfo's `--server-shutdown-timeout`, many Go servers), which counts toward the
/// preStop budget.
const APP_DRAIN: &str = "quiesce.io/app-drain-delay";

/// The pod annotation naming its discovery stacks, replacing detection.
const DISCOVERY: &str = "quiesce.io/discovery";

/// The priority classes whose pods get the kubelet's critical-pod shutdown window
/// (kubernetes.io docs, "Node Shutdowns": critical pods are those of
/// system-cluster-critical and system-node-critical).
const CRITICAL_CLASSES: &[&str] = &["system-cluster-critical", "system-node-critical"];

/// The labels that put pods on Spot capacity: Karpenter's well-known `karpenter.sh/capacity-type`
/// (`spot`) and EKS managed node groups' `eks.amazonaws.com/capacityType` (`SPOT`).
const SPOT_LABELS: &[(&str, &str)] = &[
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
];

/// The stacks the budget is computed for: the annotation's, else `--stack`'s for a workload
/// that receives traffic, else the detected ones. Reports an unreadable annotation.
fn stacks(f: &mut Findings<'_, '_>, detected: &[Detection], opts: &Options) -> Vec<Detection> {
    let fixed = Detection::with_default_terms;
    if let Some(list) = f.w.annotation(DISCOVERY) {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim) {
            match name.parse() {
                Ok(stack) => out.push(fixed(
                    stack,
                    format!("{name}: annotation {DISCOVERY}={list}"),
                )),
                Err(why) => {
                    f.emit(
                        "invalid-annotation",
                        "/metadata/annotations".into(),
                        format!("{DISCOVERY} {list:?}: {why}"),
                        None,
                    );
                }
            }
        }
        return out;
    }
    if detected.is_empty() || opts.stacks.is_empty() {
        return detected.to_vec();
    }
    opts.stacks
        .iter()
        .map(|&s| fixed(s, format!("{}: --stack", detect::stack_name(s))))
        .collect()
}

/// The app's own drain from [`APP_DRAIN`], reporting a value that is not a duration.
fn app_drain(f: &mut Findings<'_, '_>) -> Option<Duration> {
    let text = f.w.annotation(APP_DRAIN)?;
    let parsed = duration(text.trim());
    if parsed.is_none() {
        f.emit(
            "invalid-annotation",
            format!(
                "{}/metadata/annotations",
                f.w.pod_spec_path.trim_end_matches("/spec")
            ),
            format!("{APP_DRAIN} {text:?} is not a duration (expected e.g. 3s or 1m30s)"),
            None,
        );
    }
    parsed
}

fn describe_terms(terms: &[Term]) -> String {
    terms
        .iter()
        .map(|t| format!("{} {} ({})", format_duration(t.duration), t.what, t.source))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Whether a nodeSelector or a node-affinity term puts the pods on Spot capacity, and where.
fn on_spot(pod_spec: &Value) -> Option<&'static str> {
    let selects = |key: &str, value: &str| {
        pod_spec
            .pointer("/nodeSelector")
            .and_then(|s| s.get(key))
            .and_then(Value::as_str)
            == Some(value)
    };
    if SPOT_LABELS.iter().any(|(k, v)| selects(k, v)) {
        return Some("/nodeSelector");
    }
    let affinity = pod_spec.pointer("/affinity/nodeAffinity")?;
    let required = affinity
        .pointer("/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let preferred = affinity
        .pointer("/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("preference"));
    let spot_expression = |e: &Value| {
        let key = e.get("key").and_then(Value::as_str);
        let op = e.get("operator").and_then(Value::as_str);
        SPOT_LABELS.iter().any(|(k, v)| {
            key == Some(k)
                && op == Some("In")
                && e.get("values")
                    .and_then(Value::as_array)
                    .is_some_and(|vs| vs.iter().any(|x| x.as_str() == Some(v)))
        })
    };
    required
        .chain(preferred)
        .filter_map(|t| t.get("matchExpressions")?.as_array())
        .flatten()
        .any(spot_expression)
        .then_some("/affinity/nodeAffinity")
}

/// Whether the pod will carry the AWS Load Balancer Controller's readiness gate: its namespace
/// is labelled for injection (docs/deploy/pod_readiness_gate.md), or the spec already lists a
/// `target-health.elbv2.k8s.aws/…` gate. `None` when the Namespace is not in the input.
fn has_readiness_gate(f: &Findings<'_, '_>, index: &Index<'_>) -> Option<bool> {
    let listed =
        f.w.pod_spec
            .get("readinessGates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.get("conditionType")?.as_str())
            .any(|c| c.starts_with("target-health.elbv2.k8s.aws"));
    if listed {
        return Some(true);
    }
    let ns = index.namespace(f.w.namespace)?;
    Some(
        ns.doc
            .pointer("/metadata/labels/elbv2.k8s.aws~1pod-readiness-gate-inject")
            .and_then(Value::as_str)
            == Some("enabled"),
    )
}

/// Runs the timing rules over one workload.
pub fn check(f: &mut Findings<'_, '_>, index: &Index<'_>, opts: &Options) {
    let w = f.w;
    let spec = w.pod_spec_path;
    let detected = detect::detect(w, index);
    if let Some(lb) = detected.iter().find(|d| d.ip_targets)
        && has_readiness_gate(f, index) == Some(false)
    {
        f.emit(
            "no-lb-readiness-gate",
            format!("{spec}/readinessGates"),
            format!(
                "ip targets and Namespace {} lacks the label elbv2.k8s.aws/pod-readiness-gate-inject=enabled",
                w.namespace
            ),
            Some(format!(
                "kubectl label namespace {} elbv2.k8s.aws/pod-readiness-gate-inject=enabled, then restart the pods",
                w.namespace
            )),
        )
        .evidence = vec![lb.evidence.clone()];
    }
    let stacks = stacks(f, &detected, opts);
    let app_drain = app_drain(f);
    // The container whose preStop delay is longest holds the pod; findings point at it (or at
    // the first container when none has one).
    let longest = containers(w)
        .filter_map(|(i, c)| prestop_delay(c).map(|d| (d, i)))
        .max();
    let prestop_path = format!(
        "{spec}/containers/{}/lifecycle/preStop",
        longest.map_or(0, |(_, i)| i)
    );
    let delay = longest.map(|(d, _)| d);
    let serving = delay.unwrap_or_default() + app_drain.unwrap_or_default();
    let app_shutdown = containers(w)
        .filter_map(|(_, c)| shutdown(c))
        .max()
        .unwrap_or(opts.shutdown);
    // The slowest stack first: it is the one the budget's terms come from.
    let mut by_lag: Vec<&Detection> = stacks.iter().collect();
    by_lag.sort_by_key(|d| std::cmp::Reverse(d.lag()));
    let evidence: Vec<String> = by_lag.iter().map(|d| d.evidence.clone()).collect();

    let needed_prestop = stacks.iter().max_by_key(|d| d.lag()).map(|slowest| {
        let mut terms = slowest.terms.clone();
        terms.push(Term {
            what: Cow::Borrowed("longest request in flight when the last client switches"),
            duration: opts.max_request,
            source: Cow::Borrowed("--max-request"),
        });
        let needed: Duration = terms.iter().map(|t| t.duration).sum();
        (needed, terms)
    });
    if let Some((needed, terms)) = &needed_prestop {
        let needed_text = format_duration(*needed);
        let own = app_drain.map_or(String::new(), |d| {
            format!(
                " + the app's own drain {} ({APP_DRAIN}, counted toward the budget)",
                format_duration(d)
            )
        });
        let finding = match (delay, app_drain) {
            (None, None) => Some(f.emit(
                "no-prestop-delay",
                prestop_path.clone(),
                format!(
                    "no preStop delay; needed {needed_text} = {}",
                    describe_terms(terms)
                ),
                Some(format!("add a preStop delay of at least {needed_text}")),
            )),
            _ if serving < *needed => Some(f.emit(
                "prestop-too-short",
                prestop_path.clone(),
                format!(
                    "preStop delay {}{own} < needed {needed_text} = {}",
                    format_duration(delay.unwrap_or_default()),
                    describe_terms(terms)
                ),
                Some(format!(
                    "raise the preStop delay to at least {}",
                    format_duration(needed.saturating_sub(app_drain.unwrap_or_default()))
                )),
            )),
            _ => None,
        };
        if let Some(finding) = finding {
            finding.evidence = evidence.clone();
        }
    }
    let prestop = serving.max(needed_prestop.as_ref().map_or(Duration::ZERO, |(n, _)| *n));
    let needs = prestop + app_shutdown;
    let declared_grace = w
        .pod_spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    let grace = declared_grace.unwrap_or(DEFAULT_GRACE);
    let grace_path = format!("{spec}/terminationGracePeriodSeconds");
    if needed_prestop.is_some() && grace < needs {
        f.emit(
            "grace-too-short",
            grace_path.clone(),
            format!(
                "terminationGracePeriodSeconds {} < preStop {} + shutdown {}",
                grace.as_secs(),
                format_duration(prestop),
                format_duration(app_shutdown)
            ),
            Some(format!(
                "set terminationGracePeriodSeconds to at least {}",
                needs.as_secs()
            )),
        )
        .evidence = evidence.clone();
    }
    node_shutdown_rules(f, opts, needs, declared_grace, &evidence);
}

/// `grace-exceeds-node-shutdown` and `preemptible-budget`: the pod needs `needs` (preStop plus
/// shutdown) and reserves `declared_grace`.
fn node_shutdown_rules(
    f: &mut Findings<'_, '_>,
    opts: &Options,
    needs: Duration,
    declared_grace: Option<Duration>,
    evidence: &[String],
) {
    let w = f.w;
    let spec = w.pod_spec_path;
    let critical = w
        .pod_spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_some_and(|c| CRITICAL_CLASSES.contains(&c));
    // The kubelet terminates ordinary pods first, within shutdownGracePeriod minus
    // shutdownGracePeriodCriticalPods, then critical pods within the rest (kubernetes.io
    // docs, "Node Shutdowns", graceful node shutdown).
    let (window, whose) = if critical {
        (opts.node_shutdown_critical_grace, "critical pods")
    } else {
        (
            opts.node_shutdown_grace
                .saturating_sub(opts.node_shutdown_critical_grace),
            "ordinary pods",
        )
    };
    let window_text = format!(
        "the {} the kubelet gives {whose} on a node shutdown (--node-shutdown-grace {}, of which {} for critical pods)",
        format_duration(window),
        format_duration(opts.node_shutdown_grace),
        format_duration(opts.node_shutdown_critical_grace)
    );
    let over = match declared_grace {
        Some(g) if g > window && g >= needs => Some(format!(
            "terminationGracePeriodSeconds {} > {window_text}",
            g.as_secs()
        )),
        _ if needs > window => Some(format!(
            "preStop + shutdown {} > {window_text}",
            format_duration(needs)
        )),
        _ => None,
    };
    if let Some(message) = over {
        f.emit(
            "grace-exceeds-node-shutdown",
            format!("{spec}/terminationGracePeriodSeconds"),
            message,
            Some(format!(
                "fit preStop + shutdown into {}, or raise the nodes' shutdownGracePeriod",
                format_duration(window)
            )),
        )
        .evidence = evidence.to_vec();
    }
    if let Some(path) = on_spot(w.pod_spec)
        && needs > SPOT_NOTICE
    {
        f.emit(
            "preemptible-budget",
            format!("{spec}{path}"),
            format!(
                "on Spot capacity, preStop + shutdown {} > the 2m interruption notice",
                format_duration(needs)
            ),
            None,
        )
        .evidence = evidence.to_vec();
    }
}
