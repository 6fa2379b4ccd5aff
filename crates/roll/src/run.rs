//! Following the refresh: start it, watch it and the SLO, hold / cancel / roll back on a
//! breach, and stop or go on when a node could not be drained.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use quiesce_aws::record::{ANNOTATION, InFlight, Phase};
use serde::Serialize;
use tokio::time::Instant;

use crate::gate::{Gate, GateError};
use crate::preflight::Preflight;
use crate::refresh::{
    InstanceFacts, Preferences, RETAINED, Refresh, RefreshError, RefreshState, Status,
};
use crate::report::{Outcome, Retained, RollReport};
use crate::slo::{Reading, Slo};

/// What to do when the SLO breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBreach {
    /// The drainer holds the next terminate hook until the SLO is good again (up to
    /// `--hold-max`, then the refresh is cancelled).
    Hold,
    /// `CancelInstanceRefresh`: replaced instances stay; resume with a new refresh.
    Cancel,
    /// `RollbackInstanceRefresh`: the previous configuration comes back.
    Rollback,
}

/// What to do when the drainer ABANDONs a node (Auto Scaling keeps it, Terminating:Retained).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Undrainable {
    /// Cancel the refresh: a person looks first.
    Stop,
    /// Go on; the report lists the retained instance.
    Skip,
}

/// What the roll does.
#[derive(Debug, Clone)]
pub struct RollSpec {
    /// The group.
    pub group: String,
    /// The launch template version rolled to.
    pub version: String,
    /// The refresh's preferences.
    pub preferences: Preferences,
    /// On a breach.
    pub on_breach: OnBreach,
    /// On an ABANDONed node.
    pub undrainable: Undrainable,
    /// The longest the gate holds the roll.
    pub hold_max: Duration,
    /// How often the SLO is evaluated (and at every checkpoint).
    pub evaluate_every: Duration,
    /// How often the refresh and the group are read.
    pub poll_every: Duration,
    /// The longest the roll is followed; then it ends `failed` and the refresh goes on alone.
    pub deadline: Duration,
}

/// One look at the roll, for live progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Seconds since the refresh started.
    pub elapsed: f64,
    /// The refresh.
    pub refresh: RefreshState,
    /// Old instances gone so far.
    pub replaced: usize,
    /// Of how many.
    pub total: usize,
    /// Terminating instances and the drainer's phase on their node.
    pub draining: Vec<(String, String)>,
    /// The last reading of the gate.
    pub gate: Option<Reading>,
    /// Whether the gate holds the roll now.
    pub held: bool,
    /// Retained instances so far.
    pub retained: usize,
}

impl Progress {
    /// One line for a person: status, instances replaced, the drainer's phase on each
    /// terminating node, the gate's verdict (what `quiesce roll` and `quiesce lab --slo` show
    /// while they roll).
    pub fn line(&self) -> String {
        let mut line = format!(
            "[{:>5.0}s] {:?} {}%: {}/{} replaced",
            self.elapsed, self.refresh.status, self.refresh.percent, self.replaced, self.total
        );
        if let Some(reason) = &self.refresh.reason {
            line.push_str(&format!(" — {reason}"));
        }
        for (instance, phase) in &self.draining {
            line.push_str(&format!("; {instance} {phase}"));
        }
        if let Some(gate) = &self.gate {
            line.push_str(&format!(
                "; gate {} ({} = {})",
                if gate.ok { "green" } else { "RED" },
                gate.objective,
                gate.value
            ));
        }
        if self.held {
            line.push_str(", holding the next terminate hook");
        }
        if self.retained > 0 {
            line.push_str(&format!("; {} retained", self.retained));
        }
        line
    }
}

/// Why following the roll failed (not a breach or a refusal: those are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum RollError {
    /// An Auto Scaling call failed.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// A gate write failed.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// Reading the Nodes failed.
    #[error("reading the nodes: {0}")]
    Kube(String),
}

