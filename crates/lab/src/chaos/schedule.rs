//! The fault schedule of a chaos run, derived from its seed alone: the same seed gives the
//! same schedule (ChaCha8, whose output is fixed by its specification, not by a library
//! version). What the schedule asks is fixed; which request each fault meets depends on the
//! run's timing, so the faults are counted where they hit (the sandbox's audit log, the
//! group's history), never where they were armed.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use quiesce_sandbox::api::FaultKind;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::asg::{Call, Fault};

/// The classes of fault `--faults` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// The API server's errors, throttling, hangs, cut watches and 410s.
    Api,
    /// Auto Scaling's and SQS's errors and throttling, answers lost.
    Aws,
    /// Duplicate and late deliveries of lifecycle events.
    Delivery,
    /// The drainer stopped and started again at named phases.
    Restart,
    /// The leader stopped for good: the standby takes the Lease over.
    Handover,
    /// A second drainer reading the queue beside the leader, on a duplicated message.
    Race,
}

impl Class {
    /// Every class, in order.
    pub const ALL: [Class; 6] = [
        Class::Api,
        Class::Aws,
        Class::Delivery,
        Class::Restart,
        Class::Handover,
        Class::Race,
    ];

    /// The name `--faults` and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Class::Api => "api",
            Class::Aws => "aws",
            Class::Delivery => "delivery",
            Class::Restart => "restart",
            Class::Handover => "handover",
            Class::Race => "race",
        }
    }
}

/// A `--faults` list that names no known class.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "fault class {0:?}: expected a comma-separated list of api, aws, delivery, restart, handover, race (or all)"
)]
pub struct UnknownClass(pub String);

/// The classes a run injects (`--faults api,aws`; `all`, the default, is every class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes(pub BTreeSet<Class>);

impl Default for Classes {
    fn default() -> Self {
        Classes(Class::ALL.into_iter().collect())
    }
}

impl Classes {
    /// These classes but `drop`.
    pub fn without(&self, drop: &[Class]) -> Classes {
        Classes(
            self.0
                .iter()
                .filter(|c| !drop.contains(c))
                .copied()
                .collect(),
        )
    }
}

impl FromStr for Classes {
    type Err = UnknownClass;
    fn from_str(s: &str) -> Result<Self, UnknownClass> {
        let mut out = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                return Ok(Classes::default());
            }
            let class = Class::ALL
                .into_iter()
                .find(|c| c.name() == part)
                .ok_or_else(|| UnknownClass(part.to_string()))?;
            out.insert(class);
        }
        if out.is_empty() {
            return Err(UnknownClass(s.to_string()));
        }
        Ok(Classes(out))
    }
}

/// Where in a terminate action the drainer is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Its record of the action is on the Node; nothing evicted yet.
    Recording,
    /// Evictions accepted; the drain is waiting.
    Draining,
    /// Drained; its CompleteLifecycleAction is in flight.
    Completing,
    /// Given up (its record says why); its ABANDON is in flight.
    Abandoning,
}

impl Phase {
    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Recording => "recording",
            Phase::Draining => "draining",
            Phase::Completing => "completing",
            Phase::Abandoning => "abandoning",
        }
    }
}

/// One API fault: armed when a terminate action starts, for the drainers' requests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiFault {
    /// The HTTP method (`GET` covers list and watch).
    pub method: &'static str,
    /// The resource.
    pub plural: &'static str,
    /// How many requests it hits.
    pub count: usize,
    /// What it does.
    pub kind: FaultKind,
}

/// What to do to the drainer during one terminate action (the i-th, in the roll's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionPlan {
    /// API faults armed when it starts.
    pub api: Vec<ApiFault>,
    /// Stop and restart the drainer at this phase.
    pub restart: Option<Phase>,
    /// The restart is a handover: the stopped leader stays down for a while, and the
    /// standby takes the Lease over.
    pub handover: bool,
    /// The event is delivered twice (the EventBridge event and the hook's notification).
    pub duplicate: bool,
    /// The first delivery comes this late.
    pub late: Option<Duration>,
    /// A second drainer reads the queue beside the leader while this action is handled.
    pub race: bool,
    /// Its instance stays a target of a load balancer past the wait's bound, so the drainer
    /// gives up on the drained node and ABANDONs; the group terminates the instance all the
    /// same (no `TerminateHookAbandon: retain` for this action, as on a group without an
    /// instance lifecycle policy), so the node is still replaced.
    pub abandon: bool,
}

