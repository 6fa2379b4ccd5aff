//! A simulated Auto Scaling group that owns the sandbox's nodes, so the lab runs the drainer's
//! production path: lifecycle hooks (Pending:Wait / Terminating:Wait, heartbeats, heartbeat
//! timeout with DefaultResult ABANDON, CONTINUE/ABANDON), the EventBridge lifecycle events on
//! an SQS-like queue, and an instance refresh that launches a replacement, waits for it to be
//! in service, then terminates an old instance, keeping the minimum healthy percentage.
//!
//! The group implements the drainer's [`LifecycleHooks`] (with `DescribeAutoScalingInstances`'s
//! answer for the drainer's verify-before-acting check) and [`Queue`] traits; the drainer
//! cannot tell it from Auto Scaling + SQS. Semantics follow the Amazon EC2 Auto Scaling User
//! Guide ("Amazon EC2 Auto Scaling lifecycle hooks", "Instance refresh") and the SQS
//! Developer Guide (visibility timeout, receipt handles); an abandoned terminate hook keeps
//! the instance, as the instance lifecycle policy `TerminateHookAbandon: retain` does, unless
//! the [`Interference`] says the action has no such policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use quiesce_aws::event::LifecycleAction;
use quiesce_aws::hook::HookTiming;
use quiesce_aws::hooks::{Completion, HookError, HookResult, InstanceCheck, LifecycleHooks};
use quiesce_aws::instance::instance_id;
use quiesce_aws::queue::{Queue, QueueError, Received};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::timeline::Timeline;

pub mod refresh;

/// How the group behaves.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// The group's name.
    pub name: String,
    /// The terminate hook's name.
    pub terminate_hook: String,
    /// The launch hook's name.
    pub launch_hook: String,
    /// Both hooks' HeartbeatTimeout.
    pub heartbeat_timeout: Duration,
    /// From launch to the Node registering (the instance boots).
    pub boot: Duration,
    /// The instance refresh's MinHealthyPercentage: 100 launches before terminating.
    pub min_healthy_percentage: u32,
    /// The queue's redrive policy `maxReceiveCount`: a message received this many times and
    /// still not deleted moves to the dead-letter queue instead of being delivered again.
    pub max_receives: u32,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            name: "lab-workers".into(),
            terminate_hook: "quiesce-drain".into(),
            launch_hook: "quiesce-launch".into(),
            heartbeat_timeout: Duration::from_secs(30),
            boot: Duration::from_secs(1),
            min_healthy_percentage: 100,
            // The CloudFormation template's default.
            max_receives: 5,
        }
    }
}

/// Where an instance is in its lifecycle (the Auto Scaling names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Booting, or waiting for its launch hook (`Pending:Wait`).
    Pending,
    /// In service.
    InService,
    /// Waiting for its terminate hook (`Terminating:Wait`).
    Terminating,
    /// Gone.
    Terminated,
    /// Its terminate hook was abandoned; kept running, out of the refresh.
    Retained,
}

#[derive(Debug, Clone)]
struct Instance {
    node: String,
    state: State,
}

#[derive(Debug, Clone)]
struct Action {
    instance: String,
    launching: bool,
    expires: Instant,
    give_up: Instant,
    done: bool,
}

#[derive(Debug, Clone)]
struct Message {
    id: String,
    token: String,
    body: String,
    visible_at: Instant,
    receipt: String,
    receives: u32,
}

#[derive(Default)]
struct Inner {
    instances: BTreeMap<String, Instance>,
    actions: HashMap<String, Action>,
    queue: Vec<Message>,
    dead_letters: Vec<Message>,
    history: Vec<Record>,
    interference: Option<Arc<dyn Interference>>,
    revision: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// Numbers tokens and messages.
    serial: u64,
    /// Numbers nodes: the next launched one is `node-<launched + 1>`.
    launched: u64,
}

