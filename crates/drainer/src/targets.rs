//! The `targets-deregistered` phase (issue 17): after the drain and its gate, before CONTINUE,
//! wait until the instance is no longer a target of the load balancers that route to it, so
//! its termination cuts no connection a load balancer still sends it.
//!
//! The fence (the exclusion label and the `ToBeDeletedByClusterAutoscaler` taint, set at the
//! cordon and kept meanwhile) makes the AWS Load Balancer Controller deregister the node from
//! the instance-mode groups it owns; each then drains for its deregistration delay. Each group
//! the instance is in is sorted ([`plan`]):
//! - the cluster's controller's: waited for;
//! - attached to the Auto Scaling group: Auto Scaling deregisters the instance before the
//!   terminate hook's wait state, so it is only checked (a warning if still serving);
//! - anyone else's: nobody will deregister it; skipped with a warning on the node, or
//!   deregistered by the drainer and waited for with `--deregister-foreign-targets`.
//!
//! The wait is bounded (`--lb-drain-timeout`, by default the largest delay plus [`MARGIN`],
//! counted in the hook's deadline); a target still draining at the bound is a named reason,
//! and `--on-lb-drain-timeout` decides between ABANDON (the default) and CONTINUE.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use quiesce_aws::elbv2::{
    DEFAULT_RATE, Elbv2, Elbv2Error, LoadBalancers, Membership, Owner, TargetGroup, TargetState,
};
use quiesce_aws::event::LifecycleAction;
use quiesce_aws::hooks::LifecycleHooks;
use quiesce_aws::record::InFlight;
use quiesce_kube::cluster::{Cluster, Cordon};
use quiesce_kube::events::Reason;
use quiesce_kube::kube_cluster::KubeCluster;
use quiesce_kube::report::{DrainReport, Outcome, PhaseName};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::settings::{LoadBalancerWait, OnLbDrainTimeout};

/// Added to the largest deregistration delay for the default bound: the controller's time to
/// notice the fence and deregister, and the load balancer's to report it.
pub const MARGIN: Duration = Duration::from_secs(30);
/// How often the waited groups are asked again (each ask is one rate-limited call per group).
pub const POLL: Duration = Duration::from_secs(1);

/// What to do about each target group the instance is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Groups to wait for, with whether the drainer must deregister the instance itself.
    pub wait: Vec<(TargetGroup, bool)>,
    /// Groups left alone, with why (a warning on the node).
    pub skipped: Vec<(TargetGroup, String)>,
}

/// Sorts the instance's groups. `cluster`: the drainer's cluster name, if it has one (a
/// controller-owned group of another cluster is foreign); `fenced`: whether the drain labels
/// the node out of load balancers (without it the controller deregisters nothing).
pub fn plan(
    memberships: &[Membership],
    cluster: Option<&str>,
    fenced: bool,
    settings: &LoadBalancerWait,
) -> Plan {
    let mut plan = Plan::default();
    for m in memberships {
        let group = m.group.clone();
        let serving = matches!(m.state, TargetState::Serving(_));
        match &m.group.owner {
            Owner::Controller { cluster: owner } if cluster.is_none_or(|c| c == owner) => {
                if fenced || !serving {
                    plan.wait.push((group, false));
                } else {
                    plan.skipped.push((
                        group,
                        "owned by the load balancer controller, but the node is kept in load \
                         balancers (--keep-in-load-balancers), so it is not deregistered"
                            .into(),
                    ));
                }
            }
            Owner::AutoScaling => {
                if serving {
                    tracing::warn!(group = %m.group.name, state = ?m.state, "a target group of the Auto Scaling group still has the instance: Auto Scaling deregisters it itself, not waiting");
                }
            }
            Owner::Controller { .. } | Owner::Foreign if !serving => plan.wait.push((group, false)),
            Owner::Controller { .. } | Owner::Foreign if settings.deregister_foreign => {
                plan.wait.push((group, true))
            }
            Owner::Controller { cluster: owner } => plan.skipped.push((
                group,
                format!(
                    "owned by the load balancer controller of cluster {owner:?}, not this one: \
                     nobody deregisters the node (--deregister-foreign-targets would)"
                ),
            )),
            Owner::Foreign => plan.skipped.push((
                group,
                "registered by someone else (neither this cluster's load balancer controller \
                 nor the Auto Scaling group): nobody deregisters the node \
                 (--deregister-foreign-targets would)"
                    .into(),
            )),
        }
    }
    plan
}

