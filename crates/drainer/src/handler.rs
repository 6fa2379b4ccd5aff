//! One lifecycle message, start to finish: find the node, record the action on it, drain while
//! heartbeating the hook, complete with CONTINUE or ABANDON, and say what to do with the
//! message. The same code runs in the long-lived drainer and in the Lambda, which gives it a
//! time slice and resumes from the record next time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use quiesce_aws::event::{self, EventError, LifecycleAction, Message, Transition};
use quiesce_aws::hook::{HookTiming, drain_deadline};
use quiesce_aws::hooks::{Completion, HookResult, LifecycleHooks};
use quiesce_aws::record::{InFlight, Phase};
use quiesce_core::DrainOptions;
use quiesce_kube::cluster::{Cluster, Cordon};
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::Outcome;
use tokio::time::Instant;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::needs;
use crate::nodes::{self, NodeIndex};

/// What to do with an instance that is not a node of this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownInstance {
    /// Leave the message for the drainer of another cluster reading the same queue.
    #[default]
    Ignore,
    /// Complete the hook with CONTINUE: nothing of ours runs there.
    Continue,
}

impl FromStr for UnknownInstance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignore" => Ok(UnknownInstance::Ignore),
            "continue" => Ok(UnknownInstance::Continue),
            other => Err(format!(
                "unknown-instance policy {other:?}: expected ignore or continue"
            )),
        }
    }
}

/// How the drainer drains. Defaults suit a node that is about to be terminated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Only act on hooks whose NotificationMetadata names this cluster (plain, or JSON
    /// `{"cluster": …}`); others are left for their own drainer. Hooks without metadata are
    /// always ours.
    pub cluster: Option<String>,
    /// See [`UnknownInstance`].
    pub unknown_instance: UnknownInstance,
    /// Added to the workload-derived drain deadline.
    pub drain_margin: Duration,
    /// How long a replacement pod takes to become Ready, for the deadline.
    pub replacement_startup: Duration,
    /// How long a launching instance may take to become a Ready node before ABANDON.
    pub launch_timeout: Duration,
    /// The drain engine's switches.
    pub drain: DrainOptions,
    /// How the node is fenced.
    pub cordon: Cordon,
    /// Wait for replacements to be Ready before CONTINUE (see
    /// [`DrainSpec::replacement_gate`]); off only for the lab's kubectl-drain baseline.
    pub replacement_gate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: None,
            unknown_instance: UnknownInstance::Ignore,
            drain_margin: Duration::from_secs(120),
            replacement_startup: Duration::from_secs(60),
            launch_timeout: Duration::from_secs(600),
            drain: DrainOptions {
                // The node's disks go with the instance: emptyDir data is lost either way.
                delete_emptydir_data: true,
                ..DrainOptions::default()
            },
            cordon: Cordon::default(),
            replacement_gate: true,
        }
    }
}

/// How a handled action ended, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The test notification.
    Test,
    /// Drained (or launched) and CONTINUE sent.
    Continued,
    /// Drain failed, ran out of time or was blocked; uncordoned and ABANDON sent.
    Abandoned,
    /// The hook was already completed for this token: a duplicate message.
    Duplicate,
    /// Not a node of ours and the policy is `continue`.
    UnknownContinued,
}

/// What the queue should do with the message.
#[derive(Debug)]
pub enum Disposition {
    /// The hook is completed (or there was nothing to do): delete the message.
    Done(Done),
    /// Work remains (the slice ended, a transient error): keep the message; it comes back and
    /// the record on the node resumes the action.
    Later(String),
    /// Not ours: leave it for the drainer it belongs to.
    Leave(String),
    /// Can never be handled; the bad-message policy decides.
    Invalid(EventError),
}

/// The message handler. One per process; cheap to share behind an `Arc`.
pub struct Handler<H> {
    cluster: KubeCluster,
    client: Client,
    nodes: NodeIndex,
    hooks: H,
    settings: Settings,
    metrics: Arc<Metrics>,
    active: Mutex<HashSet<String>>,
    launches: Mutex<HashMap<String, Instant>>,
}

/// Removes a token from the active set when its work ends, however it ends.
struct Active<'a>(&'a Mutex<HashSet<String>>, String);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Step<T> = Result<T, String>;

