//! Pre-flight over the whole group, before anything changes: every reason the roll would go
//! wrong, all at once, each with its fix. `--dry-run` stops after it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use quiesce_core::{DrainOptions, Verdict};
use quiesce_kube::cluster::Snapshot;
use serde::Serialize;

use crate::aws::{GroupFacts, LAUNCHING, TERMINATING};
use crate::batch;
use crate::refresh::Preferences;

/// The EKS managed node group tag: EKS runs its own hooks and drain on such a group.
pub const EKS_NODEGROUP_TAG: &str = "eks:nodegroup-name";

/// One reason not to roll; [`Refusal::fix`] says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Auto Scaling has no such group.
    #[error("Auto Scaling group {0} does not exist")]
    NoGroup(String),
    /// An EKS managed node group.
    #[error(
        "group {group} belongs to the EKS managed node group {nodegroup} (tag {EKS_NODEGROUP_TAG}); EKS drains it with its own hooks"
    )]
    EksManaged {
        /// The group.
        group: String,
        /// The node group.
        nodegroup: String,
    },
    /// No terminate hook: instances would go without a drain.
    #[error(
        "group {0} has no terminate lifecycle hook: instances would be terminated without a drain"
    )]
    NoTerminateHook(String),
    /// A terminate hook that lets the instance go when nobody answers.
    #[error(
        "terminate hook {hook} has DefaultResult {result}: a drainer that does not answer in time lets the instance go with its pods"
    )]
    TerminateDefault {
        /// The hook.
        hook: String,
        /// Its DefaultResult.
        result: String,
    },
    /// No launch hook: a new instance counts as healthy before it is a Ready node.
    #[error(
        "group {0} has no launch lifecycle hook: the refresh counts a new instance healthy before its node is Ready"
    )]
    NoLaunchHook(String),
    /// Without `TerminateHookAbandon: retain` an ABANDONed instance is terminated anyway.
    #[error(
        "group {group}'s instance lifecycle policy has TerminateHookAbandon {found}: an instance the drainer ABANDONs is terminated anyway"
    )]
    NotRetained {
        /// The group.
        group: String,
        /// What it has (`terminate`, or `unset`).
        found: String,
    },
    /// Nobody would answer the hooks.
    #[error("no live drainer: {0}")]
    NoDrainer(String),
    /// A node whose drain cannot finish.
    #[error("node {node} (instance {instance}) cannot be drained: {blockers}")]
    Undrainable {
        /// The node.
        node: String,
        /// Its instance.
        instance: String,
        /// The planner's blockers.
        blockers: String,
    },
    /// The batch overruns a budget.
    #[error(
        "a batch of {batch} nodes holds {in_batch} pods of PodDisruptionBudget {pdb}, which lets {allowed} go at once: the batch's drains would wait on each other"
    )]
    Budget {
        /// The budget.
        pdb: String,
        /// The batch size.
        batch: usize,
        /// Its pods in the worst batch.
        in_batch: usize,
        /// What it allows at once.
        allowed: usize,
        /// The --min-healthy that keeps the batch within it.
        min_healthy: u8,
    },
    /// The batch's pods do not fit on the nodes that stay.
    #[error("while a batch of {batch} nodes is out, the other nodes have no room for {pods}")]
    NoRoom {
        /// The batch size.
        batch: usize,
        /// The pods, with why.
        pods: String,
    },
    /// Rollback was asked for and cannot work.
    #[error("rollback cannot work: {0}")]
    Irreversible(String),
}

