//! The drain report: what the CLI prints and `--output json` serialises.

use quiesce_core::{Action, Blocker, DrainPlan, Ungated, Verdict, WorkloadRef};
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
    /// Started but did not finish (deadline, a blocker found after the cordon, or an API
    /// error); see `error` and `blockers`.
    Failed,
}

/// The phases of a drain, in the order they end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseName {
    /// The node is unschedulable (and tainted, if asked).
    Cordoned,
    /// Surged Deployments have their replicas Available off the node.
    Surged,
    /// Every eviction of the last tier was accepted.
    EvictionsAccepted,
    /// Every pod the drain evicted or waited for is gone.
    PodsGone,
    /// Every gated workload is whole again elsewhere.
    ReplacementsReady,
    /// No volume is attached to the node any more.
    VolumesDetached,
    /// The instance is no longer a target of the load balancers that route to it (issue 17):
    /// measured by the drainer and by `quiesce drain --wait-load-balancers`, after the drain.
    TargetsDeregistered,
}

impl PhaseName {
    /// The name as the report and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Cordoned => "cordoned",
            PhaseName::Surged => "surged",
            PhaseName::EvictionsAccepted => "evictions-accepted",
            PhaseName::PodsGone => "pods-gone",
            PhaseName::ReplacementsReady => "replacements-ready",
            PhaseName::VolumesDetached => "volumes-detached",
            PhaseName::TargetsDeregistered => "targets-deregistered",
        }
    }
}

impl std::fmt::Display for PhaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished phase and how long after the start it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Which phase.
    pub name: PhaseName,
    /// Seconds since the drain started.
    pub seconds: f64,
}

/// Where one pod got to, in the order a pod goes through them (a pod never moves back: the
/// watch may see it gone before the eviction's answer arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Not started yet (or skipped).
    Pending,
    /// Eviction being requested (possibly retried).
    Evicting,
    /// Eviction accepted, or found terminating; the pod runs its shutdown.
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

/// How one workload's gate ended (or stood when the drain stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateReport {
    /// The workload.
    pub workload: WorkloadRef,
    /// The pre-drain Available count the gate held it to (recorded by the first run).
    pub available_before: i32,
    /// `pending`, `whole`, or `deleted`.
    pub state: GateEnd,
}

/// Where a gate got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateEnd {
    /// Not passed (yet).
    Pending,
    /// Whole again elsewhere.
    Whole,
    /// Deleted during the drain, which ended its gate.
    Deleted,
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
    /// The workloads the drain waited for.
    pub gates: Vec<GateReport>,
    /// Workloads whose pods left without a gate, and why.
    pub ungated: Vec<Ungated>,
    /// What the plan did that a reader might not expect.
    pub notes: Vec<String>,
    /// Whether the node was uncordoned after a failure.
    pub uncordoned: bool,
    /// The error that ended a failed drain.
    pub error: Option<String>,
}

impl DrainReport {
    /// A report for a plan that is not (or not yet) carried out.
    pub fn from_plan(plan: &DrainPlan, outcome: Outcome) -> Self {
        let mut report = DrainReport {
            node: plan.node.clone(),
            outcome,
            verdict: plan.verdict,
            phases: Vec::new(),
            pods: Vec::new(),
            blockers: plan.blockers.clone(),
            gates: Vec::new(),
            ungated: Vec::new(),
            notes: Vec::new(),
            uncordoned: false,
            error: None,
        };
        report.absorb(plan);
        report
    }

    /// Adds what a later plan of the same drain found (pods that arrived, gates, notes)
    /// without losing what is already reported.
    pub fn absorb(&mut self, plan: &DrainPlan) {
        for p in &plan.pods {
            let key = p.facts.key();
            if let Some(known) = self.pods.iter_mut().find(|r| r.pod == key) {
                known.action = p.action;
                continue;
            }
            self.pods.push(PodReport {
                pod: key,
                action: p.action,
                stage: match p.action {
                    Action::Skip => Stage::Skipped,
                    Action::Wait => Stage::Terminating,
                    Action::Evict | Action::Surge => Stage::Pending,
                },
                refusals: 0,
            });
        }
        for gate in &plan.gates {
            if !self.gates.iter().any(|g| g.workload == gate.workload) {
                self.gates.push(GateReport {
                    workload: gate.workload.clone(),
                    available_before: gate.available_before,
                    state: GateEnd::Pending,
                });
            }
        }
        for u in &plan.ungated {
            if !self.ungated.contains(u) {
                self.ungated.push(u.clone());
            }
        }
        for note in &plan.notes {
            if !self.notes.contains(note) {
                self.notes.push(note.clone());
            }
        }
    }

    /// Seconds at which `phase` (as spelled in the report) ended, if it did.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.phases
            .iter()
            .find(|p| p.name.as_str() == name)
            .map(|p| p.seconds)
    }
}
