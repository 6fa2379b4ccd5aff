//! The drain report: what the CLI prints and `--output json` serialises.

use quiesce_core::{Action, Blocker, DrainPlan, Verdict};
use serde::Serialize;

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every pod gone, every replacement Ready elsewhere, volumes detached.
    Drained,
    /// Only planned (`--dry-run`); nothing was changed.
    Planned,
    /// The plan found a blocker that cannot clear; nothing was changed.
    Blocked,
    /// Started but did not finish (deadline or API error); see `error` and `blockers`.
    Failed,
}

/// One finished phase and how long after the start it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// `cordoned`, `surged`, `evictions-accepted`, `pods-gone`, `replacements-ready`,
    /// `volumes-detached`.
    pub name: &'static str,
    /// Seconds since the drain started.
    pub seconds: f64,
}

/// Where one pod got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Not started yet (or skipped).
    Pending,
    /// Eviction being requested (possibly retried).
    Evicting,
    /// Eviction accepted; the pod runs its shutdown.
    Terminating,
    /// The pod object is gone.
    Gone,
    /// Its workload has all replicas Ready elsewhere.
    Replaced,
    /// Left on the node by design (DaemonSet, mirror).
    Skipped,
}

/// One pod in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodReport {
    /// `namespace/name`.
    pub pod: String,
    /// What the plan said to do.
    pub action: Action,
    /// Where it got to.
    pub stage: Stage,
    /// Eviction requests refused with 429/500 before one was accepted.
    pub refusals: u32,
}

/// The final report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainReport {
    /// The node.
    pub node: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The plan's verdict.
    pub verdict: Verdict,
    /// Phases reached, in order.
    pub phases: Vec<Phase>,
    /// Every pod that was on the node.
    pub pods: Vec<PodReport>,
    /// What stood in the way (from the plan, and from the run).
    pub blockers: Vec<Blocker>,
    /// Whether the node was uncordoned after a failure.
    pub uncordoned: bool,
    /// The error that ended a failed drain.
    pub error: Option<String>,
}

impl DrainReport {
    /// A report for a plan that is not (or not yet) carried out.
    pub fn from_plan(plan: &DrainPlan, outcome: Outcome) -> Self {
        DrainReport {
            node: plan.node.clone(),
            outcome,
            verdict: plan.verdict,
            phases: Vec::new(),
            pods: plan
                .pods
                .iter()
                .map(|p| PodReport {
                    pod: p.facts.key(),
                    action: p.action,
                    stage: if p.action == Action::Skip {
                        Stage::Skipped
                    } else {
                        Stage::Pending
                    },
                    refusals: 0,
                })
                .collect(),
            blockers: plan.blockers.clone(),
            uncordoned: false,
            error: None,
        }
    }

    /// Seconds at which `phase` ended, if it did.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.seconds)
    }
}
