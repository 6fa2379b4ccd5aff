//! The drain plan: what to evict in which order, what stands in the way, and whether to start.
//!
//! Order follows Karpenter's termination tiers (`terminator.go`): ordinary pods first, then
//! system-critical ones, so that the DNS or CNI pods the others need while shutting down go
//! last; DaemonSet and mirror pods are never evicted (kubectl skips them too). Safety defaults
//! follow `kubectl drain`: unmanaged pods need `force`, emptyDir pods `delete_emptydir_data`.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::capacity::{self, Usage};
use crate::classify::{PodFacts, PodKind, WorkloadRef, classify, protected};
use crate::gate::{self, Workload};
use crate::pdb;
use crate::terminating;

/// Annotation on a Deployment that opts it into surge draining.
pub const STRATEGY_ANNOTATION: &str = "quiesce.io/drain-strategy";

/// The operator's choices, mirroring `kubectl drain` flags plus `--surge`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainOptions {
    /// Evict pods without a controller (they are lost).
    pub force: bool,
    /// Evict pods with emptyDir volumes (their data is lost).
    pub delete_emptydir_data: bool,
    /// Surge every Deployment that cannot lose a pod, not only annotated ones.
    pub surge_all: bool,
    /// Surge nothing, not even annotated Deployments (their pods are evicted under their
    /// budgets): a drainer that may not patch Deployments (a chart without surge) must not
    /// try.
    pub never_surge: bool,
}

/// What the cluster looks like, as read by the executor just before planning.
#[derive(Debug, Clone, Copy)]
pub struct ClusterView<'a> {
    /// The node to drain.
    pub node: &'a str,
    /// Every node, including the draining one.
    pub nodes: &'a [Node],
    /// The node's pods and the pods of their workloads (the gate counts those elsewhere);
    /// other pods are not needed.
    pub pods: &'a [Pod],
    /// What every node's pods request, for the room check.
    pub usage: &'a Usage,
    /// Every PodDisruptionBudget.
    pub pdbs: &'a [PodDisruptionBudget],
    /// ReplicaSets, to resolve pods to their Deployments.
    pub replica_sets: &'a [ReplicaSet],
    /// Deployments, for replica counts, strategies and the surge annotation.
    pub deployments: &'a [Deployment],
    /// StatefulSets, for replica counts and minReadySeconds.
    pub stateful_sets: &'a [StatefulSet],
    /// Deployments an earlier run of this drain already restarted: never restarted again.
    pub surged: &'a [WorkloadRef],
    /// The time of the read, for deadlines and durations in the objects.
    pub now: Timestamp,
}

/// What the engine does with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Evict through the Eviction API (PDBs apply).
    Evict,
    /// Rolling-restart its Deployment first; the Deployment replaces the pod itself.
    Surge,
    /// Already going (terminating, or its Deployment already restarted): wait for it to be
    /// gone and gate its workload like an evicted pod's.
    Wait,
    /// Leave it on the node (DaemonSet, mirror pod).
    Skip,
}

/// One pod of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedPod {
    /// What the pod is.
    #[serde(flatten)]
    pub facts: PodFacts,
    /// What the engine will do with it.
    pub action: Action,
    /// Eviction tier: every pod of tier 0 is gone before tier 1 starts.
    pub tier: u8,
    /// The PDBs that cover it (`namespace/name`).
    pub pdbs: Vec<String>,
}

/// Whether a blocker clears by itself or needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Expected to clear (a PDB at 0 allowed disruptions while a pod is not Ready).
    Wait,
    /// Cannot clear without a change to the cluster or the options.
    Impossible,
}