impl<H: LifecycleHooks> Handler<H> {
    /// A handler talking to `client` and `hooks`.
    pub fn new(
        client: Client,
        nodes: NodeIndex,
        hooks: H,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Handler {
            cluster: KubeCluster::new(client.clone()),
            client,
            nodes,
            hooks,
            settings,
            metrics,
            active: Mutex::default(),
            launches: Mutex::default(),
        }
    }

    /// The metrics this handler updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the node index is ready for lookups.
    pub fn ready(&self) -> bool {
        self.nodes.ready()
    }

    /// Handles one message body. Work stops at `slice_end` (the Lambda's deadline) with
    /// [`Disposition::Later`]; the long-running drainer passes `None`.
    pub async fn handle(&self, body: &str, slice_end: Option<Instant>) -> Disposition {
        let action = match event::parse(body) {
            Err(err) => return Disposition::Invalid(err),
            Ok(Message::Test { group }) => {
                tracing::info!(%group, "test notification");
                return Disposition::Done(Done::Test);
            }
            Ok(Message::Action(action)) => action,
        };
        if let Some(other) = self.other_cluster(&action) {
            return Disposition::Leave(format!(
                "hook {} of group {} belongs to cluster {other:?}",
                action.hook, action.group
            ));
        }
        if !lock(&self.active).insert(action.token.clone()) {
            return Disposition::Later(format!(
                "action {} for {} is already being worked on",
                action.token, action.instance_id
            ));
        }
        let _active = Active(&self.active, action.token.clone());
        // `instrument`, not `enter`: a span entered across an await leaks onto other tasks.
        let span = tracing::info_span!("lifecycle", instance = %action.instance_id, group = %action.group, transition = ?action.transition);
        let result = async {
            match action.transition {
                Transition::Terminating => self.terminate(&action, slice_end).await,
                Transition::Launching => self.launch(&action, slice_end).await,
            }
        }
        .instrument(span)
        .await;
        result.unwrap_or_else(Disposition::Later)
    }

    fn other_cluster(&self, action: &LifecycleAction) -> Option<String> {
        let ours = self.settings.cluster.as_deref()?;
        let metadata = action.metadata.as_deref()?.trim();
        if metadata.is_empty() {
            return None;
        }
        let named = serde_json::from_str::<serde_json::Value>(metadata)
            .ok()
            .and_then(|v| v["cluster"].as_str().map(str::to_string))
            .unwrap_or_else(|| metadata.to_string());
        (named != ours).then_some(named)
    }

    async fn terminate(
        &self,
        action: &LifecycleAction,
        slice_end: Option<Instant>,
    ) -> Step<Disposition> {
        let node = self
            .nodes
            .find(&action.instance_id)
            .await
            .map_err(|e| format!("looking up the node of {}: {e}", action.instance_id))?;
        let Some(node) = node else {
            return self.unknown(action).await;
        };
        let name = node.name_any();
        let timing = self.timing(action).await?;
        let mut record = match nodes::record_of(&node) {
            Some(record) if record.is_same(action) => {
                if record.phase.is_final() {
                    tracing::info!(node = %name, phase = ?record.phase, "duplicate message: the hook was completed before");
                    return Ok(Disposition::Done(Done::Duplicate));
                }
                tracing::info!(node = %name, phase = ?record.phase, "resuming the action recorded on the node");
                record
            }
            _ => self.start(action, &name, timing).await?,
        };
        loop {
            match record.phase {
                Phase::Received | Phase::Draining => {
                    match self
                        .drain_slice(action, &name, &record, timing, slice_end)
                        .await?
                    {
                        SliceEnd::Drained => record.phase = Phase::Completing,
                        SliceEnd::GiveUp(reason) => {
                            record.phase = Phase::Abandoning;
                            record.reason = Some(reason);
                        }
                        SliceEnd::Paused(why) => return Ok(Disposition::Later(why)),
                    }
                    self.save(&name, &record).await?;
                }
                Phase::Completing => {
                    self.complete(action, HookResult::Continue).await?;
                    record.phase = Phase::Continued;
                    self.save_after_completion(&name, &record).await;
                    return Ok(Disposition::Done(Done::Continued));
                }
                Phase::Abandoning => {
                    self.cluster
                        .uncordon(&name, &self.settings.cordon)
                        .await
                        .map_err(|e| format!("uncordoning {name} before ABANDON: {e}"))?;
                    let reason = record.reason.clone().unwrap_or_default();
                    if let Err(err) = self
                        .cluster
                        .event(
                            &name,
                            quiesce_kube::events::Reason::LifecycleAbandoned,
                            &format!("node uncordoned and the terminate hook abandoned: {reason}"),
                        )
                        .await
                    {
                        tracing::warn!(%err, "could not record the event");
                    }
                    self.complete(action, HookResult::Abandon).await?;
                    record.phase = Phase::Abandoned;
                    self.save_after_completion(&name, &record).await;
                    return Ok(Disposition::Done(Done::Abandoned));
                }
                Phase::Continued | Phase::Abandoned => {
                    return Ok(Disposition::Done(Done::Duplicate));
                }
            }
        }
    }