/// One node's replacement, for the lab's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replacement {
    /// The old node.
    pub old_node: String,
    /// The node launched for it.
    pub new_node: String,
    /// Seconds from launch until the new instance was in service.
    pub launch_seconds: f64,
    /// Seconds the old instance waited in `Terminating:Wait` (the drain).
    pub drain_seconds: f64,
    /// `terminated`, or `retained` when its hook was abandoned.
    pub result: String,
    /// Whether a rollback made it (it replaced a new instance with one on the previous
    /// launch template version).
    pub rollback: bool,
}

/// How one batch of a refresh went.
enum Batch {
    /// The replacements came into service and the old instances went (or were retained).
    Replaced {
        /// The instances launched, in the order of the batch.
        launched: Vec<String>,
        /// Each old instance's replacement.
        replacements: Vec<Replacement>,
    },
    /// A replacement never came into service: nothing was terminated.
    NotInService {
        /// The instances launched.
        launched: Vec<String>,
    },
}

/// The calls a drainer makes on the group, as Auto Scaling and SQS name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Call {
    /// `ReceiveMessage`.
    ReceiveMessage,
    /// `DeleteMessage`.
    DeleteMessage,
    /// `ChangeMessageVisibility`.
    ChangeMessageVisibility,
    /// `RecordLifecycleActionHeartbeat`.
    RecordLifecycleActionHeartbeat,
    /// `CompleteLifecycleAction`.
    CompleteLifecycleAction,
}

/// What an injected fault does to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The service fails the call (`InternalFailure`, HTTP 500) without acting on it.
    Error,
    /// The service throttles the call (`Throttling: Rate exceeded`) without acting on it.
    Throttle,
    /// The call takes effect, but its answer never comes back: the caller waits until it is
    /// stopped (the lab restarts it meanwhile).
    AnswerLost,
    /// The call never reaches the service and never returns (the caller is stopped).
    Stall,
}

/// How a lifecycle event reaches the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Added to the queue this long after the instance entered its wait state.
    pub after: Duration,
    /// The hook's own notification (`Service: "AWS Auto Scaling"`, fields at the top level)
    /// instead of the EventBridge event.
    pub notification: bool,
}

/// What interferes with the group: the chaos lab's AWS-side faults. Asked before each call
/// and for each new lifecycle event; without one the group is the well-behaved service.
pub trait Interference: Send + Sync {
    /// The fault `caller`'s `call` about `token` (empty for a receive) meets, if any.
    fn fault(&self, call: Call, caller: &str, token: &str) -> Option<Fault>;
    /// How the event of a new action (its token) is delivered: one item per message.
    fn deliveries(&self, token: &str, launching: bool) -> Vec<Delivery>;
    /// Whether an ABANDON of this terminate action keeps the instance (the lab's
    /// `TerminateHookAbandon: retain`), or terminates it as a group without that retention
    /// trigger does ("Set to terminate for default termination behavior", Amazon EC2 Auto
    /// Scaling API Reference, `RetentionTriggers`).
    fn retains(&self, _token: &str) -> bool {
        true
    }
}

/// One entry of the group's own history, in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// Seconds since the group was adopted.
    pub t: f64,
    /// The sandbox's resourceVersion at that moment (0 without a revision source, see
    /// [`Group::record_revisions`]).
    pub revision: u64,
    /// What happened.
    pub event: GroupEvent,
}

/// What the group did or was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GroupEvent {
    /// An instance entered a wait state: a lifecycle action began.
    ActionStarted {
        /// The action's token.
        token: String,
        /// The instance.
        instance: String,
        /// Its node.
        node: String,
        /// A launch (not a terminate) hook.
        launching: bool,
    },
    /// A message with the action's event was put on the queue.
    Sent {
        /// The message.
        message: String,
        /// The action.
        token: String,
    },
    /// A caller completed an action (`completed`) or tried to complete one no longer active.
    Completed {
        /// The action.
        token: String,
        /// CONTINUE or ABANDON.
        result: String,
        /// Who called.
        caller: String,
        /// Whether the call completed the action (else it was no longer active).
        completed: bool,
    },
    /// The heartbeat timeout applied the default result.
    Expired {
        /// The action.
        token: String,
    },
    /// A caller received a message.
    Received {
        /// The message.
        message: String,
        /// Its action.
        token: String,
        /// Who received it.
        caller: String,
    },
    /// A caller deleted a message.
    Deleted {
        /// The message.
        message: String,
        /// Its action.
        token: String,
        /// Who deleted it.
        caller: String,
    },
    /// The redrive policy moved a message to the dead-letter queue.
    DeadLettered {
        /// The message.
        message: String,
        /// Its action.
        token: String,
    },
    /// An injected fault hit a caller's call.
    Fault {
        /// The call.
        call: Call,
        /// What it did.
        fault: Fault,
        /// Whose call.
        caller: String,
        /// The action it was about (empty for a receive).
        token: String,
    },
}