/// Something that stops the drain, named so a person can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// `namespace/name` of the pod concerned, when there is one.
    pub pod: Option<String>,
    /// `namespace/name` of the PDB concerned, when there is one.
    pub pdb: Option<String>,
    /// Does it clear by itself?
    pub severity: Severity,
    /// The explanation.
    pub reason: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(pod) = &self.pod {
            write!(f, "pod {pod}: ")?;
        }
        if let Some(pdb) = &self.pdb {
            write!(f, "PDB {pdb}: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Whether to start the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing stands in the way.
    Proceed,
    /// The drain can start, but some pods will wait for their budgets.
    Wait,
    /// The drain cannot finish as things are; do not start it.
    Impossible,
}

/// One workload the drain will not call whole until enough of its pods are Available
/// elsewhere: what the plan waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    /// The workload.
    pub workload: WorkloadRef,
    /// Its Available pods before the drain (see [`gate::available_before`]); the engine keeps
    /// the number recorded by the first run instead when resuming.
    pub available_before: i32,
}

/// A workload whose pods leave the node without a gate, and why: the drain cannot tell
/// when it is whole again, and says so rather than passing it in silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ungated {
    /// The workload.
    pub workload: WorkloadRef,
    /// Why it is not gated.
    pub reason: String,
}

/// The plan for one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainPlan {
    /// The node.
    pub node: String,
    /// Every pod on the node, in eviction order (skipped pods last).
    pub pods: Vec<PlannedPod>,
    /// What stands in the way.
    pub blockers: Vec<Blocker>,
    /// Whether to start.
    pub verdict: Verdict,
    /// The workloads the drain waits for, with their pre-drain Available counts.
    pub gates: Vec<Gate>,
    /// Workloads leaving the node without a gate.
    pub ungated: Vec<Ungated>,
    /// What the plan does that a reader might not expect (a surge restarts every replica).
    pub notes: Vec<String>,
}