impl Plan {
    /// How long the wait may take at most.
    pub fn bound(&self, timeout: Option<Duration>) -> Duration {
        timeout.unwrap_or_else(|| {
            self.wait
                .iter()
                .map(|(g, _)| g.delay)
                .max()
                .map_or(Duration::ZERO, |d| d + MARGIN)
        })
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The instance is out of every waited group.
    Out,
    /// `until` came first: the groups still holding the instance, with its state there.
    Still(Vec<(String, TargetState)>),
}

/// Deregisters where the plan says so, then asks the waited groups every [`POLL`] until the
/// instance is out of all of them or `until` passes.
pub async fn wait(
    lb: &dyn LoadBalancers,
    plan: &Plan,
    instance: &str,
    until: Instant,
) -> Result<Waited, Elbv2Error> {
    for (group, _) in plan.wait.iter().filter(|(_, ours)| *ours) {
        tracing::info!(group = %group.name, instance, "deregistering the instance from a foreign target group (--deregister-foreign-targets)");
        lb.deregister(group, instance).await?;
    }
    let mut left: Vec<&TargetGroup> = plan.wait.iter().map(|(g, _)| g).collect();
    loop {
        let mut still = Vec::new();
        for group in left {
            match lb.state(group, instance).await? {
                TargetState::Out => {
                    tracing::info!(group = %group.name, instance, "the instance left the target group");
                }
                state => still.push((group, state)),
            }
        }
        if still.is_empty() {
            return Ok(Waited::Out);
        }
        if Instant::now() + POLL > until {
            return Ok(Waited::Still(
                still
                    .into_iter()
                    .map(|(g, s)| (g.name.clone(), s))
                    .collect(),
            ));
        }
        left = still.into_iter().map(|(g, _)| g).collect();
        tokio::time::sleep(POLL).await;
    }
}

/// The instance's groups, sorted ([`plan`]). `asg`: the instance's Auto Scaling group when
/// it is terminating by it (`None` for a drain by hand: nobody deregisters then).
pub async fn sorted(
    lb: &dyn LoadBalancers,
    instance: &str,
    asg: Option<&str>,
    cluster: Option<&str>,
    fenced: bool,
    settings: &LoadBalancerWait,
) -> Result<Plan, Elbv2Error> {
    let memberships = lb.memberships(instance, asg).await?;
    Ok(plan(&memberships, cluster, fenced, settings))
}

/// The phase on a drained, fenced node: says on the node which groups are skipped, then
/// [`wait`]s until `until`, keeping the fence meanwhile (a taint cleared now would make the
/// controller register the node again).
pub async fn run<C: Cluster>(
    lb: &dyn LoadBalancers,
    cluster: &C,
    node: &str,
    instance: &str,
    plan: &Plan,
    cordon: &Cordon,
    until: Instant,
) -> Result<Waited, Elbv2Error> {
    for (group, why) in &plan.skipped {
        let message = format!("target group {} skipped: {why}", group.name);
        tracing::warn!(node, group = %group.name, "{message}");
        announce(cluster, node, Reason::TargetGroupSkipped, &message).await;
    }
    if plan.wait.is_empty() {
        return Ok(Waited::Out);
    }
    let names: Vec<&str> = plan.wait.iter().map(|(g, _)| g.name.as_str()).collect();
    tracing::info!(node, groups = ?names, "waiting for the instance to leave its target groups");
    tokio::select! {
        waited = wait(lb, plan, instance, until) => waited,
        never = cluster.keep_fenced(node, cordon) => match never {},
    }
}

/// Events are for people; failing to record one is a log line.
pub async fn announce<C: Cluster>(cluster: &C, node: &str, reason: Reason, message: &str) {
    if let Err(err) = cluster.event(node, reason, message).await {
        tracing::warn!(%err, "could not record the event");
    }
}

/// Why a wait that ran out is a problem, naming the groups.
pub fn still_reason(still: &[(String, TargetState)], bound: Duration) -> String {
    let groups: Vec<String> = still
        .iter()
        .map(|(name, state)| format!("{name} ({})", state_name(state)))
        .collect();
    // Whole seconds: the wait ends on a poll, a few milliseconds either side of its bound.
    let waited = Duration::from_secs(bound.as_secs_f64().round() as u64);
    format!(
        "the instance was still a target of load balancers after {}: {}",
        humantime::format_duration(waited),
        groups.join(", ")
    )
}

fn state_name(state: &TargetState) -> &str {
    match state {
        TargetState::Serving(s) => s,
        TargetState::Draining => "draining",
        TargetState::Out => "unused",
    }
}

/// `quiesce drain --wait-load-balancers`: the phase after a drain by hand, recorded in its
/// report (a `targets-deregistered` phase in seconds since the drain started, skipped groups as
/// notes; a target still draining at the bound fails the drain with the reason, unless the
/// policy says continue).
pub async fn after_drain(
    client: &kube::Client,
    lb: &dyn LoadBalancers,
    cordon: &Cordon,
    settings: &LoadBalancerWait,
    report: &mut DrainReport,
) -> Result<()> {
    let started = Instant::now();
    let node = Api::<Node>::all(client.clone())
        .get(&report.node)
        .await
        .map_err(|e| Error::kube(format!("reading node {}", report.node), e))?;
    let provider = node.spec.and_then(|s| s.provider_id).unwrap_or_default();
    let Some(instance) = quiesce_aws::instance::instance_id(&provider) else {
        report.notes.push(format!(
            "no load-balancer wait: providerID {provider:?} names no EC2 instance"
        ));
        return Ok(());
    };
    let plan = sorted(
        lb,
        instance,
        None,
        None,
        cordon.exclude_from_load_balancers,
        settings,
    )
    .await?;
    let bound = plan.bound(settings.timeout);
    let cluster = KubeCluster::new(client.clone());
    let waited = run(
        lb,
        &cluster,
        &report.node,
        instance,
        &plan,
        cordon,
        started + bound,
    )
    .await?;
    for (group, why) in &plan.skipped {
        report
            .notes
            .push(format!("target group {} skipped: {why}", group.name));
    }
    match waited {
        Waited::Out if plan.wait.is_empty() => {}
        Waited::Out => {
            let before = report.phases.last().map_or(0.0, |p| p.seconds);
            report.phases.push(quiesce_kube::report::Phase {
                name: PhaseName::TargetsDeregistered,
                seconds: before + started.elapsed().as_secs_f64(),
            });
        }
        Waited::Still(still) => {
            let reason = still_reason(&still, bound);
            match settings.on_timeout {
                OnLbDrainTimeout::Abandon => {
                    report.outcome = Outcome::Failed;
                    report.error = Some(reason);
                }
                OnLbDrainTimeout::Continue => report.notes.push(format!(
                    "{reason}; continuing (--on-lb-drain-timeout continue)"
                )),
            }
        }
    }
    Ok(())
}

/// How the phase ended for the handler.
pub(crate) enum TargetsEnd {
    /// Out of every waited group (or CONTINUE by policy after the bound): go on to CONTINUE.
    Done,
    /// Still draining at the bound and the policy is ABANDON: the reason.
    GiveUp(String),
    /// The slice ended first: the record stays in `completing` and the next slice waits on.
    Paused(String),
}

impl<H: LifecycleHooks> Handler<H> {
    /// Makes the handler wait for the instance to leave its load balancers before CONTINUE
    /// (when [`crate::Settings::load_balancers`] is enabled).
    pub fn with_load_balancers(mut self, lb: Arc<dyn LoadBalancers>) -> Self {
        self.load_balancers = Some(lb);
        self
    }

