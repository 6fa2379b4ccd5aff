//! The Events quiesce records on a Node, each reason with its type beside it, so that a new
//! reason cannot be recorded as the wrong type (the type used to be guessed from the reason's
//! prefix).

use serde::Serialize;

/// The Kubernetes Event type: `Normal` for progress, `Warning` for what a person should look
/// at (`kubectl get events --field-selector type=Warning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// Progress.
    Normal,
    /// Something stands in the way or went wrong.
    Warning,
}

/// Why quiesce records an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The plan found a blocker; nothing was changed (or, after the cordon, the drain stops).
    DrainBlocked,
    /// An eviction was refused (a budget, the multi-budget 500, a transient failure); retried.
    EvictionBlocked,
    /// A pod the drain waits for is stuck terminating.
    StuckTerminating,
    /// Pods leave the node without a gate (an unknown controller owns them).
    Ungated,
    /// The node is drained: every pod gone, every workload whole again elsewhere.
    Drained,
    /// The drain did not finish.
    DrainFailed,
    /// The drainer abandoned a lifecycle action after uncordoning the node.
    LifecycleAbandoned,
    /// The lifecycle hook was no longer active (it timed out or was completed elsewhere), so
    /// the drainer stopped working on the node.
    LifecycleExpired,
    /// A target group nobody will deregister the node from (not the cluster's load balancer
    /// controller's, not the Auto Scaling group's) was left as it is.
    TargetGroupSkipped,
    /// The node was still a draining target of a load balancer when the wait for it ended.
    TargetsStillDraining,
}

impl Reason {
    /// The Event's `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DrainBlocked => "DrainBlocked",
            Reason::EvictionBlocked => "EvictionBlocked",
            Reason::StuckTerminating => "StuckTerminating",
            Reason::Ungated => "Ungated",
            Reason::Drained => "Drained",
            Reason::DrainFailed => "DrainFailed",
            Reason::LifecycleAbandoned => "LifecycleAbandoned",
            Reason::LifecycleExpired => "LifecycleExpired",
            Reason::TargetGroupSkipped => "TargetGroupSkipped",
            Reason::TargetsStillDraining => "TargetsStillDraining",
        }
    }

    /// The Event's `type` field.
    pub fn kind(self) -> EventType {
        match self {
            Reason::Drained => EventType::Normal,
            Reason::DrainBlocked
            | Reason::EvictionBlocked
            | Reason::StuckTerminating
            | Reason::Ungated
            | Reason::DrainFailed
            | Reason::LifecycleAbandoned
            | Reason::LifecycleExpired
            | Reason::TargetGroupSkipped
            | Reason::TargetsStillDraining => EventType::Warning,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
