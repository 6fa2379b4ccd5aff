//! The drain engine: plan, cordon, read again and plan what to evict from that fenced read,
//! surge, evict tier by tier, wait for the pods to go (those it evicted and those already
//! terminating) and for their workloads to be whole again elsewhere, read once more to catch
//! pods that arrived meanwhile, wait for volumes, and report every phase.
//!
//! Compared with `kubectl drain` (research section 5.1) it waits by watching instead of polling
//! each pod every second, retries 429 and the multi-PDB 500 with backoff instead of failing,
//! and does not call the node drained until the workloads are whole again. What it has done is
//! recorded on the Node ([`crate::record`]), so a drain run again — by a person, the drainer
//! after a restart, the next Lambda invocation — resumes instead of starting blind.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{join_all, try_join};
use k8s_openapi::jiff::Timestamp;
use quiesce_core::gate::GateState;
use quiesce_core::{
    Action, Blocker, DrainOptions, DrainPlan, PodFacts, Severity, Verdict, WorkloadRef,
};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, Cordon, Eviction, GateTarget};
use crate::error::{Error, Result};
use crate::events::Reason;
use crate::record::DrainRecord;
use crate::report::{DrainReport, GateEnd, GateReport, Outcome, Phase, PhaseName, Stage};

/// How many times the engine reads the node again and finds new pods to evict before it calls
/// them a blocker: a pod that keeps coming back (it tolerates the unschedulable taint, or is
/// bound by name) would otherwise keep the drain busy until the deadline.
pub const MAX_ROUNDS: usize = 3;

/// What to drain and how.
#[derive(Debug, Clone)]
pub struct DrainSpec {
    /// The node.
    pub node: String,
    /// kubectl-like safety switches and surge.
    pub options: DrainOptions,
    /// The whole drain must finish within this time.
    pub timeout: Duration,
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// On failure, make the node schedulable again (otherwise it stays cordoned, as kubectl
    /// leaves it).
    pub uncordon_on_failure: bool,
    /// How to fence the node.
    pub cordon: Cordon,
    /// Wait until every evicted pod's workload is whole again elsewhere (and surge what cannot
    /// lose a pod) before calling the node drained. `false` is `kubectl drain`: done once the
    /// pods are gone, whether or not anything replaced them — kept for the lab's baseline.
    pub replacement_gate: bool,
}

/// Called whenever a pod moves to a new stage, for live progress.
pub type Progress<'a> = &'a (dyn Fn(&str, Stage) + Sync);

struct Run<'a, C> {
    cluster: &'a C,
    spec: &'a DrainSpec,
    started: Instant,
    deadline: Instant,
    report: Mutex<DrainReport>,
    record: Mutex<DrainRecord>,
    progress: Progress<'a>,
}