    /// [`Handler::with_load_balancers`] with the real ELBv2 client, when the settings ask for
    /// the wait: what `quiesce drainer` and the Lambda do.
    pub fn with_aws_load_balancers(self, aws: &aws_config::SdkConfig) -> Self {
        if self.settings.load_balancers.enabled {
            self.with_load_balancers(Arc::new(Elbv2::new(aws, DEFAULT_RATE)))
        } else {
            self
        }
    }

    /// The waited groups of the action's instance, sorted, or `None` when there is no wait.
    async fn target_plan(
        &self,
        action: &LifecycleAction,
    ) -> Result<Option<(&dyn LoadBalancers, Plan)>> {
        let settings = &self.settings.load_balancers;
        let Some(lb) = self.load_balancers.as_deref().filter(|_| settings.enabled) else {
            return Ok(None);
        };
        let plan = sorted(
            lb,
            &action.instance_id,
            Some(&action.group),
            self.settings.cluster.as_deref(),
            self.settings.cordon.exclude_from_load_balancers,
            settings,
        )
        .await?;
        Ok(Some((lb, plan)))
    }

    /// A refusal (a missing permission) counts as no wait here: the phase itself reports it.
    pub(crate) async fn targets_budget(&self, action: &LifecycleAction) -> Result<Duration> {
        match self.target_plan(action).await {
            Ok(plan) => Ok(plan.map_or(Duration::ZERO, |(_, plan)| {
                plan.bound(self.settings.load_balancers.timeout)
            })),
            Err(Error::LoadBalancers(err)) if !err.transient => Ok(Duration::ZERO),
            Err(err) => Err(err),
        }
    }