impl Refusal {
    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            Refusal::NoGroup(_) => "check --asg and --region".into(),
            Refusal::EksManaged { nodegroup, .. } => format!(
                "roll it with EKS (aws eks update-nodegroup-version --nodegroup-name {nodegroup}), or move the nodes to a self-managed group"
            ),
            Refusal::NoTerminateHook(_) => "add one (deploy/cloudformation/node-group-hooks.yaml) with DefaultResult ABANDON and the drainer's queue as target".into(),
            Refusal::TerminateDefault { hook, .. } => format!(
                "aws autoscaling put-lifecycle-hook --lifecycle-hook-name {hook} --default-result ABANDON …"
            ),
            Refusal::NoLaunchHook(_) => "add a launch hook (deploy/cloudformation/node-group-hooks.yaml) the drainer completes once the node is Ready".into(),
            Refusal::NotRetained { group, .. } => format!(
                "aws autoscaling update-auto-scaling-group --auto-scaling-group-name {group} --instance-lifecycle-policy 'RetentionTriggers={{TerminateHookAbandon=retain}}'"
            ),
            Refusal::NoDrainer(_) => "deploy the drainer (deploy/helm/quiesce) and check its pods, or name its Lease with --drainer-lease NAMESPACE/NAME; for the Lambda mode (--drainer-lease lambda), enable the function's event source mapping on the terminate hook's queue".into(),
            Refusal::Undrainable { node, .. } => format!(
                "fix what blocks it (quiesce drain {node} --dry-run explains each blocker), or roll with --undrainable skip to keep it"
            ),
            Refusal::Budget { min_healthy, pdb, .. } => format!(
                "roll with --min-healthy {min_healthy} (smaller batches), or let PodDisruptionBudget {pdb} allow more"
            ),
            Refusal::NoRoom { .. } => "roll with a higher --min-healthy, add capacity first, or launch before terminating with --max-healthy above 100".into(),
            Refusal::Irreversible(_) => "give an explicit --launch-template-version (not $Latest or $Default), or choose --on-breach hold|cancel".into(),
        }
    }
}

impl Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Refusal", 2)?;
        st.serialize_field("reason", &self.to_string())?;
        st.serialize_field("fix", &self.fix())?;
        st.end()
    }
}

/// One node of the group and its drain plan's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    /// The instance.
    pub instance: String,
    /// Its node (`None`: no node of this cluster).
    pub node: Option<String>,
    /// `proceed`, `wait` or `impossible`.
    pub verdict: Option<Verdict>,
    /// Pods the drain moves.
    pub pods: usize,
    /// Blockers, in words.
    pub blockers: Vec<String>,
}

/// What pre-flight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preflight {
    /// The group's size (instances in service).
    pub size: usize,
    /// Instances out at once.
    pub batch: usize,
    /// Every instance's plan.
    pub nodes: Vec<NodePlan>,
    /// Every reason not to roll (empty: go).
    pub refusals: Vec<Refusal>,
    /// What a reader should know that is no refusal.
    pub notes: Vec<String>,
}

/// Whether the drainer answers hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainerLiveness {
    /// Seen alive, with how.
    Live(String),
    /// Not alive, with why.
    Dead(String),
    /// Not checked (`--drainer-lease none`), with why.
    Unchecked(String),
}

/// What the roll wants, for the checks that depend on it.
#[derive(Debug, Clone)]
pub struct Intent<'a> {
    /// Preferences (batch size).
    pub preferences: &'a Preferences,
    /// The launch template version rolled to, if known.
    pub version: Option<&'a str>,
    /// Whether a rollback may be asked for (`--on-breach rollback`, `--auto-rollback`).
    pub rollback: bool,
    /// Keep undrainable nodes (`--undrainable skip`) instead of refusing.
    pub skip_undrainable: bool,
    /// The drain's switches, as the drainer has them.
    pub drain: DrainOptions,
}

/// The Lease's renewal is trusted as proof of life for this many lease durations (the API
/// server's clock and ours may differ by a little).
const LEASE_SLACK: u32 = 3;

/// Reads the drainer's Lease: alive when a holder renewed it within a few lease durations.
pub async fn lease_liveness(
    client: kube::Client,
    namespace: &str,
    name: &str,
    limit: Duration,
) -> DrainerLiveness {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let lease = match tokio::time::timeout(limit, api.get_opt(name)).await {
        Err(_) => {
            return DrainerLiveness::Dead(format!(
                "reading Lease {namespace}/{name}: no answer within {limit:?}"
            ));
        }
        Ok(Err(e)) => {
            return DrainerLiveness::Dead(format!("reading Lease {namespace}/{name}: {e}"));
        }
        Ok(Ok(None)) => {
            return DrainerLiveness::Dead(format!(
                "Lease {namespace}/{name} does not exist (the drainer Deployment creates it)"
            ));
        }
        Ok(Ok(Some(lease))) => lease,
    };
    lease_verdict(&lease, Timestamp::now(), &format!("{namespace}/{name}"))
}

