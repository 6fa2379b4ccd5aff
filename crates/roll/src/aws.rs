//! The Instance Refresh and the group's facts on real Auto Scaling, through
//! aws-sdk-autoscaling. Every call carries the timeouts of [`quiesce_aws::sdk::timeouts`]
//! (set on this client, so a configuration built elsewhere cannot leave them out).

use std::collections::BTreeMap;

use aws_sdk_autoscaling::error::DisplayErrorContext;
use aws_sdk_autoscaling::types::{
    AlarmSpecification, DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
};
use serde::Serialize;

use crate::refresh::{InstanceFacts, Preferences, Refresh, RefreshError, RefreshState, Status};

/// One lifecycle hook of the group (`DescribeLifecycleHooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookFacts {
    /// LifecycleHookName.
    pub name: String,
    /// `autoscaling:EC2_INSTANCE_TERMINATING` or `…LAUNCHING`.
    pub transition: String,
    /// DefaultResult: what happens when nobody answers.
    pub default_result: String,
    /// NotificationTargetARN (the drainer's queue), if any.
    pub target: Option<String>,
}

/// What pre-flight and the report need to know about the group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GroupFacts {
    /// AutoScalingGroupName.
    pub name: String,
    /// Tags (`eks:nodegroup-name` marks an EKS managed node group).
    pub tags: BTreeMap<String, String>,
    /// Lifecycle hooks.
    pub hooks: Vec<HookFacts>,
    /// InstanceLifecyclePolicy.RetentionTriggers.TerminateHookAbandon (`retain`/`terminate`).
    pub terminate_hook_abandon: Option<String>,
    /// The launch template's id, when the group uses one.
    pub launch_template_id: Option<String>,
    /// The launch template version the group launches now.
    pub launch_template_version: Option<String>,
    /// A launch configuration, when the group uses one instead (no refresh rollback then).
    pub launch_configuration: Option<String>,
    /// Instances.
    pub instances: Vec<InstanceFacts>,
}

/// Terminate hook transition.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";
/// Launch hook transition.
pub const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";

/// Auto Scaling through the SDK (and Lambda, whose event source mappings are the Lambda
/// mode's proof that a drainer answers the hooks).
#[derive(Debug, Clone)]
pub struct AwsRefresh {
    client: aws_sdk_autoscaling::Client,
    lambda: aws_sdk_lambda::Client,
}