    /// Runs the phase for a drained node, keeping its fence and our claim meanwhile.
    pub(crate) async fn targets_deregistered(
        &self,
        action: &LifecycleAction,
        node: &str,
        record: &InFlight,
        slice_end: Option<Instant>,
    ) -> Result<TargetsEnd> {
        let started = Instant::now();
        let (lb, plan) = match self.target_plan(action).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(TargetsEnd::Done),
            // Not knowing whether load balancers still route to the instance is not knowing
            // whether CONTINUE cuts connections: the safe answer is ABANDON, with why.
            Err(Error::LoadBalancers(err)) if !err.transient => {
                return Ok(TargetsEnd::GiveUp(format!(
                    "could not find the instance's load balancer target groups: {err}"
                )));
            }
            Err(err) => return Err(err),
        };
        let settings = &self.settings.load_balancers;
        let bound = plan.bound(settings.timeout);
        let deadline = started + crate::handler::remaining(&record.deadline)?;
        let until = (started + bound).min(deadline);
        let stop = slice_end.map_or(until, |end| end.min(until));
        let names: Vec<&str> = plan.wait.iter().map(|(g, _)| g.name.as_str()).collect();
        let waited = match self
            .renewing(
                node,
                record,
                run(
                    lb,
                    &self.cluster,
                    node,
                    &action.instance_id,
                    &plan,
                    &self.settings.cordon,
                    stop,
                ),
            )
            .await?
        {
            Ok(waited) => waited,
            Err(err) if !err.transient => {
                return Ok(TargetsEnd::GiveUp(format!(
                    "could not read the instance's target health: {err}"
                )));
            }
            Err(err) => return Err(err.into()),
        };
        let seconds = started.elapsed().as_secs_f64();
        match waited {
            // Nothing was waited for (the skipped groups are announced): no phase.
            Waited::Out if plan.wait.is_empty() => Ok(TargetsEnd::Done),
            Waited::Out => {
                tracing::info!(node, groups = ?names, seconds, "targets deregistered");
                self.metrics
                    .phase(PhaseName::TargetsDeregistered.as_str(), seconds);
                Ok(TargetsEnd::Done)
            }
            Waited::Still(_)
                if slice_end.is_some_and(|end| end < until && Instant::now() >= end) =>
            {
                Ok(TargetsEnd::Paused(format!(
                    "the instance of {node} is still a target of {names:?}; the slice ended"
                )))
            }
            Waited::Still(still) => {
                let reason = still_reason(&still, until - started);
                match settings.on_timeout {
                    OnLbDrainTimeout::Abandon => Ok(TargetsEnd::GiveUp(reason)),
                    OnLbDrainTimeout::Continue => {
                        let message =
                            format!("{reason}; continuing (--on-lb-drain-timeout continue)");
                        tracing::warn!(node, "{message}");
                        announce(&self.cluster, node, Reason::TargetsStillDraining, &message).await;
                        Ok(TargetsEnd::Done)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, owner: Owner, delay: u64, state: TargetState) -> Membership {
        Membership {
            group: TargetGroup {
                arn: format!("arn:{name}"),
                name: name.into(),
                owner,
                delay: Duration::from_secs(delay),
            },
            state,
        }
    }

    fn ours(name: &str, delay: u64) -> Membership {
        member(
            name,
            Owner::Controller {
                cluster: "prod".into(),
            },
            delay,
            TargetState::Serving("healthy".into()),
        )
    }

    fn names(groups: &[(TargetGroup, impl Sized)]) -> Vec<&str> {
        groups.iter().map(|(g, _)| g.name.as_str()).collect()
    }

    #[test]
    fn the_controllers_groups_are_waited_for_and_foreign_ones_skipped_unless_asked() {
        let healthy = || TargetState::Serving("healthy".into());
        let memberships = [
            ours("a", 3),
            ours("b", 6),
            member("asg", Owner::AutoScaling, 300, healthy()),
            member("tf", Owner::Foreign, 900, healthy()),
            member(
                "other",
                Owner::Controller {
                    cluster: "staging".into(),
                },
                10,
                healthy(),
            ),
        ];
        let defaults = LoadBalancerWait::default();
        let p = plan(&memberships, Some("prod"), true, &defaults);
        assert_eq!(names(&p.wait), ["a", "b"]);
        assert_eq!(names(&p.skipped), ["tf", "other"]);
        assert_eq!(p.bound(None), Duration::from_secs(6) + MARGIN);
        assert_eq!(
            p.bound(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );

        let opted = LoadBalancerWait {
            deregister_foreign: true,
            ..defaults.clone()
        };
        let p = plan(&memberships, Some("prod"), true, &opted);
        assert_eq!(names(&p.wait), ["a", "b", "tf", "other"]);
        assert!(
            p.wait
                .iter()
                .all(|(g, ours)| *ours == (g.name == "tf" || g.name == "other"))
        );
        assert_eq!(p.bound(None), Duration::from_secs(900) + MARGIN);

        let unfenced = plan(&memberships, Some("prod"), false, &defaults);
        assert!(unfenced.wait.is_empty(), "{unfenced:?}");
        assert!(plan(&[], None, true, &defaults).bound(None).is_zero());
    }
}
