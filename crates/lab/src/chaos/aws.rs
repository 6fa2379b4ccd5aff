//! The AWS side of the schedule, as the simulated group's [`Interference`]: the n-th call of
//! each kind fails as the schedule says, each terminate event is delivered as its action's
//! plan says, and a completion the conductor marked stalls while the conductor stops its
//! caller (a drainer stopped in the Completing phase).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::schedule::{AwsPlan, Schedule};
use crate::asg::{Call, Delivery, Fault, Interference};

/// The interference of one chaos run.
pub struct AwsChaos {
    plan: AwsPlan,
    deliveries: Vec<(bool, Option<Duration>)>,
    state: Mutex<State>,
    kills: mpsc::UnboundedSender<String>,
    answer_lost: bool,
}

#[derive(Default)]
struct State {
    calls: HashMap<Call, u32>,
    terminates: usize,
    stall: Option<String>,
}

impl AwsChaos {
    /// The AWS side of `schedule`; the callers of stalled completions go to `kills`.
    pub fn new(schedule: &Schedule, kills: mpsc::UnboundedSender<String>) -> AwsChaos {
        AwsChaos {
            plan: schedule.aws.clone(),
            deliveries: schedule
                .actions
                .iter()
                .map(|a| (a.duplicate, a.late))
                .collect(),
            state: Mutex::default(),
            kills,
            // Odd seeds lose the answer after the completion took effect; even ones stall
            // before it reaches the group.
            answer_lost: schedule.seed % 2 == 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next completion of `token` stalls, and its caller is reported to be stopped.
    pub fn stall_completion(&self, token: &str) {
        self.lock().stall = Some(token.to_string());
    }
}

impl Interference for AwsChaos {
    fn fault(&self, call: Call, caller: &str, token: &str) -> Option<Fault> {
        let mut state = self.lock();
        if call == Call::CompleteLifecycleAction && state.stall.as_deref() == Some(token) {
            state.stall = None;
            let _ = self.kills.send(caller.to_string());
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

    fn deliveries(&self, _token: &str, launching: bool) -> Vec<Delivery> {
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
            state.terminates - 1
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
}
