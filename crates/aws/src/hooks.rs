//! Completing and heartbeating lifecycle actions. The drainer talks to this trait so that the
//! same code completes real Auto Scaling hooks (through [`AutoScaling`]) and the lab's
//! simulated group.

use std::future::Future;
use std::time::Duration;

use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::event::LifecycleAction;
use crate::hook::HookTiming;

/// What the drain decided for the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    /// Go on: terminate (or put in service) the instance.
    Continue,
    /// Stop: for a terminate hook the instance is kept if the group's instance lifecycle
    /// policy says `TerminateHookAbandon: retain`, otherwise it terminates anyway.
    Abandon,
}

impl HookResult {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Continue => "CONTINUE",
            HookResult::Abandon => "ABANDON",
        }
    }
}

/// What a completion achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// This call completed the action.
    Completed,
    /// Auto Scaling knows no such action any more: completed before (by us before a restart,
    /// by another replica, or by the hook's timeout). The work is done either way.
    NotActive,
}

/// What Auto Scaling says about an action's instance (`DescribeAutoScalingInstances`), checked
/// before acting: a forged, stale or duplicate message names an instance that is not waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceCheck {
    /// In the message's group, in the wait state of its transition: act.
    Waiting,
    /// In the message's group, in another state (the hook is over): the state, e.g.
    /// `Terminating:Proceed`, `InService`, `Terminating:Retained`.
    Moved(String),
    /// No instance of the message's group (terminated already, another group, forged).
    NotInGroup,
}

impl InstanceCheck {
    /// What an instance's `LifecycleState` in the action's group (`None`: not in that group)
    /// says about the action: the one reading of `DescribeAutoScalingInstances`, for the real
    /// client and the lab's simulated group alike.
    pub fn of(action: &LifecycleAction, state: Option<&str>) -> InstanceCheck {
        let waiting = match action.transition {
            crate::event::Transition::Terminating => "Terminating:Wait",
            crate::event::Transition::Launching => "Pending:Wait",
        };
        match state {
            None => InstanceCheck::NotInGroup,
            Some(state) if state == waiting => InstanceCheck::Waiting,
            Some(state) => InstanceCheck::Moved(state.to_string()),
        }
    }

    /// Whether the instance stays (it is not going away), so that an uncordon does not
    /// invite pods onto a dying node.
    pub fn instance_stays(&self) -> bool {
        matches!(self, InstanceCheck::Moved(state)
            if state == "InService" || state == "Standby" || state.starts_with("Terminating:Retained"))
    }
}

/// An Auto Scaling call that failed; says which call and why.
#[derive(Debug, thiserror::Error)]
#[error("{call} for {instance} failed: {message}")]
pub struct HookError {
    /// The API call.
    pub call: &'static str,
    /// The instance it was about.
    pub instance: String,
    /// The service's error, with its code.
    pub message: String,
}

impl HookError {
    /// Whether Auto Scaling no longer holds the action (completed, or its hook timed out):
    /// work for it must stop.
    pub fn is_not_active(&self) -> bool {
        self.message.contains("No active Lifecycle Action")
    }
}

/// The lifecycle-hook calls the drainer makes.
pub trait LifecycleHooks: Send + Sync {
    /// Where the action's instance stands (`DescribeAutoScalingInstances`), so that a
    /// forged, stale or duplicate message is not acted on.
    fn check(
        &self,
        action: &LifecycleAction,
    ) -> impl Future<Output = Result<InstanceCheck, HookError>> + Send;
    /// The hook's heartbeat timeout (`DescribeLifecycleHooks`).
    fn timing(
        &self,
        action: &LifecycleAction,
    ) -> impl Future<Output = Result<HookTiming, HookError>> + Send;
    /// `RecordLifecycleActionHeartbeat`: restarts the hook's timeout.
    fn heartbeat(
        &self,
        action: &LifecycleAction,
    ) -> impl Future<Output = Result<(), HookError>> + Send;
    /// `CompleteLifecycleAction`.
    fn complete(
        &self,
        action: &LifecycleAction,
        result: HookResult,
    ) -> impl Future<Output = Result<Completion, HookError>> + Send;
}

