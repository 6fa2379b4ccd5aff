//! How long a drain may hold a lifecycle hook, and how often to heartbeat it.
//!
//! Auto Scaling keeps an instance in `Terminating:Wait` for the hook's heartbeat timeout; each
//! `RecordLifecycleActionHeartbeat` restarts that timeout, up to a global timeout of
//! min(48 hours, 100 × heartbeat timeout) (Amazon EC2 Auto Scaling User Guide, "Lifecycle
//! hooks": "the maximum amount of time that you can keep an instance in a wait state is 48
//! hours or 100 times the heartbeat timeout, whichever is smaller"). Tools that use a fixed
//! five-minute window drop drains that need longer; the deadline here comes from the workload.

use std::time::Duration;

/// The hard cap Auto Scaling puts on any wait.
pub const MAX_WAIT: Duration = Duration::from_secs(48 * 3600);

/// A hook's timing, read with `DescribeLifecycleHooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookTiming {
    /// The hook's HeartbeatTimeout.
    pub heartbeat_timeout: Duration,
}

impl HookTiming {
    /// How long the instance can be held at most, however often we heartbeat.
    pub fn global_timeout(self) -> Duration {
        (self.heartbeat_timeout * 100).min(MAX_WAIT)
    }

    /// Heartbeat at a third of the timeout, so two heartbeats can fail before the hook expires.
    pub fn heartbeat_every(self) -> Duration {
        self.heartbeat_timeout / 3
    }
}

/// What the node's workload needs for a drain to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainNeeds {
    /// The largest terminationGracePeriodSeconds among the node's pods.
    pub max_grace: Duration,
    /// The longest time a replacement pod takes to become Ready (observed or configured).
    pub max_startup: Duration,
    /// How many eviction rounds PodDisruptionBudgets force one after another (a budget
    /// allowing one disruption over three pods on the node forces three).
    pub serial_rounds: u32,
}

/// The deadline for the drain: every forced round costs a grace period and a replacement's
/// startup, plus `margin`; never beyond what the hook allows.
pub fn drain_deadline(needs: DrainNeeds, timing: HookTiming, margin: Duration) -> Duration {
    let round = needs.max_grace + needs.max_startup;
    let wanted = round * needs.serial_rounds.max(1) + margin;
    wanted.min(timing.global_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn global_timeout_is_the_smaller_of_48h_and_100_heartbeats() {
        assert_eq!(
            HookTiming {
                heartbeat_timeout: secs(300)
            }
            .global_timeout(),
            secs(30_000)
        );
        assert_eq!(
            HookTiming {
                heartbeat_timeout: secs(7200)
            }
            .global_timeout(),
            MAX_WAIT
        );
        assert_eq!(
            HookTiming {
                heartbeat_timeout: secs(300)
            }
            .heartbeat_every(),
            secs(100)
        );
    }

    #[test]
    fn the_deadline_grows_with_the_workload_and_is_capped_by_the_hook() {
        let timing = HookTiming {
            heartbeat_timeout: secs(300),
        };
        let needs = DrainNeeds {
            max_grace: secs(60),
            max_startup: secs(90),
            serial_rounds: 3,
        };
        assert_eq!(
            drain_deadline(needs, timing, secs(120)),
            secs(3 * 150 + 120)
        );
        let huge = DrainNeeds {
            serial_rounds: 1000,
            ..needs
        };
        assert_eq!(drain_deadline(huge, timing, secs(120)), secs(30_000));
        let none = DrainNeeds::default();
        assert_eq!(drain_deadline(none, timing, secs(60)), secs(60));
    }
}
