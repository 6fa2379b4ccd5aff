//! `quiesce lab --slo max-failed=N`: the lab's node group rolled by `quiesce roll`'s own code
//! (`quiesce_roll::run::roll`: pre-flight, the refresh followed to its end, the SLO gate that
//! holds, cancels or rolls back), with the simulated group behind the same [`Refresh`] trait as
//! Auto Scaling ([`RefreshingGroup`]) and the gate reading the lab's live count of failed
//! requests instead of Prometheus ([`LiveFailures`]). Without `--slo` the group's own refresh
//! replaces every node, as it always did.
//!
//! [`Refresh`]: quiesce_roll::refresh::Refresh

use std::sync::Mutex;
use std::time::Duration;

use quiesce_core::DrainOptions;
use quiesce_roll::preflight::{self, DrainerLiveness, Intent};
use quiesce_roll::refresh::Preferences;
use quiesce_roll::report::{Outcome, RollReport};
use quiesce_roll::run::{OnBreach, Progress, RollSpec, Undrainable};
use quiesce_roll::slo::{Objective, Op, Reading, Slo, SloError};
use serde::Serialize;

use crate::asg::refresh::RefreshingGroup;
use crate::asg::{Group, Replacement};

/// The launch template version the lab rolls to (the group runs
/// [`crate::asg::refresh::PREVIOUS_VERSION`]).
pub const DESIRED_VERSION: &str = "2";

/// How often the roll reads the group and the Nodes between two evaluations of the gate.
const POLL: Duration = Duration::from_millis(100);

/// The longest the lab follows its roll: every wait inside it (launch, drain) is bounded by
/// the hooks' global timeout, so this only catches a roll that stopped moving.
const DEADLINE: Duration = Duration::from_secs(600);

/// `max-failed=N`: the roll holds while at most N requests failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxFailed(pub u64);

/// Why an `--slo` text is no lab objective.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--slo {0:?}: the lab's objective is max-failed=N (N failed requests at most, e.g. max-failed=20)"
)]
pub struct MaxFailedError(pub String);

impl std::str::FromStr for MaxFailed {
    type Err = MaxFailedError;

    fn from_str(s: &str) -> Result<MaxFailed, MaxFailedError> {
        s.trim()
            .strip_prefix("max-failed=")
            .and_then(|n| n.parse().ok())
            .map(MaxFailed)
            .ok_or_else(|| MaxFailedError(s.to_string()))
    }
}

impl MaxFailed {
    /// The objective as the roll reports it.
    pub fn objective(self) -> Objective {
        Objective {
            query: "lab requests failed".into(),
            op: Op::Le,
            threshold: self.0 as f64,
        }
    }
}

/// The gate of a lab roll.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// The objective.
    pub max_failed: MaxFailed,
    /// How often it is evaluated: the bound on how late a breach is seen.
    pub evaluate_every: Duration,
    /// What a breach does.
    pub on_breach: OnBreach,
    /// The longest the gate holds (`hold`; the failure count never goes down, so a held lab
    /// roll ends `held` after this).
    pub hold_max: Duration,
}

/// The lab's live failure count as the gate's source: the number of requests failed so far.
pub struct LiveFailures<'a> {
    objective: Objective,
    failed: &'a (dyn Fn() -> u64 + Send + Sync),
}

impl<'a> LiveFailures<'a> {
    /// `max_failed` over the count `failed` reads.
    pub fn new(max_failed: MaxFailed, failed: &'a (dyn Fn() -> u64 + Send + Sync)) -> Self {
        LiveFailures {
            objective: max_failed.objective(),
            failed,
        }
    }
}

impl Slo for LiveFailures<'_> {
    async fn evaluate(&self) -> Result<Reading, SloError> {
        Ok(Reading::of(&self.objective, (self.failed)() as f64))
    }
}

/// The roll's report in the lab's JSON (`roll`): `quiesce roll`'s, and the traffic rate the
/// bound on failures at a breach is figured from (`threshold + rps × evaluateEverySeconds`).
#[derive(Debug, Clone, Serialize)]
pub struct LabRoll {
    /// What `quiesce roll --output json` prints under `roll`.
    #[serde(flatten)]
    pub report: RollReport,
    /// The traffic's requests per second.
    pub rps: f64,
}

/// How long the gated roll soaks after each batch: longer than a request's timeout (the
/// traffic's 2 s) and a gate interval, so every failure a batch caused is counted, and read
/// by the gate, before the next batch goes. Without it a fast naive batch can take the next
/// node before its failures (timeouts among them) are counted. Instance Refresh users set
/// CheckpointDelay for the same reason: an SLO shows a batch's harm only after a while.
const SOAK: Duration = Duration::from_secs(5);