fn lease_verdict(lease: &Lease, now: Timestamp, name: &str) -> DrainerLiveness {
    let spec = lease.spec.clone().unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return DrainerLiveness::Dead(format!("Lease {name} has no holder"));
    };
    let Some(renewed) = spec.renew_time.map(|t| t.0) else {
        return DrainerLiveness::Dead(format!("Lease {name} was never renewed"));
    };
    let duration = spec.lease_duration_seconds.unwrap_or(15).max(1) as i64;
    let age = now.duration_since(renewed).as_secs();
    if age > duration * i64::from(LEASE_SLACK) {
        DrainerLiveness::Dead(format!(
            "Lease {name} held by {holder} was last renewed {age}s ago (lease duration {duration}s)"
        ))
    } else {
        DrainerLiveness::Live(format!("{holder} renewed Lease {name} {age}s ago"))
    }
}

/// The group's hooks and policy, judged.
fn group_checks(group: &GroupFacts, intent: &Intent<'_>, out: &mut Vec<Refusal>) {
    if let Some(nodegroup) = group.tags.get(EKS_NODEGROUP_TAG) {
        out.push(Refusal::EksManaged {
            group: group.name.clone(),
            nodegroup: nodegroup.clone(),
        });
    }
    let terminate: Vec<_> = group
        .hooks
        .iter()
        .filter(|h| h.transition == TERMINATING)
        .collect();
    if terminate.is_empty() {
        out.push(Refusal::NoTerminateHook(group.name.clone()));
    }
    for hook in terminate.iter().filter(|h| h.default_result != "ABANDON") {
        out.push(Refusal::TerminateDefault {
            hook: hook.name.clone(),
            result: hook.default_result.clone(),
        });
    }
    if !group.hooks.iter().any(|h| h.transition == LAUNCHING) {
        out.push(Refusal::NoLaunchHook(group.name.clone()));
    }
    if group.terminate_hook_abandon.as_deref() != Some("retain") {
        out.push(Refusal::NotRetained {
            group: group.name.clone(),
            found: group
                .terminate_hook_abandon
                .clone()
                .unwrap_or_else(|| "unset".into()),
        });
    }
    if intent.rollback {
        // RollbackInstanceRefresh needs a refresh whose desired configuration is a launch
        // template with a specific version, and a previous one to go back to (API Reference,
        // RollbackInstanceRefresh: IrreversibleInstanceRefresh).
        if group.launch_configuration.is_some() || group.launch_template_id.is_none() {
            out.push(Refusal::Irreversible(format!(
                "group {} launches from a launch configuration, not a launch template",
                group.name
            )));
        }
        for (what, version) in [
            ("the desired", intent.version),
            (
                "the group's current",
                group.launch_template_version.as_deref(),
            ),
        ] {
            if let Some(v @ ("$Latest" | "$Default")) = version {
                out.push(Refusal::Irreversible(format!(
                    "{what} launch template version is {v}, which a rollback cannot return to"
                )));
            }
        }
    }
}

