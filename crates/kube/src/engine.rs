//! The drain engine: plan, cordon, surge, evict tier by tier, wait for the pods to go and for
//! their replacements to be Ready elsewhere, wait for volumes, and report every phase.
//!
//! Compared with `kubectl drain` (research section 5.1) it waits by watching instead of polling
//! each pod every second, retries 429 and the multi-PDB 500 with backoff instead of failing,
//! and does not call the node drained until the workloads are whole again.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{join_all, try_join};
use quiesce_core::{
    Action, Blocker, DrainOptions, DrainPlan, PodFacts, PodKind, Severity, Verdict, WorkloadRef,
};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, Cordon, Eviction};
use crate::error::{Error, Result};
use crate::kube_cluster::transient;
use crate::report::{DrainReport, Outcome, Phase, Stage};

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
    let snapshot = cluster.snapshot().await?;
    if !snapshot
        .nodes
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some(spec.node.as_str()))
    {
        return Err(Error::NotFound(format!("node {}", spec.node)));
    }
    let plan = quiesce_core::plan(snapshot.view(&spec.node), spec.options);
    if spec.dry_run {
        return Ok(DrainReport::from_plan(&plan, Outcome::Planned));
    }
    if plan.verdict == Verdict::Impossible {
        for blocker in &plan.blockers {
            announce(cluster, &spec.node, "DrainBlocked", &blocker.to_string()).await;
        }
        return Ok(DrainReport::from_plan(&plan, Outcome::Blocked));
    }
    let run = Run {
        cluster,
        spec,
        started,
        deadline: started + spec.timeout,
        report: Mutex::new(DrainReport::from_plan(&plan, Outcome::Failed)),
        progress,
    };
    let result = run.execute(&plan).await;
    let mut report = run.report.into_inner().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) => {
            report.outcome = Outcome::Drained;
            let total = report.phases.last().map(|p| p.seconds).unwrap_or_default();
            announce(
                cluster,
                &spec.node,
                "Drained",
                &format!("drained in {total:.1}s; every replacement is Ready elsewhere"),
            )
            .await;
        }
        Err(err) => {
            tracing::warn!(node = %spec.node, %err, "drain failed");
            announce(cluster, &spec.node, "DrainFailed", &err.to_string()).await;
            report.error = Some(err.to_string());
            if spec.uncordon_on_failure {
                match cluster.uncordon(&spec.node, &spec.cordon).await {
                    Ok(()) => report.uncordoned = true,
                    Err(e) => tracing::error!(node = %spec.node, err = %e, "could not uncordon"),
                }
            }
        }
    }
    Ok(report)
}

/// Events are for people; failing to record one must not fail the drain.
async fn announce<C: Cluster>(cluster: &C, node: &str, reason: &str, message: &str) {
    if let Err(err) = cluster.event(node, reason, message).await {
        tracing::warn!(node, reason, %err, "could not record event");
    }
}