/// The simulated group. Cheap to clone.
#[derive(Clone)]
pub struct Group {
    client: Client,
    opts: GroupOptions,
    timeline: Timeline,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
    /// Whose calls these are, in the history (see [`Group::as_caller`]).
    caller: Arc<str>,
    started: Instant,
}

/// The caller name of a group handle that was not given one.
pub const DEFAULT_CALLER: &str = "drainer";

fn hex(n: u64) -> String {
    format!("{n:017x}")
}

impl Group {
    /// Adopts every node that has an AWS providerID as an in-service instance, and starts
    /// the heartbeat-timeout clock.
    pub async fn adopt(
        client: Client,
        opts: GroupOptions,
        timeline: Timeline,
    ) -> Result<Group, kube::Error> {
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let mut inner = Inner::default();
        for node in &nodes.items {
            let provider = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
            let Some(id) = provider.and_then(instance_id) else {
                continue;
            };
            inner.instances.insert(
                id.to_string(),
                Instance {
                    node: node.name_any(),
                    state: State::InService,
                },
            );
        }
        inner.launched = inner.instances.len() as u64;
        let group = Group {
            client,
            opts,
            timeline,
            inner: Arc::new(Mutex::new(inner)),
            changed: Arc::new(watch::channel(0).0),
            caller: Arc::from(DEFAULT_CALLER),
            started: Instant::now(),
        };
        tokio::spawn(group.clone().expire_actions());
        Ok(group)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The same group, with this handle's calls recorded as `caller`'s: one handle per
    /// drainer, so the history says who completed and deleted what.
    pub fn as_caller(&self, caller: &str) -> Group {
        Group {
            caller: Arc::from(caller),
            ..self.clone()
        }
    }

    /// Lets `interference` fail calls and shape deliveries from now on.
    pub fn interfere(&self, interference: Arc<dyn Interference>) {
        self.lock().interference = Some(interference);
    }

    /// Stamps every history entry with `revision()` (the sandbox's resourceVersion), so the
    /// history lines up with the watch history.
    pub fn record_revisions(&self, revision: impl Fn() -> u64 + Send + Sync + 'static) {
        self.lock().revision = Some(Arc::new(revision));
    }

    /// Everything the group did and was asked, in order.
    pub fn history(&self) -> Vec<Record> {
        self.lock().history.clone()
    }

    /// Messages in the dead-letter queue now.
    pub fn dead_letters(&self) -> usize {
        self.lock().dead_letters.len()
    }

    fn note(&self, inner: &mut Inner, event: GroupEvent) {
        let revision = inner.revision.as_ref().map_or(0, |r| r());
        inner.history.push(Record {
            t: self.started.elapsed().as_secs_f64(),
            revision,
            event,
        });
    }

    /// The fault this handle's `call` meets; recorded when one does.
    fn fault(&self, call: Call, token: &str) -> Option<Fault> {
        let interference = self.lock().interference.clone()?;
        let fault = interference.fault(call, &self.caller, token)?;
        let mut inner = self.lock();
        self.note(
            &mut inner,
            GroupEvent::Fault {
                call,
                fault,
                caller: self.caller.to_string(),
                token: token.to_string(),
            },
        );
        Some(fault)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// The instances in service now, oldest first.
    pub fn in_service(&self) -> Vec<String> {
        self.lock()
            .instances
            .iter()
            .filter(|(_, i)| i.state == State::InService)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The state of `instance`.
    pub fn state(&self, instance: &str) -> Option<State> {
        self.lock().instances.get(instance).map(|i| i.state)
    }

    fn node_of(&self, instance: &str) -> String {
        self.lock()
            .instances
            .get(instance)
            .map(|i| i.node.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the group, or `limit` passes.
    async fn wait(&self, limit: Duration, done: impl Fn(&Group) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut changes = self.changed.subscribe();
        loop {
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return done(self);
            }
        }
    }

    /// Replaces every instance in service now, as an instance refresh does, and reports
    /// each replacement. `progress` hears each step.
    pub async fn refresh(&self, progress: &(dyn Fn(&str) + Sync)) -> Vec<Replacement> {
        let old = self.in_service();
        let desired = old.len() as u32;
        let may_lose = desired * (100 - self.opts.min_healthy_percentage.min(100)) / 100;
        let batch = may_lose.max(1) as usize;
        let mut out = Vec::new();
        for chunk in old.chunks(batch) {
            match self.replace_batch(chunk, progress).await {
                Batch::Replaced { replacements, .. } => out.extend(replacements),
                Batch::NotInService { .. } => break,
            }
        }
        out
    }

    /// One batch of a refresh: launches a replacement for each of `chunk`, waits until they
    /// are in service, then terminates `chunk` through its terminate hooks and waits until
    /// each is gone or retained (each wait bounded by the hooks' global timeout).
    async fn replace_batch(&self, chunk: &[String], progress: &(dyn Fn(&str) + Sync)) -> Batch {
        let limit = HookTiming {
            heartbeat_timeout: self.opts.heartbeat_timeout,
        }
        .global_timeout();
        let launched_at = Instant::now();
        let mut fresh = Vec::new();
        for _ in chunk {
            fresh.push(self.launch().await);
        }
        self.wait(limit, |g| {
            fresh.iter().all(|i| g.state(i) != Some(State::Pending))
        })
        .await;
        let launch_seconds = launched_at.elapsed().as_secs_f64();
        // An abandoned launch hook terminates the new instance: like a failed instance
        // refresh, stop before taking anything more out of service.
        if !fresh
            .iter()
            .all(|i| self.state(i) == Some(State::InService))
        {
            progress("a replacement never came into service; stopping the refresh");
            return Batch::NotInService { launched: fresh };
        }
        let drain_started = Instant::now();
        for id in chunk {
            progress(&format!(
                "terminating {} ({id}): waiting for its lifecycle hook",
                self.node_of(id)
            ));
            self.begin_terminate(id);
        }
        self.wait(limit, |g| {
            chunk
                .iter()
                .all(|i| matches!(g.state(i), Some(State::Terminated | State::Retained)))
        })
        .await;
        let mut replacements = Vec::new();
        for (id, new) in chunk.iter().zip(&fresh) {
            let result = match self.state(id) {
                Some(State::Terminated) => "terminated",
                Some(State::Retained) => "retained",
                _ => "still-waiting",
            };
            progress(&format!("{} {result}", self.node_of(id)));
            replacements.push(Replacement {
                old_node: self.node_of(id),
                new_node: self.node_of(new),
                launch_seconds,
                drain_seconds: drain_started.elapsed().as_secs_f64(),
                result: result.into(),
                rollback: false,
            });
        }
        Batch::Replaced {
            launched: fresh,
            replacements,
        }
    }

    /// Launches one instance: after `boot` its Node registers, and its launch hook waits.
    async fn launch(&self) -> String {
        let (id, node, zone) = {
            let mut inner = self.lock();
            inner.launched += 1;
            let n = inner.launched;
            let id = format!("i-{}", hex(0x1ab00000 + n));
            let zone = ["us-east-1a", "us-east-1b", "us-east-1c"][(n as usize - 1) % 3].to_string();
            let node = format!("node-{n}");
            inner.instances.insert(
                id.clone(),
                Instance {
                    node: node.clone(),
                    state: State::Pending,
                },
            );
            (id, node, zone)
        };
        self.timeline
            .record("instance-launched", &node, json!({"instance": id}));
        let group = self.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(group.opts.boot).await;
            let object: Node = serde_json::from_value(json!({
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node,
                    "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": zone}},
                "spec": {"providerID": format!("aws:///{zone}/{id2}")},
            }))
            .expect("a valid Node");
            if let Err(err) = Api::<Node>::all(group.client.clone())
                .create(&PostParams::default(), &object)
                .await
            {
                tracing::error!(%node, %err, "could not register the launched node");
            }
            group.start_action(&id2, true);
        });
        id
    }

