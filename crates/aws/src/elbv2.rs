//! Which ELBv2 target groups an instance is a target of, who will deregister it from each, and
//! when it has stopped receiving traffic: what the drainer waits for before CONTINUE, so the
//! instance is not terminated while a load balancer still routes connections to it
//! (aws-node-termination-handler issue #316).
//!
//! ELBv2 has no "groups of this target" call: the groups are listed (`DescribeTargetGroups`,
//! paged) and each instance-mode group is asked about the instance (`DescribeTargetHealth` with
//! its id; an unregistered target answers `unused`, reason `Target.NotRegistered`, per the
//! API reference of DescribeTargetHealth). ELBv2's Describe calls are throttled per account and
//! region, shared with the AWS Load Balancer Controller, so every call of the process waits
//! for one rate limit ([`Elbv2::new`]) and what changes rarely (the group list, tags,
//! deregistration delays, the Auto Scaling group's attachments) is cached for
//! [`CACHE_FOR`].
//!
//! The drainer talks to the [`LoadBalancers`] trait so the lab can answer it from a simulated
//! load balancer. Unlike [`crate::hooks::LifecycleHooks`] its methods return boxed futures: the
//! handler holds it as an optional trait object, so turning the wait on does not change the
//! handler's type for every entry point.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::error::{DisplayErrorContext, ProvideErrorMetadata};

use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetHealthReasonEnum, TargetHealthStateEnum, TargetTypeEnum,
};
use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The tag the AWS Load Balancer Controller puts on the target groups it owns (its value: the
/// cluster's name).
pub const CONTROLLER_TAG: &str = "elbv2.k8s.aws/cluster";
/// The target group attribute holding how long a deregistered target keeps draining.
pub const DELAY_ATTRIBUTE: &str = "deregistration_delay.timeout_seconds";
/// ELBv2's default deregistration delay, for a group that does not say.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(300);
/// ELBv2 calls per second this process makes at most, all actions together: well under the
/// account's Describe throttle, leaving room for the controller.
pub const DEFAULT_RATE: NonZeroU32 = NonZeroU32::new(5).expect("5 is not zero");
/// How long the group list, tags, delays and an Auto Scaling group's attachments are reused:
/// a roll drains node after node against the same groups.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// `DescribeTargetGroups`' largest page.
const PAGE_SIZE: i32 = 400;
/// `DescribeTags` takes at most this many ARNs per call.
const TAGS_PER_CALL: usize = 20;
/// Pages of `DescribeTargetGroups` read at most (400 000 groups: far past ELBv2's quotas),
/// so a marker that never ends cannot loop forever.
const MAX_PAGES: usize = 1000;

/// Who takes the instance out of a target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The AWS Load Balancer Controller of `cluster` (tag [`CONTROLLER_TAG`]): it deregisters a
    /// node labelled `node.kubernetes.io/exclude-from-external-load-balancers` or tainted
    /// `ToBeDeletedByClusterAutoscaler`.
    Controller {
        /// The tag's value.
        cluster: String,
    },
    /// Attached to the instance's Auto Scaling group, which deregisters the instance itself
    /// before the terminate hook's wait state.
    AutoScaling,
    /// Anyone else (Terraform, a person, another cluster): nobody will deregister it.
    Foreign,
}

/// One target group the instance is a target of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// Its ARN.
    pub arn: String,
    /// Its name, for reports.
    pub name: String,
    /// Who deregisters the instance from it.
    pub owner: Owner,
    /// How long a deregistered target keeps draining ([`DELAY_ATTRIBUTE`]).
    pub delay: Duration,
}

/// Where the instance stands as a target of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// Registered and (possibly) receiving traffic: the API's state, e.g. `healthy`.
    Serving(String),
    /// Deregistered, still finishing its connections for the deregistration delay.
    Draining,
    /// Not a target any more (`unused`, not registered): no traffic reaches it.
    Out,
}

