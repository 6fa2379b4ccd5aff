//! The simulated group behind `quiesce roll`'s [`Refresh`] trait, so `quiesce lab --slo` rolls
//! through the very code that follows a real Instance Refresh (`quiesce_roll::run::roll`).
//!
//! As Auto Scaling does (User Guide, "Use an instance refresh to update instances in an Auto
//! Scaling group" and "Undo changes with a rollback"): `StartInstanceRefresh` sets the group's
//! launch template version and replaces its instances in batches of
//! [`Preferences::batch`] through the lifecycle hooks the group models (launch first, then the
//! terminate hook the drainer completes); an instance launches from the group's version at its
//! launch. At each CheckpointPercentages the refresh waits CheckpointDelay (status reason
//! `Waiting for checkpoint at N%`), after the last batch it bakes for BakeTime.
//! `CancelInstanceRefresh` stops it once the batch in flight is done (replaced instances stay);
//! `RollbackInstanceRefresh` puts the previous version back on the group, lets the batch in
//! flight finish, then replaces every instance not on the previous version the same way.
//! A replacement that never comes into service fails the refresh (or the rollback).
//!
//! The refresh runs in [`Driver::run`], a future the caller polls beside the roll (no task is
//! spawned, so progress can go to the caller's own printer).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quiesce_roll::aws::{GroupFacts, HookFacts, LAUNCHING, TERMINATING};
use quiesce_roll::refresh::{
    InstanceFacts, Preferences, Refresh, RefreshError, RefreshState, Status,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Batch, Group, Replacement};

/// The launch template version the adopted instances were launched from.
pub const PREVIOUS_VERSION: &str = "1";

/// The lab group's launch template.
pub const LAUNCH_TEMPLATE: &str = "lt-0lab0000000000001";

/// AWS's CheckpointDelay when a refresh with checkpoints sets none (RefreshPreferences).
const DEFAULT_CHECKPOINT_DELAY: Duration = Duration::from_secs(3600);

struct Run {
    id: String,
    status: Status,
    reason: Option<String>,
    total: usize,
    done: usize,
    /// `CancelInstanceRefresh` was called.
    cancel: bool,
    /// `RollbackInstanceRefresh` was called.
    rollback: bool,
}

#[derive(Default)]
struct Shared {
    /// The group's launch template version now: what a launch runs.
    version: String,
    /// Each instance's version, once known (adopted ones, and each batch's launches).
    versions: BTreeMap<String, String>,
    runs: Vec<Run>,
    replacements: Vec<Replacement>,
    serial: u64,
}