    fn begin_terminate(&self, instance: &str) {
        if let Some(i) = self.lock().instances.get_mut(instance) {
            i.state = State::Terminating;
        }
        self.start_action(instance, false);
    }

    /// Puts the instance in a wait state and sends its EventBridge lifecycle event.
    fn start_action(&self, instance: &str, launching: bool) {
        let token = {
            let mut inner = self.lock();
            inner.serial += 1;
            let n = inner.serial;
            let token = format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                0x5eed0000u64 + n,
                n & 0xffff,
                n & 0xfff,
                (n * 7) & 0xfff,
                n * 0x9e37
            );
            let now = Instant::now();
            let timing = HookTiming {
                heartbeat_timeout: self.opts.heartbeat_timeout,
            };
            inner.actions.insert(
                token.clone(),
                Action {
                    instance: instance.to_string(),
                    launching,
                    expires: now + self.opts.heartbeat_timeout,
                    give_up: now + timing.global_timeout(),
                    done: false,
                },
            );
            token
        };
        let (detail_type, transition, hook, origin, destination) = if launching {
            (
                "EC2 Instance-launch Lifecycle Action",
                "autoscaling:EC2_INSTANCE_LAUNCHING",
                &self.opts.launch_hook,
                "EC2",
                "AutoScalingGroup",
            )
        } else {
            (
                "EC2 Instance-terminate Lifecycle Action",
                "autoscaling:EC2_INSTANCE_TERMINATING",
                &self.opts.terminate_hook,
                "AutoScalingGroup",
                "EC2",
            )
        };
        // The event as EventBridge delivers it to an SQS target (Amazon EC2 Auto Scaling User
        // Guide, "Amazon EventBridge events for Amazon EC2 Auto Scaling").
        let time = k8s_openapi::jiff::Timestamp::now().to_string();
        let event = json!({
            "version": "0",
            "id": format!("{token}-event"),
            "detail-type": detail_type,
            "source": "aws.autoscaling",
            "account": "123456789012",
            "time": time,
            "region": "us-east-1",
            "resources": [format!("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:lab:autoScalingGroupName/{}", self.opts.name)],
            "detail": {
                "LifecycleActionToken": token,
                "AutoScalingGroupName": self.opts.name,
                "LifecycleHookName": hook,
                "EC2InstanceId": instance,
                "LifecycleTransition": transition,
                "Origin": origin,
                "Destination": destination,
            }
        });
        // The hook's own notification to an SQS target (same guide, "Configure a notification
        // target for lifecycle notifications").
        let notification = json!({
            "Origin": origin,
            "LifecycleHookName": hook,
            "Destination": destination,
            "AccountId": "123456789012",
            "RequestId": format!("{token}-request"),
            "LifecycleTransition": transition,
            "AutoScalingGroupName": self.opts.name,
            "Service": "AWS Auto Scaling",
            "Time": time,
            "EC2InstanceId": instance,
            "LifecycleActionToken": token,
        });
        self.timeline.record(
            "hook-started",
            self.node_of(instance),
            json!({"instance": instance, "transition": transition}),
        );
        let deliveries = {
            let mut inner = self.lock();
            let node = inner
                .instances
                .get(instance)
                .map(|i| i.node.clone())
                .unwrap_or_default();
            self.note(
                &mut inner,
                GroupEvent::ActionStarted {
                    token: token.clone(),
                    instance: instance.to_string(),
                    node,
                    launching,
                },
            );
            inner.interference.clone().map_or_else(
                || {
                    vec![Delivery {
                        after: Duration::ZERO,
                        notification: false,
                    }]
                },
                |i| i.deliveries(&token, launching),
            )
        };
        for delivery in deliveries {
            let body = if delivery.notification {
                notification.to_string()
            } else {
                event.to_string()
            };
            let mut inner = self.lock();
            inner.serial += 1;
            let id = format!("msg-{}", inner.serial);
            self.note(
                &mut inner,
                GroupEvent::Sent {
                    message: id.clone(),
                    token: token.clone(),
                },
            );
            inner.queue.push(Message {
                id,
                token: token.clone(),
                body,
                visible_at: Instant::now() + delivery.after,
                receipt: String::new(),
                receives: 0,
            });
        }
        self.bump();
    }

    /// Finishes an action: the instance moves on, and a terminated one's Node goes away.
    fn finish(&self, token: &str, result: HookResult, by: &str) {
        let (instance, launching) = {
            let mut inner = self.lock();
            let Some(action) = inner.actions.get_mut(token) else {
                return;
            };
            action.done = true;
            let event = if by == "timeout" {
                GroupEvent::Expired {
                    token: token.to_string(),
                }
            } else {
                GroupEvent::Completed {
                    token: token.to_string(),
                    result: result.as_str().to_string(),
                    caller: by.to_string(),
                    completed: true,
                }
            };
            self.note(&mut inner, event);
            let action = inner.actions.get(token).expect("looked up above");
            let (instance, launching) = (action.instance.clone(), action.launching);
            let retains = inner.interference.as_ref().is_none_or(|i| i.retains(token));
            let next = match (launching, result) {
                (true, HookResult::Continue) => State::InService,
                (true, HookResult::Abandon) | (false, HookResult::Continue) => State::Terminated,
                (false, HookResult::Abandon) if retains => State::Retained,
                (false, HookResult::Abandon) => State::Terminated,
            };
            if let Some(i) = inner.instances.get_mut(&instance) {
                i.state = next;
            }
            (instance, launching)
        };
        let node = self.node_of(&instance);
        self.timeline.record(
            "hook-completed",
            &node,
            json!({"instance": instance, "result": result.as_str(), "by": by, "launch": launching}),
        );
        if self.state(&instance) == Some(State::Terminated) {
            let group = self.clone();
            tokio::spawn(async move { group.remove_node(&node).await });
        } else {
            self.bump();
        }
    }

    /// What the cloud does when an instance terminates: the Node object goes, and the pod
    /// garbage collector deletes the pods still bound to it (DaemonSet pods).
    async fn remove_node(&self, node: &str) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let nodes: Api<Node> = Api::all(self.client.clone());
        if let Err(err) = nodes.delete(node, &DeleteParams::default()).await {
            tracing::warn!(%node, %err, "could not delete the terminated node");
        }
        if let Ok(list) = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
        {
            for pod in list.items {
                let ns = pod.namespace().unwrap_or_default();
                let _ = Api::<Pod>::namespaced(self.client.clone(), &ns)
                    .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                    .await;
            }
        }
        self.bump();
    }

    /// Applies DefaultResult (ABANDON) to actions whose heartbeat timeout passed.
    async fn expire_actions(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let expired: Vec<String> = self
                .lock()
                .actions
                .iter()
                .filter(|(_, a)| !a.done && (a.expires <= now || a.give_up <= now))
                .map(|(t, _)| t.clone())
                .collect();
            for token in expired {
                self.finish(&token, HookResult::Abandon, "timeout");
            }
            if Arc::strong_count(&self.inner) == 1 {
                return;
            }
        }
    }

    fn active(&self, action: &LifecycleAction) -> bool {
        self.lock().actions.get(&action.token).is_some_and(|a| {
            !a.done && a.instance == action.instance_id && action.group == self.opts.name
        })
    }

    /// The instance's `LifecycleState` as `DescribeAutoScalingInstances` names it, if it is
    /// in this group: a terminated instance leaves the group's list (Amazon EC2 Auto Scaling
    /// User Guide, "Amazon EC2 Auto Scaling instance lifecycle"), and an abandoned terminate
    /// hook keeps the instance as `Terminating:Retained`.
    fn lifecycle_state(&self, instance: &str) -> Option<&'static str> {
        let inner = self.lock();
        let waiting = inner
            .actions
            .values()
            .any(|a| a.instance == instance && !a.done);
        Some(match inner.instances.get(instance)?.state {
            State::Pending if waiting => "Pending:Wait",
            State::Pending => "Pending",
            State::InService => "InService",
            State::Terminating => "Terminating:Wait",
            State::Retained => "Terminating:Retained",
            State::Terminated => return None,
        })
    }

    fn not_active(call: &'static str, action: &LifecycleAction) -> HookError {
        HookError {
            call,
            instance: action.instance_id.clone(),
            message: format!(
                "ValidationError: No active Lifecycle Action found with instance ID {}",
                action.instance_id
            ),
        }
    }
}