impl TargetState {
    /// The reading of `DescribeTargetHealth`'s state and reason.
    pub fn of(
        state: Option<&TargetHealthStateEnum>,
        reason: Option<&TargetHealthReasonEnum>,
    ) -> TargetState {
        match (state, reason) {
            (None | Some(TargetHealthStateEnum::Unused), _)
            | (_, Some(TargetHealthReasonEnum::NotRegistered)) => TargetState::Out,
            (Some(TargetHealthStateEnum::Draining), _) => TargetState::Draining,
            (Some(other), _) => TargetState::Serving(other.as_str().to_string()),
        }
    }
}

/// A target group the instance is in, and how it stands there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group: TargetGroup,
    /// The instance's state in it.
    pub state: TargetState,
}

/// An ELBv2 (or Auto Scaling) call that failed; says which and why.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {message}")]
pub struct Elbv2Error {
    /// The API call.
    pub call: &'static str,
    /// The service's error, with its code.
    pub message: String,
    /// Whether the same call may succeed later (throttling, a server error, no answer), as
    /// opposed to a refusal that stays (access denied: the permission is missing).
    pub transient: bool,
}

/// Error codes of a call that may well succeed when tried again.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
];

impl Elbv2Error {
    fn of<E, R>(
        call: &'static str,
        err: aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Elbv2Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        let transient = match &err {
            SdkError::ServiceError(service) => service
                .err()
                .code()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c)),
            SdkError::ConstructionFailure(_) => false,
            _ => true,
        };
        Elbv2Error {
            call,
            message: DisplayErrorContext(err).to_string(),
            transient,
        }
    }
}

/// The load-balancer calls the drainer makes.
pub trait LoadBalancers: Send + Sync {
    /// Every target group in which `instance` is a target now (serving or draining), each
    /// classified with the instance's Auto Scaling group `asg` (`None`: the instance is not
    /// leaving by its group, so no group attachment deregisters it).
    fn memberships<'a>(
        &'a self,
        instance: &'a str,
        asg: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Membership>, Elbv2Error>>;
    /// The instance's state in `group` now (`DescribeTargetHealth`).
    fn state<'a>(
        &'a self,
        group: &'a TargetGroup,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<TargetState, Elbv2Error>>;
    /// `DeregisterTargets`: takes the instance out of a group nobody else will.
    fn deregister<'a>(
        &'a self,
        group: &'a TargetGroup,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), Elbv2Error>>;
}

/// A group as listed, before it is known to hold the instance.
#[derive(Debug, Clone)]
struct Listed {
    arn: String,
    name: String,
}

/// What is reused between calls, with when it was read.
#[derive(Default)]
struct Cache {
    groups: Option<(Instant, Arc<Vec<Listed>>)>,
    tags: HashMap<String, (Instant, Option<String>)>,
    delays: HashMap<String, (Instant, Duration)>,
    attached: HashMap<String, (Instant, Arc<Vec<String>>)>,
}

fn fresh<T: Clone>(entry: Option<&(Instant, T)>) -> Option<T> {
    entry
        .filter(|(at, _)| at.elapsed() < CACHE_FOR)
        .map(|(_, v)| v.clone())
}

/// The instance as a target, on whatever port it is registered.
fn target(instance: &str) -> TargetDescription {
    TargetDescription::builder().id(instance).build()
}

/// The real thing, through aws-sdk-elasticloadbalancingv2 (and aws-sdk-autoscaling for the
/// group's attached target groups).
pub struct Elbv2 {
    elb: aws_sdk_elasticloadbalancingv2::Client,
    asg: aws_sdk_autoscaling::Client,
    limiter: DefaultDirectRateLimiter,
    cache: Mutex<Cache>,
}

impl Elbv2 {
    /// A client from a loaded configuration (see [`crate::sdk::sdk_config`]) making at most
    /// `per_second` calls a second (see [`DEFAULT_RATE`]), with bursts of as many.
    pub fn new(config: &aws_config::SdkConfig, per_second: NonZeroU32) -> Elbv2 {
        Elbv2 {
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            asg: aws_sdk_autoscaling::Client::new(config),
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
            cache: Mutex::default(),
        }
    }