/// The drainer's record on each node of the group's instances: (node, record).
async fn records(
    api: &Api<Node>,
) -> Result<BTreeMap<String, (String, Option<InFlight>)>, RollError> {
    let nodes = tokio::time::timeout(crate::gate::CALL_TIMEOUT, api.list(&ListParams::default()))
        .await
        .map_err(|_| RollError::Kube(format!("no answer within {:?}", crate::gate::CALL_TIMEOUT)))?
        .map_err(|e| RollError::Kube(e.to_string()))?;
    Ok(nodes
        .items
        .into_iter()
        .filter_map(|n| {
            let instance = crate::instance_of(&n)?.to_string();
            let record = n
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION))
                .and_then(|v| InFlight::from_annotation(v).ok());
            Some((
                instance,
                (n.metadata.name.clone().unwrap_or_default(), record),
            ))
        })
        .collect())
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Received => "received",
        Phase::Draining => "draining",
        Phase::Completing => "completing",
        Phase::Abandoning => "abandoning",
        Phase::Continued => "continued",
        Phase::Abandoned => "abandoned",
    }
}

/// The state of a roll being followed.
struct Follow<'a, R, S> {
    refresh: &'a R,
    slo: Option<&'a S>,
    gate: Gate,
    nodes: Api<Node>,
    spec: &'a RollSpec,
    id: String,
    old: Vec<String>,
    retained_before: BTreeSet<String>,
    retained: BTreeMap<String, Retained>,
    breaches: Vec<Reading>,
    evaluations: usize,
    last: Option<Reading>,
    held_since: Option<Instant>,
    held_total: Duration,
    ending: Option<(Outcome, String)>,
    last_reason: Option<String>,
}

impl<R: Refresh, S: Slo> Follow<'_, R, S> {
    /// Evaluates the gate; a gate that cannot be read is a breach.
    async fn evaluate(&mut self) -> Option<Reading> {
        let slo = self.slo?;
        self.evaluations += 1;
        let reading = match slo.evaluate().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%err, "the SLO could not be evaluated: counted as a breach");
                Reading {
                    objective: err.objective.clone(),
                    value: f64::NAN,
                    ok: false,
                }
            }
        };
        self.last = Some(reading.clone());
        Some(reading)
    }

    async fn breach(&mut self, reading: Reading) -> Result<(), RollError> {
        let why = format!(
            "SLO breached: {} was {}",
            reading.objective,
            if reading.value.is_nan() {
                "unreadable".to_string()
            } else {
                reading.value.to_string()
            }
        );
        self.breaches.push(reading);
        match self.spec.on_breach {
            OnBreach::Hold => {
                if self.held_since.is_none() {
                    tracing::warn!(%why, "holding the roll");
                    self.gate.hold(&self.old, &why, self.spec.hold_max).await?;
                    self.held_since = Some(Instant::now());
                }
                if self
                    .held_since
                    .is_some_and(|t| t.elapsed() >= self.spec.hold_max)
                {
                    self.end_held(&why).await?;
                }
            }
            OnBreach::Cancel => {
                // Red first, so no further node goes while the cancellation takes effect.
                self.gate.hold(&self.old, &why, self.spec.hold_max).await?;
                self.refresh.cancel(&self.spec.group).await?;
                self.gate.open(&self.old).await?;
                self.ending = Some((Outcome::Cancelled, why));
            }
            OnBreach::Rollback => {
                // The rollback terminates the new instances through the same hooks: open.
                self.gate.open(&self.old).await?;
                self.refresh.rollback(&self.spec.group).await?;
                self.ending = Some((Outcome::RolledBack, why));
            }
        }
        Ok(())
    }

    async fn end_held(&mut self, why: &str) -> Result<(), RollError> {
        tracing::warn!(%why, hold_max = ?self.spec.hold_max, "held for --hold-max: cancelling");
        self.refresh.cancel(&self.spec.group).await?;
        self.release_hold().await?;
        self.ending = Some((
            Outcome::Held,
            format!(
                "{why}; held for {} and cancelled",
                humantime::format_duration(self.spec.hold_max)
            ),
        ));
        Ok(())
    }

    async fn release_hold(&mut self) -> Result<(), RollError> {
        if let Some(since) = self.held_since.take() {
            self.held_total += since.elapsed();
            self.gate.open(&self.old).await?;
        }
        Ok(())
    }

    fn note_retained(
        &mut self,
        instances: &[InstanceFacts],
        records: &BTreeMap<String, (String, Option<InFlight>)>,
    ) -> Vec<String> {
        let mut fresh = Vec::new();
        for i in instances.iter().filter(|i| i.state == RETAINED) {
            if self.retained_before.contains(&i.id) || self.retained.contains_key(&i.id) {
                continue;
            }
            let (node, record) = records
                .get(&i.id)
                .map(|(n, r)| (Some(n.clone()), r.clone()))
                .unwrap_or((None, None));
            let retained = Retained {
                instance: i.id.clone(),
                node,
                reason: record.and_then(|r| r.reason),
            };
            tracing::warn!(instance = %i.id, reason = ?retained.reason, "instance retained after ABANDON");
            fresh.push(i.id.clone());
            self.retained.insert(i.id.clone(), retained);
        }
        fresh
    }
}

