//! The drain plan: what to evict in which order, what stands in the way, and whether to start.
//!
//! Order follows Karpenter's termination tiers (`terminator.go`): ordinary pods first, then
//! system-critical ones, so that the DNS or CNI pods the others need while shutting down go
//! last; DaemonSet and mirror pods are never evicted (kubectl skips them too). Safety defaults
//! follow `kubectl drain`: unmanaged pods need `force`, emptyDir pods `delete_emptydir_data`.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;

use crate::capacity;
use crate::classify::{PodFacts, PodKind, classify};
use crate::pdb;

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
}

/// What the cluster looks like, as read by the executor just before planning.
#[derive(Debug, Clone, Copy)]
pub struct ClusterView<'a> {
    /// The node to drain.
    pub node: &'a str,
    /// Every node, including the draining one.
    pub nodes: &'a [Node],
    /// Every pod in the cluster (the capacity check needs what runs elsewhere).
    pub pods: &'a [Pod],
    /// Every PodDisruptionBudget.
    pub pdbs: &'a [PodDisruptionBudget],
    /// ReplicaSets, to resolve pods to their Deployments.
    pub replica_sets: &'a [ReplicaSet],
    /// Deployments, for replica counts and the surge annotation.
    pub deployments: &'a [Deployment],
}

/// What the engine does with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Evict through the Eviction API (PDBs apply).
    Evict,
    /// Rolling-restart its Deployment first; the Deployment replaces the pod itself.
    Surge,
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
}

impl DrainPlan {
    /// The Deployments to rolling-restart before evicting anything, without repeats.
    pub fn surges(&self) -> Vec<crate::WorkloadRef> {
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
}

/// Plans the drain of `view.node`.
pub fn plan(view: ClusterView<'_>, options: DrainOptions) -> DrainPlan {
    let on_node: Vec<&Pod> = view
        .pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(view.node))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut blockers = Vec::new();
    let mut pods = Vec::new();
    let mut replaced = Vec::new();
    for pod in on_node {
        let facts = classify(pod, view.replica_sets);
        let covering = pdb::covering(pod, view.pdbs);
        let action = action_for(&facts, &covering, view, options);
        let key = facts.key();
        let block = |severity, pdb: Option<String>, reason: String| Blocker {
            pod: Some(key.clone()),
            pdb,
            severity,
            reason,
        };
        if action != Action::Skip {
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
            if facts.do_not_disrupt && !options.force {
                blockers.push(block(
                    Severity::Impossible,
                    None,
                    "annotated do-not-disrupt (remove the annotation or use --force)".into(),
                ));
            }
        }
        if action == Action::Evict && facts.kind != PodKind::Finished {
            if covering.len() > 1 {
                let names: Vec<String> = covering.iter().map(|b| pdb::key(b)).collect();
                blockers.push(block(
                    Severity::Impossible,
                    Some(names.join(", ")),
                    format!("covered by {} PodDisruptionBudgets; the API server refuses to evict such a pod (500)", names.len()),
                ));
            } else if let Some(budget) = covering.first() {
                if let Some(reason) = pdb::never_allows(budget) {
                    blockers.push(block(
                        Severity::Impossible,
                        Some(pdb::key(budget)),
                        format!("{reason} (use --surge for a Deployment)"),
                    ));
                } else if pdb::allowed_now(budget) == 0 {
                    blockers.push(block(
                        Severity::Wait,
                        Some(pdb::key(budget)),
                        "allows no disruption right now; eviction waits until its pods are healthy"
                            .into(),
                    ));
                }
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
    blockers.extend(
        capacity::check(view.node, &needs_room, view.nodes, view.pods)
            .into_iter()
            .map(|s| Blocker {
                pod: Some(s.pod),
                pdb: None,
                severity: Severity::Impossible,
                reason: s.reason,
            }),
    );
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
    }
}

fn action_for(
    facts: &PodFacts,
    covering: &[&PodDisruptionBudget],
    view: ClusterView<'_>,
    options: DrainOptions,
) -> Action {
    if matches!(facts.kind, PodKind::DaemonSet | PodKind::Mirror) {
        return Action::Skip;
    }
    let Some(workload) = facts.workload.as_ref().filter(|w| w.kind == "Deployment") else {
        return Action::Evict;
    };
    let Some(deployment) = view.deployments.iter().find(|d| {
        d.metadata.name.as_deref() == Some(workload.name.as_str())
            && d.metadata.namespace.as_deref() == Some(workload.namespace.as_str())
    }) else {
        return Action::Evict;
    };
    let opted_in = options.surge_all
        || deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STRATEGY_ANNOTATION))
            .is_some_and(|v| v == "surge");
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let cannot_lose_one = replicas <= 1
        || covering
            .iter()
            .any(|b| pdb::never_allows(b).is_some() || pdb::allowed_now(b) == 0);
    if opted_in && cannot_lose_one {
        Action::Surge
    } else {
        Action::Evict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pdb, pod, replica_set};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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
    }

    impl World {
        fn new() -> Self {
            World {
                nodes: vec![node("node-1", "4", "8Gi"), node("node-2", "4", "8Gi")],
                pods: vec![],
                pdbs: vec![],
                rs: vec![],
                deployments: vec![],
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
            plan(
                ClusterView {
                    node: "node-1",
                    nodes: &self.nodes,
                    pods: &self.pods,
                    pdbs: &self.pdbs,
                    replica_sets: &self.rs,
                    deployments: &self.deployments,
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
}
