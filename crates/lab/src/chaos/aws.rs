//! The AWS side of the schedule, as the simulated group's [`Interference`]: the n-th call of
//! each kind fails as the schedule says, each terminate event is delivered as its action's
//! plan says, and a completion the conductor marked stalls while the conductor stops its
//! caller (a drainer stopped in the Completing or Abandoning phase). An action the schedule
//! abandons has no retention trigger (its ABANDON terminates the instance), and its
//! instance is held by a load balancer ([`HeldTargets`]) so the drainer does give up on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use quiesce_aws::elbv2::{Elbv2Error, LoadBalancers, Membership, Owner, TargetGroup, TargetState};
use quiesce_sandbox::api::Store;
use tokio::sync::mpsc;

use super::record::record_phase;
use super::schedule::{AwsPlan, Schedule};
use crate::asg::{Call, Delivery, Fault, Group, GroupEvent, Interference};

/// A stalled completion: whose call it was, and the phase the node's lifecycle record named
/// as it stalled (read from the API server's store, before the call could take effect).
#[derive(Debug, Clone)]
pub struct Stalled {
    /// The caller to stop.
    pub caller: String,
    /// The record's phase then (`completing`, `abandoning`), if the node had one.
    pub record: Option<String>,
}

/// The interference of one chaos run.
pub struct AwsChaos {
    plan: AwsPlan,
    deliveries: Vec<(bool, Option<Duration>)>,
    abandons: Vec<bool>,
    state: Mutex<State>,
    kills: mpsc::UnboundedSender<Stalled>,
    answer_lost: bool,
    store: Arc<Store>,
}

#[derive(Default)]
struct State {
    calls: HashMap<Call, u32>,
    terminates: usize,
    /// Each terminate action's place in the roll, by token.
    order: HashMap<String, usize>,
    /// The completion to stall: its token and node.
    stall: Option<(String, String)>,
}

impl AwsChaos {
    /// The AWS side of `schedule`; the callers of stalled completions go to `kills`. `store`
    /// is the sandbox's, read for the record on a node whose completion stalls.
    pub fn new(
        schedule: &Schedule,
        kills: mpsc::UnboundedSender<Stalled>,
        store: Arc<Store>,
    ) -> AwsChaos {
        AwsChaos {
            plan: schedule.aws.clone(),
            deliveries: schedule
                .actions
                .iter()
                .map(|a| (a.duplicate, a.late))
                .collect(),
            abandons: schedule.actions.iter().map(|a| a.abandon).collect(),
            state: Mutex::default(),
            kills,
            // Odd seeds lose the answer after the completion took effect; even ones stall
            // before it reaches the group.
            answer_lost: schedule.seed % 2 == 1,
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next completion of `token` (the action of `node`) stalls, and its caller is
    /// reported to be stopped.
    pub fn stall_completion(&self, token: &str, node: &str) {
        self.lock().stall = Some((token.to_string(), node.to_string()));
    }

    /// Whether the schedule has the terminate action `token` abandoned.
    fn abandoned(&self, token: &str) -> bool {
        let at = self.lock().order.get(token).copied();
        at.is_some_and(|i| self.abandons.get(i).copied().unwrap_or(false))
    }
}

impl Interference for AwsChaos {
    fn fault(&self, call: Call, caller: &str, token: &str) -> Option<Fault> {
        let mut state = self.lock();
        if call == Call::CompleteLifecycleAction
            && let Some((_, node)) = state.stall.take_if(|(t, _)| t == token)
        {
            drop(state);
            let _ = self.kills.send(Stalled {
                caller: caller.to_string(),
                record: record_phase(&self.store, &node),
            });
            return Some(if self.answer_lost {
                Fault::AnswerLost
            } else {
                Fault::Stall
            });
        }
        let n = state.calls.entry(call).or_default();
        let fault = self.plan.fault(call, *n);
        *n += 1;
        fault
    }

    fn deliveries(&self, token: &str, launching: bool) -> Vec<Delivery> {
        let now = Delivery {
            after: Duration::ZERO,
            notification: false,
        };
        if launching {
            return vec![now];
        }
        let i = {
            let mut state = self.lock();
            state.terminates += 1;
            let i = state.terminates - 1;
            state.order.insert(token.to_string(), i);
            i
        };
        let Some(&(duplicate, late)) = self.deliveries.get(i) else {
            return vec![now];
        };
        let mut out = vec![Delivery {
            after: late.unwrap_or_default(),
            notification: false,
        }];
        if duplicate {
            out.push(Delivery {
                after: Duration::ZERO,
                notification: true,
            });
        }
        out
    }

    fn retains(&self, token: &str) -> bool {
        !self.abandoned(token)
    }
}

/// The lab's load balancers: the instance of each action the schedule abandons is a target of
/// one group of the cluster's load balancer controller that keeps it draining for good (a
/// deregistration that never finishes), so the drainer's wait for it reaches its bound on a
/// drained node and ABANDONs, with the group named (issue 17's `--on-lb-drain-timeout
/// abandon`). Every other instance is in no group.
pub struct HeldTargets {
    group: Group,
    aws: Arc<AwsChaos>,
}

/// The held group, as the drainer's report and Event name it.
pub const HELD_GROUP: &str = "lab-web-held";

impl HeldTargets {
    /// Holds the instances of `aws`'s abandoned actions, found in `group`'s history.
    pub fn new(group: Group, aws: Arc<AwsChaos>) -> HeldTargets {
        HeldTargets { group, aws }
    }

    /// Whether `instance` is the instance of an abandoned terminate action.
    fn held(&self, instance: &str) -> bool {
        self.group.history().iter().any(|r| match &r.event {
            GroupEvent::ActionStarted {
                token,
                instance: i,
                launching: false,
                ..
            } => i == instance && self.aws.abandoned(token),
            _ => false,
        })
    }
}

fn held_group() -> TargetGroup {
    TargetGroup {
        arn: format!(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{HELD_GROUP}/0"
        ),
        name: HELD_GROUP.into(),
        owner: Owner::Controller {
            cluster: "lab".into(),
        },
        delay: Duration::from_secs(1),
    }
}

impl LoadBalancers for HeldTargets {
    fn memberships<'a>(
        &'a self,
        instance: &'a str,
        _asg: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Membership>, Elbv2Error>> {
        let held = self.held(instance);
        Box::pin(async move {
            Ok(if held {
                vec![Membership {
                    group: held_group(),
                    state: TargetState::Draining,
                }]
            } else {
                Vec::new()
            })
        })
    }

    fn state<'a>(
        &'a self,
        group: &'a TargetGroup,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<TargetState, Elbv2Error>> {
        let held = group.name == HELD_GROUP && self.held(instance);
        Box::pin(async move {
            Ok(if held {
                TargetState::Draining
            } else {
                TargetState::Out
            })
        })
    }

    fn deregister<'a>(
        &'a self,
        _group: &'a TargetGroup,
        _instance: &'a str,
    ) -> BoxFuture<'a, Result<(), Elbv2Error>> {
        Box::pin(async { Ok(()) })
    }
}
