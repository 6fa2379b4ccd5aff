//! The Instance Refresh, behind a trait: `quiesce roll` drives real Auto Scaling through
//! [`crate::aws::AwsRefresh`] and the lab's simulated group the same way, as `LifecycleHooks`
//! and `Queue` do for the drainer.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

/// The refresh's preferences (`RefreshPreferences`), as `quiesce roll` exposes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preferences {
    /// MinHealthyPercentage: how much of the group stays in service; sets the batch size.
    pub min_healthy: u8,
    /// MaxHealthyPercentage (100–200): above 100 replacements launch before terminations.
    pub max_healthy: Option<u16>,
    /// CheckpointPercentages, ascending, the last 100.
    pub checkpoints: Vec<u8>,
    /// CheckpointDelay: the soak at each checkpoint.
    pub checkpoint_delay: Option<Duration>,
    /// BakeTime: how long the refresh waits after the last replacement before Successful
    /// (its alarms still watched).
    pub bake_time: Option<Duration>,
    /// SkipMatching: instances already on the desired configuration stay.
    pub skip_matching: bool,
    /// InstanceWarmup: how long a new instance counts as not yet healthy.
    pub instance_warmup: Option<Duration>,
    /// AlarmSpecification: CloudWatch alarms that fail the refresh.
    pub alarms: Vec<String>,
    /// AutoRollback: on failure (an alarm), Auto Scaling rolls back by itself.
    pub auto_rollback: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            min_healthy: 90,
            max_healthy: None,
            checkpoints: Vec::new(),
            checkpoint_delay: None,
            bake_time: None,
            skip_matching: false,
            instance_warmup: None,
            alarms: Vec::new(),
            auto_rollback: false,
        }
    }
}

impl Preferences {
    /// How many instances of `size` are out at once: Auto Scaling keeps MinHealthyPercentage
    /// in service (rounded up) and replaces at least one at a time; with MaxHealthyPercentage
    /// above 100 it launches up to that much extra first, and terminates as many.
    pub fn batch(&self, size: usize) -> usize {
        if size == 0 {
            return 0;
        }
        let keep = (size * self.min_healthy as usize).div_ceil(100);
        let out = size.saturating_sub(keep).max(1);
        match self.max_healthy {
            Some(max) if max > 100 => {
                let extra = (size * (max as usize - 100)) / 100;
                out.max(extra.max(1)).min(size)
            }
            _ => out.min(size),
        }
    }
}

/// Where a refresh stands (`InstanceRefreshStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Accepted, not started.
    Pending,
    /// Replacing instances (or soaking at a checkpoint).
    InProgress,
    /// Every instance replaced; waiting out the bake time.
    Baking,
    /// Done.
    Successful,
    /// Stopped by a failure (an alarm, instances that would not become healthy).
    Failed,
    /// Being cancelled.
    Cancelling,
    /// Cancelled: replaced instances stay replaced.
    Cancelled,
    /// Putting the previous configuration back.
    RollbackInProgress,
    /// The previous configuration is back.
    RollbackSuccessful,
    /// The rollback failed.
    RollbackFailed,
    /// A status this code does not know.
    Other(String),
}

impl Status {
    /// The API's spelling.
    pub fn parse(s: &str) -> Status {
        match s {
            "Pending" => Status::Pending,
            "InProgress" => Status::InProgress,
            "Baking" => Status::Baking,
            "Successful" => Status::Successful,
            "Failed" => Status::Failed,
            "Cancelling" => Status::Cancelling,
            "Cancelled" => Status::Cancelled,
            "RollbackInProgress" => Status::RollbackInProgress,
            "RollbackSuccessful" => Status::RollbackSuccessful,
            "RollbackFailed" => Status::RollbackFailed,
            other => Status::Other(other.to_string()),
        }
    }

    /// Whether the refresh is over (nothing more will change by itself).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Status::Successful
                | Status::Failed
                | Status::Cancelled
                | Status::RollbackSuccessful
                | Status::RollbackFailed
        )
    }
}

/// One look at a refresh (`DescribeInstanceRefreshes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshState {
    /// InstanceRefreshId.
    pub id: String,
    /// Status.
    pub status: Status,
    /// StatusReason (a checkpoint being soaked, why it failed).
    pub reason: Option<String>,
    /// PercentageComplete.
    pub percent: u8,
    /// InstancesToUpdate: instances still to replace.
    pub to_update: u32,
}

/// One instance of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceFacts {
    /// InstanceId.
    pub id: String,
    /// LifecycleState, e.g. `InService`, `Terminating:Wait`, `Terminating:Retained`.
    pub state: String,
    /// The launch template version it was launched from.
    pub version: Option<String>,
}

/// The state an abandoned instance is kept in under `TerminateHookAbandon: retain`.
pub const RETAINED: &str = "Terminating:Retained";

/// A refresh call that failed: which call and why.
#[derive(Debug, thiserror::Error)]
#[error("{call} for group {group} failed: {message}")]
pub struct RefreshError {
    /// The API call.
    pub call: &'static str,
    /// The group.
    pub group: String,
    /// The service's error, with its code.
    pub message: String,
}

/// The four Instance Refresh calls.
pub trait Refresh: Send + Sync {
    /// `StartInstanceRefresh`; returns the refresh id. `desired` is a launch template version
    /// here (an AMI is made one before, see [`crate::aws::AwsRefresh::version_for_image`]).
    fn start(
        &self,
        group: &str,
        version: &str,
        preferences: &Preferences,
    ) -> impl Future<Output = Result<String, RefreshError>> + Send;
    /// `DescribeInstanceRefreshes` for one refresh.
    fn describe(
        &self,
        group: &str,
        id: &str,
    ) -> impl Future<Output = Result<RefreshState, RefreshError>> + Send;
    /// The group's instances and their lifecycle states (`DescribeAutoScalingGroups`): what
    /// the roll follows between two descriptions of the refresh.
    fn instances(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<InstanceFacts>, RefreshError>> + Send;
    /// `CancelInstanceRefresh`: replaced instances stay; resuming is a new refresh with
    /// SkipMatching.
    fn cancel(&self, group: &str) -> impl Future<Output = Result<(), RefreshError>> + Send;
    /// `RollbackInstanceRefresh`: the previous configuration is put back by a refresh of its
    /// own.
    fn rollback(&self, group: &str) -> impl Future<Output = Result<(), RefreshError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_follows_min_and_max_healthy() {
        let p = |min, max| Preferences {
            min_healthy: min,
            max_healthy: max,
            ..Preferences::default()
        };
        assert_eq!(p(90, None).batch(10), 1);
        assert_eq!(p(50, None).batch(10), 5);
        assert_eq!(p(100, None).batch(10), 1, "at least one at a time");
        assert_eq!(p(66, None).batch(3), 1, "66% of 3 rounds up to 2 kept");
        assert_eq!(p(0, None).batch(3), 3);
        assert_eq!(
            p(100, Some(150)).batch(4),
            2,
            "launch-before-terminate batches"
        );
        assert_eq!(p(90, None).batch(0), 0);
    }

    #[test]
    fn statuses() {
        assert_eq!(Status::parse("Baking"), Status::Baking);
        assert!(Status::parse("RollbackSuccessful").is_final());
        assert!(!Status::parse("InProgress").is_final());
        assert_eq!(Status::parse("New"), Status::Other("New".into()));
    }
}