impl DrainPlan {
    /// The Deployments to rolling-restart before evicting anything, without repeats.
    pub fn surges(&self) -> Vec<WorkloadRef> {
        let mut out: Vec<_> = self
            .pods
            .iter()
            .filter(|p| p.action == Action::Surge)
            .filter_map(|p| p.facts.workload.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether anything on the node still has to go (evicted, surged or waited for).
    pub fn has_work(&self) -> bool {
        self.pods.iter().any(|p| p.action != Action::Skip)
    }
}

/// Plans the drain of `view.node`.
pub fn plan(view: ClusterView<'_>, options: DrainOptions) -> DrainPlan {
    let on_node: Vec<&Pod> = view
        .pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(view.node))
        .collect();
    let mut blockers = Vec::new();
    let mut notes = Vec::new();
    let mut pods = Vec::new();
    let mut replaced = Vec::new();
    for pod in on_node {
        let facts = classify(pod, view.replica_sets);
        let covering = pdb::covering(pod, view.pdbs);
        let key = facts.key();
        let block = |severity, pdb: Option<String>, reason: String| Blocker {
            pod: Some(key.clone()),
            pdb,
            severity,
            reason,
        };
        let (action, surge_problem) = if terminating::is_terminating(pod) {
            if let Some(reason) = terminating::stuck(pod, view.now) {
                blockers.push(block(Severity::Impossible, None, reason));
            }
            (Action::Wait, None)
        } else {
            action_for(&facts, &covering, view, options)
        };
        if let Some(reason) = surge_problem {
            blockers.push(block(Severity::Impossible, None, reason));
        }
        if matches!(action, Action::Evict | Action::Surge) {
            if facts.kind == PodKind::Unmanaged && !options.force {
                blockers.push(block(
                    Severity::Impossible,
                    None,
                    "no controller will recreate it, so evicting it loses it (use --force)".into(),
                ));
            }
            if facts.uses_empty_dir && !options.delete_emptydir_data {
                blockers.push(block(
                    Severity::Impossible,
                    None,
                    "uses an emptyDir volume whose data would be lost (use --delete-emptydir-data)"
                        .into(),
                ));
            }
            if protected(pod, view.now) && !options.force {
                blockers.push(block(
                    Severity::Impossible,
                    None,
                    "annotated do-not-disrupt (remove the annotation or use --force)".into(),
                ));
            }
        }
        if action == Action::Evict && facts.kind != PodKind::Finished {
            if let Some((severity, budget, reason)) = budget_blocker(pod, &covering) {
                blockers.push(block(severity, Some(budget), reason));
            }
            replaced.push(pod);
        }
        let tier = u8::from(facts.critical);
        pods.push(PlannedPod {
            facts,
            action,
            tier,
            pdbs: covering.iter().map(|b| pdb::key(b)).collect(),
        });
    }
    let surged: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.action == Action::Surge)
        .filter_map(|p| {
            view.pods
                .iter()
                .find(|pod| pod.metadata.uid.as_deref() == Some(p.facts.uid.as_str()))
        })
        .collect();
    let needs_room: Vec<&Pod> = replaced
        .into_iter()
        .filter(|p| classify(p, view.replica_sets).kind == PodKind::Managed)
        .chain(surged)
        .collect();
    let later = capacity::check(view.node, &needs_room, view.nodes, view.usage, true);
    blockers.extend(
        capacity::check(view.node, &needs_room, view.nodes, view.usage, false)
            .into_iter()
            .map(|s| {
                // Room the other cordoned nodes would give: those drains finishing (their
                // replacements joining, or the nodes coming back) is what this one waits for.
                let others_cause_it = !later.iter().any(|l| l.pod == s.pod);
                Blocker {
                    pod: Some(s.pod),
                    pdb: None,
                    severity: if others_cause_it {
                        Severity::Wait
                    } else {
                        Severity::Impossible
                    },
                    reason: if others_cause_it {
                        format!(
                            "{} while other nodes are cordoned; waits for their drains to finish",
                            s.reason
                        )
                    } else {
                        s.reason
                    },
                }
            }),
    );
    let (gates, ungated) = gates(&pods, view);
    for workload in pods.iter().filter(|p| p.action == Action::Surge) {
        notes.push(format!(
            "surging {} is a rolling restart of every one of its replicas, not only of pod {}",
            workload
                .facts
                .workload
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            workload.facts.key()
        ));
    }
    notes.dedup();
    pods.sort_by_key(|p| (p.action == Action::Skip, p.tier, p.facts.key()));
    let verdict = if blockers.iter().any(|b| b.severity == Severity::Impossible) {
        Verdict::Impossible
    } else if blockers.is_empty() {
        Verdict::Proceed
    } else {
        Verdict::Wait
    };
    DrainPlan {
        node: view.node.to_string(),
        pods,
        blockers,
        verdict,
        gates,
        ungated,
        notes,
    }
}

/// What the pod's budgets put in the way (severity, budget, reason), as the API server would
/// apply them to its eviction.
fn budget_blocker(
    pod: &Pod,
    covering: &[&PodDisruptionBudget],
) -> Option<(Severity, String, String)> {
    if pdb::bypassed(pod) {
        return None;
    }
    let (severity, pdb_name, reason) = if covering.len() > 1 {
        let names: Vec<String> = covering.iter().map(|b| pdb::key(b)).collect();
        (
            Severity::Impossible,
            names.join(", "),
            format!(
                "covered by {} PodDisruptionBudgets; the API server refuses to evict such a pod (500)",
                names.len()
            ),
        )
    } else {
        let budget = covering.first()?;
        if pdb::lets_unhealthy_go(pod, budget) {
            return None;
        }
        if let Some(reason) = pdb::never_allows(budget) {
            (
                Severity::Impossible,
                pdb::key(budget),
                format!("{reason} (use --surge for a Deployment)"),
            )
        } else if pdb::allowed_now(budget) == 0 {
            (
                Severity::Wait,
                pdb::key(budget),
                "allows no disruption right now; eviction waits until its pods are healthy".into(),
            )
        } else {
            return None;
        }
    };
    Some((severity, pdb_name, reason))
}