    /// Waits for the rate limit's next slot; every call goes through here first.
    async fn slot(&self) {
        self.limiter.until_ready().await;
    }

    /// Every instance-mode target group of the account and region (IP-mode groups have pods
    /// as targets, not the instance; see docs/drainer.md).
    async fn groups(&self) -> Result<Arc<Vec<Listed>>, Elbv2Error> {
        if let Some(groups) = fresh(self.cache.lock().await.groups.as_ref()) {
            return Ok(groups);
        }
        let mut groups = Vec::new();
        let mut marker = None;
        for _ in 0..MAX_PAGES {
            self.slot().await;
            let page = self
                .elb
                .describe_target_groups()
                .page_size(PAGE_SIZE)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| Elbv2Error::of("DescribeTargetGroups", e))?;
            groups.extend(
                page.target_groups()
                    .iter()
                    .filter(|g| {
                        g.target_type()
                            .is_none_or(|t| *t == TargetTypeEnum::Instance)
                    })
                    .filter_map(|g| {
                        Some(Listed {
                            arn: g.target_group_arn()?.to_string(),
                            name: g.target_group_name().unwrap_or_default().to_string(),
                        })
                    }),
            );
            marker = page
                .next_marker()
                .filter(|m| !m.is_empty())
                .map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        let groups = Arc::new(groups);
        self.cache.lock().await.groups = Some((Instant::now(), groups.clone()));
        Ok(groups)
    }

    async fn health(&self, arn: &str, instance: &str) -> Result<TargetState, Elbv2Error> {
        self.slot().await;
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .targets(target(instance))
            .send()
            .await
            .map_err(|e| Elbv2Error::of("DescribeTargetHealth", e))?;
        // One description per port the instance is registered on: the instance is out only
        // when it is out on every port.
        let states: Vec<TargetState> = out
            .target_health_descriptions()
            .iter()
            .filter(|d| d.target().and_then(|t| t.id()) == Some(instance))
            .map(|d| {
                let health = d.target_health();
                TargetState::of(
                    health.and_then(|h| h.state()),
                    health.and_then(|h| h.reason()),
                )
            })
            .collect();
        Ok(states
            .iter()
            .find(|s| matches!(s, TargetState::Serving(_)))
            .or_else(|| states.iter().find(|s| **s == TargetState::Draining))
            .cloned()
            .unwrap_or(TargetState::Out))
    }

