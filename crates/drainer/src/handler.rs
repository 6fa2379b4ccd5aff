//! One lifecycle message, start to finish: find the node, claim the action on it (the record
//! is the lock, see [`crate::claim`]), drain while heartbeating the hook, complete with
//! CONTINUE or ABANDON, and say what to do with the message. The same code runs in the
//! long-lived drainer and in the Lambda, which gives it a time slice and resumes from the
//! record next time. The launch hook's flow is in [`crate::launch`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Client, ResourceExt};
use quiesce_aws::event::{self, EventError, LifecycleAction, Message, Transition};
use quiesce_aws::hook::{HookTiming, drain_deadline};
use quiesce_aws::hooks::{Completion, HookResult, InstanceCheck, LifecycleHooks};
use quiesce_aws::record::{InFlight, Phase};
use quiesce_kube::cluster::Cluster;
use quiesce_kube::engine::{DrainSpec, drain};
use quiesce_kube::events::Reason;
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::Outcome;
use tokio::time::Instant;
use tracing::Instrument;

use crate::claim::{Claims, CordonWith, Taken};
use crate::error::{Error, Result};
use crate::gate_hold::GateWait;
use crate::liveness::Liveness;
use crate::metrics::Metrics;
use crate::needs;
use crate::nodes::NodeIndex;
use crate::settings::{Settings, UnknownInstance};
use crate::targets::TargetsEnd;

/// How often [`Handler::settled`] asks Auto Scaling about an instance after a completion:
/// an instance still read as waiting after that is taken as going (its node stays cordoned,
/// the safe side).
const SETTLE_TRIES: u32 = 10;

/// The longest a claimed action's reads wait for the other received actions' cordons.
const CORDONS_FIRST: Duration = Duration::from_secs(10);

/// How a handled action ended, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The test notification.
    Test,
    /// Drained (or launched) and CONTINUE sent.
    Continued,
    /// Drain failed, ran out of time or was blocked; ABANDON sent, the node uncordoned if its
    /// instance stays.
    Abandoned,
    /// The hook was already completed for this token: a duplicate message.
    Duplicate,
    /// Not a node of ours and the policy is `continue`.
    UnknownContinued,
    /// The hook was no longer active (it timed out, or was completed elsewhere): the work
    /// stopped, and the node was uncordoned only if its instance stays.
    Expired,
}

/// What the queue should do with the message.
#[derive(Debug)]
pub enum Disposition {
    /// The hook is completed (or there was nothing to do): delete the message.
    Done(Done),
    /// Work remains (the slice ended, a transient error, another actor holds the node): keep
    /// the message; it comes back and the record on the node resumes the action.
    Later(String),
    /// Not ours: leave it for the drainer it belongs to.
    Leave(String),
    /// Can never be handled; the bad-message policy decides.
    Invalid(EventError),
}

/// The message handler. One per process; cheap to share behind an `Arc`.
pub struct Handler<H> {
    pub(crate) cluster: KubeCluster,
    pub(crate) client: Client,
    pub(crate) nodes: NodeIndex,
    pub(crate) hooks: H,
    pub(crate) settings: Settings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) claims: Claims,
    liveness: Arc<Liveness>,
    drains: tokio::sync::Semaphore,
    active: Mutex<HashSet<String>>,
    /// Woken whenever a token leaves `active`.
    released: Arc<tokio::sync::Notify>,
    pub(crate) launches: Mutex<HashMap<String, Instant>>,
    /// Terminate actions received and not yet claimed (their nodes not yet cordoned): the
    /// reads of claimed actions wait for none to be left, so that the cordons have the rate
    /// limit to themselves (see [`Handler::cordons_first`]).
    unclaimed: tokio::sync::watch::Sender<usize>,
    pub(crate) load_balancers: Option<Arc<dyn quiesce_aws::elbv2::LoadBalancers>>,
}

/// Counts one terminate action as unclaimed until [`Unclaimed::claimed`] or its drop.
struct Unclaimed<'a> {
    count: &'a tokio::sync::watch::Sender<usize>,
    open: std::sync::atomic::AtomicBool,
}