/// The real thing, through aws-sdk-autoscaling.
#[derive(Debug, Clone)]
pub struct AutoScaling {
    client: aws_sdk_autoscaling::Client,
}

impl AutoScaling {
    /// A client from a loaded configuration (see [`crate::sdk::sdk_config`]).
    pub fn new(config: &aws_config::SdkConfig) -> AutoScaling {
        AutoScaling {
            client: aws_sdk_autoscaling::Client::new(config),
        }
    }
}

/// Auto Scaling answers a completion or heartbeat for an action it no longer holds with
/// `ValidationError: No active Lifecycle Action found with instance ID …`.
fn not_active(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("ValidationError")
        && message.is_some_and(|m| m.contains("No active Lifecycle Action"))
}

fn error<E>(call: &'static str, action: &LifecycleAction, err: E) -> HookError
where
    E: std::error::Error + Send + Sync + 'static,
{
    HookError {
        call,
        instance: action.instance_id.clone(),
        message: DisplayErrorContext(err).to_string(),
    }
}

impl LifecycleHooks for AutoScaling {
    async fn check(&self, action: &LifecycleAction) -> Result<InstanceCheck, HookError> {
        let out = self
            .client
            .describe_auto_scaling_instances()
            .instance_ids(&action.instance_id)
            .send()
            .await
            .map_err(|e| error("DescribeAutoScalingInstances", action, e))?;
        let state = out
            .auto_scaling_instances()
            .iter()
            .find(|i| i.auto_scaling_group_name() == Some(action.group.as_str()))
            .map(|found| found.lifecycle_state().unwrap_or_default());
        Ok(InstanceCheck::of(action, state))
    }

    async fn timing(&self, action: &LifecycleAction) -> Result<HookTiming, HookError> {
        let out = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_names(&action.hook)
            .send()
            .await
            .map_err(|e| error("DescribeLifecycleHooks", action, e))?;
        let hook = out
            .lifecycle_hooks()
            .iter()
            .find(|h| h.lifecycle_hook_name() == Some(action.hook.as_str()))
            .ok_or_else(|| HookError {
                call: "DescribeLifecycleHooks",
                instance: action.instance_id.clone(),
                message: format!(
                    "group {} has no lifecycle hook named {}",
                    action.group, action.hook
                ),
            })?;
        // AWS's default heartbeat timeout is 3600 s when the hook does not set one.
        let secs = hook.heartbeat_timeout().unwrap_or(3600).max(1) as u64;
        Ok(HookTiming {
            heartbeat_timeout: Duration::from_secs(secs),
        })
    }

    async fn heartbeat(&self, action: &LifecycleAction) -> Result<(), HookError> {
        self.client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .lifecycle_action_token(&action.token)
            .instance_id(&action.instance_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("RecordLifecycleActionHeartbeat", action, e))
    }

    async fn complete(
        &self,
        action: &LifecycleAction,
        result: HookResult,
    ) -> Result<Completion, HookError> {
        match self
            .client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .lifecycle_action_token(&action.token)
            .instance_id(&action.instance_id)
            .lifecycle_action_result(result.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(Completion::Completed),
            Err(e) if not_active(e.code(), e.message()) => Ok(Completion::NotActive),
            Err(e) => Err(error("CompleteLifecycleAction", action, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_no_active_action_error() {
        assert!(not_active(
            Some("ValidationError"),
            Some("No active Lifecycle Action found with instance ID i-0abc")
        ));
        assert!(!not_active(
            Some("ValidationError"),
            Some("1 validation error")
        ));
        assert!(!not_active(Some("Throttling"), None));
    }
}