/// Drains `spec.node`. `Err` only when the cluster could not even be read (nothing changed);
/// every later failure is in the report with `Outcome::Failed`.
pub async fn drain<C: Cluster>(
    cluster: &C,
    spec: &DrainSpec,
    progress: Progress<'_>,
) -> Result<DrainReport> {
    let started = Instant::now();
    let snapshot = cluster.snapshot(&spec.node).await?;
    let node = snapshot
        .node(&spec.node)
        .ok_or_else(|| Error::NotFound(format!("node {}", spec.node)))?;
    // A record on a schedulable node is left from a drain that was given up (uncordoned):
    // its counts describe another day's workloads, so this run starts afresh.
    let found = DrainRecord::of(node)?;
    let stale = found.is_some() && !quiesce_core::capacity::is_cordoned(node);
    let record = found.filter(|_| !stale).unwrap_or_else(DrainRecord::new);
    let surged = record.surged();
    let plan = quiesce_core::plan(
        snapshot.view(&spec.node, &surged, Timestamp::now()),
        spec.options,
    );
    if spec.dry_run {
        return Ok(reported(&plan, Outcome::Planned, &record));
    }
    if plan.verdict == Verdict::Impossible {
        for blocker in &plan.blockers {
            announce(
                cluster,
                &spec.node,
                Reason::DrainBlocked,
                &blocker.to_string(),
            )
            .await;
        }
        return Ok(reported(&plan, Outcome::Blocked, &record));
    }
    let run = Run {
        cluster,
        spec,
        started,
        deadline: started + spec.timeout,
        report: Mutex::new(reported(&plan, Outcome::Failed, &record)),
        record: Mutex::new(record),
        progress,
    };
    // The fence is kept while the drain runs: a taint cleared meanwhile is put back.
    let result = tokio::select! {
        result = run.execute(stale) => result,
        never = cluster.keep_fenced(&spec.node, &spec.cordon) => match never {},
    };
    let mut report = run.report.into_inner().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) => {
            report.outcome = Outcome::Drained;
            forget(cluster, &spec.node).await;
            let total = report.phases.last().map(|p| p.seconds).unwrap_or_default();
            announce(
                cluster,
                &spec.node,
                Reason::Drained,
                &format!("drained in {total:.1}s; every replacement is Ready elsewhere"),
            )
            .await;
        }
        Err(err) => {
            tracing::warn!(node = %spec.node, %err, "drain failed");
            announce(cluster, &spec.node, Reason::DrainFailed, &err.to_string()).await;
            report.error = Some(err.to_string());
            if spec.uncordon_on_failure {
                match cluster.uncordon(&spec.node, &spec.cordon).await {
                    Ok(()) => {
                        report.uncordoned = true;
                        forget(cluster, &spec.node).await;
                    }
                    Err(e) => tracing::error!(node = %spec.node, err = %e, "could not uncordon"),
                }
            }
        }
    }
    Ok(report)
}

/// The report of `plan` with the gates an earlier run recorded, at their recorded counts:
/// what a resumed drain will hold each workload to, also in a dry run, even for workloads
/// whose pods have already left the node.
fn reported(plan: &DrainPlan, outcome: Outcome, record: &DrainRecord) -> DrainReport {
    let mut report = DrainReport::from_plan(plan, outcome);
    for target in record.gates() {
        match report
            .gates
            .iter_mut()
            .find(|g| g.workload == target.workload)
        {
            Some(gate) => gate.available_before = target.available_before,
            None => report.gates.push(GateReport {
                workload: target.workload,
                available_before: target.available_before,
                state: GateEnd::Pending,
            }),
        }
    }
    report
}

/// Events are for people; failing to record one must not fail the drain.
async fn announce<C: Cluster>(cluster: &C, node: &str, reason: Reason, message: &str) {
    if let Err(err) = cluster.event(node, reason, message).await {
        tracing::warn!(node, %reason, %err, "could not record event");
    }
}

/// Removes the record once the drain is over (drained, or given up and uncordoned); a record
/// left behind is ignored by the next drain of a schedulable node, so failing here is a log.
async fn forget<C: Cluster>(cluster: &C, node: &str) {
    if let Err(err) = cluster.write_record(node, None).await {
        tracing::warn!(node, %err, "could not remove the drain record");
    }
}

