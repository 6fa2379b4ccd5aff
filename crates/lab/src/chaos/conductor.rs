//! Plays the schedule against a roll: two drainer replicas under the Lease, API faults armed
//! for the drainers' requests as each terminate action starts, the drainer stopped at the
//! phase the schedule names (seen from the outside: its first write on the node, its first
//! accepted eviction there, its CompleteLifecycleAction of CONTINUE or of ABANDON, told
//! apart by the node's record as the API server holds it), a standby taking the Lease over,
//! a third drainer racing the leader for a duplicated message. Then counts what hit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use quiesce_drainer::lease::LeaseTiming;
use quiesce_sandbox::Sandbox;
use quiesce_sandbox::api::resources::lookup;
use quiesce_sandbox::api::{AuditLog, Audited, FaultInjector, Store};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::aws::{AwsChaos, HeldTargets, Stalled};
use super::fleet::{Incarnation, Spec};
use super::record::{evicted_pod, fault_name, record_phase, succeeded, written_node};
use super::schedule::{ActionPlan, Phase, Schedule};
use crate::asg::{Call, Fault, Group, GroupEvent};
use crate::timeline::Timeline;

/// The prefix of every drainer's audit caller: API faults are aimed at these only.
pub const PREFIX: &str = "drainer-";

/// One stop of a drainer.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// The phase its action was in.
    pub phase: Phase,
    /// The incarnation stopped (`identity#n`).
    pub drainer: String,
    /// The node it was acting on.
    pub node: String,
    /// The phase the node's lifecycle record named as it was stopped (`received`,
    /// `draining`, `completing`, `abandoning`), read from the API server.
    pub record: Option<String>,
    /// It stayed down and the standby took the Lease over.
    pub handover: bool,
}

/// What a chaos run did, counted where it hit.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Faults that hit a drainer's request, by kind.
    pub faults: Faults,
    /// The drainers' stops.
    pub drainer: DrainerChaos,
    /// On the Lambda face: the invocations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda: Option<super::lambda::LambdaReport>,
}

/// `faults` in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Faults {
    /// By kind.
    pub injected: BTreeMap<String, u64>,
    /// All kinds together.
    pub total: u64,
}

/// `drainer` in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct DrainerChaos {
    /// Each stop, in order.
    pub restarts: Vec<Restart>,
    /// Stops by phase.
    pub by_phase: BTreeMap<&'static str, u64>,
}

/// A running conductor.
pub struct Conductor {
    task: JoinHandle<Vec<Restart>>,
    stop: watch::Sender<bool>,
    schedule: Schedule,
}

/// The drainer identities, in the order they start.
const IDENTITIES: [&str; 3] = ["drainer-a", "drainer-b", "drainer-c"];

struct Play {
    sandbox_store: Arc<Store>,
    audit: AuditLog,
    faults: FaultInjector,
    group: Group,
    aws: Arc<AwsChaos>,
    timeline: Timeline,
    specs: HashMap<&'static str, Spec>,
    live: HashMap<&'static str, (u32, Incarnation)>,
    restarts: Vec<Restart>,
    /// The action under a scheduled stop: token, node, phase, handover.
    target: Option<(String, String, Phase, bool)>,
    /// A leader stopped for a handover, and when it comes back.
    returning: Vec<(&'static str, tokio::time::Instant)>,
}

impl Conductor {
    /// Starts the drainers and the schedule against `group`.
    pub fn start(
        sandbox: &Sandbox,
        group: &Group,
        spec: &Spec,
        schedule: Schedule,
        timeline: Timeline,
    ) -> anyhow::Result<Conductor> {
        let (kills, killed) = mpsc::unbounded_channel();
        let aws = Arc::new(AwsChaos::new(&schedule, kills, sandbox.store()));
        group.interfere(aws.clone());
        let held: Arc<dyn quiesce_aws::elbv2::LoadBalancers> =
            Arc::new(HeldTargets::new(group.clone(), aws.clone()));
        let lease = LeaseTiming::for_duration(Duration::from_secs(3))?;
        let mut specs = HashMap::new();
        for (i, id) in IDENTITIES.into_iter().enumerate() {
            specs.insert(
                id,
                Spec {
                    identity: id.to_string(),
                    // The third drainer reads the queue without the Lease, as a Lambda would.
                    lease: (i < 2).then_some(lease),
                    load_balancers: Some(held.clone()),
                    ..spec.clone()
                },
            );
        }
        let mut play = Play {
            sandbox_store: sandbox.store(),
            audit: sandbox.audit_log(),
            faults: sandbox.faults(),
            group: group.clone(),
            aws,
            timeline,
            specs,
            live: HashMap::new(),
            restarts: Vec::new(),
            target: None,
            returning: Vec::new(),
        };
        for id in &IDENTITIES[..2] {
            play.spawn(id, 1)?;
        }
        let (stop, stopped) = watch::channel(false);
        let plans = schedule.actions.clone();
        let task = tokio::spawn(play.run(plans, stopped, killed));
        Ok(Conductor {
            task,
            stop,
            schedule,
        })
    }