fn fail<E>(call: &'static str, group: &str, err: E) -> RefreshError
where
    E: std::error::Error + Send + Sync + 'static,
{
    RefreshError {
        call,
        group: group.to_string(),
        message: DisplayErrorContext(err).to_string(),
    }
}

fn secs(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl AwsRefresh {
    /// A client from a loaded configuration ([`quiesce_aws::sdk::sdk_config`]).
    pub fn new(config: &aws_config::SdkConfig) -> AwsRefresh {
        let conf = aws_sdk_autoscaling::config::Builder::from(config)
            .timeout_config(quiesce_aws::sdk::timeouts())
            .build();
        let lambda = aws_sdk_lambda::config::Builder::from(config)
            .timeout_config(quiesce_aws::sdk::timeouts())
            .build();
        AwsRefresh {
            client: aws_sdk_autoscaling::Client::from_conf(conf),
            lambda: aws_sdk_lambda::Client::from_conf(lambda),
        }
    }

    /// The Lambda client pre-flight's Lambda-mode check reads mappings with.
    pub fn lambda(&self) -> &aws_sdk_lambda::Client {
        &self.lambda
    }

    /// The group, its hooks and instances (`DescribeAutoScalingGroups`,
    /// `DescribeLifecycleHooks`).
    pub async fn group(&self, name: &str) -> Result<Option<GroupFacts>, RefreshError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| fail("DescribeAutoScalingGroups", name, e))?;
        let Some(group) = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
        else {
            return Ok(None);
        };
        let hooks = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(name)
            .send()
            .await
            .map_err(|e| fail("DescribeLifecycleHooks", name, e))?;
        let template = group.launch_template().or_else(|| {
            group
                .mixed_instances_policy()
                .and_then(|m| m.launch_template())
                .and_then(|t| t.launch_template_specification())
        });
        Ok(Some(GroupFacts {
            name: name.to_string(),
            tags: group
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
            hooks: hooks
                .lifecycle_hooks()
                .iter()
                .map(|h| HookFacts {
                    name: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                    transition: h.lifecycle_transition().unwrap_or_default().to_string(),
                    // AWS's default when a hook sets none (API_PutLifecycleHook).
                    default_result: h.default_result().unwrap_or("ABANDON").to_string(),
                    target: h.notification_target_arn().map(str::to_string),
                })
                .collect(),
            terminate_hook_abandon: group
                .instance_lifecycle_policy()
                .and_then(|p| p.retention_triggers())
                .and_then(|r| r.terminate_hook_abandon())
                .map(|a| a.as_str().to_string()),
            launch_template_id: template.and_then(|t| t.launch_template_id().map(str::to_string)),
            launch_template_version: template.and_then(|t| t.version().map(str::to_string)),
            launch_configuration: group.launch_configuration_name().map(str::to_string),
            instances: group
                .instances()
                .iter()
                .map(|i| InstanceFacts {
                    id: i.instance_id().unwrap_or_default().to_string(),
                    state: i
                        .lifecycle_state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    version: i
                        .launch_template()
                        .and_then(|t| t.version().map(str::to_string)),
                })
                .collect(),
        }))
    }

    /// Makes `image` a new version of the group's launch template, from the version the group
    /// launches now (EC2 `CreateLaunchTemplateVersion`): what `--image-id` rolls to.
    pub async fn version_for_image(
        &self,
        ec2: &quiesce_aws::ec2::Ec2,
        group: &str,
        image: &str,
    ) -> Result<String, RefreshError> {
        let fail = |message: String| RefreshError {
            call: "CreateLaunchTemplateVersion",
            group: group.to_string(),
            message,
        };
        let facts = self
            .group(group)
            .await?
            .ok_or_else(|| fail("no such group".into()))?;
        let template = facts
            .launch_template_id
            .ok_or_else(|| fail("the group launches from no launch template".into()))?;
        let source = facts
            .launch_template_version
            .unwrap_or_else(|| "$Default".into());
        ec2.create_launch_template_version(&template, &source, image)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// `TerminateInstanceInAutoScalingGroup` without decrementing: how a retained instance is
    /// let go once a person fixed what kept it (User Guide, "Manage retained instances": they
    /// stay until terminated by hand; the group has replaced them already).
    pub async fn terminate(&self, instance: &str) -> Result<(), RefreshError> {
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| fail("TerminateInstanceInAutoScalingGroup", instance, e))
    }

    /// The group an instance is in and its state (`DescribeAutoScalingInstances`).
    pub async fn instance(&self, instance: &str) -> Result<Option<(String, String)>, RefreshError> {
        let out = self
            .client
            .describe_auto_scaling_instances()
            .instance_ids(instance)
            .send()
            .await
            .map_err(|e| fail("DescribeAutoScalingInstances", instance, e))?;
        Ok(out.auto_scaling_instances().first().map(|i| {
            (
                i.auto_scaling_group_name().unwrap_or_default().to_string(),
                i.lifecycle_state().unwrap_or_default().to_string(),
            )
        }))
    }
}

/// The SDK's RefreshPreferences for ours.
fn preferences(p: &Preferences) -> RefreshPreferences {
    let mut b = RefreshPreferences::builder()
        .min_healthy_percentage(i32::from(p.min_healthy))
        .skip_matching(p.skip_matching)
        .auto_rollback(p.auto_rollback);
    if let Some(max) = p.max_healthy {
        b = b.max_healthy_percentage(i32::from(max));
    }
    for c in &p.checkpoints {
        b = b.checkpoint_percentages(i32::from(*c));
    }
    if let Some(d) = p.checkpoint_delay {
        b = b.checkpoint_delay(secs(d));
    }
    if let Some(d) = p.bake_time {
        b = b.bake_time(secs(d));
    }
    if let Some(d) = p.instance_warmup {
        b = b.instance_warmup(secs(d));
    }
    if !p.alarms.is_empty() {
        let mut alarms = AlarmSpecification::builder();
        for a in &p.alarms {
            alarms = alarms.alarms(a);
        }
        b = b.alarm_specification(alarms.build());
    }
    b.build()
}