/// Judges the group, its nodes and the drainer.
pub fn check(
    group: Option<&GroupFacts>,
    name: &str,
    snapshot: &Snapshot,
    drainer: &DrainerLiveness,
    intent: &Intent<'_>,
) -> Preflight {
    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    let Some(group) = group else {
        refusals.push(Refusal::NoGroup(name.to_string()));
        return Preflight {
            size: 0,
            batch: 0,
            nodes: Vec::new(),
            refusals,
            notes,
        };
    };
    group_checks(group, intent, &mut refusals);
    match drainer {
        DrainerLiveness::Live(_) => {}
        DrainerLiveness::Dead(why) => refusals.push(Refusal::NoDrainer(why.clone())),
        DrainerLiveness::Unchecked(why) => notes.push(why.clone()),
    }
    let in_service: Vec<_> = group
        .instances
        .iter()
        .filter(|i| i.state == "InService")
        .collect();
    let size = in_service.len();
    let batch_size = intent.preferences.batch(size);
    let now = Timestamp::now();
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for instance in &in_service {
        let node = snapshot
            .nodes
            .iter()
            .find(|n| crate::instance_of(n) == Some(instance.id.as_str()));
        let Some(node) = node.and_then(|n| n.metadata.name.clone()) else {
            notes.push(format!(
                "instance {} is no node of this cluster: its hook is the drainer's --unknown-instance policy's",
                instance.id
            ));
            nodes.push(NodePlan {
                instance: instance.id.clone(),
                node: None,
                verdict: None,
                pods: 0,
                blockers: Vec::new(),
            });
            continue;
        };
        let plan = quiesce_core::plan(snapshot.view(&node, &[], now), intent.drain);
        let blockers: Vec<String> = plan.blockers.iter().map(|b| b.to_string()).collect();
        if plan.verdict == Verdict::Impossible && !intent.skip_undrainable {
            refusals.push(Refusal::Undrainable {
                node: node.clone(),
                instance: instance.id.clone(),
                blockers: blockers.join("; "),
            });
        }
        nodes.push(NodePlan {
            instance: instance.id.clone(),
            node: Some(node.clone()),
            verdict: Some(plan.verdict),
            pods: plan
                .pods
                .iter()
                .filter(|p| p.action != quiesce_core::Action::Skip)
                .count(),
            blockers,
        });
        names.push(node);
    }
    for over in batch::budgets(snapshot, &names, batch_size) {
        refusals.push(Refusal::Budget {
            min_healthy: batch::min_healthy_for(size, over.largest_batch),
            pdb: over.pdb,
            batch: batch_size,
            in_batch: over.in_batch,
            allowed: over.allowed,
        });
    }
    if intent.preferences.max_healthy.is_some_and(|m| m > 100) {
        notes.push(
            "--max-healthy above 100 launches replacements first: room is not checked".into(),
        );
    } else {
        let short = batch::room(snapshot, &names, batch_size);
        if !short.is_empty() {
            refusals.push(Refusal::NoRoom {
                batch: batch_size,
                pods: short
                    .iter()
                    .map(|s| format!("{} ({})", s.pod, s.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    Preflight {
        size,
        batch: batch_size,
        nodes,
        refusals,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::HookFacts;

    fn hook(name: &str, transition: &str, result: &str) -> HookFacts {
        HookFacts {
            name: name.into(),
            transition: transition.into(),
            default_result: result.into(),
            target: None,
        }
    }

    fn intent(p: &Preferences, rollback: bool) -> Intent<'_> {
        Intent {
            preferences: p,
            version: Some("$Latest"),
            rollback,
            skip_undrainable: false,
            drain: DrainOptions::default(),
        }
    }

    #[test]
    fn every_group_reason_at_once_each_with_a_fix() {
        let group = GroupFacts {
            name: "workers".into(),
            tags: [(EKS_NODEGROUP_TAG.to_string(), "ng-1".to_string())].into(),
            hooks: vec![hook("drain", TERMINATING, "CONTINUE")],
            terminate_hook_abandon: None,
            launch_template_id: Some("lt-1".into()),
            launch_template_version: Some("3".into()),
            ..GroupFacts::default()
        };
        let p = Preferences::default();
        let pre = check(
            Some(&group),
            "workers",
            &Snapshot::default(),
            &DrainerLiveness::Dead("Lease q/d does not exist".into()),
            &intent(&p, true),
        );
        let kinds: Vec<String> = pre.refusals.iter().map(|r| r.to_string()).collect();
        assert_eq!(pre.refusals.len(), 6, "{kinds:#?}");
        assert!(matches!(pre.refusals[0], Refusal::EksManaged { .. }));
        assert!(matches!(pre.refusals[1], Refusal::TerminateDefault { .. }));
        assert!(matches!(pre.refusals[2], Refusal::NoLaunchHook(_)));
        assert!(matches!(pre.refusals[3], Refusal::NotRetained { .. }));
        assert!(matches!(pre.refusals[4], Refusal::Irreversible(_)));
        assert!(matches!(pre.refusals[5], Refusal::NoDrainer(_)));
        for r in &pre.refusals {
            assert!(!r.fix().is_empty());
        }
        let json = serde_json::to_value(&pre.refusals[1]).unwrap();
        assert!(
            json["fix"]
                .as_str()
                .unwrap()
                .contains("--default-result ABANDON"),
            "{json}"
        );
    }

    #[test]
    fn a_lease_renewed_long_ago_is_no_drainer() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 15, "renewTime": "2026-12-01T20:00:00.000000Z"}
        }))
        .unwrap();
        let at = |t: &str| lease_verdict(&lease, t.parse().unwrap(), "q/d");
        assert!(matches!(
            at("2026-12-01T20:00:10Z"),
            DrainerLiveness::Live(_)
        ));
        assert!(
            matches!(at("2026-12-01T20:05:00Z"), DrainerLiveness::Dead(w) if w.contains("300s ago"))
        );
    }
}

/// How pre-flight finds out whether a drainer answers the group's hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainerCheck {
    /// The in-cluster Deployment: its leader-election Lease `namespace/name`.
    Lease {
        /// The Lease's namespace (the Helm release's).
        namespace: String,
        /// The Lease (`drainer.leaseName`, default `quiesce-drainer`).
        name: String,
    },
    /// The Lambda mode: an enabled event source mapping on the terminate hook's queue.
    Lambda,
    /// Not checked, at the operator's word.
    Skip,
}