/// The AWS-side faults: the n-th call (counted from 0 over the run) of each kind fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsPlan {
    /// `(call, n, fault)`.
    pub calls: Vec<(Call, u32, Fault)>,
}

impl AwsPlan {
    /// The fault the `n`-th `call` meets.
    pub fn fault(&self, call: Call, n: u32) -> Option<Fault> {
        self.calls
            .iter()
            .find(|(c, i, _)| *c == call && *i == n)
            .map(|(_, _, f)| *f)
    }
}

/// The whole schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// Per terminate action, in order.
    pub actions: Vec<ActionPlan>,
    /// The AWS side.
    pub aws: AwsPlan,
}

/// The drainer's verbs: every request kind it makes, on every resource it reads or writes.
const API_TARGETS: [(&str, &str); 13] = [
    ("GET", "pods"),
    ("POST", "pods"),
    ("GET", "nodes"),
    ("PATCH", "nodes"),
    ("GET", "leases"),
    ("PUT", "leases"),
    ("GET", "deployments"),
    ("GET", "statefulsets"),
    ("GET", "replicasets"),
    ("GET", "poddisruptionbudgets"),
    ("POST", "events"),
    ("GET", "volumeattachments"),
    ("PATCH", "deployments"),
];

fn api_kind(rng: &mut ChaCha8Rng) -> FaultKind {
    match rng.random_range(0..7) {
        0 => FaultKind::InternalError,
        1 => FaultKind::Timeout(Duration::from_millis(200)),
        2 => FaultKind::Hang,
        3 => FaultKind::TooManyRequests { retry_after: 1 },
        4 => FaultKind::CutWatch(Duration::from_millis(rng.random_range(200..1500))),
        5 => FaultKind::ServiceUnavailable { retry_after: 1 },
        _ => FaultKind::Gone,
    }
}

impl Schedule {
    /// The schedule for `seed` over `actions` terminate actions, injecting `classes`.
    pub fn from_seed(seed: u64, actions: usize, classes: &Classes) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let has = |c: Class| classes.0.contains(&c);
        let mut phases = [Phase::Recording, Phase::Draining, Phase::Completing];
        phases.shuffle(&mut rng);
        let handover_at = rng.random_range(0..actions.max(1));
        let race_at = rng.random_range(0..actions.max(1));
        // One action per run gives up, so a stop while Abandoning happens in every run; the
        // others share the other phases.
        let abandon_at = rng.random_range(0..actions.max(1));
        let mut others = phases.iter().cycle();
        let mut plans = Vec::new();
        for i in 0..actions {
            let mut plan = ActionPlan::default();
            if has(Class::Api) {
                // Every target once per action, each with a fault of its own; then a few
                // more on the busiest verbs.
                for (method, plural) in API_TARGETS {
                    plan.api.push(ApiFault {
                        method,
                        plural,
                        count: 1,
                        kind: api_kind(&mut rng),
                    });
                }
                for (method, plural) in [("GET", "pods"), ("PATCH", "nodes")] {
                    plan.api.push(ApiFault {
                        method,
                        plural,
                        count: 1,
                        kind: api_kind(&mut rng),
                    });
                }
            }
            if has(Class::Restart) {
                plan.abandon = i == abandon_at;
                plan.restart = Some(if plan.abandon {
                    Phase::Abandoning
                } else {
                    *others.next().expect("a cycle never ends")
                });
            }
            if has(Class::Handover) && i == handover_at {
                plan.restart.get_or_insert(Phase::Draining);
                plan.handover = true;
            }
            if has(Class::Delivery) {
                plan.duplicate = rng.random_bool(0.6);
                plan.late = rng
                    .random_bool(0.5)
                    .then(|| Duration::from_millis(rng.random_range(500..2500)));
            }
            if has(Class::Race) && i == race_at {
                plan.race = true;
                plan.duplicate = true;
            }
            plans.push(plan);
        }
        let mut aws = AwsPlan::default();
        if has(Class::Aws) {
            for call in [
                Call::ReceiveMessage,
                Call::DeleteMessage,
                Call::ChangeMessageVisibility,
                Call::RecordLifecycleActionHeartbeat,
                Call::CompleteLifecycleAction,
            ] {
                // Spread over the first calls of each kind, so they are made in every run.
                let mut at: Vec<u32> = (0..8).collect();
                at.shuffle(&mut rng);
                for n in at.into_iter().take(2) {
                    let fault = if rng.random_bool(0.5) {
                        Fault::Error
                    } else {
                        Fault::Throttle
                    };
                    aws.calls.push((call, n, fault));
                }
            }
            if rng.random_bool(0.5) {
                aws.calls.push((Call::DeleteMessage, 8, Fault::AnswerLost));
            }
        }
        Schedule {
            seed,
            actions: plans,
            aws,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let all = Classes::default();
        assert_eq!(
            Schedule::from_seed(7, 3, &all),
            Schedule::from_seed(7, 3, &all)
        );
        assert_ne!(
            Schedule::from_seed(7, 3, &all),
            Schedule::from_seed(8, 3, &all)
        );
    }