    /// The [`CONTROLLER_TAG`] value of each of `arns` (`None`: untagged).
    async fn controller_tags(
        &self,
        arns: &[String],
    ) -> Result<HashMap<String, Option<String>>, Elbv2Error> {
        let mut found = HashMap::new();
        let mut unknown = Vec::new();
        {
            let cache = self.cache.lock().await;
            for arn in arns {
                match fresh(cache.tags.get(arn)) {
                    Some(tag) => {
                        found.insert(arn.clone(), tag);
                    }
                    None => unknown.push(arn.clone()),
                }
            }
        }
        for chunk in unknown.chunks(TAGS_PER_CALL) {
            self.slot().await;
            let out = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| Elbv2Error::of("DescribeTags", e))?;
            let mut cache = self.cache.lock().await;
            for arn in chunk {
                let tag = out
                    .tag_descriptions()
                    .iter()
                    .find(|d| d.resource_arn() == Some(arn.as_str()))
                    .and_then(|d| {
                        d.tags()
                            .iter()
                            .find(|t| t.key() == Some(CONTROLLER_TAG))
                            .map(|t| t.value().unwrap_or_default().to_string())
                    });
                cache
                    .tags
                    .insert(arn.clone(), (Instant::now(), tag.clone()));
                found.insert(arn.clone(), tag);
            }
        }
        Ok(found)
    }

    async fn delay(&self, arn: &str) -> Result<Duration, Elbv2Error> {
        if let Some(delay) = fresh(self.cache.lock().await.delays.get(arn)) {
            return Ok(delay);
        }
        self.slot().await;
        let out = self
            .elb
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| Elbv2Error::of("DescribeTargetGroupAttributes", e))?;
        let delay = out
            .attributes()
            .iter()
            .find(|a| a.key() == Some(DELAY_ATTRIBUTE))
            .and_then(|a| a.value()?.parse::<u64>().ok())
            .map_or(DEFAULT_DELAY, Duration::from_secs);
        self.cache
            .lock()
            .await
            .delays
            .insert(arn.to_string(), (Instant::now(), delay));
        Ok(delay)
    }

    /// The target groups attached to the Auto Scaling group.
    async fn attached(&self, asg: &str) -> Result<Arc<Vec<String>>, Elbv2Error> {
        if let Some(arns) = fresh(self.cache.lock().await.attached.get(asg)) {
            return Ok(arns);
        }
        self.slot().await;
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(asg)
            .send()
            .await
            .map_err(|e| Elbv2Error::of("DescribeAutoScalingGroups", e))?;
        let arns: Arc<Vec<String>> = Arc::new(
            out.auto_scaling_groups()
                .iter()
                .flat_map(|g| g.target_group_arns().iter().cloned())
                .collect(),
        );
        self.cache
            .lock()
            .await
            .attached
            .insert(asg.to_string(), (Instant::now(), arns.clone()));
        Ok(arns)
    }

    async fn find(&self, instance: &str, asg: Option<&str>) -> Result<Vec<Membership>, Elbv2Error> {
        let groups = self.groups().await?;
        let mut members = Vec::new();
        for group in groups.iter() {
            let state = self.health(&group.arn, instance).await?;
            if state != TargetState::Out {
                members.push((group, state));
            }
        }
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let arns: Vec<String> = members.iter().map(|(g, _)| g.arn.clone()).collect();
        let tags = self.controller_tags(&arns).await?;
        let attached = match asg {
            Some(asg) => self.attached(asg).await?,
            None => Arc::default(),
        };
        let mut found = Vec::new();
        for (group, state) in members {
            let owner = match tags.get(&group.arn).cloned().flatten() {
                Some(cluster) => Owner::Controller { cluster },
                None if attached.contains(&group.arn) => Owner::AutoScaling,
                None => Owner::Foreign,
            };
            found.push(Membership {
                group: TargetGroup {
                    arn: group.arn.clone(),
                    name: group.name.clone(),
                    owner,
                    delay: self.delay(&group.arn).await?,
                },
                state,
            });
        }
        Ok(found)
    }
}

impl LoadBalancers for Elbv2 {
    fn memberships<'a>(
        &'a self,
        instance: &'a str,
        asg: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Membership>, Elbv2Error>> {
        Box::pin(self.find(instance, asg))
    }

    fn state<'a>(
        &'a self,
        group: &'a TargetGroup,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<TargetState, Elbv2Error>> {
        Box::pin(self.health(&group.arn, instance))
    }

    fn deregister<'a>(
        &'a self,
        group: &'a TargetGroup,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<(), Elbv2Error>> {
        Box::pin(async move {
            self.slot().await;
            self.elb
                .deregister_targets()
                .target_group_arn(&group.arn)
                .targets(target(instance))
                .send()
                .await
                .map_err(|e| Elbv2Error::of("DeregisterTargets", e))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unregistered_target_is_out_and_a_deregistered_one_drains() {
        use TargetHealthReasonEnum as R;
        use TargetHealthStateEnum as S;
        assert_eq!(
            TargetState::of(Some(&S::Unused), Some(&R::NotRegistered)),
            TargetState::Out
        );
        assert_eq!(
            TargetState::of(Some(&S::Unavailable), Some(&R::NotRegistered)),
            TargetState::Out
        );
        assert_eq!(
            TargetState::of(Some(&S::Draining), Some(&R::DeregistrationInProgress)),
            TargetState::Draining
        );
        assert_eq!(
            TargetState::of(Some(&S::Healthy), None),
            TargetState::Serving("healthy".into())
        );
        assert_eq!(
            TargetState::of(Some(&S::UnhealthyDraining), None),
            TargetState::Serving("unhealthy.draining".into())
        );
    }
}