    /// Stops the drainers (as on SIGTERM) and counts what hit, from `audit` and the group's
    /// history.
    pub async fn finish(self, sandbox: &Sandbox, group: &Group) -> ChaosReport {
        self.stop.send_replace(true);
        let restarts = self.task.await.unwrap_or_default();
        count(&self.schedule, restarts, &sandbox.audited(), group)
    }
}

impl Play {
    fn spawn(&mut self, id: &'static str, n: u32) -> anyhow::Result<()> {
        let incarnation = Incarnation::start(&self.specs[id], n, &self.group)?;
        self.live.insert(id, (n, incarnation));
        Ok(())
    }

    async fn run(
        mut self,
        plans: Vec<ActionPlan>,
        mut stop: watch::Receiver<bool>,
        mut killed: mpsc::UnboundedReceiver<Stalled>,
    ) -> Vec<Restart> {
        let mut seen_history = 0;
        let mut seen_audit = 0;
        let mut terminates = 0;
        loop {
            if *stop.borrow() {
                break;
            }
            let history = self.group.history();
            for r in &history[seen_history..] {
                if let GroupEvent::Fault {
                    call,
                    fault,
                    caller,
                    ..
                } = &r.event
                {
                    self.timeline.record(
                        "fault",
                        "aws",
                        json!({"kind": format!("aws-{}-{}", call_name(*call), aws_fault_name(*fault)), "caller": caller}),
                    );
                }
                if let GroupEvent::ActionStarted {
                    token,
                    node,
                    launching: false,
                    ..
                } = &r.event
                {
                    if let Some(plan) = plans.get(terminates) {
                        self.begin(plan, token, node);
                    }
                    terminates += 1;
                }
            }
            seen_history = history.len();
            let requests: Vec<(Audited, Option<String>)> = self
                .audit
                .since(seen_audit)
                .into_iter()
                .map(|a| {
                    let node = evicted_pod(&a)
                        .and_then(|(ns, pod)| pod_node(&self.sandbox_store, ns, pod));
                    (a, node)
                })
                .collect();
            seen_audit += requests.len();
            for (a, _) in &requests {
                if let Some(fault) = a.fault
                    && a.caller.starts_with(PREFIX)
                {
                    self.timeline.record(
                        "fault",
                        "api",
                        json!({"kind": fault_name(fault), "caller": a.caller, "request": format!("{} {}", a.method, a.path)}),
                    );
                }
            }
            self.watch_requests(&requests);
            while let Ok(stalled) = killed.try_recv() {
                // The record names the phase: a completion stalled on a node whose record
                // says `abandoning` is the ABANDON's.
                let phase = match stalled.record.as_deref() {
                    Some("abandoning") => Phase::Abandoning,
                    _ => Phase::Completing,
                };
                self.stop_at(&stalled.caller, phase, stalled.record);
            }
            let now = tokio::time::Instant::now();
            let back: Vec<&'static str> = self
                .returning
                .iter()
                .filter(|(_, at)| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            self.returning.retain(|(_, at)| *at > now);
            for id in back {
                let n = self.next_incarnation(id);
                if let Err(err) = self.spawn(id, n) {
                    tracing::error!(%err, "could not restart a drainer");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = stop.changed() => {}
            }
        }
        for (_, (_, incarnation)) in self.live.drain() {
            incarnation.shutdown().await;
        }
        self.restarts
    }

    fn next_incarnation(&self, id: &str) -> u32 {
        self.restarts
            .iter()
            .filter(|r| r.drainer.starts_with(&format!("{id}#")))
            .count() as u32
            + 1
    }

    /// A terminate action started: arm its faults and its stop.
    fn begin(&mut self, plan: &ActionPlan, token: &str, node: &str) {
        arm(&self.faults, plan);
        if let Some(phase) = plan.restart {
            self.target = Some((token.to_string(), node.to_string(), phase, plan.handover));
            if matches!(phase, Phase::Completing | Phase::Abandoning) {
                self.aws.stall_completion(token, node);
            }
        }
        if plan.race
            && !self.live.contains_key("drainer-c")
            && let Err(err) = self.spawn("drainer-c", 1)
        {
            tracing::error!(%err, "could not start the racing drainer");
        }
    }

    /// Stops on the drainer's first write on the node (Recording) or its first accepted
    /// eviction there (Draining), as the target says.
    fn watch_requests(&mut self, requests: &[(Audited, Option<String>)]) {
        for (a, pod_node) in requests {
            let Some((_, node, phase, _)) = self.target.clone() else {
                return;
            };
            if !a.caller.starts_with(PREFIX) || !succeeded(a) {
                continue;
            }
            let hit = match phase {
                Phase::Recording => written_node(a) == Some(node.as_str()),
                Phase::Draining => {
                    evicted_pod(a).is_some() && pod_node.as_deref() == Some(node.as_str())
                }
                Phase::Completing | Phase::Abandoning => false,
            };
            if hit {
                let record = record_phase(&self.sandbox_store, &node);
                self.stop_at(&a.caller, phase, record);
            }
        }
    }

    fn stop_at(&mut self, caller: &str, phase: Phase, record: Option<String>) {
        let Some((_, node, _, handover)) = self.target.take() else {
            return;
        };
        let Some(id) = IDENTITIES
            .into_iter()
            .find(|id| caller.starts_with(&format!("{id}#")))
        else {
            return;
        };
        let Some((n, incarnation)) = self.live.remove(id) else {
            return;
        };
        if incarnation.caller != caller {
            self.live.insert(id, (n, incarnation));
            return;
        }
        incarnation.kill();
        self.timeline.record(
            "drainer-stopped",
            &node,
            json!({"drainer": caller, "phase": phase.name(), "record": record, "handover": handover}),
        );
        self.restarts.push(Restart {
            phase,
            drainer: caller.to_string(),
            node,
            record,
            handover,
        });
        if handover {
            // Down for longer than the Lease lives: the standby takes it over.
            self.returning
                .push((id, tokio::time::Instant::now() + Duration::from_secs(5)));
        } else if let Err(err) = self.spawn(id, n + 1) {
            tracing::error!(%err, "could not restart a drainer");
        }
    }
}

/// Arms `plan`'s API faults for the drainers' requests: done as its action starts.
pub(super) fn arm(faults: &FaultInjector, plan: &ActionPlan) {
    for f in &plan.api {
        faults.inject_for_caller(PREFIX, Some(f.method), Some(f.plural), f.count, f.kind);
    }
}

fn pod_node(store: &Store, ns: &str, name: &str) -> Option<String> {
    let pods = lookup("", "v1", "pods")?;
    store
        .get(pods, ns, name)
        .ok()
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
}

fn call_name(call: Call) -> &'static str {
    match call {
        Call::ReceiveMessage => "receive",
        Call::DeleteMessage => "delete",
        Call::ChangeMessageVisibility => "change-visibility",
        Call::RecordLifecycleActionHeartbeat => "heartbeat",
        Call::CompleteLifecycleAction => "complete",
    }
}

fn aws_fault_name(fault: Fault) -> &'static str {
    match fault {
        Fault::Error => "error",
        Fault::Throttle => "throttle",
        Fault::AnswerLost => "answer-lost",
        Fault::Stall => "stall",
    }
}

/// Counts what hit: API faults from the audit log (drainers' requests only), AWS faults and
/// deliveries from the group's history, stops from the conductor's own log.
pub(super) fn count(
    schedule: &Schedule,
    restarts: Vec<Restart>,
    audit: &[Audited],
    group: &Group,
) -> ChaosReport {
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |kind: String| *injected.entry(kind).or_default() += 1;
    for a in audit {
        if let Some(fault) = a.fault
            && a.caller.starts_with(PREFIX)
        {
            add(fault_name(fault).to_string());
        }
    }
    let history = group.history();
    let mut sent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut received: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut receivers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut terminates = Vec::new();
    for r in &history {
        match &r.event {
            GroupEvent::Fault {
                call,
                fault,
                caller,
                ..
            } if caller.starts_with(PREFIX) => {
                add(format!(
                    "aws-{}-{}",
                    call_name(*call),
                    aws_fault_name(*fault)
                ));
            }
            GroupEvent::ActionStarted {
                token,
                launching: false,
                ..
            } => terminates.push(token.as_str()),
            GroupEvent::Sent { message, token } => {
                sent.entry(token).or_default().push(message);
            }
            GroupEvent::Received {
                message,
                token,
                caller,
            } if caller.starts_with(PREFIX) => {
                received.entry(token).or_default().insert(message);
                receivers
                    .entry(token)
                    .or_default()
                    .insert(caller.split('#').next().unwrap_or_default());
            }
            _ => {}
        }
    }
    for (token, plan) in terminates.iter().zip(&schedule.actions) {
        let got = received.get(token).cloned().unwrap_or_default();
        let messages = sent.get(token).cloned().unwrap_or_default();
        if plan.duplicate && got.len() >= 2 {
            add("duplicate-delivery".into());
        }
        if plan.late.is_some() && messages.first().is_some_and(|m| got.contains(m)) {
            add("late-delivery".into());
        }
        if plan.race
            && receivers
                .get(token)
                .is_some_and(|r| r.contains("drainer-c") && r.len() >= 2)
        {
            add("race".into());
        }
    }
    for r in &restarts {
        add(format!("restart-{}", r.phase.name()));
        if r.handover {
            add("lease-handover".into());
        }
    }
    let mut by_phase = BTreeMap::new();
    for r in &restarts {
        *by_phase.entry(r.phase.name()).or_default() += 1;
    }
    let total = injected.values().sum();
    ChaosReport {
        seed: schedule.seed,
        faults: Faults { injected, total },
        drainer: DrainerChaos { restarts, by_phase },
        lambda: None,
    }
}