impl std::str::FromStr for DrainerCheck {
    type Err = String;

    fn from_str(s: &str) -> Result<DrainerCheck, String> {
        match s {
            "none" => return Ok(DrainerCheck::Skip),
            "lambda" => return Ok(DrainerCheck::Lambda),
            _ => {}
        }
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(DrainerCheck::Lease {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!(
                "--drainer-lease {s:?}: expected NAMESPACE/NAME (the drainer's Lease), lambda (the Lambda mode's event source mapping) or none"
            )),
        }
    }
}

/// Why pre-flight could not even look.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// Auto Scaling could not be read.
    #[error(transparent)]
    Refresh(#[from] crate::refresh::RefreshError),
    /// The cluster could not be read.
    #[error("reading the cluster: {0}")]
    Kube(#[from] quiesce_kube::Error),
}

/// Reads the group, the cluster and the drainer, and judges them.
pub async fn gather(
    aws: &crate::aws::AwsRefresh,
    client: kube::Client,
    group: &str,
    drainer: &DrainerCheck,
    intent: &Intent<'_>,
) -> Result<(Option<GroupFacts>, Preflight), GatherError> {
    let facts = aws.group(group).await?;
    let snapshot = quiesce_kube::reads::whole_cluster(&client).await?;
    let liveness = match drainer {
        DrainerCheck::Lease { namespace, name } => {
            lease_liveness(client, namespace, name, crate::gate::CALL_TIMEOUT).await
        }
        DrainerCheck::Lambda => match facts.as_ref().map(crate::mapping::terminate_queue) {
            // No group: `check` refuses that already, with its own reason.
            None => DrainerLiveness::Unchecked("no group, so no queue to look at".into()),
            Some(None) => DrainerLiveness::Dead(
                "the terminate hook names no SQS queue for a Lambda drainer to read".into(),
            ),
            Some(Some(queue)) => {
                crate::mapping::mapping_liveness(aws.lambda(), queue, crate::gate::CALL_TIMEOUT)
                    .await
            }
        },
        DrainerCheck::Skip => DrainerLiveness::Unchecked(
            "the drainer was not checked (--drainer-lease none): make sure one answers the hooks"
                .into(),
        ),
    };
    let pre = check(facts.as_ref(), group, &snapshot, &liveness, intent);
    Ok((facts, pre))
}