impl<'a> Unclaimed<'a> {
    fn new(count: &'a tokio::sync::watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Unclaimed {
            count,
            open: true.into(),
        }
    }

    /// The action's claim is written (or it ended without one): no longer waited for.
    fn claimed(&self) {
        if self.open.swap(false, Ordering::Relaxed) {
            self.count.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        self.claimed();
    }
}

/// Removes a token from the active set when its work ends, however it ends, and wakes the
/// duplicates waiting for it.
struct Active<'a>(&'a Mutex<HashSet<String>>, String, &'a tokio::sync::Notify);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
        self.2.notify_waiters();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name no other handler has: host, process and a per-process count.
fn unique_identity() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "drainer".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl<H: LifecycleHooks> Handler<H> {
    /// A handler talking to `client` and `hooks`.
    pub fn new(
        client: Client,
        nodes: NodeIndex,
        hooks: H,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let identity = settings.identity.clone().unwrap_or_else(unique_identity);
        Handler {
            drains: tokio::sync::Semaphore::new(settings.max_drains.max(1)),
            cluster: KubeCluster::new(client.clone()),
            claims: Claims::new(client.clone(), nodes.clone(), identity, settings.claim_hold),
            client,
            nodes,
            hooks,
            settings,
            metrics,
            liveness: Arc::default(),
            active: Mutex::default(),
            released: Arc::default(),
            launches: Mutex::default(),
            unclaimed: tokio::sync::watch::Sender::new(0),
            load_balancers: None,
        }
    }

    /// The metrics this handler updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The loops serving this handler, for `/healthz`.
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Whether the node index is ready for lookups.
    pub fn ready(&self) -> bool {
        self.nodes.ready()
    }

    /// This handler's name in the records it claims.
    pub fn identity(&self) -> &str {
        self.claims.identity()
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
        // A duplicate of an action this handler is working on waits for that work, its
        // message kept hidden by the caller meanwhile, and then finds the action final: given
        // back at once instead, it would come back every retry and burn its receives into
        // the dead-letter queue while the drain goes on.
        loop {
            let released = self.released.notified();
            if lock(&self.active).insert(action.token.clone()) {
                break;
            }
            let waited = match slice_end {
                Some(end) => tokio::time::timeout_at(end, released).await.is_ok(),
                None => {
                    released.await;
                    true
                }
            };
            if !waited {
                return Disposition::Later(format!(
                    "action {} for {} is already being worked on",
                    action.token, action.instance_id
                ));
            }
        }
        let _active = Active(&self.active, action.token.clone(), &self.released);
        // `instrument`, not `enter`: a span entered across an await leaks onto other tasks.
        let span = tracing::info_span!("lifecycle", instance = %action.instance_id, group = %action.group, transition = ?action.transition);
        let result = async {
            match action.transition {
                Transition::Terminating => self.terminate_retrying(&action, slice_end).await,
                Transition::Launching => self.launch(&action, slice_end).await,
            }
        }
        .instrument(span)
        .await;
        result.unwrap_or_else(|err| {
            tracing::info!(%err, transient = err.is_transient(), "stopped short");
            Disposition::Later(err.to_string())
        })
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

    /// The terminate flow, heartbeated from receipt, with every transient failure retried in
    /// place (backing off up to [`Settings::max_retry_pause`]) until it succeeds, fails for
    /// good, or the slice ends: the message stays hidden meanwhile, so an API server outage
    /// does not burn its receives towards the dead-letter queue.
    async fn terminate_retrying(
        &self,
        action: &LifecycleAction,
        slice_end: Option<Instant>,
    ) -> Result<Disposition> {
        let unclaimed = Unclaimed::new(&self.unclaimed);
        let timing = self
            .retrying(slice_end, || async { Ok(self.hooks.timing(action).await?) })
            .await?;
        let result = self
            .heartbeating(
                action,
                timing,
                // Boxed: the drain's future is large enough to overflow a worker thread's
                // stack when held inline through the retry and heartbeat layers.
                self.retrying(slice_end, || {
                    Box::pin(self.terminate(action, timing, slice_end, &unclaimed))
                }),
            )
            .await;
        match result {
            Err(Error::HookGone { .. }) | Ok(Err(Error::HookGone { .. })) => {
                self.retrying(slice_end, || Box::pin(self.after_hook_gone(action)))
                    .await
            }
            Err(err) => Err(err),
            Ok(done) => done,
        }
    }

    /// The heartbeat said the action is gone: look at the instance and finish the record.
    async fn after_hook_gone(&self, action: &LifecycleAction) -> Result<Disposition> {
        let check = self.hooks.check(action).await?;
        match self.nodes.find(&action.instance_id).await? {
            Some(node) => self.expired(action, &node, check).await,
            None => {
                self.metrics.drain("expired", None);
                Ok(Disposition::Done(Done::Expired))
            }
        }
    }

    /// The hook is over without us: stop, and record why. An action of ours in flight on the
    /// node is finished: the node is uncordoned only if the instance stays (pods must not be
    /// invited onto a dying node) and only if the drainer cordoned it.
    async fn expired(
        &self,
        action: &LifecycleAction,
        node: &k8s_openapi::api::core::v1::Node,
        check: InstanceCheck,
    ) -> Result<Disposition> {
        let name = node.name_any();
        self.metrics.drain("expired", None);
        let in_flight =
            crate::nodes::record_of(node).is_some_and(|r| r.is_same(action) && !r.phase.is_final());
        if !in_flight {
            tracing::info!(node = %name, ?check, "the instance is not waiting for this hook: not acting on a stale or duplicate message");
            return Ok(Disposition::Done(Done::Expired));
        }
        let mut record = match self.claims.take(node, action, CordonWith::No).await?.0 {
            Taken::Final(_) => return Ok(Disposition::Done(Done::Duplicate)),
            Taken::Resumed(record) | Taken::Fresh(record) => record,
        };
        let restore = check.instance_stays() && !record.found_cordoned;
        if restore {
            self.cluster
                .uncordon(&name, &self.settings.cordon)
                .await
                .map_err(|source| Error::Drain {
                    node: name.clone(),
                    source,
                })?;
        }
        let reason = format!(
            "the lifecycle hook is no longer active (instance: {check:?}); the node {}",
            if restore {
                "is uncordoned: the instance stays"
            } else if record.found_cordoned {
                "stays cordoned as it was found"
            } else {
                "stays cordoned: the instance is going"
            }
        );
        tracing::warn!(node = %name, %reason, "stopped");
        if let Err(err) = self
            .cluster
            .event(&name, Reason::LifecycleExpired, &reason)
            .await
        {
            tracing::warn!(%err, "could not record the event");
        }
        record.phase = Phase::Abandoned;
        record.reason = Some(reason);
        self.finish(&name, &mut record).await;
        Ok(Disposition::Done(Done::Expired))
    }

    /// Runs `step` until it succeeds or fails for good; a transient failure is tried again
    /// after a pause doubling from 1 s, unless the pause would end past `slice_end`.
    async fn retrying<T, F, Fut>(&self, slice_end: Option<Instant>, mut step: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pause = Duration::from_secs(1);
        let mut tries = 0u32;
        loop {
            match step().await {
                Err(err) if err.is_transient() => {
                    tries += 1;
                    if slice_end.is_some_and(|end| Instant::now() + pause >= end) {
                        return Err(err);
                    }
                    tracing::warn!(%err, tries, ?pause, "transient failure; retrying in place");
                    self.metrics.retry();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.settings.max_retry_pause);
                }
                other => return other,
            }
        }
    }

    async fn terminate(
        &self,
        action: &LifecycleAction,
        timing: HookTiming,
        slice_end: Option<Instant>,
        unclaimed: &Unclaimed<'_>,
    ) -> Result<Disposition> {
        let node = self.nodes.find(&action.instance_id).await?;
        let Some(node) = node else {
            // A late or duplicate message of an action that is over (its instance gone with
            // its node) is no drainer's to keep: left, it would come back until the
            // dead-letter queue took it.
            let check = self.hooks.check(action).await?;
            if check != InstanceCheck::Waiting {
                tracing::info!(
                    ?check,
                    "no node and the instance is not waiting: a stale message"
                );
                self.metrics.drain("expired", None);
                return Ok(Disposition::Done(Done::Expired));
            }
            return self.unknown(action).await;
        };
        let name = node.name_any();
        let check = self.hooks.check(action).await?;
        if check != InstanceCheck::Waiting {
            return self.expired(action, &node, check).await;
        }
        // The claim cordons too: the first request for a node that is going keeps new pods
        // off it, however many actions arrived together.
        let (taken, cordoned) = self
            .claims
            .take(&node, action, CordonWith::Fence(&self.settings.cordon))
            .await?;
        unclaimed.claimed();
        let mut record = match taken {
            Taken::Final(record) => {
                tracing::info!(node = %name, phase = ?record.phase, "duplicate message: the hook was completed before");
                return Ok(Disposition::Done(Done::Duplicate));
            }
            Taken::Resumed(record) => {
                tracing::info!(node = %name, phase = ?record.phase, "resuming the action recorded on the node");
                record
            }
            Taken::Fresh(record) => record,
        };
        let result = self
            .run_phases(action, &name, &mut record, timing, slice_end, cordoned)
            .await;
        if !matches!(
            result,
            Ok(Disposition::Done(_)) | Err(Error::LostClaim { .. })
        ) {
            // Whoever gets the message next need not wait for the claim to lapse.
            if let Err(err) = self.claims.release(&name, &mut record).await {
                tracing::info!(node = %name, %err, "could not release the claim; it lapses");
            }
        }
        result
    }

    /// Runs the action from the phase its record is in until it is final or must pause.
    /// `cordoned`: the claim cordoned the node, on a copy whose roll gate was open.
    async fn run_phases(
        &self,
        action: &LifecycleAction,
        name: &str,
        record: &mut InFlight,
        timing: HookTiming,
        slice_end: Option<Instant>,
        mut cordoned: bool,
    ) -> Result<Disposition> {
        loop {
            match record.phase {
                Phase::Received => {
                    // `quiesce roll`'s SLO gate: hold (heartbeating) before anything changes.
                    let since = if cordoned {
                        None
                    } else {
                        let wait = crate::gate_hold::wait(&self.nodes, name, slice_end);
                        match self.renewing(name, record, wait).await?? {
                            GateWait::Open => None,
                            GateWait::Reopened(at) => Some(at),
                            GateWait::SliceEnded(why) => return Ok(Disposition::Later(why)),
                        }
                    };
                    self.cordons_first().await;
                    record.deadline = self.deadline(action, name, timing, since).await?;
                    record.phase = Phase::Draining;
                    tracing::info!(node = %name, deadline = %record.deadline, "draining for the terminate hook");
                    self.claims.write(name, record).await?;
                }
                Phase::Draining if !cordoned => {
                    // A resumed action: cordoned before waiting for a drain slot.
                    self.cluster
                        .cordon(name, &self.settings.cordon)
                        .await
                        .map_err(|source| Error::Drain {
                            node: name.to_string(),
                            source,
                        })?;
                    cordoned = true;
                }
                Phase::Draining => {
                    match self.drain_slice(name, record, slice_end).await? {
                        SliceEnd::Drained => record.phase = Phase::Completing,
                        SliceEnd::GiveUp(reason) => {
                            record.phase = Phase::Abandoning;
                            record.reason = Some(reason);
                        }
                        SliceEnd::Paused(why) => return Ok(Disposition::Later(why)),
                    }
                    self.claims.write(name, record).await?;
                }
                Phase::Completing => {
                    match self
                        .targets_deregistered(action, name, record, slice_end)
                        .await?
                    {
                        TargetsEnd::Done => {}
                        TargetsEnd::Paused(why) => return Ok(Disposition::Later(why)),
                        TargetsEnd::GiveUp(reason) => {
                            record.phase = Phase::Abandoning;
                            record.reason = Some(reason);
                            self.claims.write(name, record).await?;
                            continue;
                        }
                    }
                    self.complete(action, HookResult::Continue).await?;
                    record.phase = Phase::Continued;
                    self.finish(name, record).await;
                    return Ok(Disposition::Done(Done::Continued));
                }
                Phase::Abandoning => {
                    self.abandon(action, name, record).await?;
                    return Ok(Disposition::Done(Done::Abandoned));
                }
                Phase::Continued | Phase::Abandoned => {
                    return Ok(Disposition::Done(Done::Duplicate));
                }
            }
        }
    }

    /// Says why on the node (an Event, before anything else, so that a drainer stopped
    /// halfway leaves it said), sends ABANDON, then gives the node back only if its instance
    /// stays (the group's `TerminateHookAbandon: retain`, seen as `Terminating:Retained`):
    /// uncordoned, or only unfenced when an operator had cordoned it before the hook. An
    /// instance that is going leaves its node cordoned and fenced, or pods would be invited
    /// onto a dying node; the record says which. ABANDON goes before the uncordon because only
    /// Auto Scaling's answer afterwards tells whether the instance stays; after a restart
    /// here, the record (`abandoning`) brings the action back and the repeated ABANDON is
    /// answered "not active".
    async fn abandon(
        &self,
        action: &LifecycleAction,
        name: &str,
        record: &mut InFlight,
    ) -> Result<()> {
        let reason = record.reason.clone().unwrap_or_default();
        let said = format!(
            "terminate hook abandoned; the node is uncordoned only if its instance stays: {reason}"
        );
        if let Err(err) = self
            .cluster
            .event(name, Reason::LifecycleAbandoned, &said)
            .await
        {
            tracing::warn!(%err, "could not record the event");
        }
        self.complete(action, HookResult::Abandon).await?;
        let check = self.settled(action).await?;
        let drained = |source| Error::Drain {
            node: name.to_string(),
            source,
        };
        let outcome = if !check.instance_stays() {
            format!("the node stays cordoned: its instance is going ({check:?})")
        } else if record.found_cordoned {
            self.cluster
                .unfence(name, &self.settings.cordon)
                .await
                .map_err(drained)?;
            "the instance stays; the node stays cordoned as it was found".to_string()
        } else {
            self.cluster
                .uncordon(name, &self.settings.cordon)
                .await
                .map_err(drained)?;
            "the instance stays; the node is uncordoned".to_string()
        };
        let message = format!("terminate hook abandoned; {outcome}: {reason}");
        tracing::warn!(node = %name, %message, "abandoned");
        record.phase = Phase::Abandoned;
        record.reason = Some(message);
        self.finish(name, record).await;
        Ok(())
    }

    /// Where the instance stands once Auto Scaling has acted on a completion: asked again
    /// (a second apart, up to [`SETTLE_TRIES`] times) while it still reads as waiting.
    async fn settled(&self, action: &LifecycleAction) -> Result<InstanceCheck> {
        let mut check = self.hooks.check(action).await?;
        for _ in 1..SETTLE_TRIES {
            if check != InstanceCheck::Waiting {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            check = self.hooks.check(action).await?;
        }
        Ok(check)
    }

    /// Waits (up to [`CORDONS_FIRST`]) until every terminate action received is claimed, its
    /// node cordoned: with hundreds received at once, the reads of those already cordoned
    /// would otherwise take rate-limit permits the other cordons need. The claim's write goes
    /// first through the client's urgent lane too, but an action still on its way to it
    /// (asking Auto Scaling about its instance) is not in any lane yet.
    async fn cordons_first(&self) {
        let mut unclaimed = self.unclaimed.subscribe();
        let none_left = unclaimed.wait_for(|n| *n == 0);
        if tokio::time::timeout(CORDONS_FIRST, none_left)
            .await
            .is_err()
        {
            tracing::info!("other actions are still unclaimed; reading for this one anyway");
        }
    }

    /// The drain's deadline from the node's workload, as an RFC 3339 time.
    /// It counts from when the instance entered the wait state (the event's time), not from
    /// when the message was read: after an outage the hook has less time left. A hold by the
    /// roll gate is not the drain's time: then it counts from `since`, when the gate opened.
    async fn deadline(
        &self,
        action: &LifecycleAction,
        node: &str,
        timing: HookTiming,
        since: Option<Timestamp>,
    ) -> Result<String> {
        let snapshot = self
            .cluster
            .on_node(node)
            .await
            .map_err(|source| Error::Drain {
                node: node.to_string(),
                source,
            })?;
        let needs = needs::of(&snapshot, node, self.settings.replacement_startup);
        let allowed = drain_deadline(needs, timing, self.settings.drain_margin)
            + self.targets_budget(action).await?;
        tracing::info!(%node, ?needs, "deadline from the workload");
        let allowed = SignedDuration::try_from(allowed).unwrap_or(SignedDuration::MAX);
        let now = Timestamp::now();
        let since = since.unwrap_or_else(|| {
            action
                .time
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .filter(|t| *t <= now)
                .unwrap_or(now)
        });
        Ok(since.checked_add(allowed).unwrap_or(now).to_string())
    }

    /// After completion the instance may already be going: failing to mark the record final
    /// is logged, not an error (the hook answers a repeat with "not active").
    async fn finish(&self, node: &str, record: &mut InFlight) {
        if let Err(err) = self.claims.release(node, record).await {
            tracing::info!(%node, %err, "could not mark the record final");
        }
    }

    async fn drain_slice(
        &self,
        node: &str,
        record: &InFlight,
        slice_end: Option<Instant>,
    ) -> Result<SliceEnd> {
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
            .renewing(node, record, async {
                let _slot = self.drains.acquire().await;
                Box::pin(drain(&self.cluster, &spec, &|_, _| {})).await
            })
            .await?
            .map_err(|source| Error::Drain {
                node: node.to_string(),
                source,
            })?;
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
            Outcome::Failed if slice_end.is_some_and(|end| Instant::now() >= end) => {
                self.metrics.drain("paused", Some(&report));
                SliceEnd::Paused(format!(
                    "drain of {node} not finished in this slice: {}",
                    report.error.unwrap_or_default()
                ))
            }
            Outcome::Failed => {
                self.metrics.drain("paused", Some(&report));
                return Err(Error::Unfinished {
                    node: node.to_string(),
                    why: report.error.unwrap_or_default(),
                });
            }
        })
    }

    /// Runs `work` while heartbeating the hook at a third of its timeout (the first at once,
    /// which also restarts the clock after a drainer restart).
    pub(crate) async fn heartbeating<F: Future>(
        &self,
        action: &LifecycleAction,
        timing: HookTiming,
        work: F,
    ) -> Result<F::Output> {
        let beats = async {
            let mut tick =
                tokio::time::interval(timing.heartbeat_every().max(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.hooks.heartbeat(action).await {
                    Ok(()) => self.metrics.heartbeat("ok"),
                    Err(err) if err.is_not_active() => {
                        self.metrics.heartbeat("not-active");
                        return Error::HookGone {
                            instance: action.instance_id.clone(),
                        };
                    }
                    Err(err) => {
                        tracing::warn!(%err, "heartbeat failed");
                        self.metrics.heartbeat("error");
                    }
                }
            }
        };
        tokio::select! {
            out = work => Ok(out),
            err = beats => Err(err),
        }
    }

    /// Runs `work` while renewing our claim on `node`'s action. The work is dropped as soon
    /// as the claim is lost ([`Error::LostClaim`]), or could not be renewed for the whole
    /// hold time (the renew deadline: another actor may take over from then on; a transient
    /// error, so the action is tried again, claim first).
    pub(crate) async fn renewing<F: Future>(
        &self,
        node: &str,
        record: &InFlight,
        work: F,
    ) -> Result<F::Output> {
        let renewals = async {
            let mut record = record.clone();
            let mut renewed = Instant::now();
            let mut tick =
                tokio::time::interval(self.claims.renew_every().max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match self.claims.write(node, &mut record).await {
                    Ok(()) => renewed = Instant::now(),
                    Err(err) if err.is_transient() => {
                        tracing::warn!(%err, "renewing the claim failed");
                        if renewed.elapsed() >= self.claims.hold() {
                            return err;
                        }
                    }
                    Err(err) => return err,
                }
            }
        };
        tokio::select! {
            out = work => Ok(out),
            err = renewals => Err(err),
        }
    }

    pub(crate) async fn complete(
        &self,
        action: &LifecycleAction,
        result: HookResult,
    ) -> Result<()> {
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
                Err(err.into())
            }
        }
    }

    async fn unknown(&self, action: &LifecycleAction) -> Result<Disposition> {
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
}

enum SliceEnd {
    Drained,
    GiveUp(String),
    Paused(String),
}

/// Time left until an RFC 3339 deadline (zero once passed).
pub(crate) fn remaining(deadline: &str) -> Result<Duration> {
    let at: Timestamp =
        deadline
            .parse()
            .map_err(|e: k8s_openapi::jiff::Error| Error::Deadline {
                deadline: deadline.to_string(),
                reason: e.to_string(),
            })?;
    let left = at.duration_since(Timestamp::now());
    Ok(Duration::try_from(left).unwrap_or(Duration::ZERO))
}