/// Starts the refresh and follows it to its end.
pub async fn roll<R: Refresh, S: Slo>(
    refresh: &R,
    slo: Option<&S>,
    client: kube::Client,
    spec: &RollSpec,
    preflight: Preflight,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<RollReport, RollError> {
    let started = Instant::now();
    let before = refresh.instances(&spec.group).await?;
    let old: Vec<String> = before
        .iter()
        .filter(|i| i.state == "InService")
        .map(|i| i.id.clone())
        .collect();
    let mut f = Follow {
        refresh,
        slo,
        gate: Gate::new(client.clone(), &spec.group),
        nodes: Api::all(client),
        spec,
        id: String::new(),
        old,
        retained_before: before
            .iter()
            .filter(|i| i.state == RETAINED)
            .map(|i| i.id.clone())
            .collect(),
        retained: BTreeMap::new(),
        breaches: Vec::new(),
        evaluations: 0,
        last: None,
        held_since: None,
        held_total: Duration::ZERO,
        ending: None,
        last_reason: None,
    };
    // The gate before the refresh: an SLO broken already holds the first terminate hook
    // (hold), or nothing starts (cancel, rollback: there would be nothing to undo).
    if let Some(reading) = f.evaluate().await.filter(|r| !r.ok) {
        if spec.on_breach != OnBreach::Hold {
            let why = format!(
                "the SLO is breached before the roll: {} was {}; nothing started",
                reading.objective, reading.value
            );
            f.breaches.push(reading);
            return Ok(RollReport {
                breaches: f.breaches,
                evaluations: f.evaluations,
                evaluate_every_seconds: Some(spec.evaluate_every.as_secs_f64()),
                seconds: started.elapsed().as_secs_f64(),
                ..RollReport::unstarted(&spec.group, Outcome::Refused, Some(why), preflight)
            });
        }
        f.breach(reading).await?;
        tracing::info!("gate red before the refresh starts");
    }
    let id = refresh
        .start(&spec.group, &spec.version, &spec.preferences)
        .await?;
    tracing::info!(group = %spec.group, refresh = %id, version = %spec.version, "instance refresh started");
    f.id = id.clone();
    let mut next_eval = Instant::now() + spec.evaluate_every;
    let deadline = started + spec.deadline;
    let (outcome, reason, instances) = loop {
        let state = f.refresh.describe(&spec.group, &f.id).await?;
        let instances = f.refresh.instances(&spec.group).await?;
        let records = records(&f.nodes).await?;
        let fresh = f.note_retained(&instances, &records);
        if spec.undrainable == Undrainable::Stop && !fresh.is_empty() && f.ending.is_none() {
            let why = format!(
                "instance {} could not be drained and was retained (--undrainable stop)",
                fresh.join(", ")
            );
            f.refresh.cancel(&spec.group).await?;
            f.release_hold().await?;
            f.ending = Some((Outcome::Cancelled, why));
        }
        let at_checkpoint = state
            .reason
            .as_deref()
            .is_some_and(|r| r.to_lowercase().contains("checkpoint"))
            && state.reason != f.last_reason;
        f.last_reason = state.reason.clone();
        let evaluating = !state.status.is_final()
            && f.ending.is_none()
            && matches!(
                state.status,
                Status::Pending | Status::InProgress | Status::Baking
            )
            && (Instant::now() >= next_eval || at_checkpoint);
        if evaluating {
            next_eval = Instant::now() + spec.evaluate_every;
            if let Some(reading) = f.evaluate().await {
                if reading.ok {
                    f.release_hold().await?;
                } else {
                    f.breach(reading).await?;
                }
            }
        }
        let present: BTreeSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
        let replaced = f
            .old
            .iter()
            .filter(|i| !present.contains(i.as_str()))
            .count();
        let draining = instances
            .iter()
            .filter(|i| i.state.starts_with("Terminating") && i.state != RETAINED)
            .map(|i| {
                let phase = records
                    .get(&i.id)
                    .and_then(|(_, r)| r.as_ref())
                    .map(|r| phase_name(r.phase))
                    .unwrap_or("waiting for the drainer");
                (i.id.clone(), format!("{} ({phase})", i.state))
            })
            .collect();
        progress(&Progress {
            elapsed: started.elapsed().as_secs_f64(),
            refresh: state.clone(),
            replaced,
            total: f.old.len(),
            draining,
            gate: f.last.clone(),
            held: f.held_since.is_some(),
            retained: f.retained.len(),
        });
        if state.status.is_final() {
            let reason = state.reason.clone();
            let (outcome, why) = match (&state.status, f.ending.take()) {
                (Status::Successful, _) => (Outcome::Complete, reason),
                (Status::RollbackSuccessful, Some((_, why))) => (Outcome::RolledBack, Some(why)),
                (Status::RollbackSuccessful, None) => (Outcome::RolledBack, reason),
                (Status::Cancelled, Some((outcome, why))) => (outcome, Some(why)),
                (Status::Cancelled, None) => (
                    Outcome::Cancelled,
                    reason.or(Some("cancelled outside this roll".into())),
                ),
                (_, ending) => (
                    Outcome::Failed,
                    Some(format!(
                        "the refresh ended {:?}: {}{}",
                        state.status,
                        reason.unwrap_or_default(),
                        ending
                            .map(|(_, w)| format!(" (after: {w})"))
                            .unwrap_or_default()
                    )),
                ),
            };
            break (outcome, why, instances);
        }
        if Instant::now() >= deadline {
            break (
                Outcome::Failed,
                Some(format!(
                    "not finished within {}; the refresh {} goes on without the gate",
                    humantime::format_duration(spec.deadline),
                    f.id
                )),
                instances,
            );
        }
        // The next look: a poll, or the gate's evaluation if that comes first, so the gate
        // is evaluated every `evaluate_every` even when it is shorter than `poll_every`.
        // (An evaluation overdue but not made, the roll ending, waits for the poll.)
        let now = Instant::now();
        let next_look = now + spec.poll_every;
        tokio::time::sleep_until(if slo.is_some() && next_eval > now {
            next_look.min(next_eval)
        } else {
            next_look
        })
        .await;
    };
    f.release_hold().await?;
    f.gate.open(&f.old).await?;
    let present: BTreeSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    let replaced = f
        .old
        .iter()
        .filter(|i| !present.contains(i.as_str()))
        .cloned()
        .collect();
    let resume = matches!(outcome, Outcome::Cancelled | Outcome::Held).then(|| {
        format!(
            "quiesce roll --asg {} --launch-template-version {} --skip-matching",
            spec.group, spec.version
        )
    });
    Ok(RollReport {
        group: spec.group.clone(),
        refresh_id: Some(id),
        outcome,
        reason,
        replaced,
        retained: f.retained.into_values().collect(),
        breaches: f.breaches,
        evaluations: f.evaluations,
        evaluate_every_seconds: slo.map(|_| spec.evaluate_every.as_secs_f64()),
        held_seconds: f.held_total.as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        resume,
        preflight,
    })
}