impl LifecycleHooks for Group {
    async fn check(&self, action: &LifecycleAction) -> Result<InstanceCheck, HookError> {
        let state = if action.group == self.opts.name {
            self.lifecycle_state(&action.instance_id)
        } else {
            None
        };
        Ok(InstanceCheck::of(action, state))
    }

    async fn timing(&self, action: &LifecycleAction) -> Result<HookTiming, HookError> {
        if action.hook != self.opts.terminate_hook && action.hook != self.opts.launch_hook {
            return Err(HookError {
                call: "DescribeLifecycleHooks",
                instance: action.instance_id.clone(),
                message: format!("group {} has no hook {}", self.opts.name, action.hook),
            });
        }
        Ok(HookTiming {
            heartbeat_timeout: self.opts.heartbeat_timeout,
        })
    }

    async fn heartbeat(&self, action: &LifecycleAction) -> Result<(), HookError> {
        let fault = self.fault(Call::RecordLifecycleActionHeartbeat, &action.token);
        if let Some(err) = hook_error(fault, "RecordLifecycleActionHeartbeat", action) {
            return Err(err);
        }
        if fault == Some(Fault::Stall) {
            return std::future::pending().await;
        }
        if !self.active(action) {
            return Err(Group::not_active("RecordLifecycleActionHeartbeat", action));
        }
        let timeout = self.opts.heartbeat_timeout;
        if let Some(a) = self.lock().actions.get_mut(&action.token) {
            a.expires = (Instant::now() + timeout).min(a.give_up);
        }
        if fault == Some(Fault::AnswerLost) {
            return std::future::pending().await;
        }
        Ok(())
    }