    #[test]
    fn three_actions_restart_in_three_phases_one_abandoning_and_hand_over_once() {
        let s = Schedule::from_seed(1, 3, &Classes::default());
        let phases: BTreeSet<Phase> = s.actions.iter().filter_map(|a| a.restart).collect();
        assert_eq!(phases.len(), 3, "{s:?}");
        assert!(phases.contains(&Phase::Abandoning), "{s:?}");
        assert_eq!(s.actions.iter().filter(|a| a.abandon).count(), 1);
        assert!(
            s.actions
                .iter()
                .all(|a| a.abandon == (a.restart == Some(Phase::Abandoning))),
            "{s:?}"
        );
        assert_eq!(s.actions.iter().filter(|a| a.handover).count(), 1);
        assert_eq!(s.actions.iter().filter(|a| a.race).count(), 1);
        assert!(s.actions.iter().all(|a| a.api.len() >= API_TARGETS.len()));
    }

    /// The five seeds together stop the drainer in every phase and schedule every
    /// API fault kind, 503 included.
    #[test]
    fn seeds_1_to_5_cover_every_phase_and_every_api_fault_kind() {
        let all = Classes::default();
        let schedules: Vec<Schedule> = (1..=5).map(|s| Schedule::from_seed(s, 3, &all)).collect();
        let phases: BTreeSet<Phase> = schedules
            .iter()
            .flat_map(|s| s.actions.iter().filter_map(|a| a.restart))
            .collect();
        assert_eq!(phases.len(), 4, "{phases:?}");
        let kinds: BTreeSet<&str> = schedules
            .iter()
            .flat_map(|s| s.actions.iter().flat_map(|a| &a.api))
            .map(|f| crate::chaos::record::fault_name(f.kind))
            .collect();
        for kind in [
            "api-500",
            "api-503",
            "api-504",
            "api-429",
            "api-hang",
            "api-watch-cut",
            "api-410",
        ] {
            assert!(kinds.contains(kind), "{kind} never scheduled: {kinds:?}");
        }
    }

    #[test]
    fn the_fault_list_selects_classes_and_names_a_bad_one() {
        let s = Schedule::from_seed(1, 3, &"api".parse().unwrap());
        assert!(s.aws.calls.is_empty());
        assert!(
            s.actions
                .iter()
                .all(|a| a.restart.is_none() && !a.duplicate)
        );
        assert_eq!(
            "api,bogus".parse::<Classes>(),
            Err(UnknownClass("bogus".into()))
        );
    }
}
