//! What a roll did, for people (the CLI's text) and for CI (`--output json`: `roll.outcome`,
//! `roll.replaced`, `roll.retained`, …).

use serde::Serialize;

use crate::preflight::Preflight;
use crate::slo::Reading;

/// How the roll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every instance replaced (retained ones aside, with `--undrainable skip`).
    Complete,
    /// The SLO broke (or an alarm fired) and the previous configuration is back.
    RolledBack,
    /// The SLO stayed broken for `--hold-max`: the refresh was cancelled while held.
    Held,
    /// Cancelled (`--on-breach cancel`, or an undrainable node with `--undrainable stop`).
    Cancelled,
    /// The refresh failed, or a rollback failed.
    Failed,
    /// Pre-flight refused: nothing changed.
    Refused,
    /// `--dry-run`: pre-flight only, nothing changed.
    Planned,
}

impl Outcome {
    /// Whether the command succeeded (exit 0).
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Complete | Outcome::Planned)
    }
}

/// An instance the drainer ABANDONed and Auto Scaling kept (`Terminating:Retained`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    /// The instance.
    pub instance: String,
    /// Its node, if the cluster has it.
    pub node: Option<String>,
    /// The drainer's reason (from the node's `quiesce.io/lifecycle-action` record).
    pub reason: Option<String>,
}

/// The roll's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollReport {
    /// The group.
    pub group: String,
    /// The Instance Refresh (none when pre-flight refused or `--dry-run`).
    pub refresh_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it ended so, in words (the breach and its value, the refresh's StatusReason).
    pub reason: Option<String>,
    /// Old instances that are gone (replaced).
    pub replaced: Vec<String>,
    /// Instances kept after an ABANDON, with the drainer's reason; `quiesce roll --release
    /// INSTANCE` lets one go once fixed.
    pub retained: Vec<Retained>,
    /// Every evaluation of the gate that failed (value and objective).
    pub breaches: Vec<Reading>,
    /// How many times the gate was evaluated.
    pub evaluations: usize,
    /// Seconds between two evaluations of the gate (`--evaluate-every`; none without an
    /// SLO): a breach is seen at most this long after it happened.
    pub evaluate_every_seconds: Option<f64>,
    /// Seconds the gate held the roll, in total.
    pub held_seconds: f64,
    /// The roll's wall time.
    pub seconds: f64,
    /// The command that resumes a cancelled roll (a new refresh with SkipMatching).
    pub resume: Option<String>,
    /// Pre-flight's findings.
    pub preflight: Preflight,
}

impl RollReport {
    /// The report of a roll that never started a refresh (pre-flight refused, `--dry-run`).
    pub fn unstarted(
        group: &str,
        outcome: Outcome,
        reason: Option<String>,
        preflight: Preflight,
    ) -> RollReport {
        RollReport {
            group: group.to_string(),
            refresh_id: None,
            outcome,
            reason,
            replaced: Vec::new(),
            retained: Vec::new(),
            breaches: Vec::new(),
            evaluations: 0,
            evaluate_every_seconds: None,
            held_seconds: 0.0,
            seconds: 0.0,
            resume: None,
            preflight,
        }
    }
}