/// The gates of the plan's workloads, and the workloads that cannot be gated.
fn gates(pods: &[PlannedPod], view: ClusterView<'_>) -> (Vec<Gate>, Vec<Ungated>) {
    let mut workloads: Vec<&WorkloadRef> = pods
        .iter()
        .filter(|p| p.action != Action::Skip && p.facts.kind == PodKind::Managed)
        .filter_map(|p| p.facts.workload.as_ref())
        .collect();
    workloads.sort();
    workloads.dedup();
    let mut gates = Vec::new();
    let mut ungated = Vec::new();
    for workload in workloads {
        if !gate::is_known(&workload.kind) {
            ungated.push(Ungated {
                workload: workload.clone(),
                reason: format!(
                    "pods of a {} are recreated by a controller quiesce does not know, so the \
                     drain cannot tell when it is whole again",
                    workload.kind
                ),
            });
            continue;
        }
        match Workload::find(
            workload,
            view.deployments,
            view.stateful_sets,
            view.replica_sets,
        ) {
            Some(spec) => gates.push(Gate {
                workload: workload.clone(),
                available_before: gate::available_before(
                    workload,
                    spec,
                    view.pods,
                    view.replica_sets,
                    view.node,
                    view.now,
                ),
            }),
            None => ungated.push(Ungated {
                workload: workload.clone(),
                reason: "the workload is deleted (or being deleted), so nothing replaces its pods"
                    .into(),
            }),
        }
    }
    (gates, ungated)
}

/// What to do with a pod that is not yet going, and why a surge it needs cannot work.
fn action_for(
    facts: &PodFacts,
    covering: &[&PodDisruptionBudget],
    view: ClusterView<'_>,
    options: DrainOptions,
) -> (Action, Option<String>) {
    if matches!(facts.kind, PodKind::DaemonSet | PodKind::Mirror) {
        return (Action::Skip, None);
    }
    let Some(workload) = facts.workload.as_ref().filter(|w| w.kind == "Deployment") else {
        return (Action::Evict, None);
    };
    if view.surged.contains(workload) {
        // Restarted by an earlier run: its rollout replaces this pod; restarting again
        // would roll every replica a second time.
        return (Action::Wait, None);
    }
    let Some(deployment) = view.deployments.iter().find(|d| {
        d.metadata.name.as_deref() == Some(workload.name.as_str())
            && d.metadata.namespace.as_deref() == Some(workload.namespace.as_str())
    }) else {
        return (Action::Evict, None);
    };
    let opted_in = !options.never_surge
        && (options.surge_all
            || deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STRATEGY_ANNOTATION))
                .is_some_and(|v| v == "surge"));
    let spec = deployment.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let cannot_lose_one = replicas <= 1
        || covering
            .iter()
            .any(|b| pdb::never_allows(b).is_some() || pdb::allowed_now(b) == 0);
    if !(opted_in && cannot_lose_one) {
        return (Action::Evict, None);
    }
    (
        Action::Surge,
        spec.and_then(|s| surge_cannot_work(s, replicas)),
    )
}