/// `preferences` with a checkpoint after every batch, each soaked for [`SOAK`].
fn soaked(mut preferences: Preferences, size: usize) -> Preferences {
    let batch = preferences.batch(size).max(1);
    preferences.checkpoints = (1..)
        .map(|k| (k * batch).min(size))
        .take_while(|done| *done < size)
        .map(|done| (done * 100 / size.max(1)) as u8)
        .collect();
    preferences.checkpoint_delay = Some(SOAK);
    preferences
}

/// Replaces the group's nodes: by the group's own refresh without a gate, else by `quiesce
/// roll`'s code with the gate on `failed`. `drain` is how the lab's drainer drains (for the
/// pre-flight plans). Returns every replacement made, and the roll's report.
pub async fn refresh(
    gate: Option<&GateOptions>,
    group: &Group,
    client: &kube::Client,
    drain: DrainOptions,
    failed: &(dyn Fn() -> u64 + Send + Sync),
    rps: f64,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<(Vec<Replacement>, Option<LabRoll>)> {
    let Some(gate) = gate else {
        return Ok((group.refresh(progress).await, None));
    };
    let (target, driver) = RefreshingGroup::new(group.clone());
    let facts = target.facts();
    let preferences = soaked(target.preferences(), facts.instances.len());
    let intent = Intent {
        preferences: &preferences,
        version: Some(DESIRED_VERSION),
        rollback: gate.on_breach == OnBreach::Rollback,
        skip_undrainable: false,
        drain,
    };
    let snapshot = quiesce_kube::reads::whole_cluster(client).await?;
    let drainer = DrainerLiveness::Live("the lab runs its drainer beside the roll".into());
    let pre = preflight::check(Some(&facts), &facts.name, &snapshot, &drainer, &intent);
    if !pre.refusals.is_empty() {
        for refusal in &pre.refusals {
            progress(&format!("pre-flight refused: {refusal}"));
        }
        let why = format!("pre-flight refused ({} reasons)", pre.refusals.len());
        let report = RollReport::unstarted(&facts.name, Outcome::Refused, Some(why), pre);
        return Ok((Vec::new(), Some(LabRoll { report, rps })));
    }
    progress(&format!(
        "roll: group {} to launch template version {DESIRED_VERSION} in batches of {}, gate {} \
         every {}, on breach {:?}",
        facts.name,
        pre.batch,
        gate.max_failed.objective(),
        humantime::format_duration(gate.evaluate_every),
        gate.on_breach
    ));
    let spec = RollSpec {
        group: facts.name.clone(),
        version: DESIRED_VERSION.into(),
        preferences,
        on_breach: gate.on_breach,
        undrainable: Undrainable::Stop,
        hold_max: gate.hold_max,
        evaluate_every: gate.evaluate_every,
        poll_every: POLL.min(gate.evaluate_every),
        deadline: DEADLINE,
    };
    let slo = LiveFailures::new(gate.max_failed, failed);
    // A line when something a person follows changes (not at every poll).
    let last = Mutex::new(None);
    let show = |p: &Progress| {
        let key = (
            p.refresh.status.clone(),
            p.refresh.reason.clone(),
            p.replaced,
            p.draining.clone(),
            p.gate.as_ref().map(|g| g.ok),
            p.held,
            p.retained,
        );
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() != Some(&key) {
            progress(&p.line());
            *last = Some(key);
        }
    };
    let roll = quiesce_roll::run::roll(&target, Some(&slo), client.clone(), &spec, pre, &show);
    let report = tokio::select! {
        report = roll => report?,
        () = driver.run(progress) => anyhow::bail!("the lab's refresh driver stopped"),
    };
    progress(&format!(
        "roll {}: {}",
        serde_json::to_value(report.outcome)?
            .as_str()
            .unwrap_or_default(),
        report.reason.as_deref().unwrap_or("")
    ));
    Ok((target.replacements(), Some(LabRoll { report, rps })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_batch_but_the_last_ends_at_a_soaked_checkpoint() {
        let one_at_a_time = Preferences {
            min_healthy: 67,
            ..Preferences::default()
        };
        let p = soaked(one_at_a_time, 3);
        assert_eq!(p.checkpoints, [33, 66]);
        assert_eq!(p.checkpoint_delay, Some(SOAK));
        let two_at_a_time = Preferences {
            min_healthy: 50,
            ..Preferences::default()
        };
        assert_eq!(soaked(two_at_a_time, 4).checkpoints, [50]);
    }

    #[test]
    fn max_failed_parses_and_says_what_it_wants() {
        assert_eq!("max-failed=20".parse(), Ok(MaxFailed(20)));
        assert_eq!("max-failed=0".parse(), Ok(MaxFailed(0)));
        let err = "max-failed=-1"
            .parse::<MaxFailed>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("max-failed=N"), "{err}");
        assert!("failed < 3".parse::<MaxFailed>().is_err());
        let o = MaxFailed(20).objective();
        assert!(Reading::of(&o, 20.0).ok);
        assert!(!Reading::of(&o, 21.0).ok);
    }
}