    async fn complete(
        &self,
        action: &LifecycleAction,
        result: HookResult,
    ) -> Result<Completion, HookError> {
        let fault = self.fault(Call::CompleteLifecycleAction, &action.token);
        if let Some(err) = hook_error(fault, "CompleteLifecycleAction", action) {
            return Err(err);
        }
        if fault == Some(Fault::Stall) {
            return std::future::pending().await;
        }
        let completion = if self.active(action) {
            self.finish(&action.token, result, &self.caller);
            Completion::Completed
        } else {
            let mut inner = self.lock();
            self.note(
                &mut inner,
                GroupEvent::Completed {
                    token: action.token.clone(),
                    result: result.as_str().to_string(),
                    caller: self.caller.to_string(),
                    completed: false,
                },
            );
            Completion::NotActive
        };
        if fault == Some(Fault::AnswerLost) {
            return std::future::pending().await;
        }
        Ok(completion)
    }
}

/// The error an injected [`Fault::Error`] or [`Fault::Throttle`] answers a hook call with, as
/// Auto Scaling words them.
fn hook_error(
    fault: Option<Fault>,
    call: &'static str,
    action: &LifecycleAction,
) -> Option<HookError> {
    let message = match fault? {
        Fault::Error => "InternalFailure: injected fault",
        Fault::Throttle => "Throttling: Rate exceeded",
        Fault::AnswerLost | Fault::Stall => return None,
    };
    Some(HookError {
        call,
        instance: action.instance_id.clone(),
        message: message.into(),
    })
}