/// Why a rolling restart of this Deployment would not bring a new pod up before an old one
/// goes, with the fix; `None` when it would. The Deployment controller rounds a percentage
/// maxSurge up (`deployment/util.ResolveFenceposts`); the default is 25%.
fn surge_cannot_work(
    spec: &k8s_openapi::api::apps::v1::DeploymentSpec,
    replicas: i32,
) -> Option<String> {
    if spec.paused == Some(true) {
        return Some(
            "its Deployment is paused, so a restart would not roll out; resume it \
             (`kubectl rollout resume`) or drain without --surge"
                .into(),
        );
    }
    let strategy = spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Some(
            "its Deployment uses strategy Recreate, which stops every old pod before starting \
             a new one, so a surge would take it down; use RollingUpdate with maxSurge >= 1"
                .into(),
        );
    }
    let max_surge = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone())
        .unwrap_or(IntOrString::String("25%".into()));
    let surge = match &max_surge {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
            .map_or(0, |p| ((p * i64::from(replicas) + 99) / 100) as i32),
    };
    (surge < 1).then(|| {
        "its Deployment has maxSurge 0, so a restart stops a pod before its replacement is up; \
         set maxSurge >= 1"
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pdb, pod, replica_set};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn deployment(name: &str, replicas: i32, surge: bool) -> Deployment {
        let annotations = if surge {
            serde_json::json!({STRATEGY_ANNOTATION: "surge"})
        } else {
            serde_json::json!({})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {}}
        }))
        .unwrap()
    }

    struct World {
        nodes: Vec<Node>,
        pods: Vec<Pod>,
        pdbs: Vec<PodDisruptionBudget>,
        rs: Vec<ReplicaSet>,
        deployments: Vec<Deployment>,
        surged: Vec<WorkloadRef>,
    }

    impl World {
        fn new() -> Self {
            World {
                nodes: vec![node("node-1", "4", "8Gi"), node("node-2", "4", "8Gi")],
                pods: vec![],
                pdbs: vec![],
                rs: vec![],
                deployments: vec![],
                surged: vec![],
            }
        }
        fn web(mut self, replicas: i32, surge: bool) -> Self {
            self.pods.push(pod(
                "web-1",
                Some(("ReplicaSet", "web-abc")),
                &[("app", "web")],
            ));
            self.rs.push(replica_set("web-abc", "web"));
            self.deployments.push(deployment("web", replicas, surge));
            self
        }
        fn plan(&self, options: DrainOptions) -> DrainPlan {
            let usage = Usage::of(&self.pods);
            plan(
                ClusterView {
                    node: "node-1",
                    nodes: &self.nodes,
                    pods: &self.pods,
                    usage: &usage,
                    pdbs: &self.pdbs,
                    replica_sets: &self.rs,
                    deployments: &self.deployments,
                    stateful_sets: &[],
                    surged: &self.surged,
                    now: now(),
                },
                options,
            )
        }
    }

    #[test]
    fn ordinary_workload_proceeds_and_daemonsets_are_skipped() {
        let mut w = World::new().web(2, false);
        w.pods.push(pod("agent", Some(("DaemonSet", "agent")), &[]));
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Proceed, "{:?}", plan.blockers);
        let actions: Vec<_> = plan
            .pods
            .iter()
            .map(|p| (p.facts.name.as_str(), p.action))
            .collect();
        assert_eq!(actions, [("web-1", Action::Evict), ("agent", Action::Skip)]);
    }

    #[test]
    fn max_unavailable_zero_is_impossible_and_named() {
        let mut w = World::new().web(2, false);
        w.pdbs.push(pdb(
            "web-pdb",
            &[("app", "web")],
            None,
            Some(IntOrString::Int(0)),
            2,
            0,
        ));
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Impossible);
        assert_eq!(plan.blockers[0].pdb.as_deref(), Some("default/web-pdb"));
        assert!(
            plan.blockers[0].to_string().contains("maxUnavailable is 0"),
            "{}",
            plan.blockers[0]
        );
    }

    #[test]
    fn surge_turns_a_blocking_budget_into_a_rolling_restart() {
        let mut w = World::new().web(1, true);
        w.pdbs.push(pdb(
            "web-pdb",
            &[("app", "web")],
            Some(IntOrString::Int(1)),
            None,
            1,
            0,
        ));
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Proceed, "{:?}", plan.blockers);
        assert_eq!(plan.surges()[0].to_string(), "Deployment/default/web");
        let no_annotation = World::new().web(1, false);
        assert!(
            no_annotation
                .plan(DrainOptions::default())
                .surges()
                .is_empty()
        );
        assert_eq!(
            no_annotation
                .plan(DrainOptions {
                    surge_all: true,
                    ..Default::default()
                })
                .surges()
                .len(),
            1
        );
        // Never surge: not even an annotated Deployment, nor with --surge.
        for options in [
            DrainOptions {
                never_surge: true,
                ..Default::default()
            },
            DrainOptions {
                never_surge: true,
                surge_all: true,
                ..Default::default()
            },
        ] {
            assert!(w.plan(options).surges().is_empty(), "{options:?}");
        }
    }

    #[test]
    fn two_budgets_and_budgets_at_zero_allowed() {
        let mut w = World::new().web(3, false);
        w.pdbs.push(pdb(
            "a",
            &[("app", "web")],
            Some(IntOrString::Int(1)),
            None,
            3,
            2,
        ));
        w.pdbs
            .push(pdb("b", &[], Some(IntOrString::Int(1)), None, 3, 2));
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Impossible);
        assert!(plan.blockers[0].reason.contains("2 PodDisruptionBudgets"));

        w.pdbs = vec![pdb(
            "a",
            &[("app", "web")],
            Some(IntOrString::Int(2)),
            None,
            3,
            0,
        )];
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Wait, "{:?}", plan.blockers);
    }

    #[test]
    fn unmanaged_and_empty_dir_need_flags() {
        let mut w = World::new();
        let mut lonely = pod("lonely", None, &[]);
        lonely.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "tmp", "emptyDir": {}})).unwrap(),
        ]);
        w.pods.push(lonely);
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Impossible);
        assert_eq!(plan.blockers.len(), 2);
        let forced = w.plan(DrainOptions {
            force: true,
            delete_emptydir_data: true,
            ..Default::default()
        });
        assert_eq!(forced.verdict, Verdict::Proceed);
    }

    #[test]
    fn capacity_shortage_and_critical_tier() {
        let mut w = World::new().web(2, false);
        w.nodes[1] = node("node-2", "100m", "8Gi");
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Impossible);
        assert!(plan.blockers[0].reason.contains("room"));

        let mut w = World::new().web(2, false);
        let mut dns = pod("dns", Some(("ReplicaSet", "dns-1")), &[]);
        dns.spec.as_mut().unwrap().priority_class_name = Some("system-cluster-critical".into());
        w.pods.insert(0, dns);
        let plan = w.plan(DrainOptions::default());
        let order: Vec<_> = plan
            .pods
            .iter()
            .map(|p| (p.facts.name.as_str(), p.tier))
            .collect();
        assert_eq!(order, [("web-1", 0), ("dns", 1)]);
    }

    #[test]
    fn a_terminating_pod_is_waited_for_and_gated_and_a_stuck_one_is_named() {
        let mut w = World::new().web(1, false);
        w.pods[0].metadata.deletion_timestamp = Some(Time("2026-01-01T00:59:50Z".parse().unwrap()));
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Proceed, "{:?}", plan.blockers);
        assert_eq!(plan.pods[0].action, Action::Wait);
        assert!(plan.has_work());
        assert_eq!(
            plan.gates,
            [Gate {
                workload: WorkloadRef {
                    kind: "Deployment".into(),
                    namespace: "default".into(),
                    name: "web".into()
                },
                available_before: 1
            }]
        );

        w.pods[0].metadata.deletion_timestamp = Some(Time("2026-01-01T00:55:00Z".parse().unwrap()));
        w.pods[0].metadata.finalizers = Some(vec!["example.com/hold".into()]);
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Impossible);
        assert_eq!(plan.blockers[0].pod.as_deref(), Some("default/web-1"));
        assert!(
            plan.blockers[0].reason.contains("stuck terminating")
                && plan.blockers[0].reason.contains("example.com/hold"),
            "{}",
            plan.blockers[0]
        );
    }

    #[test]
    fn pods_of_unknown_controllers_are_reported_as_ungated() {
        let mut w = World::new();
        w.pods
            .push(pod("runner-0", Some(("Rollout", "runner")), &[]));
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Proceed);
        assert!(plan.gates.is_empty());
        assert_eq!(plan.ungated[0].workload.kind, "Rollout");
        assert!(plan.ungated[0].reason.contains("does not know"));
    }

    fn with_strategy(mut w: World, strategy: serde_json::Value, paused: bool) -> World {
        let spec = w.deployments[0].spec.as_mut().unwrap();
        spec.strategy = Some(serde_json::from_value(strategy).unwrap());
        spec.paused = Some(paused);
        w
    }

    #[test]
    fn surge_blocks_when_the_strategy_cannot_bring_a_pod_up_first() {
        let recreate = with_strategy(
            World::new().web(1, true),
            serde_json::json!({"type": "Recreate"}),
            false,
        );
        let zero = with_strategy(
            World::new().web(1, true),
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            false,
        );
        let paused = with_strategy(World::new().web(1, true), serde_json::json!({}), true);
        for (w, why) in [
            (recreate, "Recreate"),
            (zero, "maxSurge 0"),
            (paused, "paused"),
        ] {
            let plan = w.plan(DrainOptions::default());
            assert_eq!(plan.verdict, Verdict::Impossible, "{why}");
            assert!(
                plan.blockers[0].reason.contains(why),
                "{}",
                plan.blockers[0]
            );
        }
        let fine = with_strategy(
            World::new().web(1, true),
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "10%"}}),
            false,
        );
        let plan = fine.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Proceed, "{:?}", plan.blockers);
        assert!(
            plan.notes[0].contains("every one of its replicas"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn an_already_surged_deployment_is_not_restarted_again() {
        let mut w = World::new().web(1, true);
        w.surged.push(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: "web".into(),
        });
        let plan = w.plan(DrainOptions::default());
        assert!(plan.surges().is_empty());
        assert_eq!(plan.pods[0].action, Action::Wait);
    }

    #[test]
    fn a_pending_pod_under_min_available_one_is_not_impossible() {
        let mut w = World::new().web(1, false);
        // ImagePullBackOff: Pending, not Ready; the budget has its one pod expected, none healthy.
        w.pods[0].status.as_mut().unwrap().phase = Some("Pending".into());
        w.pods[0].status.as_mut().unwrap().conditions = None;
        let mut budget = pdb(
            "web-pdb",
            &[("app", "web")],
            Some(IntOrString::Int(1)),
            None,
            1,
            0,
        );
        budget.status.as_mut().unwrap().current_healthy = 0;
        w.pdbs.push(budget);
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Proceed, "{:?}", plan.blockers);
        // Running but unready: only AlwaysAllow lets it go.
        w.pods[0].status.as_mut().unwrap().phase = Some("Running".into());
        assert_eq!(w.plan(DrainOptions::default()).verdict, Verdict::Impossible);
        w.pdbs[0]
            .spec
            .as_mut()
            .unwrap()
            .unhealthy_pod_eviction_policy = Some("AlwaysAllow".into());
        assert_eq!(w.plan(DrainOptions::default()).verdict, Verdict::Proceed);
    }

    #[test]
    fn do_not_disrupt_with_a_duration_expires() {
        let mut w = World::new().web(2, false);
        w.pods[0].metadata.annotations =
            Some([("karpenter.sh/do-not-disrupt".to_string(), "30m".to_string())].into());
        w.pods[0].status.as_mut().unwrap().start_time =
            Some(Time("2026-01-01T00:50:00Z".parse().unwrap()));
        assert_eq!(w.plan(DrainOptions::default()).verdict, Verdict::Impossible);
        w.pods[0].status.as_mut().unwrap().start_time =
            Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(w.plan(DrainOptions::default()).verdict, Verdict::Proceed);
    }

    #[test]
    fn room_taken_by_other_drains_is_a_wait() {
        let mut w = World::new().web(2, false);
        w.nodes[1] = node("node-2", "100m", "8Gi");
        let mut draining = node("node-3", "4", "8Gi");
        draining.spec =
            Some(serde_json::from_value(serde_json::json!({"unschedulable": true})).unwrap());
        w.nodes.push(draining);
        let plan = w.plan(DrainOptions::default());
        assert_eq!(plan.verdict, Verdict::Wait, "{:?}", plan.blockers);
        assert!(plan.blockers[0].reason.contains("other nodes are cordoned"));
    }
}