impl Refresh for AwsRefresh {
    async fn start(
        &self,
        group: &str,
        version: &str,
        preferences_: &Preferences,
    ) -> Result<String, RefreshError> {
        let facts = self.group(group).await?;
        let template = facts
            .as_ref()
            .and_then(|f| f.launch_template_id.clone())
            .ok_or_else(|| RefreshError {
                call: "StartInstanceRefresh",
                group: group.to_string(),
                message: "the group launches from no launch template".into(),
            })?;
        let desired = DesiredConfiguration::builder()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(template)
                    .version(version)
                    .build(),
            )
            .build();
        let out = self
            .client
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .desired_configuration(desired)
            .preferences(preferences(preferences_))
            .send()
            .await
            .map_err(|e| fail("StartInstanceRefresh", group, e))?;
        out.instance_refresh_id()
            .map(str::to_string)
            .ok_or_else(|| RefreshError {
                call: "StartInstanceRefresh",
                group: group.to_string(),
                message: "the answer has no InstanceRefreshId".into(),
            })
    }

    async fn describe(&self, group: &str, id: &str) -> Result<RefreshState, RefreshError> {
        let out = self
            .client
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .instance_refresh_ids(id)
            .send()
            .await
            .map_err(|e| fail("DescribeInstanceRefreshes", group, e))?;
        let r = out
            .instance_refreshes()
            .iter()
            .find(|r| r.instance_refresh_id() == Some(id))
            .ok_or_else(|| RefreshError {
                call: "DescribeInstanceRefreshes",
                group: group.to_string(),
                message: format!("no instance refresh {id}"),
            })?;
        Ok(RefreshState {
            id: id.to_string(),
            status: Status::parse(r.status().map(|s| s.as_str()).unwrap_or("Pending")),
            reason: r.status_reason().map(str::to_string),
            percent: r.percentage_complete().unwrap_or(0).clamp(0, 100) as u8,
            to_update: r.instances_to_update().unwrap_or(0).max(0) as u32,
        })
    }

    async fn instances(&self, group: &str) -> Result<Vec<InstanceFacts>, RefreshError> {
        Ok(self
            .group(group)
            .await?
            .map(|g| g.instances)
            .unwrap_or_default())
    }

    async fn cancel(&self, group: &str) -> Result<(), RefreshError> {
        self.client
            .cancel_instance_refresh()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| fail("CancelInstanceRefresh", group, e))
    }

    async fn rollback(&self, group: &str) -> Result<(), RefreshError> {
        self.client
            .rollback_instance_refresh()
            .auto_scaling_group_name(group)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| fail("RollbackInstanceRefresh", group, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_carry_every_setting() {
        let p = Preferences {
            min_healthy: 66,
            max_healthy: Some(120),
            checkpoints: vec![25, 50, 100],
            checkpoint_delay: Some(std::time::Duration::from_secs(120)),
            bake_time: Some(std::time::Duration::from_secs(300)),
            skip_matching: true,
            instance_warmup: Some(std::time::Duration::from_secs(30)),
            alarms: vec!["5xx".into()],
            auto_rollback: true,
        };
        let sdk = preferences(&p);
        assert_eq!(sdk.min_healthy_percentage(), Some(66));
        assert_eq!(sdk.max_healthy_percentage(), Some(120));
        assert_eq!(sdk.checkpoint_percentages(), &[25, 50, 100]);
        assert_eq!(sdk.checkpoint_delay(), Some(120));
        assert_eq!(sdk.bake_time(), Some(300));
        assert_eq!(sdk.skip_matching(), Some(true));
        assert_eq!(sdk.instance_warmup(), Some(30));
        assert_eq!(sdk.auto_rollback(), Some(true));
        assert_eq!(
            sdk.alarm_specification().map(|a| a.alarms().to_vec()),
            Some(vec!["5xx".to_string()])
        );
    }
}
