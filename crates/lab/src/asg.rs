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
//! the instance, as the instance lifecycle policy `TerminateHookAbandon: retain` does.

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
}

/// The simulated group. Cheap to clone.
#[derive(Clone)]
pub struct Group {
    client: Client,
    opts: GroupOptions,
    timeline: Timeline,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
}

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
        };
        tokio::spawn(group.clone().expire_actions());
        Ok(group)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        let limit = HookTiming {
            heartbeat_timeout: self.opts.heartbeat_timeout,
        }
        .global_timeout();
        let mut out = Vec::new();
        for chunk in old.chunks(batch) {
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
                break;
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
            for (id, new) in chunk.iter().zip(&fresh) {
                let result = match self.state(id) {
                    Some(State::Terminated) => "terminated",
                    Some(State::Retained) => "retained",
                    _ => "still-waiting",
                };
                progress(&format!("{} {result}", self.node_of(id)));
                out.push(Replacement {
                    old_node: self.node_of(id),
                    new_node: self.node_of(new),
                    launch_seconds,
                    drain_seconds: drain_started.elapsed().as_secs_f64(),
                    result: result.into(),
                });
            }
        }
        out
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
        let event = json!({
            "version": "0",
            "id": format!("{token}-event"),
            "detail-type": detail_type,
            "source": "aws.autoscaling",
            "account": "123456789012",
            "time": k8s_openapi::jiff::Timestamp::now().to_string(),
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
        self.timeline.record(
            "hook-started",
            self.node_of(instance),
            json!({"instance": instance, "transition": transition}),
        );
        {
            let mut inner = self.lock();
            inner.serial += 1;
            let id = format!("msg-{}", inner.serial);
            inner.queue.push(Message {
                id,
                body: event.to_string(),
                visible_at: Instant::now(),
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
            let (instance, launching) = (action.instance.clone(), action.launching);
            let next = match (launching, result) {
                (true, HookResult::Continue) => State::InService,
                (true, HookResult::Abandon) | (false, HookResult::Continue) => State::Terminated,
                (false, HookResult::Abandon) => State::Retained,
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
        if !self.active(action) {
            return Err(Group::not_active("RecordLifecycleActionHeartbeat", action));
        }
        let timeout = self.opts.heartbeat_timeout;
        if let Some(a) = self.lock().actions.get_mut(&action.token) {
            a.expires = (Instant::now() + timeout).min(a.give_up);
        }
        Ok(())
    }

    async fn complete(
        &self,
        action: &LifecycleAction,
        result: HookResult,
    ) -> Result<Completion, HookError> {
        if !self.active(action) {
            return Ok(Completion::NotActive);
        }
        self.finish(&action.token, result, "api");
        Ok(Completion::Completed)
    }
}

impl Queue for Group {
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + wait;
        let mut changes = self.changed.subscribe();
        loop {
            let now = Instant::now();
            let (out, next_visible) = {
                let mut inner = self.lock();
                let mut out = Vec::new();
                for m in inner.queue.iter_mut() {
                    if out.len() as u32 >= max.max(1) {
                        break;
                    }
                    if m.visible_at <= now {
                        m.receives += 1;
                        m.receipt = format!("{}#{}", m.id, m.receives);
                        m.visible_at = now + visibility;
                        out.push(Received {
                            id: m.id.clone(),
                            receipt: m.receipt.clone(),
                            body: m.body.clone(),
                            receive_count: m.receives,
                        });
                    }
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
        self.lock().queue.retain(|m| m.receipt != receipt);
        Ok(())
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
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
    }
}