    async fn timing(&self, action: &LifecycleAction) -> Step<HookTiming> {
        self.hooks.timing(action).await.map_err(|e| e.to_string())
    }

    /// A new action: work out its deadline and record it before anything changes.
    async fn start(
        &self,
        action: &LifecycleAction,
        node: &str,
        timing: HookTiming,
    ) -> Step<InFlight> {
        let snapshot = self
            .cluster
            .snapshot()
            .await
            .map_err(|e| format!("reading the cluster: {e}"))?;
        let needs = needs::of(&snapshot, node, self.settings.replacement_startup);
        let allowed = drain_deadline(needs, timing, self.settings.drain_margin);
        let deadline = Timestamp::now()
            .checked_add(SignedDuration::from_secs(allowed.as_secs() as i64))
            .map_err(|e| e.to_string())?;
        let mut record = InFlight::new(action, deadline.to_string());
        record.phase = Phase::Draining;
        tracing::info!(%node, deadline = %record.deadline, ?needs, "draining for the terminate hook");
        self.save(node, &record).await?;
        Ok(record)
    }

    async fn save(&self, node: &str, record: &InFlight) -> Step<()> {
        self.nodes
            .write_record(node, record)
            .await
            .map_err(|e| format!("recording the action on {node}: {e}"))
    }

    /// After completion the instance may already be going: a missing node is fine.
    async fn save_after_completion(&self, node: &str, record: &InFlight) {
        if let Err(err) = self.nodes.write_record(node, record).await {
            tracing::info!(%node, %err, "could not mark the record final (the node may be gone)");
        }
    }

    async fn drain_slice(
        &self,
        action: &LifecycleAction,
        node: &str,
        record: &InFlight,
        timing: HookTiming,
        slice_end: Option<Instant>,
    ) -> Step<SliceEnd> {
        let deadline = Instant::now() + remaining(&record.deadline)?;
        let stop = slice_end.map_or(deadline, |s| s.min(deadline));
        let now = Instant::now();
        if now >= deadline {
            return Ok(SliceEnd::GiveUp(format!(
                "the drain did not finish by its deadline {}",
                record.deadline
            )));
        }
        if now >= stop {
            return Ok(SliceEnd::Paused("no time left in this slice".into()));
        }
        let spec = DrainSpec {
            node: node.to_string(),
            options: self.settings.drain,
            timeout: stop - now,
            dry_run: false,
            uncordon_on_failure: false,
            cordon: self.settings.cordon.clone(),
            replacement_gate: self.settings.replacement_gate,
        };
        let report = self
            .heartbeating(action, timing, drain(&self.cluster, &spec, &|_, _| {}))
            .await
            .map_err(|e| format!("draining {node}: {e}"))?;
        Ok(match report.outcome {
            Outcome::Drained => {
                self.metrics.drain("drained", Some(&report));
                SliceEnd::Drained
            }
            Outcome::Blocked | Outcome::Planned => {
                self.metrics.drain("blocked", Some(&report));
                let blockers: Vec<String> = report.blockers.iter().map(|b| b.to_string()).collect();
                SliceEnd::GiveUp(format!("the drain is blocked: {}", blockers.join("; ")))
            }
            Outcome::Failed if Instant::now() >= deadline => {
                self.metrics.drain("failed", Some(&report));
                SliceEnd::GiveUp(format!(
                    "the drain did not finish by its deadline {}: {}",
                    record.deadline,
                    report.error.unwrap_or_default()
                ))
            }
            Outcome::Failed => {
                self.metrics.drain("paused", Some(&report));
                SliceEnd::Paused(format!(
                    "drain of {node} not finished yet: {}",
                    report.error.unwrap_or_default()
                ))
            }
        })
    }