/// The group, as `quiesce roll` drives it. Cheap to clone.
#[derive(Clone)]
pub struct RefreshingGroup {
    group: Group,
    shared: Arc<Mutex<Shared>>,
    /// Bumped by cancel and rollback: wakes a soak or bake.
    poke: Arc<watch::Sender<u64>>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// A started refresh, for the driver.
struct Job {
    id: String,
    previous: String,
    preferences: Preferences,
}

/// Runs the refreshes started on a [`RefreshingGroup`].
pub struct Driver {
    target: RefreshingGroup,
    jobs: mpsc::UnboundedReceiver<Job>,
}

fn refusal(call: &'static str, group: &str, message: impl Into<String>) -> RefreshError {
    RefreshError {
        call,
        group: group.to_string(),
        message: message.into(),
    }
}

impl RefreshingGroup {
    /// `group` with every instance in it now on [`PREVIOUS_VERSION`], and the driver that
    /// runs its refreshes.
    pub fn new(group: Group) -> (RefreshingGroup, Driver) {
        let versions = group
            .lock()
            .instances
            .keys()
            .map(|id| (id.clone(), PREVIOUS_VERSION.to_string()))
            .collect();
        let (jobs, rx) = mpsc::unbounded_channel();
        let target = RefreshingGroup {
            group,
            shared: Arc::new(Mutex::new(Shared {
                version: PREVIOUS_VERSION.into(),
                versions,
                ..Shared::default()
            })),
            poke: Arc::new(watch::channel(0).0),
            jobs,
        };
        (target.clone(), Driver { target, jobs: rx })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The refresh preferences of the group's own refresh: its MinHealthyPercentage.
    pub fn preferences(&self) -> Preferences {
        Preferences {
            min_healthy: self.group.opts.min_healthy_percentage.min(100) as u8,
            ..Preferences::default()
        }
    }

    /// Every replacement so far, the rollback's included (flagged), in order.
    pub fn replacements(&self) -> Vec<Replacement> {
        self.lock().replacements.clone()
    }

    /// The group as pre-flight reads a real one: the hooks the lab models (terminate with
    /// DefaultResult ABANDON, launch), `TerminateHookAbandon: retain` (an abandoned terminate
    /// hook keeps the instance), a launch template at its current version.
    pub fn facts(&self) -> GroupFacts {
        let opts = &self.group.opts;
        let hook = |name: &str, transition: &str| HookFacts {
            name: name.to_string(),
            transition: transition.to_string(),
            default_result: "ABANDON".into(),
            target: Some("lab queue".into()),
        };
        let version = self.lock().version.clone();
        GroupFacts {
            name: opts.name.clone(),
            tags: BTreeMap::new(),
            hooks: vec![
                hook(&opts.terminate_hook, TERMINATING),
                hook(&opts.launch_hook, LAUNCHING),
            ],
            terminate_hook_abandon: Some("retain".into()),
            launch_template_id: Some(LAUNCH_TEMPLATE.into()),
            launch_template_version: Some(version),
            launch_configuration: None,
            instances: self.facts_of_instances(),
        }
    }

    fn facts_of_instances(&self) -> Vec<InstanceFacts> {
        let ids: Vec<String> = self.group.lock().instances.keys().cloned().collect();
        let shared = self.lock();
        ids.into_iter()
            .filter_map(|id| {
                let state = self.group.lifecycle_state(&id)?;
                let version = shared
                    .versions
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| shared.version.clone());
                Some(InstanceFacts {
                    id,
                    state: state.to_string(),
                    version: Some(version),
                })
            })
            .collect()
    }

    /// The refresh a cancel or a rollback acts on, refused as Auto Scaling refuses when the
    /// group has none in progress.
    fn active_for(&self, call: &'static str, group: &str) -> Result<String, RefreshError> {
        self.check_group(call, group)?;
        self.active().ok_or_else(|| {
            refusal(
                call,
                group,
                "ActiveInstanceRefreshNotFound: No in progress or pending Instance Refresh found",
            )
        })
    }

    fn check_group(&self, call: &'static str, group: &str) -> Result<(), RefreshError> {
        if group == self.group.opts.name {
            Ok(())
        } else {
            Err(refusal(
                call,
                group,
                format!("ValidationError: AutoScalingGroup name not found - {group}"),
            ))
        }
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Run)) {
        if let Some(run) = self.lock().runs.iter_mut().find(|r| r.id == id) {
            change(run);
        }
    }

    fn run_flags(&self, id: &str) -> (bool, bool) {
        self.lock()
            .runs
            .iter()
            .find(|r| r.id == id)
            .map_or((false, false), |r| (r.cancel, r.rollback))
    }

    /// Instances in service not on `version` (all of them unless `skip_matching`), oldest
    /// first.
    fn plan(&self, version: &str, skip_matching: bool) -> Vec<String> {
        let in_service = self.group.in_service();
        let shared = self.lock();
        in_service
            .into_iter()
            .filter(|id| {
                !skip_matching || shared.versions.get(id).map(String::as_str) != Some(version)
            })
            .collect()
    }