/// The same for a queue call, as SQS words them.
fn queue_error(fault: Option<Fault>, call: &'static str) -> Option<QueueError> {
    let message = match fault? {
        Fault::Error => "InternalError: injected fault",
        Fault::Throttle => "ThrottlingException: Rate exceeded",
        Fault::AnswerLost | Fault::Stall => return None,
    };
    Some(QueueError {
        call,
        message: message.into(),
    })
}

impl Group {
    /// The message a receipt handle names, and its action's token.
    fn message_of(&self, receipt: &str) -> (String, String) {
        self.lock()
            .queue
            .iter()
            .find(|m| m.receipt == receipt)
            .map(|m| (m.id.clone(), m.token.clone()))
            .unwrap_or_default()
    }
}

impl Queue for Group {
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let fault = self.fault(Call::ReceiveMessage, "");
        if let Some(err) = queue_error(fault, "ReceiveMessage") {
            return Err(err);
        }
        if fault.is_some() {
            return std::future::pending().await;
        }
        let deadline = Instant::now() + wait;
        let mut changes = self.changed.subscribe();
        loop {
            let now = Instant::now();
            let (out, next_visible) = {
                let mut guard = self.lock();
                let inner = &mut *guard;
                let mut out = Vec::new();
                let mut notes = Vec::new();
                let max_receives = self.opts.max_receives;
                let (dead, live): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.queue)
                    .into_iter()
                    .partition(|m| m.visible_at <= now && m.receives >= max_receives);
                inner.queue = live;
                for m in dead {
                    notes.push(GroupEvent::DeadLettered {
                        message: m.id.clone(),
                        token: m.token.clone(),
                    });
                    inner.dead_letters.push(m);
                }
                for m in inner.queue.iter_mut() {
                    if out.len() as u32 >= max.max(1) {
                        break;
                    }
                    if m.visible_at <= now {
                        m.receives += 1;
                        m.receipt = format!("{}#{}", m.id, m.receives);
                        m.visible_at = now + visibility;
                        notes.push(GroupEvent::Received {
                            message: m.id.clone(),
                            token: m.token.clone(),
                            caller: self.caller.to_string(),
                        });
                        out.push(Received {
                            id: m.id.clone(),
                            receipt: m.receipt.clone(),
                            body: m.body.clone(),
                            receive_count: m.receives,
                        });
                    }
                }
                for note in notes {
                    self.note(inner, note);
                }
                let next = inner.queue.iter().map(|m| m.visible_at).min();
                (out, next)
            };
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            let until = next_visible.map_or(deadline, |v| v.min(deadline));
            let _ = tokio::time::timeout_at(until, changes.changed()).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let (message, token) = self.message_of(receipt);
        let fault = self.fault(Call::DeleteMessage, &token);
        if let Some(err) = queue_error(fault, "DeleteMessage") {
            return Err(err);
        }
        if fault == Some(Fault::Stall) {
            return std::future::pending().await;
        }
        {
            let mut inner = self.lock();
            let before = inner.queue.len();
            inner.queue.retain(|m| m.receipt != receipt);
            if inner.queue.len() < before {
                self.note(
                    &mut inner,
                    GroupEvent::Deleted {
                        message,
                        token,
                        caller: self.caller.to_string(),
                    },
                );
            }
        }
        if fault == Some(Fault::AnswerLost) {
            return std::future::pending().await;
        }
        Ok(())
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        let (_, token) = self.message_of(receipt);
        let fault = self.fault(Call::ChangeMessageVisibility, &token);
        if let Some(err) = queue_error(fault, "ChangeMessageVisibility") {
            return Err(err);
        }
        if fault == Some(Fault::Stall) {
            return std::future::pending().await;
        }
        let answer = {
            let mut inner = self.lock();
            match inner.queue.iter_mut().find(|m| m.receipt == receipt) {
                Some(m) => {
                    m.visible_at = Instant::now() + visibility;
                    Ok(())
                }
                None => Err(QueueError {
                    call: "ChangeMessageVisibility",
                    message: format!("ReceiptHandleIsInvalid: {receipt}"),
                }),
            }
        };
        if fault == Some(Fault::AnswerLost) {
            return std::future::pending().await;
        }
        answer
    }
}