    /// Runs `work`, heartbeating the hook at a third of its timeout (the first at once, which
    /// also restarts the clock after a drainer restart).
    async fn heartbeating<F: Future>(
        &self,
        action: &LifecycleAction,
        timing: HookTiming,
        work: F,
    ) -> F::Output {
        let beats = async {
            let mut tick =
                tokio::time::interval(timing.heartbeat_every().max(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.hooks.heartbeat(action).await {
                    Ok(()) => self.metrics.heartbeat("ok"),
                    Err(err) => {
                        tracing::warn!(%err, "heartbeat failed");
                        self.metrics.heartbeat("error");
                    }
                }
            }
        };
        tokio::select! {
            out = work => out,
            () = beats => unreachable!("the heartbeat loop never ends"),
        }
    }

    async fn complete(&self, action: &LifecycleAction, result: HookResult) -> Step<()> {
        match self.hooks.complete(action, result).await {
            Ok(Completion::Completed) => {
                tracing::info!(result = result.as_str(), "lifecycle action completed");
                self.metrics.completion(&result.as_str().to_lowercase());
                Ok(())
            }
            Ok(Completion::NotActive) => {
                tracing::info!(
                    result = result.as_str(),
                    "the lifecycle action was already completed"
                );
                self.metrics.completion("not-active");
                Ok(())
            }
            Err(err) => {
                self.metrics.completion("error");
                Err(err.to_string())
            }
        }
    }

    async fn unknown(&self, action: &LifecycleAction) -> Step<Disposition> {
        match self.settings.unknown_instance {
            UnknownInstance::Ignore => Ok(Disposition::Leave(format!(
                "instance {} is not a node of this cluster",
                action.instance_id
            ))),
            UnknownInstance::Continue => {
                tracing::info!("instance is not a node of this cluster; continuing its hook");
                self.complete(action, HookResult::Continue).await?;
                Ok(Disposition::Done(Done::UnknownContinued))
            }
        }
    }

    /// A launching instance: CONTINUE once its node is registered and Ready with its
    /// DaemonSet pods Ready; ABANDON (the instance is replaced) after the launch timeout.
    async fn launch(
        &self,
        action: &LifecycleAction,
        slice_end: Option<Instant>,
    ) -> Step<Disposition> {
        let timing = self.timing(action).await?;
        let first = *lock(&self.launches)
            .entry(action.token.clone())
            .or_insert_with(Instant::now);
        let give_up = first + self.settings.launch_timeout;
        let stop = slice_end.map_or(give_up, |s| s.min(give_up));
        let ready = self
            .heartbeating(action, timing, async {
                loop {
                    match self.launched(action).await {
                        Ok(true) => return true,
                        Ok(false) => {}
                        Err(err) => tracing::warn!(%err, "checking the new node"),
                    }
                    if Instant::now() >= stop {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_secs(1).min(stop - Instant::now())).await;
                }
            })
            .await;
        if ready {
            self.complete(action, HookResult::Continue).await?;
            lock(&self.launches).remove(&action.token);
            return Ok(Disposition::Done(Done::Continued));
        }
        if Instant::now() >= give_up {
            self.complete(action, HookResult::Abandon).await?;
            lock(&self.launches).remove(&action.token);
            return Ok(Disposition::Done(Done::Abandoned));
        }
        Ok(Disposition::Later(format!(
            "instance {} is not a Ready node yet",
            action.instance_id
        )))
    }

    async fn launched(&self, action: &LifecycleAction) -> Result<bool, kube::Error> {
        let Some(node) = self.nodes.find(&action.instance_id).await? else {
            return Ok(false);
        };
        if !nodes::is_ready(&node) {
            return Ok(false);
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", node.name_any())))
            .await?;
        Ok(on_node
            .items
            .iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
            })
            .all(quiesce_core::gate::is_ready))
    }
}

enum SliceEnd {
    Drained,
    GiveUp(String),
    Paused(String),
}

/// Time left until an RFC 3339 deadline (zero once passed).
fn remaining(deadline: &str) -> Step<Duration> {
    let deadline: Timestamp = deadline
        .parse()
        .map_err(|e| format!("record deadline {deadline:?} is not an RFC 3339 time: {e}"))?;
    let left = deadline.duration_since(Timestamp::now());
    Ok(Duration::try_from(left).unwrap_or(Duration::ZERO))
}