    /// Waits `delay`; true when cancel or rollback was called meanwhile.
    async fn soak(&self, id: &str, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut poked = self.poke.subscribe();
        loop {
            let (cancel, rollback) = self.run_flags(id);
            if cancel || rollback {
                return true;
            }
            if tokio::time::timeout_at(until, poked.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Replaces `todo` in batches of `preferences`' size; `rollback` marks the
    /// replacements. Stops early (returning false) when cancel or rollback is called while
    /// rolling forward, or a replacement never comes into service (the run has failed then).
    async fn replace(
        &self,
        job: &Job,
        mut todo: Vec<String>,
        rollback: bool,
        progress: &(dyn Fn(&str) + Sync),
    ) -> bool {
        let mut checkpoints = job.preferences.checkpoints.clone();
        let total = todo.len();
        let mut done = 0;
        while !todo.is_empty() {
            let (cancel, rolled_back) = self.run_flags(&job.id);
            if !rollback && (cancel || rolled_back) {
                return false;
            }
            let size = self.group.in_service().len();
            let n = job.preferences.batch(size).clamp(1, todo.len());
            let chunk: Vec<String> = todo.drain(..n).collect();
            let version = self.lock().version.clone();
            match self.group.replace_batch(&chunk, progress).await {
                Batch::Replaced {
                    launched,
                    replacements,
                } => {
                    let mut shared = self.lock();
                    for id in launched {
                        shared.versions.insert(id, version.clone());
                    }
                    shared.replacements.extend(
                        replacements
                            .into_iter()
                            .map(|r| Replacement { rollback, ..r }),
                    );
                }
                Batch::NotInService { launched } => {
                    let mut shared = self.lock();
                    for id in launched {
                        shared.versions.insert(id, version.clone());
                    }
                    drop(shared);
                    let (status, what) = if rollback {
                        (Status::RollbackFailed, "the rollback")
                    } else {
                        (Status::Failed, "the refresh")
                    };
                    self.update(&job.id, |r| {
                        r.status = status;
                        r.reason = Some(format!(
                            "a replacement never came into service: {what} stopped"
                        ));
                    });
                    return false;
                }
            }
            done += chunk.len();
            if rollback {
                continue;
            }
            self.update(&job.id, |r| r.done = done);
            let percent = (100 * done / total.max(1)) as u8;
            let mut reached = None;
            while checkpoints.first().is_some_and(|c| *c <= percent) {
                reached = Some(checkpoints.remove(0));
            }
            if let Some(at) = reached {
                let delay = job
                    .preferences
                    .checkpoint_delay
                    .unwrap_or(DEFAULT_CHECKPOINT_DELAY);
                self.update(&job.id, |r| {
                    r.reason = Some(format!(
                        "Waiting for checkpoint at {at}% ({}s)",
                        delay.as_secs()
                    ));
                });
                progress(&format!("checkpoint at {at}%: soaking for {delay:?}"));
                let interrupted = self.soak(&job.id, delay).await;
                self.update(&job.id, |r| r.reason = None);
                if interrupted {
                    return false;
                }
            }
        }
        true
    }

    /// Puts the previous version back and replaces every instance not on it.
    async fn roll_back(&self, job: &Job, progress: &(dyn Fn(&str) + Sync)) {
        self.lock().version = job.previous.clone();
        self.update(&job.id, |r| {
            r.status = Status::RollbackInProgress;
            r.reason = Some(format!(
                "rolling back to launch template version {}",
                job.previous
            ));
        });
        progress(&format!(
            "rollback: replacing the instances not on version {}",
            job.previous
        ));
        let todo = self.plan(&job.previous, true);
        if self.replace(job, todo, true, progress).await {
            self.update(&job.id, |r| r.status = Status::RollbackSuccessful);
        }
    }

    async fn drive(&self, job: Job, progress: &(dyn Fn(&str) + Sync)) {
        let desired = self.lock().version.clone();
        self.update(&job.id, |r| {
            if r.status == Status::Pending {
                r.status = Status::InProgress;
            }
        });
        let todo = self.plan(&desired, job.preferences.skip_matching);
        let total = todo.len();
        self.update(&job.id, |r| r.total = total);
        let forward = self.replace(&job, todo, false, progress).await;
        let (cancel, rollback) = self.run_flags(&job.id);
        if rollback {
            return self.roll_back(&job, progress).await;
        }
        if cancel {
            self.update(&job.id, |r| {
                r.status = Status::Cancelled;
                r.reason = Some("cancelled by a user request".into());
            });
            return;
        }
        if !forward {
            return;
        }
        if let Some(bake) = job.preferences.bake_time.filter(|b| !b.is_zero()) {
            self.update(&job.id, |r| r.status = Status::Baking);
            if self.soak(&job.id, bake).await {
                let (_, rollback) = self.run_flags(&job.id);
                if rollback {
                    return self.roll_back(&job, progress).await;
                }
                self.update(&job.id, |r| {
                    r.status = Status::Cancelled;
                    r.reason = Some("cancelled by a user request".into());
                });
                return;
            }
        }
        self.update(&job.id, |r| {
            r.status = Status::Successful;
            r.done = r.total;
        });
    }

    fn active(&self) -> Option<String> {
        self.lock()
            .runs
            .iter()
            .find(|r| !r.status.is_final())
            .map(|r| r.id.clone())
    }
}

impl Driver {
    /// Runs each refresh started, in turn. It never ends by itself: poll it beside the roll.
    pub async fn run(mut self, progress: &(dyn Fn(&str) + Sync)) {
        while let Some(job) = self.jobs.recv().await {
            self.target.drive(job, progress).await;
        }
    }
}

impl Refresh for RefreshingGroup {
    async fn start(
        &self,
        group: &str,
        version: &str,
        preferences: &Preferences,
    ) -> Result<String, RefreshError> {
        const CALL: &str = "StartInstanceRefresh";
        self.check_group(CALL, group)?;
        if self.active().is_some() {
            return Err(refusal(
                CALL,
                group,
                format!(
                    "InstanceRefreshInProgress: An Instance Refresh is already in progress and blocks the execution of this Instance Refresh for group {group}."
                ),
            ));
        }
        let (id, previous) = {
            let mut shared = self.lock();
            shared.serial += 1;
            let id = format!("{:08x}-lab0-4000-8000-{:012x}", 0x0ef0e500, shared.serial);
            let previous = std::mem::replace(&mut shared.version, version.to_string());
            shared.runs.push(Run {
                id: id.clone(),
                status: Status::Pending,
                reason: None,
                total: 0,
                done: 0,
                cancel: false,
                rollback: false,
            });
            (id, previous)
        };
        self.jobs
            .send(Job {
                id: id.clone(),
                previous,
                preferences: preferences.clone(),
            })
            .map_err(|_| refusal(CALL, group, "the lab's refresh driver has stopped"))?;
        Ok(id)
    }

    async fn describe(&self, group: &str, id: &str) -> Result<RefreshState, RefreshError> {
        const CALL: &str = "DescribeInstanceRefreshes";
        self.check_group(CALL, group)?;
        let shared = self.lock();
        let run = shared
            .runs
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| refusal(CALL, group, format!("no instance refresh {id}")))?;
        let rolling_back = matches!(
            run.status,
            Status::RollbackInProgress | Status::RollbackSuccessful | Status::RollbackFailed
        );
        Ok(RefreshState {
            id: id.to_string(),
            status: run.status.clone(),
            reason: run.reason.clone(),
            // As DescribeInstanceRefreshes: a rollback's progress is in RollbackDetails.
            percent: if rolling_back || run.total == 0 {
                if run.status == Status::Successful {
                    100
                } else {
                    0
                }
            } else {
                (100 * run.done / run.total) as u8
            },
            to_update: if rolling_back {
                0
            } else {
                run.total.saturating_sub(run.done) as u32
            },
        })
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceFacts>, RefreshError> {
        self.check_group("DescribeAutoScalingGroups", group)?;
        Ok(self.facts_of_instances())
    }

    async fn cancel(&self, group: &str) -> Result<(), RefreshError> {
        let id = self.active_for("CancelInstanceRefresh", group)?;
        self.update(&id, |r| {
            r.cancel = true;
            if matches!(
                r.status,
                Status::Pending | Status::InProgress | Status::Baking
            ) {
                r.status = Status::Cancelling;
            }
        });
        self.poke.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn rollback(&self, group: &str) -> Result<(), RefreshError> {
        let id = self.active_for("RollbackInstanceRefresh", group)?;
        self.update(&id, |r| {
            r.rollback = true;
            r.status = Status::RollbackInProgress;
            r.reason = Some("rollback requested".into());
        });
        self.poke.send_modify(|n| *n += 1);
        Ok(())
    }
}