impl<C: Cluster> Run<'_, C> {
    async fn execute(&self, plan: &DrainPlan) -> Result<()> {
        let node = self.spec.node.as_str();
        self.cluster.cordon(node, &self.spec.cordon).await?;
        self.phase("cordoned");
        let surges = if self.spec.replacement_gate {
            plan.surges()
        } else {
            Vec::new()
        };
        if !surges.is_empty() {
            for workload in &surges {
                tracing::info!(%workload, "surging: rolling restart while the node is cordoned");
                self.cluster.restart(workload).await?;
            }
            self.gate(plan, &surges).await?;
            self.phase("surged");
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
            let evictions = pods
                .iter()
                .filter(|p| {
                    plan.pods
                        .iter()
                        .any(|pp| pp.facts.uid == p.uid && pp.action == Action::Evict)
                })
                .map(|p| self.evict(p));
            let uids: Vec<String> = pods.iter().map(|p| p.uid.clone()).collect();
            let mut on_gone = |uid: &str| {
                if let Some(pod) = pods.iter().find(|p| p.uid == uid) {
                    self.stage(&pod.key(), Stage::Gone);
                }
            };
            let accepted = async {
                join_all(evictions)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<()>>>()?;
                self.phase("evictions-accepted");
                Ok(())
            };
            try_join(
                accepted,
                self.cluster
                    .wait_gone(node, &uids, &mut on_gone, self.deadline),
            )
            .await?;
        }
        self.phase("pods-gone");
        if !self.spec.replacement_gate {
            return Ok(());
        }
        let workloads: Vec<WorkloadRef> = {
            let mut w: Vec<_> = plan
                .pods
                .iter()
                .filter(|p| p.action != Action::Skip && p.facts.kind == PodKind::Managed)
                .filter_map(|p| p.facts.workload.clone())
                .filter(|w| matches!(w.kind.as_str(), "Deployment" | "StatefulSet" | "ReplicaSet"))
                .collect();
            w.sort();
            w.dedup();
            w
        };
        self.gate(plan, &workloads).await?;
        self.phase("replacements-ready");
        self.cluster
            .wait_volumes_detached(node, self.deadline)
            .await?;
        self.phase("volumes-detached");
        Ok(())
    }

    /// Waits for each workload's replicas to be Ready off the node, one namespace at a time
    /// per watch, all namespaces concurrently.
    async fn gate(&self, plan: &DrainPlan, workloads: &[WorkloadRef]) -> Result<()> {
        let namespaces: BTreeSet<&str> = workloads.iter().map(|w| w.namespace.as_str()).collect();
        let waits = namespaces.into_iter().map(|namespace| async move {
            let theirs: Vec<WorkloadRef> = workloads
                .iter()
                .filter(|w| w.namespace == namespace)
                .cloned()
                .collect();
            let mut on_replaced = |workload: &WorkloadRef| {
                for pod in plan
                    .pods
                    .iter()
                    .filter(|p| p.facts.workload.as_ref() == Some(workload))
                {
                    self.stage(&pod.facts.key(), Stage::Replaced);
                }
            };
            self.cluster
                .wait_replaced(
                    namespace,
                    &theirs,
                    &self.spec.node,
                    &mut on_replaced,
                    self.deadline,
                )
                .await
        });
        join_all(waits).await.into_iter().collect()
    }

    /// Evicts one pod, retrying refusals and transient failures until the deadline.
    async fn evict(&self, pod: &PodFacts) -> Result<()> {
        let key = pod.key();
        self.stage(&key, Stage::Evicting);
        let mut backoff = Backoff::default();
        let mut announced = false;
        loop {
            let (retry_after, why) = match self.cluster.evict(pod).await {
                Ok(Eviction::Accepted | Eviction::Gone) => {
                    self.stage(&key, Stage::Terminating);
                    return Ok(());
                }
                Ok(Eviction::Refused {
                    retry_after,
                    message,
                }) => (retry_after, message),
                Ok(Eviction::MultipleBudgets(message)) => (None, message),
                Err(Error::Kube(err)) if transient(&err) => (None, err.to_string()),
                Err(err) => return Err(err),
            };
            self.refused(&key);
            tracing::info!(pod = %key, reason = %why, "eviction refused; retrying");
            if !announced {
                announce(
                    self.cluster,
                    &self.spec.node,
                    "EvictionBlocked",
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

    fn phase(&self, name: &'static str) {
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(node = %self.spec.node, phase = name, elapsed = %humantime::format_duration(Duration::from_millis((seconds * 1000.0) as u64)), "phase done");
        let mut report = self.report();
        report.phases.retain(|p| p.name != name);
        report.phases.push(Phase { name, seconds });
    }

    fn stage(&self, pod: &str, stage: Stage) {
        if let Some(p) = self.report().pods.iter_mut().find(|p| p.pod == pod) {
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