impl<C: Cluster> Run<'_, C> {
    async fn execute(&self, stale: bool) -> Result<()> {
        let node = self.spec.node.as_str();
        self.cluster.cordon(node, &self.spec.cordon).await?;
        self.phase(PhaseName::Cordoned);
        if stale {
            self.cluster.write_record(node, None).await?;
        }
        let mut announced_ungated = BTreeSet::new();
        let mut rounds = 0;
        loop {
            // Fenced now: what this read shows is all that can be on the node, apart from pods
            // that tolerate the cordon or are bound by name, which the next read catches.
            let snapshot = self.cluster.snapshot(node).await?;
            let surged = self.record().surged();
            let plan = quiesce_core::plan(
                snapshot.view(node, &surged, Timestamp::now()),
                self.spec.options,
            );
            self.report().absorb(&plan);
            for ungated in &plan.ungated {
                if announced_ungated.insert(ungated.workload.clone()) {
                    let message = format!("{}: {}", ungated.workload, ungated.reason);
                    announce(self.cluster, node, Reason::Ungated, &message).await;
                }
            }
            if plan.verdict == Verdict::Impossible {
                return Err(self.blocked(&plan.blockers).await);
            }
            if !plan.has_work() {
                break;
            }
            rounds += 1;
            if rounds > MAX_ROUNDS {
                let arriving: Vec<Blocker> = plan
                    .pods
                    .iter()
                    .filter(|p| p.action != Action::Skip)
                    .map(|p| Blocker {
                        pod: Some(p.facts.key()),
                        pdb: None,
                        severity: Severity::Impossible,
                        reason: format!(
                            "still arriving on the cordoned node after {MAX_ROUNDS} rounds of \
                             eviction: it tolerates node.kubernetes.io/unschedulable or is bound \
                             to the node by name"
                        ),
                    })
                    .collect();
                return Err(self.blocked(&arriving).await);
            }
            self.round(&plan).await?;
        }
        if self.spec.replacement_gate {
            // A resumed run may find the node empty: the pods an earlier run evicted are gone,
            // but their workloads are whole only once the recorded counts are met again.
            let pending: Vec<GateTarget> = {
                let report = self.report();
                self.record()
                    .gates()
                    .into_iter()
                    .filter(|t| {
                        !report
                            .gates
                            .iter()
                            .any(|g| g.workload == t.workload && g.state != GateEnd::Pending)
                    })
                    .collect()
            };
            if !pending.is_empty() {
                self.wait_whole(None, pending).await?;
                self.phase(PhaseName::ReplacementsReady);
            }
        }
        self.cluster
            .wait_volumes_detached(node, self.deadline)
            .await?;
        self.phase(PhaseName::VolumesDetached);
        Ok(())
    }

    /// Records blockers found after the cordon and turns them into the error ending the drain.
    async fn blocked(&self, blockers: &[Blocker]) -> Error {
        let impossible: Vec<&Blocker> = blockers
            .iter()
            .filter(|b| b.severity == Severity::Impossible)
            .collect();
        for blocker in &impossible {
            announce(
                self.cluster,
                &self.spec.node,
                Reason::DrainBlocked,
                &blocker.to_string(),
            )
            .await;
            let mut report = self.report();
            if !report.blockers.contains(blocker) {
                report.blockers.push((*blocker).clone());
            }
        }
        let text: Vec<String> = impossible.iter().map(|b| b.to_string()).collect();
        Error::Blocked(text.join("; "))
    }

    /// One pass over a fenced plan: record, surge, evict and wait tier by tier, gate.
    async fn round(&self, plan: &DrainPlan) -> Result<()> {
        let node = self.spec.node.as_str();
        {
            let mut record = self.record();
            for gate in &plan.gates {
                record.count(&gate.workload, gate.available_before);
            }
        }
        // Before the first eviction: a resumed run must hold the gate to these counts.
        self.save_record().await?;
        let surges = if self.spec.replacement_gate {
            plan.surges()
        } else {
            Vec::new()
        };
        if !surges.is_empty() {
            for workload in &surges {
                tracing::info!(%workload, "surging: rolling restart while the node is cordoned");
                self.cluster.restart(workload).await?;
                self.record().mark_surged(workload);
                self.save_record().await?;
            }
            self.gate(plan, &surges).await?;
            self.phase(PhaseName::Surged);
        }
        for pod in plan.pods.iter().filter(|p| p.action == Action::Wait) {
            self.stage(&pod.facts.key(), Stage::Terminating);
        }
        let tiers: BTreeSet<u8> = plan
            .pods
            .iter()
            .filter(|p| p.action != Action::Skip)
            .map(|p| p.tier)
            .collect();
        for tier in tiers {
            let pods: Vec<&PodFacts> = plan
                .pods
                .iter()
                .filter(|p| p.tier == tier && p.action != Action::Skip)
                .map(|p| &p.facts)
                .collect();
            let evictions = plan
                .pods
                .iter()
                .filter(|p| p.tier == tier && p.action == Action::Evict)
                .map(|p| self.evict(&p.facts));
            let uids: Vec<String> = pods.iter().map(|p| p.uid.clone()).collect();
            let mut on_gone = |uid: &str| {
                if let Some(pod) = pods.iter().find(|p| p.uid == uid) {
                    self.stage(&pod.key(), Stage::Gone);
                }
            };
            let accepted = async {
                let accepted = join_all(evictions)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<Option<String>>>>()?;
                self.record().evicted.extend(accepted.into_iter().flatten());
                self.save_record().await?;
                self.phase(PhaseName::EvictionsAccepted);
                Ok(())
            };
            let ((), stuck) = try_join(
                accepted,
                self.cluster
                    .wait_gone(node, &uids, &mut on_gone, self.deadline),
            )
            .await?;
            if !stuck.is_empty() {
                let blockers: Vec<Blocker> = stuck
                    .into_iter()
                    .map(|s| Blocker {
                        pod: Some(s.pod),
                        pdb: None,
                        severity: Severity::Impossible,
                        reason: s.reason,
                    })
                    .collect();
                for b in &blockers {
                    announce(self.cluster, node, Reason::StuckTerminating, &b.to_string()).await;
                }
                return Err(self.blocked(&blockers).await);
            }
        }
        self.phase(PhaseName::PodsGone);
        if !self.spec.replacement_gate {
            return Ok(());
        }
        let workloads: Vec<WorkloadRef> = plan.gates.iter().map(|g| g.workload.clone()).collect();
        self.gate(plan, &workloads).await?;
        self.phase(PhaseName::ReplacementsReady);
        Ok(())
    }

    /// Writes the in-memory record to the Node.
    async fn save_record(&self) -> Result<()> {
        let record = self.record().clone();
        self.cluster
            .write_record(&self.spec.node, Some(&record))
            .await
    }

    /// Waits for each of `workloads` in the plan to be whole off the node (or deleted), held to
    /// its recorded pre-drain count.
    async fn gate(&self, plan: &DrainPlan, workloads: &[WorkloadRef]) -> Result<()> {
        let targets: Vec<GateTarget> = plan
            .gates
            .iter()
            .filter(|g| workloads.contains(&g.workload))
            .map(|g| GateTarget {
                workload: g.workload.clone(),
                available_before: self
                    .record()
                    .available_before(&g.workload)
                    .unwrap_or(g.available_before),
            })
            .collect();
        self.wait_whole(Some(plan), targets).await
    }

    /// Waits for `targets`, one namespace at a time per watch, all namespaces concurrently.
    async fn wait_whole(&self, plan: Option<&DrainPlan>, targets: Vec<GateTarget>) -> Result<()> {
        {
            let mut report = self.report();
            for target in &targets {
                match report
                    .gates
                    .iter_mut()
                    .find(|g| g.workload == target.workload)
                {
                    Some(g) => g.available_before = target.available_before,
                    None => report.gates.push(GateReport {
                        workload: target.workload.clone(),
                        available_before: target.available_before,
                        state: GateEnd::Pending,
                    }),
                }
            }
        }
        let namespaces: BTreeSet<&str> = targets
            .iter()
            .map(|t| t.workload.namespace.as_str())
            .collect();
        let waits = namespaces.into_iter().map(|namespace| {
            let theirs: Vec<GateTarget> = targets
                .iter()
                .filter(|t| t.workload.namespace == namespace)
                .cloned()
                .collect();
            async move {
                let mut on_end = |workload: &WorkloadRef, state: GateState| {
                    self.gate_ended(plan, workload, state);
                };
                self.cluster
                    .wait_replaced(
                        namespace,
                        &theirs,
                        &self.spec.node,
                        &mut on_end,
                        self.deadline,
                    )
                    .await
            }
        });
        join_all(waits).await.into_iter().collect()
    }

    fn gate_ended(&self, plan: Option<&DrainPlan>, workload: &WorkloadRef, state: GateState) {
        let end = match state {
            GateState::Deleted => GateEnd::Deleted,
            _ => GateEnd::Whole,
        };
        {
            let mut report = self.report();
            if let Some(g) = report.gates.iter_mut().find(|g| &g.workload == workload) {
                g.state = end;
            }
            if end == GateEnd::Deleted {
                report.notes.push(format!(
                    "{workload} was deleted during the drain, which ended its gate"
                ));
            }
        }
        if end == GateEnd::Whole {
            for pod in plan
                .into_iter()
                .flat_map(|p| &p.pods)
                .filter(|p| p.facts.workload.as_ref() == Some(workload))
            {
                self.stage(&pod.facts.key(), Stage::Replaced);
            }
        }
    }

    /// Evicts one pod, retrying refusals and transient failures until the deadline; the UID
    /// when the API server accepted the eviction (not when the pod was already gone).
    async fn evict(&self, pod: &PodFacts) -> Result<Option<String>> {
        let key = pod.key();
        self.stage(&key, Stage::Evicting);
        let mut backoff = Backoff::default();
        let mut announced = false;
        loop {
            let (retry_after, why) = match self.cluster.evict(pod).await {
                Ok(Eviction::Accepted) => {
                    self.stage(&key, Stage::Terminating);
                    return Ok(Some(pod.uid.clone()));
                }
                Ok(Eviction::Gone) => {
                    self.stage(&key, Stage::Terminating);
                    return Ok(None);
                }
                Ok(Eviction::Refused {
                    retry_after,
                    message,
                }) => (retry_after, message),
                Ok(Eviction::MultipleBudgets(message)) => (None, message),
                Err(err) if err.is_transient() => (None, err.to_string()),
                Err(err) => return Err(err),
            };
            self.refused(&key);
            tracing::info!(pod = %key, reason = %why, "eviction refused; retrying");
            if !announced {
                announce(
                    self.cluster,
                    &self.spec.node,
                    Reason::EvictionBlocked,
                    &format!("pod {key}: {why}"),
                )
                .await;
                announced = true;
            }
            if !backoff.wait(retry_after, self.deadline).await {
                self.report().blockers.push(Blocker {
                    pod: Some(key.clone()),
                    pdb: None,
                    severity: Severity::Wait,
                    reason: format!("still refused at the deadline: {why}"),
                });
                return Err(Error::Deadline(format!("evicting {key}")));
            }
        }
    }

    /// The report under construction (a poisoned lock still holds a usable report).
    fn report(&self) -> MutexGuard<'_, DrainReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record as this run knows it.
    fn record(&self) -> MutexGuard<'_, DrainRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn phase(&self, name: PhaseName) {
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(node = %self.spec.node, phase = %name, elapsed = %humantime::format_duration(Duration::from_millis((seconds * 1000.0) as u64)), "phase done");
        let mut report = self.report();
        report.phases.retain(|p| p.name != name);
        report.phases.push(Phase { name, seconds });
    }

    fn stage(&self, pod: &str, stage: Stage) {
        {
            let mut report = self.report();
            let Some(p) = report.pods.iter_mut().find(|p| p.pod == pod) else {
                return;
            };
            if p.stage >= stage {
                return;
            }
            p.stage = stage;
        }
        (self.progress)(pod, stage);
    }

    fn refused(&self, pod: &str) {
        if let Some(p) = self.report().pods.iter_mut().find(|p| p.pod == pod) {
            p.refusals += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_cluster::KubeCluster;

    fn spawnable<T: Send>(_: &T) {}

    /// The lifecycle-hook drainer runs drains in spawned tasks, so the future must be `Send`.
    #[tokio::test]
    async fn the_drain_future_is_send() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let cluster = KubeCluster::new(kube::Client::try_from(config).unwrap());
        let spec = DrainSpec {
            node: "node-1".into(),
            options: DrainOptions::default(),
            timeout: Duration::from_secs(1),
            dry_run: true,
            uncordon_on_failure: false,
            replacement_gate: true,
            cordon: Cordon::default(),
        };
        let future = drain(&cluster, &spec, &|_, _| {});
        spawnable(&future);
    }
}
